"""Opening libvirt, once per process, the way the host wants it.

On an oVirt host libvirt requires SASL for vdsm. Where VDSM is installed
and the config names no credentials, we open our *own* connection with
VDSM's (``vdsm@ovirt`` and its password file). VDSM's
``libvirtconnection.get()`` is not used: it caches one connection per
process and, when libvirtd restarts, sends SIGTERM to its own process,
which would stop the service for good. Elsewhere (the lab, a plain
libvirt host) the ``[libvirt]`` section names the URI and credentials.

Device events are only delivered while an event loop runs, and libvirt
wants the loop implementation registered *before* a connection opens, so
:func:`open_connection` starts one default-impl loop in a daemon thread
per process first.

``libvirt`` is imported lazily inside functions: the hook's fast path for
VMs without SR-IOV vNICs must not pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Optional

from lxml import etree

from .errors import ConfigError, LibvirtFailure, NoSuchVm

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_thread: Optional[threading.Thread] = None


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread.

    Idempotent: the first call wins, later calls return at once.
    """
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        import libvirt

        # libvirt's default handler prints every error to stderr, which
        # VDSM logs line by line; errors reach us as exceptions anyway.
        libvirt.registerErrorHandler(_ignore_error, None)
        libvirt.virEventRegisterDefaultImpl()
        _loop_thread = threading.Thread(target=_run_loop, name="libvirt-events", daemon=True)
        _loop_thread.start()


def _ignore_error(_ctx, _err) -> None:
    return None


def _run_loop() -> None:
    import libvirt

    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # a broken callback must not stop event delivery
            log.exception("libvirt event loop iteration failed")


@contextlib.contextmanager
def translated(what: str, vm_id: Optional[str] = None):
    """Turn a libvirt error raised inside into LibvirtFailure (or NoSuchVm)."""
    import libvirt

    try:
        yield
    except libvirt.libvirtError as e:
        data = {"libvirt_code": e.get_error_code(), "libvirt_message": e.get_error_message()}
        if vm_id:
            data["vmID"] = vm_id
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NoSuchVm("%s: no such VM %s" % (what, vm_id or ""), data) from e
        raise LibvirtFailure("%s: %s" % (what, e.get_error_message() or e), data) from e


VDSM_SASL_USERNAME = "vdsm@ovirt"
VDSM_PASSWORD_FILE = "/etc/pki/vdsm/keys/libvirt_password"


def vdsm_credentials():
    """VDSM's SASL user and password file where VDSM is installed, else None."""
    try:
        from vdsm.common import libvirtconnection
    except ImportError:
        return None
    return (getattr(libvirtconnection, "SASL_USERNAME", VDSM_SASL_USERNAME),
            getattr(libvirtconnection, "LIBVIRT_PASSWORD_PATH", VDSM_PASSWORD_FILE))


def read_password(path: str) -> str:
    """The SASL password: the file's first line without its newline, as VDSM reads it.

    (``libvirtconnection.libvirt_password``.) A missing or unreadable
    file is a one-line ConfigError naming it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\n")
    except OSError as e:
        raise ConfigError("cannot read the libvirt password file %s: %s"
                          % (path, e.strerror or e)) from e
    except UnicodeDecodeError as e:
        raise ConfigError("cannot read the libvirt password file %s: not UTF-8" % path) from e


def credential_callback(username: str, password: str):
    """openAuth's callback: AUTHNAME and PASSPHRASE from the config, anything else refused.

    libvirt's SASL client asks for exactly these two (VDSM's
    ``libvirtconnection.open_connection`` answers the same); refusing any
    other type (-1) fails the connection instead of sending an empty answer.
    """
    import libvirt

    answers = {libvirt.VIR_CRED_AUTHNAME: username, libvirt.VIR_CRED_PASSPHRASE: password}

    def request(creds, _opaque):
        for cred in creds:
            if cred[0] not in answers:
                log.warning("libvirt asked for credential type %s; refused", cred[0])
                return -1
            cred[4] = answers[cred[0]]
        return 0

    return request


def _open_auth(uri: str, username: str, password_file: Optional[str]):
    import libvirt

    password = read_password(password_file) if password_file else ""
    auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE],
            credential_callback(username, password), None]
    return libvirt.openAuth(uri, auth, 0)


def open_connection(cfg=None, use_vdsm: bool = True):
    """A new, uncached connection to this host's libvirt, with the event loop running.

    *cfg* is a :class:`sriov_host.config.Config`; without one, the default
    config is loaded. Credentials: the config's, else VDSM's where VDSM is
    installed (unless *use_vdsm* is false, for tests), else none.
    """
    start_event_loop()
    if cfg is None:
        from . import config

        cfg = config.load()
    creds = (cfg.libvirt_username, cfg.libvirt_password_file)
    if not cfg.libvirt_username and use_vdsm:
        creds = vdsm_credentials() or creds
    with translated("connecting to libvirt at %s" % cfg.libvirt_uri):
        if creds[0]:
            return _open_auth(cfg.libvirt_uri, creds[0], creds[1])
        import libvirt

        return libvirt.open(cfg.libvirt_uri)


def lookup(conn, vm_id: str):
    """The domain with UUID *vm_id*; NoSuchVm if this host has none."""
    with translated("looking up VM", vm_id):
        return conn.lookupByUUIDString(vm_id)


def live_xml(dom, flags: int = 0) -> str:
    with translated("reading the live domain XML"):
        return dom.XMLDesc(flags)


def host_uuid(conn) -> Optional[str]:
    """The libvirt host UUID (``host_uuid`` in libvirtd.conf, else SMBIOS).

    Our record names the host its VF addresses belong to by this UUID.
    """
    with translated("reading host capabilities"):
        caps = conn.getCapabilities()
    try:
        root = etree.fromstring(caps.encode(), etree.XMLParser(resolve_entities=False,
                                                               no_network=True))
    except etree.XMLSyntaxError as e:
        raise LibvirtFailure("cannot read host capabilities: %s" % e) from e
    return (root.findtext("host/uuid") or "").strip() or None
