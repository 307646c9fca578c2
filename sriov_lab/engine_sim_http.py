"""The engine simulator's HTTPS edge: the server, its request handler, and REST faults.

Kept apart from the simulator's books (:mod:`sriov_lab.engine_sim`) so the
state and the engine's commands read without the plumbing.
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from . import engine_sim_xml as ex

SSO_TOKEN = "/ovirt-engine/sso/oauth/token"

log = logging.getLogger("sriov_lab.engine_sim")


@dataclass
class Recorded:
    """One request as the simulator saw it (the SSO password is redacted)."""

    method: str
    path: str
    query: dict
    headers: dict
    body: str



class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that drops its TLS handshake is no simulator failure."""
        log.debug("engine-sim: connection from %s failed", client_address, exc_info=True)


class Fault(Exception):
    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


def fault_reply(status: int, reason: str, detail: str) -> tuple:
    return status, "application/xml", ex.fault(reason, detail)


def handler(sim, ctx: ssl.SSLContext):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def setup(self):
            """TLS handshake here, in the worker, so a silent client stalls no one."""
            self.request.settimeout(10)
            self.request = ctx.wrap_socket(self.request, server_side=True)
            super().setup()

        def log_message(self, *args):
            pass

        def _serve(self):
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8") if length else ""
            headers = {k.lower(): v for k, v in self.headers.items()}
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            shown = re.sub(r"(^|&)password=[^&]*", r"\1password=***", body) if url.path == SSO_TOKEN else body
            sim._record(Recorded(self.command, url.path, query, headers, shown))
            status, ctype, text = sim.handle(self.command, url.path, query, headers, body)
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", ctype + ("; charset=utf-8" if "xml" in ctype else ""))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

    return Handler
