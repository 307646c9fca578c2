"""vfstate: listVfs rows from the ledger plus what domains hold (test driver)."""

from __future__ import annotations

import pytest
from helpers import nodedev

from sriov_host import domxml, inventory, vfstate
from sriov_host.ledger import IN_USE, Ledger

libvirt = pytest.importorskip("libvirt")

VM_UUID = "7a9c0e12-3b4d-4e5f-8a6b-7c8d9e0f1a22"


def test_vf_table_should_merge_ledger_and_domain_refs(tmp_path):
    [pf] = nodedev.layout(1, 4)
    vnic = domxml.Vnic(alias="ua-vf", mac="56:6f:1a:2b:00:01", vlan=100)
    domain = ("<domain type='test'><name>engine-vm</name><uuid>%s</uuid><memory>1048576</memory>"
              "<os><type>hvm</type></os><devices>%s</devices></domain>"
              % (VM_UUID, domxml.render_attach(vnic, pf.vfs[3])))
    path = tmp_path / "node.xml"
    path.write_text(nodedev.node_xml(nodedev.devices(1, 4), [domain]))
    conn = libvirt.open("test://%s" % path)
    try:
        inv = inventory.load_from_libvirt(conn)
        refs = vfstate.scan_domain_refs(conn)
    finally:
        conn.close()
    assert refs == {pf.vfs[3]: VM_UUID}
    with Ledger(str(tmp_path / "ledger.sqlite")) as led:
        res = led.reserve("vm-a", [{"mac": "56:6f:1a:2b:00:0a", "vlan": 7}, {"mac": "56:6f:1a:2b:00:0b"}],
                          inv, taken_by_domains=set(refs))
        led.set_state("vm-a", res.claims[1].vf_address, IN_USE)
        rows = vfstate.vf_table(inv, led.claims(), refs)
    assert [(r["address"], r["state"], r["vm_id"], r["mac"], r["vlan"]) for r in rows] == [
        (pf.vfs[0], "reserved", "vm-a", "56:6f:1a:2b:00:0a", 7),
        (pf.vfs[1], "in_use", "vm-a", "56:6f:1a:2b:00:0b", None),
        (pf.vfs[2], "free", None, None, None),
        (pf.vfs[3], "in_use", VM_UUID, None, None),
    ]
    assert set(rows[0]) == {"name", "address", "pf", "pf_address", "index", "state", "vm_id",
                            "mac", "vlan", "numa_node", "reason"}
    assert {r["reason"] for r in rows} == {None}
    assert vfstate.vf_table(inv, [], refs, pf="ens9f9") == []


def test_vf_table_should_take_mac_and_vlan_from_the_kernel_where_the_ledger_is_silent():
    from sriov_host.inventory import Inventory, Vf
    from sriov_host.ledger import Claim

    vfs = tuple(Vf(name="vf%d" % i, address="0000:05:10.%d" % i, pf="ens1f0",
                   pf_address="0000:05:00.0", index=i) for i in range(3))
    claim = Claim("0000:05:10.0", "vf0", "ens1f0", 0, "vm-a", "56:6f:1a:2b:00:0a", "ua-a", 7, None,
                  "in_use", None, 0.0)
    kernel = {("ens1f0", 0): ("02:00:00:00:00:99", 5), ("ens1f0", 1): ("56:6f:1a:2b:00:0c", 100)}
    rows = vfstate.vf_table(Inventory(vfs), [claim], {"0000:05:10.1": VM_UUID}, kernel=kernel)
    assert [(r["state"], r["vm_id"], r["mac"], r["vlan"]) for r in rows] == [
        ("in_use", "vm-a", "56:6f:1a:2b:00:0a", 7),          # the ledger's record wins
        ("in_use", VM_UUID, "56:6f:1a:2b:00:0c", 100),      # engine-placed: the kernel tells
        ("free", None, None, None),                         # the kernel knows nothing of it
    ]


def test_kernel_vf_settings_should_be_empty_for_a_pf_that_does_not_exist():
    from sriov_host import netlink

    assert netlink.kernel_vf_settings(["no-such-pf0"]) == {}
    assert netlink.vf_settings("no-such-pf0", 0) is None


def test_vf_table_should_list_excluded_vfs_with_their_reason():
    from sriov_host.inventory import Excluded, Inventory, Vf

    def vf(i, pf="ens1f0"):
        return Vf(name="vf%d" % i, address="0000:05:10.%d" % i, pf=pf, pf_address="0000:05:00.0",
                  index=i)

    inv = Inventory((vf(0), vf(2)), (Excluded(vf(1), "has address 192.0.2.5 on ens1f0v1"),
                                     Excluded(vf(3), "bound to driver igb_uio")))
    rows = vfstate.vf_table(inv, [], {"0000:05:10.3": VM_UUID})
    assert [(r["index"], r["state"], r["vm_id"], r["reason"]) for r in rows] == [
        (0, "free", None, None),
        (1, "excluded", None, "has address 192.0.2.5 on ens1f0v1"),
        (2, "free", None, None),
        (3, "in_use", VM_UUID, "bound to driver igb_uio"),   # a VM's hold shows; so does why
    ]


# -- over the wire: a service on a test-driver host --------------------------

VM_A = "aaaaaaaa-0000-4000-8000-000000000001"
VM_B = "bbbbbbbb-0000-4000-8000-000000000002"
QAT_REASON = "PCI class 0x0b4000 is not a network controller"


@pytest.fixture
def crypto_service(tmp_path):
    """A plain-HTTP service on a host with a QAT-like PF (4 VFs, first by name) and ens1f0 (2)."""
    from jsonrpc_plugin.client import RpcClient
    from jsonrpc_plugin.service import Service
    from sriov_host import config

    uri = nodedev.write_node(tmp_path / "node.xml", pfs=1, vfs=2,
                             extra_devices=nodedev.crypto_devices(vfs=4))
    cfg = config.loads("[libvirt]\nuri = %s\n[ledger]\npath = %s\n[server]\ntls = false\n"
                       % (uri, tmp_path / "ledger.sqlite"))
    svc = Service(cfg, insecure=True, port=0, reconcile=False).start()
    try:
        yield RpcClient("127.0.0.1", svc.port, insecure=True)
    finally:
        svc.stop()


def _reserve(client, vm, mac, **nic):
    return client.call("SRIOV.reserveVfs", {"vmID": vm, "nics": [dict(nic, mac=mac)]})


def test_reservevfs_should_skip_excluded_vfs_and_answer_2001_when_only_they_remain(crypto_service):
    from jsonrpc_plugin.client import RpcError

    client = crypto_service
    [nic] = nodedev.layout(1, 2)
    got = client.call("SRIOV.reserveVfs", {"vmID": VM_A, "nics": [
        {"mac": "56:6f:1a:2b:00:0a"}, {"mac": "56:6f:1a:2b:00:0b"}]})
    assert [n["vf"]["address"] for n in got["nics"]] == list(nic.vfs)
    with pytest.raises(RpcError) as e:
        _reserve(client, VM_B, "56:6f:1a:2b:00:0c")
    assert e.value.code == 2001 and e.value.data == {"requested": 1, "free": 0}
    with pytest.raises(RpcError) as e:
        _reserve(client, VM_B, "56:6f:1a:2b:00:0c", pf="0000:1a:00.0")
    assert e.value.code == 2001 and e.value.data["pf"] == "0000:1a:00.0"


def test_listvfs_should_show_excluded_vfs_with_their_reason(crypto_service):
    rows = crypto_service.call("SRIOV.listVfs")
    qat = nodedev.crypto_layout(vfs=4)
    assert [(r["address"], r["state"], r["reason"]) for r in rows[:4]] == [
        (a, "excluded", QAT_REASON) for a in qat.vfs]
    assert [(r["pf"], r["state"], r["reason"]) for r in rows[4:]] == [("ens1f0", "free", None)] * 2
    only = crypto_service.call("SRIOV.listVfs", {"pf": "0000:1a:00.0"})
    assert [r["index"] for r in only] == [0, 1, 2, 3]


def test_reservevfs_should_skip_a_vf_the_host_uses(crypto_service, tmp_path, monkeypatch):
    """The service's default probe reads this host's sysfs: point it at a fake one."""
    import functools

    from test_hostuse import fake_vf

    from jsonrpc_plugin.client import RpcError
    from sriov_host import hostuse

    [nic] = nodedev.layout(1, 2)
    fake_vf(str(tmp_path / "root"), nic.vfs[0], netdev="ens1f0v0")
    monkeypatch.setattr(hostuse, "SysfsProbe", functools.partial(
        hostuse.SysfsProbe, str(tmp_path / "root"), addresses=lambda: {"ens1f0v0": ("192.0.2.5",)}))
    client = crypto_service
    rows = {r["address"]: r for r in client.call("SRIOV.listVfs")}
    assert rows[nic.vfs[0]]["state"] == "excluded"
    assert rows[nic.vfs[0]]["reason"] == "has address 192.0.2.5 on ens1f0v0"
    got = _reserve(client, VM_A, "56:6f:1a:2b:00:0a")
    assert got["nics"][0]["vf"]["address"] == nic.vfs[1]
    with pytest.raises(RpcError) as e:
        _reserve(client, VM_B, "56:6f:1a:2b:00:0b")
    assert e.value.code == 2001
