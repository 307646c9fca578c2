"""TLS handshakes on one selector thread, under a deadline and a per-peer cap.

A worker that does a handshake itself sits idle for as long as the peer
says nothing: 80 idle sockets with no certificate kept every worker busy
and an authenticated ``ping`` waited 8 s. Here a pending handshake costs
a file descriptor, not a thread; only a socket whose peer proved a
trusted certificate reaches the worker pool. A handshake not finished
within ``deadline`` seconds is dropped. Each peer address may have at
most ``per_peer`` handshakes pending, and all peers ``MAX_PENDING``
together: over either cap the *oldest* pending one goes, so an idle
flood makes room for itself at its own expense while a real client,
whose handshake takes milliseconds, gets through.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("sriov-migrationd.server")

MAX_PENDING = 2048  # over all peers: a bound on file descriptors (the unit allows 8192)


@dataclass
class _Pending:
    sock: ssl.SSLSocket
    peer: tuple
    expires: float


class Handshaker:
    """Finish TLS handshakes without blocking; hand authenticated sockets to *ready*.

    *ready(sock, peer)* runs on the handshake thread and must not block
    (the server enqueues to its worker pool).
    """

    def __init__(self, ctx: ssl.SSLContext, ready: Callable, deadline: float = 3.0,
                 per_peer: int = 128, clock=time.monotonic, max_pending: int = MAX_PENDING):
        self.ctx, self.ready, self.deadline, self.per_peer = ctx, ready, deadline, per_peer
        self.clock, self.max_pending = clock, max_pending
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._incoming: list = []
        self._stopping = False
        # Handshake thread only: pending handshakes, oldest first.
        self._by_peer: dict = {}
        self._all: OrderedDict = OrderedDict()
        self._thread = threading.Thread(target=self._run, name="sriov-rpc-handshake", daemon=True)

    def start(self) -> Handshaker:
        self._thread.start()
        return self

    def submit(self, sock: socket.socket, peer: tuple) -> None:
        """Take a fresh connection (from the accept thread)."""
        with self._lock:
            if self._stopping:
                _close(sock)
                return
            self._incoming.append((sock, peer))
        self._wake()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(5)

    # -- the handshake thread --------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # already stopped, or the pipe is full: it wakes anyway

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        break
                    incoming, self._incoming = self._incoming, []
                for sock, peer in incoming:
                    self._guarded(self._begin, sock, peer)
                for key, _events in self._sel.select(self._next_timeout()):
                    if key.data is None:
                        self._drain_wake()
                    elif id(key.data) in self._all:
                        self._guarded(self._step, key.data)
                self._expire()
        finally:
            self._close_all()

    def _guarded(self, step, first, *rest) -> None:
        """One connection's bug must not stop every handshake: log it, drop that one."""
        try:
            step(first, *rest)
        except Exception:  # noqa: BLE001 - this thread serves every peer
            log.exception("handshake thread: %s failed", step.__name__)
            if isinstance(first, _Pending) and id(first) in self._all:
                self._forget(first)
                _close(first.sock)
            elif not isinstance(first, _Pending):
                _close(first)

    def _begin(self, sock, peer) -> None:
        try:
            sock.setblocking(False)
            tls = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as e:
            log.info("TLS handshake with %s failed: %s", peer[0], one_line(e))
            _close(sock)
            return
        p = _Pending(tls, peer, self.clock() + self.deadline)
        self._sel.register(tls, selectors.EVENT_READ, p)
        self._by_peer.setdefault(peer[0], deque()).append(p)
        self._all[id(p)] = p
        mine = self._by_peer[peer[0]]
        while len(mine) > self.per_peer:
            self._drop(mine[0], "closing the oldest of %d pending TLS handshakes from %s"
                       % (len(mine), peer[0]))
        while len(self._all) > self.max_pending:
            oldest = next(iter(self._all.values()))
            self._drop(oldest, "closing the oldest of %d pending TLS handshakes (from %s)"
                       % (len(self._all), oldest.peer[0]))
        if id(p) in self._all:
            self._step(p)

    def _step(self, p: _Pending) -> None:
        try:
            p.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._sel.modify(p.sock, selectors.EVENT_READ, p)
            return
        except ssl.SSLWantWriteError:
            self._sel.modify(p.sock, selectors.EVENT_WRITE, p)
            return
        except (OSError, ValueError) as e:
            self._drop(p, "TLS handshake with %s failed: %s" % (p.peer[0], one_line(e)))
            return
        self._forget(p)
        p.sock.setblocking(True)
        self.ready(p.sock, p.peer)

    def _expire(self) -> None:
        """Drop what outlived the deadline; oldest first, so stop at the first still in time."""
        now = self.clock()
        while self._all:
            p = next(iter(self._all.values()))
            if now < p.expires:
                return
            self._drop(p, "TLS handshake with %s not finished within %.1f s; closed"
                       % (p.peer[0], self.deadline))

    def _next_timeout(self) -> float:
        if not self._all:
            return 1.0
        soonest = next(iter(self._all.values())).expires
        return max(0.0, min(1.0, soonest - self.clock()))

    def _drop(self, p: _Pending, why: str) -> None:
        self._forget(p)
        log.info("%s", why)
        _close(p.sock)

    def _forget(self, p: _Pending) -> None:
        self._sel.unregister(p.sock)
        del self._all[id(p)]
        mine = self._by_peer[p.peer[0]]
        mine.remove(p)
        if not mine:
            del self._by_peer[p.peer[0]]

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _close_all(self) -> None:
        for p in self._all.values():
            _close(p.sock)
        self._all.clear()
        self._by_peer.clear()
        with self._lock:
            for sock, _peer in self._incoming:
                _close(sock)
            self._incoming = []
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


def _close(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


def one_line(e) -> str:
    """An exception as one log line."""
    return " ".join(str(e).split()) or type(e).__name__
