"""The service's libvirt connection: reopened after libvirtd restarts, with backoff."""

from __future__ import annotations

import pytest

from jsonrpc_plugin.host import HostContext
from sriov_host.config import Config
from sriov_host.errors import LibvirtFailure


class Conn:
    def __init__(self):
        self.alive = True

    def isAlive(self):
        return self.alive


class Factory:
    """Opens a Conn unless libvirtd is 'down'; counts the tries."""

    def __init__(self):
        self.down, self.tries, self.opened = False, 0, []

    def __call__(self):
        self.tries += 1
        if self.down:
            raise LibvirtFailure("connecting to libvirt: Failed to connect socket")
        self.opened.append(Conn())
        return self.opened[-1]


def test_conn_should_reopen_after_libvirtd_restarts_and_back_off_while_it_is_down():
    now = [100.0]
    factory = Factory()
    host = HostContext(Config(), ledger=None, conn_factory=factory, clock=lambda: now[0])
    first = host.conn()
    first.alive, factory.down = False, True
    with pytest.raises(LibvirtFailure):
        host.conn()
    with pytest.raises(LibvirtFailure, match="next try in"):
        host.conn()
    assert factory.tries == 2  # the second call did not touch the socket
    factory.down = False
    now[0] += 10
    second = host.conn()
    assert second is not first and second.alive and factory.tries == 3
    assert host.conn() is second


@pytest.mark.parametrize("address, on_network, expected", [
    pytest.param(None, False, "127.0.0.1", id="default"),
    pytest.param("192.0.2.10", False, "127.0.0.1", id="tls-address-not-kept"),
    pytest.param("0.0.0.0", False, "127.0.0.1", id="wildcard-not-kept"),
    pytest.param("127.0.0.12", False, "127.0.0.12", id="other-loopback"),
    pytest.param("192.0.2.10", True, "192.0.2.10", id="said-in-words"),
])
def test_plain_http_should_listen_on_loopback_unless_told_in_words(address, on_network, expected):
    from jsonrpc_plugin.server import plain_address

    assert plain_address(address, on_network) == expected


def test_insecure_service_should_not_serve_plain_http_on_the_tls_address(tmp_path):
    from jsonrpc_plugin.service import Service
    from sriov_host import config

    conf = tmp_path / "c.conf"
    conf.write_text("[server]\nlisten = 0.0.0.0\ntls = true\n[ledger]\npath = %s\n" % (tmp_path / "l"))
    svc = Service(config.load(str(conf)), insecure=True, port=0, reconcile=False).start()
    try:
        assert svc.address == "127.0.0.1"
    finally:
        svc.stop()
