"""``sriov-client`` and :class:`RpcClient`: JSON-RPC 2.0 over (mutual) TLS.

jsonrpclib's ServerProxy is not thread-safe and has no timeout, so this
is a small POST with http.client: one fresh connection per call, with
the timeout on connect, handshake and every read. Any failure to get an
answer is :class:`RpcUnavailable`; an answer that is an error is
:class:`RpcError` (code, message, data).

The CLI follows vdsm-client: ``sriov-client [-a HOST] [-p PORT]
[--insecure] [--timeout S] [-f FILE|-] SRIOV METHOD [name=value ...]``.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import socket
import ssl
import sys
import time
from typing import Any, Optional

from sriov_host.config import VDSM_CA, VDSM_CERT, VDSM_KEY

from .rpcerrors import RpcError, RpcUnavailable  # noqa: F401 - the client's callers catch them here

DEFAULT_PORT = 54325
NAMESPACE = "SRIOV"
# values are strings on the command line, like vdsm-client
_INT_PARAMS = ("ttl", "port", "timeout", "max_parallel")


def client_ssl_context(cert: Optional[str], key: Optional[str], ca: Optional[str],
                       check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    try:
        ctx.load_verify_locations(cafile=ca or VDSM_CA)
        ctx.load_cert_chain(cert or VDSM_CERT, key or VDSM_KEY)
    except (OSError, ssl.SSLError) as e:
        raise RpcUnavailable("cannot load TLS material (cert %s, key %s, ca %s): %s" % (
            cert or VDSM_CERT, key or VDSM_KEY, ca or VDSM_CA, _one_line(e))) from None
    return ctx


def certificate_name(path: str) -> Optional[str]:
    """The host name a certificate is for: its first DNS SAN, else its CN; None if unreadable.

    VDSM's certificate names the host's FQDN, not ``localhost``: a client
    on the host checks the server's certificate against that name.
    """
    try:
        decoded = ssl._ssl._test_decode_cert(path)  # the stdlib's own PEM reader; no extra package
    except (OSError, ssl.SSLError, AttributeError, ValueError):
        return None
    dns = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    if dns:
        return dns[0]
    cns = [value for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"]
    return cns[0] if cns else None


def _own_cert() -> str:
    """The certificate this host's service presents ([server] cert, else VDSM's)."""
    from sriov_host import config as config_mod
    from sriov_host.errors import SriovError

    try:
        return config_mod.load().cert
    except SriovError:
        return VDSM_CERT


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """Connect to one address, check the certificate against another name."""

    def __init__(self, host, port, server_hostname, **kwargs):
        super().__init__(host, port, **kwargs)
        self._server_hostname = server_hostname

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_hostname)


class RpcClient:
    """Thread-safe: every call opens, uses and closes its own connection."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, cert: Optional[str] = None,
                 key: Optional[str] = None, ca: Optional[str] = None, insecure: bool = False,
                 timeout: float = 10.0, check_hostname: bool = True,
                 server_hostname: Optional[str] = None):
        self.host = host
        self.server_hostname = server_hostname
        self.port = int(port)
        self.timeout = timeout
        self.insecure = insecure
        self._ctx = None if insecure else client_ssl_context(cert, key, ca, check_hostname)
        self._ids = itertools.count(1)

    def call(self, method: str, params: Any = None) -> Any:
        """Call ``method`` (e.g. ``SRIOV.reserveVfs``); return its result or raise."""
        body = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                           "params": {} if params is None else params}).encode()
        status, raw = self._post(body)
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise RpcUnavailable("%s answered HTTP %d with a body that is not JSON"
                                 % (self._where(), status)) from None
        if not isinstance(answer, dict):
            raise RpcUnavailable("%s answered with a malformed JSON-RPC response" % self._where())
        if answer.get("error") is not None:
            err = answer["error"] if isinstance(answer["error"], dict) else {}
            raise RpcError(err.get("code", -32603), err.get("message", "unknown error"), err.get("data"))
        if "result" not in answer:
            raise RpcUnavailable("%s answered with neither result nor error" % self._where())
        return answer["result"]

    def _post(self, body: bytes):
        if self._ctx is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        elif self.server_hostname:
            conn = _NamedHTTPSConnection(self.host, self.port, self.server_hostname,
                                         timeout=self.timeout, context=self._ctx)
        else:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self._ctx)
        try:
            conn.request("POST", "/", body, {"Content-Type": "application/json",
                                             "Connection": "close"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except socket.timeout:
            raise RpcUnavailable("%s: no answer within %.1f s" % (self._where(), self.timeout)) from None
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            raise RpcUnavailable("%s: %s" % (self._where(), _one_line(e))) from None
        finally:
            conn.close()

    def _where(self) -> str:
        return "%s://%s:%d" % ("http" if self.insecure else "https", self.host, self.port)


def _one_line(e) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# -- CLI -----------------------------------------------------------------


def _parse_args(argv):
    p = argparse.ArgumentParser(
        prog="sriov-client", description="Call the SR-IOV migration service (vdsm-client syntax).",
        epilog="example: sriov-client SRIOV migrate vmID=UUID dst=host2.example.com")
    p.add_argument("-a", "--host", default=None,
                   help="service host (default: this host, checked against the name in its own "
                        "certificate, as VDSM's certificate names the FQDN)")
    p.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="port (default %d)" % DEFAULT_PORT)
    p.add_argument("--insecure", "--unsecure", action="store_true", help="plain HTTP, no TLS")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    p.add_argument("-f", "--file", help="read the params as a JSON object from FILE ('-': stdin)")
    p.add_argument("--cert", default=VDSM_CERT, help="client certificate (default %s)" % VDSM_CERT)
    p.add_argument("--key", default=VDSM_KEY, help="client key (default %s)" % VDSM_KEY)
    p.add_argument("--ca", default=VDSM_CA, help="CA bundle (default %s)" % VDSM_CA)
    p.add_argument("--no-verify-hostname", action="store_true",
                   help="accept a server certificate that does not name HOST")
    p.add_argument("namespace", help="always SRIOV")
    p.add_argument("method", help="ping, listVfs, listVms, reserveVfs, releaseVfs, getReservation, "
                                  "migrationStatus, restoreNics, announce, "
                                  "migrate (waits and shows progress), evacuate dsts=B,C "
                                  "[max_parallel=N] [dry_run=true] [vms=UUID,...] (drains this "
                                  "host: plans, reserves all, then moves; waits, shows each VM's "
                                  "progress and a summary), evacuateStatus, recentMigrations")
    p.add_argument("args", nargs="*", metavar="name=value")
    return p.parse_args(argv)


def _params(args) -> dict:
    params = {}
    if args.file:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
        params = json.loads(text)
        if not isinstance(params, dict):
            raise ValueError("the params file must hold a JSON object")
    for item in args.args:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError("argument %r is not name=value" % item)
        params[name] = int(value) if name in _INT_PARAMS and value.isdigit() else value
    return params


def main(argv=None) -> int:
    args = _parse_args(argv)
    if args.namespace != NAMESPACE:
        print("sriov-client: unknown namespace %r (only %s)" % (args.namespace, NAMESPACE),
              file=sys.stderr)
        return 2
    try:
        params = _params(args)
    except (OSError, ValueError) as e:
        print("sriov-client: bad params: %s" % _one_line(e), file=sys.stderr)
        return 2
    method = "%s.%s" % (NAMESPACE, args.method)
    try:
        client = RpcClient(args.host or "localhost", args.port, args.cert, args.key, args.ca,
                           args.insecure, args.timeout, check_hostname=not args.no_verify_hostname,
                           server_hostname=None if args.host else certificate_name(_own_cert()))
        result = client.call(method, params)
    except RpcError as e:
        print("sriov-client: Command %s with args %s failed:\n(code=%s, message=%s)%s"
              % (method, json.dumps(params), e.code, e.message,
                 "\ndata: %s" % json.dumps(e.data, sort_keys=True) if e.data else ""),
              file=sys.stderr)
        return 1
    except RpcUnavailable as e:
        print("sriov-client: Connection to %s:%d failed: %s" % (args.host or "localhost", args.port,
                                                                e.message),
              file=sys.stderr)
        return 1
    if args.method == "migrate":
        return follow_migration(client, params, result)
    if args.method == "evacuate":
        from .drain_cli import follow_drain

        return follow_drain(client, result)
    print(json.dumps(result, indent=4, sort_keys=True))
    return 0


FOLLOW_POLL = 0.5
FOLLOW_MARGIN = 120.0
FOLLOW_MISSES = 5  # answers in a row that may fail (a service restart, a VM just leaving)


def follow_migration(client: RpcClient, params: dict, started: dict, out=None, err=None,
                     sleep=time.sleep, clock=time.monotonic) -> int:
    """Show each step of an ``SRIOV.migrate`` as it ends; rc 0 only if every vNIC is plugged on dst.

    No fixed deadline (a large VM migrates long): it gives up only when the
    job has not moved (phase, steps, VDSM's progress) for longer than the
    service's stall timeout would allow.
    """
    out, err = out or sys.stdout, err or sys.stderr
    vm_id = started["vmID"]
    deadline, moved = clock() + float(params.get("timeout") or 600) + FOLLOW_MARGIN, None
    shown, job, misses = 0, None, 0
    while clock() < deadline:
        try:
            job = client.call("SRIOV.migrationStatus", {"vmID": vm_id}).get("migration")
            misses = 0
        except (RpcError, RpcUnavailable) as e:
            misses += 1
            if misses >= FOLLOW_MISSES:
                print("sriov-client: lost track of the migration of %s: %s" % (vm_id, e), file=err)
                return 1
            sleep(FOLLOW_POLL)
            continue
        steps = (job or {}).get("steps", [])
        done = [s for s in steps if s["ms"] is not None]
        for step in done[shown:]:
            print("[%s] %-8s %-4s %7.0f ms  %s" % (time.strftime("%H:%M:%S", time.localtime(step["start"])),
                                                 step["step"], "ok" if step["ok"] else "FAIL",
                                                 step["ms"], step["detail"]), file=err)
        shown = len(done)
        if job and job["done"]:
            break
        if job and (job["phase"], len(steps), job.get("progress")) != moved:
            moved = (job["phase"], len(steps), job.get("progress"))
            idle = job.get("stall_timeout") or params.get("timeout") or 600
            deadline = clock() + float(idle) + FOLLOW_MARGIN
        sleep(FOLLOW_POLL)
    if not job or not job["done"]:
        print("sriov-client: migration of %s did not end in time; see SRIOV migrationStatus" % vm_id,
              file=err)
        return 1
    print(json.dumps(job, indent=4, sort_keys=True), file=out)
    for line in vnic_lines(job):
        print(line, file=err)
    return 0 if job["phase"] == "migrated" else 1


def vnic_lines(job: dict) -> list:
    """One line per vNIC saying where it is, and the verdict."""
    lines = []
    for v in job.get("vnics", []):
        where = job["dst"] if v.get("host") != "source" else "the source"
        lines.append("vnic %s (%s): %s on %s%s" % (v.get("mac"), v.get("alias"), v.get("state"), where,
                                                   " (VF %s)" % v["vf_address"] if v.get("vf_address")
                                                   else "") + (": %s" % v["error"] if v.get("error") else ""))
    verdict = ("migrated to %s with every vNIC plugged" % job["dst"] if job["phase"] == "migrated"
               else "%s: %s" % (job["phase"], job.get("error")))
    lines.append("sriov-client: %s" % verdict)
    return lines


if __name__ == "__main__":
    sys.exit(main())
