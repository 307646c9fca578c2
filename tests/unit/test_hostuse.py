"""hostuse: a VF the host itself uses is never offered (pure decision, fake sysfs)."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from helpers import nodedev

from sriov_host import config, hostinventory, hostuse, inventory, netlink
from sriov_host.errors import NoFreeVf
from sriov_host.hostuse import Netdev, SysfsProbe, VfFacts
from sriov_host.ledger import Ledger

IF = "ens1f0v3"


@pytest.mark.parametrize("facts, reason", [
    pytest.param(VfFacts(), None, id="nothing-known"),
    pytest.param(VfFacts(0x020000, "iavf", (Netdev(IF),)), None, id="idle-vf-netdev"),
    pytest.param(VfFacts(0x020000, "vfio-pci"), None, id="vfio-pci"),
    pytest.param(VfFacts(0x020000, "mlx5_core"), None, id="vf-driver-without-netdev"),
    pytest.param(VfFacts(0x020000, "some_new_vf", (Netdev(IF),)), None,
                 id="unknown-driver-with-netdev-is-a-kernel-nic"),
    pytest.param(VfFacts(0x020000, "iavf", (Netdev(IF, ("fe80::1",)),)), None,
                 id="ipv6-link-local-is-the-kernels"),
    pytest.param(VfFacts(0x020000, "iavf", (Netdev(IF, ("fe80::1", "192.0.2.5")),)),
                 "has address 192.0.2.5 on ens1f0v3", id="ipv4-address"),
    pytest.param(VfFacts(None, "iavf", (Netdev(IF, ("2001:db8::5",)),)),
                 "has address 2001:db8::5 on ens1f0v3", id="ipv6-global-address"),
    pytest.param(VfFacts(None, "iavf", (Netdev(IF, master="bond0", master_kind="bond"),)),
                 "ens1f0v3 is enslaved to bond0", id="bond"),
    pytest.param(VfFacts(None, "iavf", (Netdev(IF, master="br0", master_kind="bridge"),)),
                 "ens1f0v3 is in bridge br0", id="bridge"),
    pytest.param(VfFacts(None, "iavf", (Netdev(IF, master="ovs-system",
                                               master_kind="openvswitch"),)),
                 "ens1f0v3 is in Open vSwitch (master ovs-system)", id="ovs"),
    pytest.param(VfFacts(None, "iavf", (Netdev(IF, uppers=(("macvtap0", "macvtap"),)),)),
                 "has macvtap macvtap0 on ens1f0v3", id="macvtap"),
    pytest.param(VfFacts(None, "iavf", (Netdev(IF, uppers=(("ens1f0v3.100", "vlan"),)),)),
                 "has vlan ens1f0v3.100 on ens1f0v3", id="vlan"),
    pytest.param(VfFacts(None, "igb_uio"), "bound to driver igb_uio", id="dpdk-igb-uio"),
    pytest.param(VfFacts(None, "uio_pci_generic"), "bound to driver uio_pci_generic",
                 id="dpdk-uio-pci-generic"),
    pytest.param(VfFacts(0x0b4000, "c6xxvf"), "PCI class 0x0b4000 is not a network controller",
                 id="sysfs-class"),
])
def test_host_use_reason_should_name_what_the_host_does_with_the_vf(facts, reason):
    assert hostuse.host_use_reason(facts) == reason


def test_host_use_reason_should_join_every_reason():
    facts = VfFacts(None, "iavf", (Netdev(IF, ("192.0.2.5",), "bond0", "bond"),))
    assert hostuse.host_use_reason(facts) == (
        "has address 192.0.2.5 on ens1f0v3; ens1f0v3 is enslaved to bond0")
    assert hostuse.host_use_reason(None) is None


# -- a fake sysfs tree ------------------------------------------------------

def _link(path, target):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)


def fake_vf(root, address, driver="iavf", netdev=None, pci_class="0x020000", master=None,
            uppers=()):
    """One VF under *root* as sysfs shows it: class, driver link, net/<netdev>."""
    dev = os.path.join(root, "sys/devices/pci0000:3b/0000:3b:00.0", address)
    os.makedirs(dev)
    with open(os.path.join(dev, "class"), "w") as f:
        f.write(pci_class + "\n")
    _link(os.path.join(root, "sys/bus/pci/devices", address), dev)
    if driver:
        os.makedirs(os.path.join(root, "sys/bus/pci/drivers", driver), exist_ok=True)
        _link(os.path.join(dev, "driver"), os.path.join(root, "sys/bus/pci/drivers", driver))
    if netdev:
        net = os.path.join(dev, "net", netdev)
        os.makedirs(net)
        _link(os.path.join(root, "sys/class/net", netdev), net)
        if master:
            _link(os.path.join(net, "master"), os.path.join(root, "sys/class/net", master))
            _link(os.path.join(net, "upper_" + master), os.path.join(root, "sys/class/net", master))
        for upper in uppers:
            _link(os.path.join(net, "upper_" + upper), os.path.join(root, "sys/class/net", upper))


def fake_netdev(root, name, sub=None, uevent=None):
    """A virtual netdev (bond, bridge, macvtap...) with its telling subdirectory."""
    base = os.path.join(root, "sys/devices/virtual/net", name)
    os.makedirs(os.path.join(base, sub) if sub else base)
    if uevent:
        with open(os.path.join(base, "uevent"), "w") as f:
            f.write("DEVTYPE=%s\nINTERFACE=%s\n" % (uevent, name))
    _link(os.path.join(root, "sys/class/net", name), base)


[PF] = nodedev.layout(1, 8)


def _vf(i, netdev=None):
    return inventory.Vf(name=nodedev.nodedev_name(PF.vfs[i]), address=PF.vfs[i], pf=PF.name,
                        pf_address=PF.address, index=i, numa_node=0, pci_class=0x020000,
                        netdev=netdev)


@pytest.fixture
def sysfs(tmp_path):
    """VF 0 idle on iavf, 1 addressed, 2 in a bond, 3 in a bridge, 4 in OVS, 5 under a
    macvtap, 6 on igb_uio (DPDK), 7 on vfio-pci; plus the addresses netlink would tell."""
    root = str(tmp_path)
    fake_netdev(root, "bond0", "bonding")
    fake_netdev(root, "br0", "bridge")
    fake_netdev(root, "ovs-system")
    fake_netdev(root, "macvtap0", "macvtap/tap12")
    fake_vf(root, PF.vfs[0], netdev="ens1f0v0")
    fake_vf(root, PF.vfs[1], netdev="ens1f0v1")
    fake_vf(root, PF.vfs[2], netdev="ens1f0v2", master="bond0")
    fake_vf(root, PF.vfs[3], netdev="ens1f0v3", master="br0")
    fake_vf(root, PF.vfs[4], netdev="ens1f0v4", master="ovs-system")
    fake_vf(root, PF.vfs[5], netdev="ens1f0v5", uppers=("macvtap0",))
    fake_vf(root, PF.vfs[6], driver="igb_uio")
    fake_vf(root, PF.vfs[7], driver="vfio-pci")
    addresses = {"ens1f0v0": ("fe80::1",), "ens1f0v1": ("192.0.2.5", "fe80::2"),
                 "eth0": ("198.51.100.1",)}
    return root, addresses


EXPECTED = [
    None,
    "has address 192.0.2.5 on ens1f0v1",
    "ens1f0v2 is enslaved to bond0",
    "ens1f0v3 is in bridge br0",
    "ens1f0v4 is in Open vSwitch (master ovs-system)",
    "has macvtap macvtap0 on ens1f0v5",
    "bound to driver igb_uio",
    None,
]


def test_sysfs_probe_should_tell_each_kind_of_host_use(sysfs):
    root, addresses = sysfs
    calls = []
    probe = SysfsProbe(root, addresses=lambda: calls.append(1) or addresses)
    got = [hostuse.host_use_reason(probe.facts(_vf(i))) for i in range(8)]
    assert got == EXPECTED
    assert calls == [1]  # one address dump for the whole inventory
    assert probe.facts(_vf(6)) == VfFacts(0x020000, "igb_uio", ())


def test_sysfs_probe_should_know_nothing_of_a_vf_without_sysfs(tmp_path):
    probe = SysfsProbe(str(tmp_path), addresses=lambda: pytest.fail("no netdev, no dump"))
    assert probe.facts(_vf(0, netdev="ens1f0v0")) is None


def test_sysfs_probe_should_read_the_uevent_devtype_of_a_vlan_upper(tmp_path):
    root = str(tmp_path)
    fake_netdev(root, "ens1f0v0.100", uevent="vlan")
    fake_vf(root, PF.vfs[0], netdev="ens1f0v0", uppers=("ens1f0v0.100",))
    facts = SysfsProbe(root, addresses=dict).facts(_vf(0))
    assert facts.netdevs == (Netdev("ens1f0v0", (), None, None, (("ens1f0v0.100", "vlan"),)),)


def test_exclude_host_used_should_move_vfs_to_excluded_with_reasons(sysfs):
    root, addresses = sysfs
    inv = inventory.Inventory(tuple(_vf(i) for i in range(8)))
    out = hostuse.exclude_host_used(inv, SysfsProbe(root, addresses=lambda: addresses))
    assert [vf.index for vf in out.vfs] == [0, 7]
    assert [(e.vf.index, e.reason) for e in out.excluded] == [
        (i, r) for i, r in enumerate(EXPECTED) if r]
    assert [(vf.index, r) for vf, r in out.rows()] == list(enumerate(EXPECTED))
    assert set(out.by_address()) == set(PF.vfs)  # still this host's NIC VFs, for held ones
    assert hostuse.exclude_host_used(inv, SysfsProbe(str(root) + "/absent")) is inv


def test_load_should_exclude_host_used_vfs_only_for_real_vfs(sysfs, tmp_path):
    root, addresses = sysfs
    path = tmp_path / "devices.xml"
    path.write_text(nodedev.devices_xml(1, 8))
    probe = SysfsProbe(root, addresses=lambda: addresses)
    real = hostinventory.load(config.loads("[inventory]\nsource = nodedev-xml:%s\n" % path), probe=probe)
    assert [vf.index for vf in real.vfs] == [0, 7]
    emulated = hostinventory.load(config.loads("[inventory]\nsource = nodedev-xml:%s\n[vf]\n"
                                           "device = emulated\n" % path), probe=probe)
    assert len(emulated.vfs) == 8 and emulated.excluded == ()


def test_reserve_should_never_hand_out_a_host_used_vf(sysfs, tmp_path):
    root, addresses = sysfs
    inv = hostuse.exclude_host_used(inventory.Inventory(tuple(_vf(i) for i in range(8))),
                                    SysfsProbe(root, addresses=lambda: addresses))
    with Ledger(str(tmp_path / "ledger.sqlite")) as led:
        res = led.reserve("vm-a", [{"mac": "56:6f:1a:2b:00:0a"}, {"mac": "56:6f:1a:2b:00:0b"}], inv)
        assert [c.vf_index for c in res.claims] == [0, 7]
        with pytest.raises(NoFreeVf) as e:
            led.reserve("vm-b", [{"mac": "56:6f:1a:2b:00:0c"}], inv)
    assert e.value.code == 2001 and e.value.data["free"] == 0


# -- netlink addresses ------------------------------------------------------

def test_interface_addresses_should_list_loopback():
    addrs = netlink.interface_addresses()
    if not addrs:
        pytest.skip("no rtnetlink here")
    assert "127.0.0.1" in addrs.get("lo", ())


def test_interface_addresses_should_agree_with_pyroute2():
    pyroute2 = pytest.importorskip("pyroute2")
    with pyroute2.IPRoute() as ipr:
        theirs = {(socket.if_indextoname(m["index"]), m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS"))
                  for m in ipr.get_addr()}
    ours = {(name, a) for name, addrs in netlink.interface_addresses().items() for a in addrs}
    assert ours == theirs


def _rta(kind, value):
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def test_parse_newaddr_should_prefer_the_local_address():
    head = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, 7)
    ptp = head + _rta(1, socket.inet_aton("203.0.113.9")) + _rta(2, socket.inet_aton("192.0.2.5"))
    assert netlink.parse_newaddr(ptp) == (7, "192.0.2.5")
    v6 = struct.pack("=BBBBI", socket.AF_INET6, 64, 0, 0, 3) + _rta(1, socket.inet_pton(
        socket.AF_INET6, "2001:db8::5")) + _rta(8, b"\1\2\3\4\5")
    assert netlink.parse_newaddr(v6) == (3, "2001:db8::5")
    assert netlink.parse_newaddr(head) is None
