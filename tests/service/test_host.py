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


def test_release_should_drop_a_reservation_while_libvirtd_is_down_and_keep_vfs_in_use(tmp_path):
    """A failed migration whose destination libvirtd died must not strand the reservation."""
    from helpers import nodedev

    from jsonrpc_plugin.client import RpcClient
    from jsonrpc_plugin.service import Service
    from sriov_host import config, inventory
    from sriov_host.ledger import IN_USE

    inv_path = tmp_path / "nodedev.xml"
    inv_path.write_text(nodedev.devices_xml(pfs=1, vfs=4))
    conf = tmp_path / "c.conf"
    conf.write_text("[server]\ntls = false\n[ledger]\npath = %s\n[inventory]\nsource = nodedev-xml:%s\n"
                    % (tmp_path / "ledger.sqlite", inv_path))

    def down():
        raise LibvirtFailure("connecting to libvirt: Failed to connect socket")

    svc = Service(config.load(str(conf)), insecure=True, port=0, reconcile=False,
                  conn_factory=down).start()
    try:
        inv = inventory.load_nodedev_file(str(inv_path))
        vm = "4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11"
        svc.ledger.reserve(vm, [{"mac": "00:1a:4a:16:01:51"}], inv, ttl=60)
        svc.ledger.hold(vm, [{"vf": inv.vfs[3], "mac": "00:1a:4a:16:01:52"}], IN_USE)
        client = RpcClient("127.0.0.1", svc.port, insecure=True)
        assert client.call("SRIOV.releaseVfs", {"vmID": vm}) == {"released": 1}
        assert [c.state for c in svc.ledger.claims(vm_id=vm)] == [IN_USE]
    finally:
        svc.stop()
