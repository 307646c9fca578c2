"""The JSON-RPC 2.0 server: jsonrpclib-pelix, mutual TLS finished before a worker is spent.

jsonrpclib's TLS recipe wraps the listening socket, so the handshake
runs on the accept thread and one silent client stalls everyone; done
on a pool worker instead, a flood of idle sockets holds every worker.
Here the accept thread only accepts, the handshake thread
(:mod:`.handshake`) finishes handshakes under a deadline and a per-peer
cap, and a bounded pool of workers serves authenticated sockets only.
Bodies over ``max_request_bytes`` are refused (413) before they are read.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from typing import Optional

import jsonrpclib.config
from jsonrpclib.SimpleJSONRPCServer import PooledJSONRPCServer, SimpleJSONRPCRequestHandler
from jsonrpclib.threadpool import ThreadPool

from sriov_host.errors import ConfigError

from .handshake import Handshaker, one_line

log = logging.getLogger("sriov-migrationd.server")

# Never let a peer instantiate classes through "__jsonclass__" hints
JSON_CONFIG = jsonrpclib.config.Config(use_jsonclass=False, content_type="application/json")


def server_ssl_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """Mutual TLS: our cert, and a client cert signed by the (VDSM) CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError("cannot load TLS material (cert %s, key %s, ca %s): %s"
                          % (cert, key, ca, getattr(e, "strerror", None) or e)) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class RequestHandler(SimpleJSONRPCRequestHandler):
    """A request on an authenticated socket (TLS already done), under a timeout; quiet log."""

    rpc_paths = ("/", "/RPC2", "/jsonrpc")

    def setup(self):
        self.timeout = self.server.client_timeout
        self.request.settimeout(self.timeout)
        super().setup()

    def _send_fault_response(self, status, message, config):
        self._body_unread = True
        super()._send_fault_response(status, message, config)

    def finish(self):
        try:
            super().finish()
            if getattr(self, "_body_unread", False):
                self._drain()
        finally:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.close()

    def _drain(self, seconds: float = 2.0, budget: int = 64 << 20) -> None:
        """Read and drop an unread body (bounded) so closing sends no RST.

        Closing a socket with unread data resets the connection, and the
        client may then lose the 413 answer it has not read yet.
        """
        deadline = time.monotonic() + seconds
        try:
            while budget > 0 and time.monotonic() < deadline:
                self.request.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = self.request.recv(min(budget, 1 << 16))
                if not chunk:
                    return
                budget -= len(chunk)
        except (OSError, ValueError):
            return

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.client_address[0], fmt % args)


class RpcServer(PooledJSONRPCServer):
    """A pooled JSON-RPC server that can be stopped whether or not it ever served."""

    allow_reuse_address = True
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, address, ssl_context=None, workers: int = 8, max_request_bytes: int = 1 << 20,
                 client_timeout: float = 10.0, handshake_timeout: float = 3.0,
                 handshakes_per_peer: int = 32):
        self.ssl_context = ssl_context
        self.client_timeout = client_timeout
        self._pool = ThreadPool(workers, 1, queue_size=workers * 16, timeout=1.0,
                                logname="sriov-migrationd.pool")
        self._pool.start()
        self._handshaker = None
        if ssl_context is not None:
            self._handshaker = Handshaker(ssl_context, self._enqueue, handshake_timeout,
                                          handshakes_per_peer).start()
        self._serving = threading.Event()
        handler = type("Handler", (RequestHandler,), {"max_request_size": max_request_bytes})
        try:
            super().__init__(address, requestHandler=handler, logRequests=False,
                             config=JSON_CONFIG, thread_pool=self._pool)
        except OSError:
            self._pool.stop()
            if self._handshaker is not None:
                self._handshaker.stop()
            raise

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request, client_address):
        if self._handshaker is not None:
            self._handshaker.submit(request, client_address)
        else:
            self._enqueue(request, client_address)

    def _enqueue(self, request, client_address):
        try:
            self._pool.enqueue(self.process_request_thread, request, client_address)
        except queue.Full:
            log.warning("worker queue full; dropping connection from %s", client_address[0])
            self.shutdown_request(request)

    def handle_error(self, request, client_address):
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (socket.timeout, ConnectionError, ssl.SSLError)):
            log.info("connection from %s dropped: %s", client_address[0], one_line(exc))
        else:
            log.exception("error serving %s", client_address[0])

    def serve_forever(self, poll_interval=0.2):
        self._serving.set()
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving.clear()

    def stop(self):
        """Stop accepting, close the socket, drain the workers (never hangs)."""
        if self._serving.is_set():
            self.shutdown()
        self.socket.close()
        if self._handshaker is not None:
            self._handshaker.stop()
        self._pool.stop()

    server_close = stop


def plain_address(address: Optional[str], on_network: bool) -> str:
    """Where plain HTTP may listen: loopback, unless the admin said so in so many words."""
    if not address:
        return "127.0.0.1"
    if on_network or _is_loopback(address):
        return address
    log.warning("plain HTTP is served on 127.0.0.1, not on %s: pass "
                "--insecure-listen-on-network to serve it unencrypted on the network", address)
    return "127.0.0.1"


def _is_loopback(address: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def build_server(cfg, verbs, insecure: bool = False, port=None, listen=None,
                 plain_on_network: bool = False) -> RpcServer:
    """Bind (TLS unless asked otherwise) and register every ``SRIOV.*`` verb."""
    tls = cfg.tls and not insecure
    ctx = server_ssl_context(cfg.cert, cfg.key, cfg.ca) if tls else None
    address = listen or cfg.listen or "0.0.0.0"
    if not tls:
        address = plain_address(listen or cfg.listen, plain_on_network)
    server = RpcServer((address, cfg.port if port is None else port), ctx, workers=cfg.workers,
                       max_request_bytes=cfg.max_request_bytes, client_timeout=cfg.client_timeout,
                       handshake_timeout=cfg.handshake_timeout,
                       handshakes_per_peer=cfg.max_pending_handshakes_per_peer)
    for name, func in verbs.registered().items():
        server.register_function(func, name)
    return server


class ServerThread:
    """Run a server on a thread; used by the service and by in-process tests."""

    def __init__(self, server: RpcServer):
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name="sriov-rpc-accept",
                                        daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        self.server._serving.wait(5)
        return self

    def stop(self):
        self.server.stop()
        self._thread.join(5)
