"""An idle-connection flood must not starve authenticated callers (mutual TLS, over the wire).

Idle TCP sockets that never start a TLS handshake used to hold every
worker until ``client_timeout``: 80 of them kept an authenticated
``ping`` waiting for about 8 s. Handshakes now run on one selector
thread under a short deadline, with a per-peer cap on how many may be
pending, so workers only ever serve authenticated callers. Every
address in 127.0.0.0/8 is loopback on Linux, so the flood can come from
another peer address on this machine.
"""

from __future__ import annotations

import socket
import time

import pytest

from jsonrpc_plugin.service import Service
from sriov_host import config

from .conftest import client_for, write_config

FLOOD = 80
LIMIT = 16


@pytest.fixture
def guarded(tmp_path, pki):
    """A service with a 1.5 s handshake deadline and LIMIT pending handshakes per peer."""
    path = write_config(tmp_path, pki)
    with open(path) as f:
        text = f.read().replace("[server]\n", "[server]\nhandshake_timeout = 1.5\n"
                                "max_pending_handshakes_per_peer = %d\n" % LIMIT)
    with open(path, "w") as f:
        f.write(text)
    svc = Service(config.load(path, required=True), port=0).start()
    yield svc
    svc.stop()


def _idle(svc, n, source="127.0.0.5"):
    return [socket.create_connection(("127.0.0.1", svc.port), timeout=5, source_address=(source, 0))
            for _ in range(n)]


def _closed_by_server(sock, within: float) -> bool:
    """True if the server closes *sock* within *within* seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionError:
        return True


def _close_all(socks):
    for s in socks:
        s.close()


def test_authenticated_ping_should_be_served_during_an_idle_flood(service, pki):
    flood = _idle(service, FLOOD)
    try:
        time.sleep(0.2)  # the server has accepted them all
        client = client_for(service, pki, timeout=5)
        start = time.monotonic()
        for _ in range(3):
            assert client.call("SRIOV.ping", {})["version"]
        took = time.monotonic() - start
    finally:
        _close_all(flood)
    assert took < 1.0, "3 pings took %.2f s during a flood of %d idle sockets" % (took, FLOOD)


def test_idle_sockets_from_the_callers_own_address_should_not_block_it(guarded, pki):
    flood = _idle(guarded, LIMIT - 1, source="127.0.0.1")
    try:
        time.sleep(0.2)
        client = client_for(guarded, pki, timeout=5)
        start = time.monotonic()
        assert client.call("SRIOV.ping", {})["version"]
        took = time.monotonic() - start
    finally:
        _close_all(flood)
    assert took < 1.0, took


def test_a_peer_over_its_limit_should_lose_its_oldest_pending_handshakes(guarded, pki):
    first = _idle(guarded, LIMIT, source="127.0.0.6")
    time.sleep(0.2)
    newer = _idle(guarded, 4, source="127.0.0.6")
    try:
        assert all(_closed_by_server(s, 1.0) for s in first[:4])
        assert not any(_closed_by_server(s, 0.05) for s in first[4:] + newer)  # within the deadline
        assert client_for(guarded, pki).call("SRIOV.ping", {})["version"]  # other peers unaffected
    finally:
        _close_all(first + newer)


def test_a_caller_flooded_from_its_own_address_should_still_get_through(guarded, pki):
    flood = _idle(guarded, 3 * LIMIT, source="127.0.0.1")  # past the cap: the oldest go
    try:
        time.sleep(0.2)
        assert client_for(guarded, pki, timeout=5).call("SRIOV.ping", {})["version"]
    finally:
        _close_all(flood)


def test_a_silent_socket_should_be_dropped_at_the_handshake_deadline(guarded, pki):
    (silent,) = _idle(guarded, 1)
    try:
        start = time.monotonic()
        assert _closed_by_server(silent, 5.0)
        took = time.monotonic() - start
    finally:
        silent.close()
    assert 1.0 <= took < 3.0, took  # handshake_timeout = 1.5 s, not client_timeout
