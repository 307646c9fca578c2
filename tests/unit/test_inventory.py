"""inventory: PFs and VFs from libvirt's test driver and from nodedev-xml files."""

from __future__ import annotations

import pytest
from helpers import nodedev
from hypothesis import given, settings
from hypothesis import strategies as st

from sriov_host import config, hostinventory, inventory
from sriov_host.errors import InventoryError

libvirt = pytest.importorskip("libvirt")


@pytest.fixture(scope="module")
def big_host(tmp_path_factory):
    """8 PFs x 128 VFs through the test driver, plus the same XML as a file."""
    d = tmp_path_factory.mktemp("host")
    uri = nodedev.write_node(d / "node.xml", pfs=8, vfs=128)
    (d / "devices.xml").write_text(nodedev.devices_xml(8, 128))
    conn = libvirt.open(uri)
    yield conn, d / "devices.xml"
    conn.close()


def expected_rows(pfs=8, vfs=128):
    return sorted(
        (pf.name, i, addr, pf.address, nodedev.nodedev_name(addr), pf.numa_node)
        for pf in nodedev.layout(pfs, vfs) for i, addr in enumerate(pf.vfs))


def rows(inv):
    return sorted((v.pf, v.index, v.address, v.pf_address, v.name, v.numa_node) for v in inv.vfs)


def test_load_from_libvirt_should_list_8x128_vfs(big_host):
    conn, _ = big_host
    inv = inventory.load_from_libvirt(conn)
    assert len(inv.vfs) == 1024
    assert rows(inv) == expected_rows()
    assert inv.pfs == ["ens1f0", "ens1f1", "ens2f0", "ens2f1", "ens3f0", "ens3f1", "ens4f0", "ens4f1"]
    assert len(inv.addresses) == 1024


def test_load_from_libvirt_should_need_xml_not_list_caps(big_host):
    conn, _ = big_host
    pf = conn.nodeDeviceLookupByName("pci_0000_3b_00_0")
    assert pf.listCaps() == ["pci"]  # virt_functions is only in the XML
    assert "virt_functions" in pf.XMLDesc(0)


def test_nodedev_file_should_match_libvirt_inventory(big_host):
    conn, path = big_host
    assert inventory.load_nodedev_file(str(path)) == inventory.load_from_libvirt(conn)


def test_load_should_follow_config_source(big_host, tmp_path):
    conn, path = big_host
    by_file = hostinventory.load(config.loads("[inventory]\nsource = nodedev-xml:%s\n" % path))
    by_libvirt = hostinventory.load(config.loads(""), conn)
    assert by_file == by_libvirt
    with pytest.raises(InventoryError, match="needs a libvirt connection"):
        hostinventory.load(config.loads(""))


def test_inventory_should_order_vfs_by_pf_then_index(big_host):
    inv = inventory.load_nodedev_file(str(big_host[1]))
    assert [(v.pf, v.index) for v in inv.vfs] == sorted((v.pf, v.index) for v in inv.vfs)
    vf = inv.by_address()["0000:3e:0f.7"]
    assert (vf.pf, vf.pf_address, vf.index, vf.numa_node) == ("ens1f1", "0000:3d:00.0", 127, 1)
    assert vf.to_json() == {"name": "pci_0000_3e_0f_7", "address": "0000:3e:0f.7", "pf": "ens1f1",
                            "pf_address": "0000:3d:00.0", "index": 127, "numa_node": 1}


def _small_host(with_net=True, vf_numa=True, pf_numa=1, vf_docs=True):
    [pf] = nodedev.layout(1, 3)
    pf = nodedev.PfLayout(pf.name, pf.address, pf.vfs, pf_numa)
    docs = [nodedev.pf_device(pf)]
    if with_net:
        docs.append(nodedev.net_device(pf, 0))
    if vf_docs:
        docs += [nodedev.vf_device(pf, a, numa=vf_numa) for a in pf.vfs]
    return pf, docs


@pytest.mark.parametrize("kw, pf_name, numa", [
    pytest.param({}, "ens1f0", 1, id="full"),
    pytest.param({"with_net": False}, "0000:3b:00.0", 1, id="pf-without-netdev-uses-address"),
    pytest.param({"pf_numa": -1}, "ens1f0", None, id="numa-minus-one-is-none"),
    pytest.param({"vf_docs": False}, "ens1f0", 1, id="vf-devices-missing-use-pf-numa"),
])
def test_inventory_should_handle_host_variants(tmp_path, kw, pf_name, numa):
    pf, docs = _small_host(**kw)
    conn = libvirt.open(_write(tmp_path / "n.xml", nodedev.node_xml(docs)))
    try:
        inv = inventory.load_from_libvirt(conn)
    finally:
        conn.close()
    assert [(v.name, v.pf, v.index, v.numa_node) for v in inv.vfs] == [
        (nodedev.nodedev_name(a), pf_name, i, numa) for i, a in enumerate(pf.vfs)]
    assert inventory.parse_devices_xml("<devices>%s</devices>" % "".join(docs)) == inv


def _write(path, text):
    path.write_text(text)
    return "test://%s" % path


def test_inventory_should_ignore_test_driver_domains(tmp_path):
    _, docs = _small_host()
    domain = ("<domain type='test'><name>vm1</name><memory>1048576</memory>"
              "<os><type>hvm</type></os></domain>")
    conn = libvirt.open(_write(tmp_path / "n.xml", nodedev.node_xml(docs, [domain])))
    try:
        assert [d.name() for d in conn.listAllDomains()] == ["vm1"]
        assert len(inventory.load_from_libvirt(conn).vfs) == 3
    finally:
        conn.close()


@pytest.mark.parametrize("text, fragment", [
    pytest.param("<devices><device>", "malformed", id="malformed"),
    pytest.param("<!DOCTYPE devices [<!ENTITY x 'y'>]><devices/>", "DTD", id="dtd"),
    pytest.param("", "empty", id="empty"),
])
def test_load_nodedev_file_should_refuse_bad_files(tmp_path, text, fragment):
    path = tmp_path / "devices.xml"
    path.write_text(text)
    with pytest.raises(InventoryError, match=fragment):
        inventory.load_nodedev_file(str(path))


def test_load_nodedev_file_should_report_missing_file(tmp_path):
    with pytest.raises(InventoryError, match="cannot read nodedev inventory"):
        inventory.load_nodedev_file(str(tmp_path / "absent.xml"))


def test_parse_devices_xml_should_accept_one_device_and_empty_host():
    pf, docs = _small_host()
    assert inventory.parse_devices_xml(docs[0]).vfs[0].address == pf.vfs[0]
    assert inventory.parse_devices_xml("<devices/>").vfs == ()


_PF_CAP = ("<devices><device><name>pci_0000_3b_00_0</name><capability type='pci'>"
           "<domain>0</domain><bus>59</bus><slot>0</slot><function>0</function>%s"
           "</capability></device></devices>")


@pytest.mark.parametrize("inner", [
    pytest.param("<capability type='virt_functions'><address bus='zz'/></capability>",
                 id="vf-bus-not-a-number"),
    pytest.param("<capability type='virt_functions'><address domain='0' bus='0x1ff' slot='0'"
                 " function='0'/></capability>", id="vf-bus-out-of-range"),
    pytest.param("<capability type='phys_function'><address domain='0' bus='0x3b' slot='0x20'"
                 " function='0'/></capability>", id="pf-slot-out-of-range"),
])
def test_parse_devices_xml_should_refuse_bad_pci_addresses(inner):
    with pytest.raises(InventoryError, match="bad PCI address"):
        inventory.parse_devices_xml(_PF_CAP % inner)


_SMALL = nodedev.devices_xml(1, 3).encode()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(_SMALL) - 1), st.integers(1, 30), st.binary(max_size=6))
def test_parse_devices_xml_should_raise_only_inventory_error_on_mangled_xml(pos, cut, junk):
    try:
        inv = inventory.parse_devices_xml(_SMALL[:pos] + junk + _SMALL[pos + cut:])
    except InventoryError as e:
        assert "\n" not in e.message
    else:
        assert len(inv.vfs) <= 3


# -- only network VFs are offered -------------------------------------------

def _crypto_host(**kw):
    """A QAT-like crypto PF (named by its address, so its VFs sort first) and one NIC PF."""
    return nodedev.crypto_devices(vfs=4, **kw) + nodedev.devices(1, 2)


@pytest.mark.parametrize("source", ["libvirt", "nodedev-xml"])
def test_inventory_should_exclude_vfs_that_are_not_network_controllers(tmp_path, source):
    docs = _crypto_host()
    if source == "libvirt":
        conn = libvirt.open(_write(tmp_path / "n.xml", nodedev.node_xml(docs)))
        try:
            inv = inventory.load_from_libvirt(conn)
        finally:
            conn.close()
    else:
        inv = inventory.parse_devices_xml("<devices>%s</devices>" % "".join(docs))
    qat = nodedev.crypto_layout(vfs=4)
    [nic] = nodedev.layout(1, 2)
    assert [vf.address for vf in inv.vfs] == list(nic.vfs)
    assert [(e.vf.address, e.vf.pf, e.vf.index, e.reason) for e in inv.excluded] == [
        (a, "0000:1a:00.0", i, "PCI class 0x0b4000 is not a network controller")
        for i, a in enumerate(qat.vfs)]
    assert [vf.address for vf, _ in inv.rows()] == list(qat.vfs) + list(nic.vfs)
    assert set(inv.by_address()) == inv.addresses == set(nic.vfs)  # a QAT <hostdev> is no vNIC
    assert inv.pfs == ["ens1f0"]


@pytest.mark.parametrize("kw, offered", [
    pytest.param({"pci_class": "0x020000"}, True, id="ethernet"),
    pytest.param({"pci_class": "0x028000"}, True, id="other-network-controller"),
    pytest.param({"pci_class": "0x0b4000", "vf_class": "0x020000"}, True,
                 id="the-vf-own-class-decides"),
    pytest.param({"pci_class": "0x020000", "vf_class": "0x120000"}, False,
                 id="accelerator-vf-of-a-nic-pf"),
    pytest.param({"pci_class": None}, True, id="no-class-before-libvirt-6-is-unknown-not-refused"),
])
def test_inventory_should_decide_by_the_vf_class(kw, offered):
    docs = nodedev.crypto_devices(vfs=2, **kw)
    inv = inventory.parse_devices_xml("<devices>%s</devices>" % "".join(docs))
    assert (len(inv.vfs), len(inv.excluded)) == ((2, 0) if offered else (0, 2))


def test_inventory_should_use_the_pf_class_for_vfs_without_a_device():
    [pf_doc] = nodedev.crypto_devices(vfs=2)[:1]
    inv = inventory.parse_devices_xml("<devices>%s</devices>" % pf_doc)
    assert inv.vfs == () and len(inv.excluded) == 2


def test_parse_devices_xml_should_refuse_a_bad_class():
    doc = nodedev.crypto_devices(vfs=1)[0].replace("0x0b4000", "0xzz")
    with pytest.raises(InventoryError, match="bad PCI class"):
        inventory.parse_devices_xml(doc)


def test_reserve_should_never_hand_out_a_crypto_vf(tmp_path):
    from sriov_host.errors import NoFreeVf
    from sriov_host.ledger import Ledger

    inv = inventory.parse_devices_xml("<devices>%s</devices>" % "".join(_crypto_host()))
    [nic] = nodedev.layout(1, 2)
    with Ledger(str(tmp_path / "ledger.sqlite")) as led:
        res = led.reserve("vm-a", [{"mac": "56:6f:1a:2b:00:0a"}, {"mac": "56:6f:1a:2b:00:0b"}], inv)
        assert [c.vf_address for c in res.claims] == list(nic.vfs)
        with pytest.raises(NoFreeVf) as e:
            led.reserve("vm-b", [{"mac": "56:6f:1a:2b:00:0c"}], inv)
        with pytest.raises(NoFreeVf):
            led.reserve("vm-c", [{"mac": "56:6f:1a:2b:00:0d", "pf": "0000:1a:00.0"}], inv)
    assert e.value.data == {"requested": 1, "free": 0}
