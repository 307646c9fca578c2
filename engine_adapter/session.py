"""A connection to the engine whose every request, SSO included, is bounded.

ovirtsdk4 passes its ``timeout`` to each REST request, but its SSO login
(and logout) runs a bare ``curl.perform()`` with no limit: an engine that
accepts the connection and never answers hangs the tool forever. The
connection below replaces those two requests with bounded ones of ours,
through the same libcurl and the same TLS settings, so the SDK's lazy
login and its one re-login after a 401 are bounded too.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlencode, urlparse

from .errors import AdapterError

log = logging.getLogger("sriov-engine")

_TLS_CODES = {35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98}
_CURL_ERROR_RE = re.compile(r"[(,]\s*(\d+), '([^']*)'\)")


@dataclass
class EngineOptions:
    url: str
    username: str
    password: str = field(repr=False)
    ca_file: Optional[str] = None
    insecure: bool = False
    timeout: float = 30.0

    @property
    def origin(self) -> str:
        parsed = urlparse(self.url)
        return "%s://%s" % (parsed.scheme, parsed.netloc)


def check_options(opts: EngineOptions) -> None:
    """Refuse what would otherwise fail later with a less helpful message."""
    parsed = urlparse(opts.url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise AdapterError("engine URL %r is not an http(s) URL (e.g. "
                           "https://engine.example/ovirt-engine/api)" % opts.url)
    if not opts.username:
        raise AdapterError("no engine user: set OVIRT_USERNAME or pass --username")
    if not opts.password:
        raise AdapterError("no engine password: set OVIRT_PASSWORD or pass --password-file")
    if opts.ca_file and not opts.insecure and not os.path.isfile(opts.ca_file):
        raise AdapterError("engine CA file %s does not exist" % opts.ca_file)
    if opts.timeout <= 0:
        raise AdapterError("--timeout must be positive")


def curl_failure(code: int, message: str, what: str, timeout: float) -> AdapterError:
    """Turn a libcurl error into the one-line message an admin can act on."""
    if code == 28:
        return AdapterError("%s did not answer within %gs" % (what, timeout))
    if code == 6:
        return AdapterError("%s unreachable: cannot resolve its host name (%s)" % (what, message))
    if code == 7:
        return AdapterError("%s unreachable: %s" % (what, message))
    if code in _TLS_CODES:
        return AdapterError("TLS failure talking to %s: %s (check OVIRT_CAFILE, or --insecure)"
                            % (what, message))
    return AdapterError("request to %s failed: %s" % (what, message))


def sdk_failure(error: Exception, what: str, timeout: float) -> AdapterError:
    """Read the libcurl code back out of an SDK error's text."""
    text = str(error)
    match = _CURL_ERROR_RE.search(text)
    if match:
        return curl_failure(int(match.group(1)), match.group(2), what, timeout)
    return AdapterError("%s: %s" % (what, " ".join(text.split())))


def _configure_tls(curl, opts: EngineOptions) -> None:
    import pycurl

    curl.setopt(pycurl.SSL_VERIFYPEER, 0 if opts.insecure else 1)
    curl.setopt(pycurl.SSL_VERIFYHOST, 0 if opts.insecure else 2)
    if opts.ca_file and not opts.insecure:
        curl.setopt(pycurl.CAINFO, opts.ca_file)


def sso_post(opts: EngineOptions, path: str, form: dict) -> tuple:
    """POST *form* to the engine's SSO within ``opts.timeout``; (status, body)."""
    import pycurl

    curl = pycurl.Curl()
    body = io.BytesIO()
    try:
        curl.setopt(pycurl.URL, opts.origin + path)
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.TIMEOUT_MS, max(1, int(opts.timeout * 1000)))
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(opts.timeout * 1000)))
        curl.setopt(pycurl.HTTPHEADER, ["Accept: application/json"])
        curl.setopt(pycurl.POSTFIELDS, urlencode(form))
        curl.setopt(pycurl.WRITEFUNCTION, body.write)
        _configure_tls(curl, opts)
        curl.perform()
        return curl.getinfo(pycurl.RESPONSE_CODE), body.getvalue()
    except pycurl.error as e:
        code, message = e.args[0], e.args[1] if len(e.args) > 1 else ""
        raise curl_failure(code, message, "engine %s" % opts.origin, opts.timeout) from None
    finally:
        curl.close()


def login(opts: EngineOptions) -> str:
    """Get an SSO access token, as the SDK would, but bounded."""
    form = {"grant_type": "password", "scope": "ovirt-app-api",
            "username": opts.username, "password": opts.password}
    status, body = sso_post(opts, "/ovirt-engine/sso/oauth/token", form)
    try:
        answer = json.loads(body.decode("utf-8"))
    except ValueError:
        raise AdapterError("login to engine %s failed: HTTP %s and no JSON answer (is the URL "
                           "right?)" % (opts.origin, status)) from None
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if not isinstance(answer, dict):
        raise AdapterError("login to engine %s failed: unexpected answer" % opts.origin)
    if "error" in answer or "access_token" not in answer:
        why = answer.get("error_description") or answer.get("error") or "HTTP %s" % status
        raise AdapterError("login to engine %s as %s failed: %s"
                           % (opts.origin, opts.username, why))
    log.debug("logged in to %s as %s", opts.origin, opts.username)
    return answer["access_token"]


def logout(opts: EngineOptions, token: str) -> None:
    """Revoke the token; best effort, bounded, never fatal."""
    try:
        sso_post(opts, "/ovirt-engine/services/sso-logout",
                 {"scope": "ovirt-app-api", "token": token})
    except AdapterError as e:
        log.debug("logout failed: %s", e)


def connect(opts: EngineOptions):
    """Log in (bounded) and return an SDK connection that stays bounded."""
    try:
        import ovirtsdk4 as sdk
        import pycurl  # noqa: F401 - the login below needs it too
    except ImportError as e:
        raise AdapterError("this command needs ovirtsdk4 and pycurl (%s): install the [engine] extra, "
                           "pip install 'vdsm-sriov-migration[engine]'" % e) from None

    class BoundedConnection(sdk.Connection):
        def _get_access_token(self):
            return login(opts)

        def _revoke_access_token(self):
            logout(opts, self._sso_token)

    check_options(opts)
    token = login(opts)
    return BoundedConnection(
        url=opts.url, token=token, username=opts.username,
        insecure=opts.insecure, ca_file=None if opts.insecure else opts.ca_file,
        timeout=max(1, math.ceil(opts.timeout)),
    )
