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
                            "mac", "vlan", "numa_node"}
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
