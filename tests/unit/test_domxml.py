"""domxml: vNIC discovery, VDSM custom properties, strip and render."""

from __future__ import annotations

import pytest
from helpers.corpus import read_domain
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from sriov_host import domxml, metadata
from sriov_host.errors import BadDomainXml

A1 = "ua-11111111-aaaa-4bbb-8ccc-000000000001"
A2 = "ua-11111111-aaaa-4bbb-8ccc-000000000002"
A3 = "ua-11111111-aaaa-4bbb-8ccc-000000000003"


def canon(xml) -> str:
    """C14N 2.0 with insignificant whitespace dropped."""
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8")
    elif not isinstance(xml, str):
        xml = etree.tostring(xml, encoding="unicode")
    return etree.canonicalize(xml, strip_text=True)


def vnic_tuples(vnics):
    return [(v.kind, v.alias, v.mac, v.vf_address, v.vlan, v.teaming, v.network) for v in vnics]


# -- find_vnics on the corpus ---------------------------------------------

@pytest.mark.parametrize("name, vf_addresses, expected", [
    pytest.param("no_sriov", (), [], id="no-sriov"),
    pytest.param("one_vf_vlan", (), [
        ("interface", "ua-a3f1e2d4-7b6c-4d5e-8f90-1a2b3c4d5e61", "56:6f:1a:2b:00:01",
         "0000:05:10.2", 100, None, "sriov-red"),
    ], id="one-vf-with-vlan"),
    pytest.param("several_vfs", (), [
        ("interface", A1, "56:6f:1a:2b:01:01", "0000:05:10.0", 100, None, "sriov-red"),
        ("interface", A2, "56:6f:1a:2b:01:02", "0000:05:10.4", 200, None, "sriov-red"),
        ("interface", A3, "56:6f:1a:2b:01:03", "0000:05:10.1", None, None, "sriov-blue"),
    ], id="several-vfs"),
    pytest.param("failover", (), [
        ("interface", "ua-22222222-aaaa-4bbb-8ccc-00000000000a", "56:6f:1a:2b:02:01",
         "0000:05:10.6", 100, "ua-22222222-aaaa-4bbb-8ccc-00000000000b", "sriov-red"),
    ], id="failover-pair-only-the-transient-vf"),
    pytest.param("plain_hostdev", (), [], id="plain-hostdev-unknown-vf"),
    pytest.param("plain_hostdev", ("0000:05:10.3", "0000:05:10.4"), [
        ("hostdev", "ua-33333333-aaaa-4bbb-8ccc-000000000001", None, "0000:05:10.3",
         None, None, None),
    ], id="plain-hostdev-known-vf"),
])
def test_find_vnics_should_return_sriov_vnics(name, vf_addresses, expected):
    root = domxml.parse_domain(read_domain(name))
    assert vnic_tuples(domxml.find_vnics(root, vf_addresses=vf_addresses)) == expected


def test_find_vnics_should_key_vnics_by_alias_or_vf():
    root = domxml.parse_domain(read_domain("plain_hostdev"))
    [vnic] = domxml.find_vnics(root, vf_addresses=["0000:05:10.3"])
    assert vnic.key == "ua-33333333-aaaa-4bbb-8ccc-000000000001"
    assert domxml.Vnic(alias=None, mac=None, vf_address="0000:05:10.3").key == "vf:0000:05:10.3"


def test_domain_uuid_should_read_uuid():
    root = domxml.parse_domain(read_domain("several_vfs"))
    assert domxml.domain_uuid(root) == "7a9c0e12-3b4d-4e5f-8a6b-7c8d9e0f1a22"


# -- VDSM custom properties -----------------------------------------------

def test_vdsm_device_custom_should_map_mac_to_properties():
    root = domxml.parse_domain(read_domain("mixed_migratable"))
    assert domxml.vdsm_device_custom(root) == {
        "56:6f:1a:2b:04:01": {"sriov_migratable": "true"},
        "56:6f:1a:2b:04:02": {"sriov_migratable": "FALSE"},
    }


@pytest.mark.parametrize("name, expected", [
    pytest.param("mixed_migratable", {"sriov_migratable": "yes"}, id="vm-property-set"),
    pytest.param("one_vf_vlan", {}, id="empty-custom"),
])
def test_vdsm_vm_custom_should_read_vm_properties(name, expected):
    assert domxml.vdsm_vm_custom(domxml.parse_domain(read_domain(name))) == expected


def test_vdsm_device_networks_should_map_mac_to_network():
    root = domxml.parse_domain(read_domain("one_vf_vlan"))
    assert domxml.vdsm_device_networks(root) == {
        "56:6f:1a:2b:00:01": "sriov-red", "56:6f:1a:2b:00:00": "ovirtmgmt"}


def test_vdsm_custom_should_ignore_comments_and_lowercase_macs():
    root = domxml.parse_domain(
        "<domain xmlns:ovirt-vm='http://ovirt.org/vm/1.0'><metadata><ovirt-vm:vm>"
        "<ovirt-vm:device mac_address='56:6F:1A:2B:00:0A'><ovirt-vm:custom><!-- c -->"
        "<ovirt-vm:sriov_migratable> no </ovirt-vm:sriov_migratable></ovirt-vm:custom>"
        "</ovirt-vm:device></ovirt-vm:vm></metadata></domain>")
    assert domxml.vdsm_device_custom(root) == {"56:6f:1a:2b:00:0a": {"sriov_migratable": "no"}}


# -- hostile and broken input ---------------------------------------------

@pytest.mark.parametrize("data, fragment", [
    pytest.param(read_domain("malformed"), "malformed", id="truncated"),
    pytest.param(read_domain("xxe"), "DTD", id="xxe"),
    pytest.param(read_domain("billion_laughs"), "DTD", id="billion-laughs"),
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"<vm/>", "expected <domain>", id="wrong-root"),
    pytest.param(b"\xff\xfe<\x00d\x00", "malformed", id="binary"),
])
def test_parse_domain_should_refuse_bad_xml_with_one_line(data, fragment):
    with pytest.raises(BadDomainXml) as ei:
        domxml.parse_domain(data)
    assert fragment in ei.value.message
    assert "\n" not in ei.value.message
    assert "root:" not in ei.value.message  # /etc/passwd never leaks


def test_parse_domain_should_refuse_utf16_encoded_dtd():
    xml = read_domain("xxe").decode().replace('encoding="utf-8"', 'encoding="utf-16"')
    with pytest.raises(BadDomainXml):
        domxml.parse_domain(xml.encode("utf-16"))


@pytest.mark.parametrize("snippet, fragment", [
    pytest.param("<mac address='56:6f:1a:2b:zz:01'/>", "bad MAC", id="bad-mac"),
    pytest.param("<mac/>", "bad MAC", id="mac-without-address"),
    pytest.param("<vlan><tag id='4095'/></vlan>", "out of range", id="vlan-4095"),
    pytest.param("<vlan><tag id='red'/></vlan>", "bad VLAN", id="vlan-not-int"),
    pytest.param("<source><address type='pci' bus='zz'/></source>", "PCI", id="bad-pci"),
    pytest.param("<source><address type='pci' domain='0' bus='5' slot='16' function='9'/></source>",
                 "out of range", id="pci-function-9"),
    pytest.param("<source><address type='pci' domain='0' bus='0x105' slot='0' function='0'/>"
                 "</source>", "out of range", id="pci-bus-9-bits"),
])
def test_find_vnics_should_refuse_bad_interface(snippet, fragment):
    root = domxml.parse_domain(
        "<domain><devices><interface type='hostdev'>%s</interface></devices></domain>" % snippet)
    with pytest.raises(BadDomainXml, match=fragment):
        domxml.find_vnics(root)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_parse_domain_should_raise_only_bad_domain_xml_on_any_bytes(data):
    try:
        root = domxml.parse_domain(data)
    except BadDomainXml as e:
        assert "\n" not in e.message
    else:
        assert root.tag == "domain"


_CORPUS = read_domain("several_vfs")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(_CORPUS) - 1), st.integers(1, 40), st.binary(max_size=8))
def test_find_vnics_should_raise_only_bad_domain_xml_on_mangled_domain(pos, cut, junk):
    data = _CORPUS[:pos] + junk + _CORPUS[pos + cut:]
    try:
        root = domxml.parse_domain(data)
        vnics = domxml.find_vnics(root)
        domxml.referenced_vf_addresses(root)
    except BadDomainXml:
        return
    assert all(v.kind == "interface" for v in vnics)


# -- strip_vnics -----------------------------------------------------------

STRIP_BEFORE = """
<domain type='kvm'>
  <devices>
    <disk type='file' device='disk'><target dev='sda' bus='scsi'/></disk>
    <interface type='bridge'>
      <mac address='56:6f:1a:2b:00:00'/><source bridge='ovirtmgmt'/>
      <alias name='ua-bridge'/>
    </interface>
    <interface type='hostdev' managed='no'>
      <mac address='56:6f:1a:2b:00:01'/>
      <source><address type='pci' domain='0x0000' bus='0x05' slot='0x10' function='0x2'/></source>
      <vlan><tag id='100'/></vlan>
      <driver name='vfio'/>
      <alias name='ua-vf1'/>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x05' slot='0x10' function='0x3'/></source>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source>
      <alias name='ua-gpu'/>
    </hostdev>
  </devices>
</domain>
"""

STRIP_AFTER = """
<domain type='kvm'>
  <devices>
    <disk type='file' device='disk'><target dev='sda' bus='scsi'/></disk>
    <interface type='bridge'>
      <mac address='56:6f:1a:2b:00:00'/><source bridge='ovirtmgmt'/>
      <alias name='ua-bridge'/>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source>
      <alias name='ua-gpu'/>
    </hostdev>
  </devices>
</domain>
"""


def test_strip_vnics_should_remove_only_sriov_vnics():
    root = domxml.parse_domain(STRIP_BEFORE)
    vnics = domxml.find_vnics(root, vf_addresses=["0000:05:10.3"])
    assert [v.key for v in vnics] == ["ua-vf1", "vf:0000:05:10.3"]
    assert canon(domxml.strip_vnics(root, vnics)) == canon(STRIP_AFTER)


def test_strip_vnics_should_keep_failover_persistent_nic():
    root = domxml.parse_domain(read_domain("failover"))
    before = canon(root)
    domxml.strip_vnics(root, domxml.find_vnics(root))
    assert domxml.find_vnics(root) == []
    persistent = root.findall("devices/interface/teaming[@type='persistent']")
    assert len(persistent) == 1
    assert canon(root) != before
    assert domxml.attached_keys(root) == {"ua-22222222-aaaa-4bbb-8ccc-00000000000b",
                                         "ua-5e2d7c1b-3a4f-4e6d-9c8b-1a2b3c4d5e60"}


def test_strip_vnics_should_leave_domain_unchanged_without_vnics():
    root = domxml.parse_domain(read_domain("no_sriov"))
    before = canon(root)
    assert canon(domxml.strip_vnics(root, domxml.find_vnics(root))) == before


def test_strip_vnics_should_not_strip_aliasless_non_vf_devices():
    xml = ("<domain><devices><interface type='bridge'><source bridge='b'/></interface>"
           "<interface type='hostdev'><mac address='56:6f:1a:2b:00:01'/>"
           "<source><address type='pci' domain='0' bus='5' slot='16' function='2'/></source>"
           "</interface></devices></domain>")
    root = domxml.parse_domain(xml)
    stray = domxml.Vnic(alias=None, mac="56:6f:1a:2b:00:09")  # key vf:None
    domxml.strip_vnics(root, [stray])
    assert len(root.findall("devices/interface")) == 2


def test_attached_keys_should_list_aliases_and_vf_keys():
    root = domxml.parse_domain(STRIP_BEFORE)
    assert domxml.attached_keys(root) == {"ua-bridge", "ua-vf1", "vf:0000:05:10.3", "ua-gpu"}


@pytest.mark.parametrize("key,vf,expected", [
    pytest.param("ua-vf1", "0000:05:10.2", True, id="on-its-vf"),
    pytest.param("ua-vf1", "0000:05:10.4", False, id="on-another-vf"),
    pytest.param("ua-vf1", None, True, id="no-vf-named"),
    pytest.param("ua-bridge", "0000:05:10.2", True, id="no-source-address"),
    pytest.param("vf:0000:05:10.3", "0000:05:10.3", True, id="aliasless-by-vf"),
    pytest.param("ua-gone", None, False, id="not-attached"),
])
def test_holds_should_say_whether_the_vnic_is_still_on_its_vf(key, vf, expected):
    assert domxml.holds(domxml.parse_domain(STRIP_BEFORE), key, vf) is expected


# -- render_attach ----------------------------------------------------------

@pytest.mark.parametrize("vnic, vf, expected", [
    pytest.param(
        domxml.Vnic(alias="ua-vf1", mac="56:6f:1a:2b:00:01", vlan=100), "0000:05:10.2",
        "<interface type='hostdev' managed='yes'><mac address='56:6f:1a:2b:00:01'/>"
        "<source><address type='pci' domain='0x0000' bus='0x05' slot='0x10' function='0x2'/>"
        "</source><vlan><tag id='100'/></vlan><driver name='vfio'/><alias name='ua-vf1'/>"
        "</interface>", id="interface-with-vlan"),
    pytest.param(
        domxml.Vnic(alias="ua-vf2", mac="56:6f:1a:2b:00:02", teaming="ua-virtio"), "0000:3c:01.7",
        "<interface type='hostdev' managed='yes'><mac address='56:6f:1a:2b:00:02'/>"
        "<source><address type='pci' domain='0x0000' bus='0x3c' slot='0x01' function='0x7'/>"
        "</source><driver name='vfio'/><alias name='ua-vf2'/>"
        "<teaming type='transient' persistent='ua-virtio'/></interface>", id="failover-member"),
    pytest.param(
        domxml.Vnic(alias="ua-hd", mac=None, kind="hostdev"), "0000:05:10.3",
        "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
        "<address type='pci' domain='0x0000' bus='0x05' slot='0x10' function='0x3'/></source>"
        "<alias name='ua-hd'/></hostdev>", id="plain-hostdev"),
])
def test_render_attach_should_render_hostdev_mode(vnic, vf, expected):
    assert canon(domxml.render_attach(vnic, vf)) == canon(expected)


@pytest.mark.parametrize("model", [pytest.param("virtio", id="virtio"),
                                   pytest.param("e1000e", id="e1000e")])
def test_render_attach_should_render_emulated_nic(model):
    vnic = domxml.Vnic(alias="ua-vf1", mac="56:6f:1a:2b:00:01", vlan=100, teaming="ua-p")
    xml = domxml.render_attach(vnic, "0000:05:10.2", mode=domxml.MODE_EMULATED, model=model)
    assert canon(xml) == canon(
        "<interface type='user'><mac address='56:6f:1a:2b:00:01'/><model type='%s'/>"
        "<alias name='ua-vf1'/></interface>" % model)


def test_render_attach_should_put_an_emulated_nic_on_its_bridge():
    vnic = domxml.Vnic(alias="ua-vf1", mac="56:6f:1a:2b:00:01", guest_address="0000:00:07.0")
    xml = domxml.render_attach(vnic, "0000:05:10.2", mode=domxml.MODE_EMULATED, bridge="srbab12cda")
    assert canon(xml) == canon(
        "<interface type='bridge'><source bridge='srbab12cda'/><mac address='56:6f:1a:2b:00:01'/>"
        "<model type='virtio'/><alias name='ua-vf1'/>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></interface>")


def test_render_attach_should_refuse_unknown_emulated_model():
    with pytest.raises(ValueError, match="virtio"):
        domxml.render_attach(domxml.Vnic(alias="a", mac=None), "0000:05:10.2",
                             mode=domxml.MODE_EMULATED, model="rtl8139")


def test_render_attach_should_round_trip_through_find_vnics():
    vnics = domxml.find_vnics(domxml.parse_domain(read_domain("several_vfs")))
    devices = "".join(domxml.render_attach(v, v.vf_address) for v in vnics)
    root = domxml.parse_domain("<domain><devices>%s</devices></domain>" % devices)
    again = domxml.find_vnics(root)
    assert [(v.alias, v.mac, v.vf_address, v.vlan, v.teaming) for v in again] == \
        [(v.alias, v.mac, v.vf_address, v.vlan, v.teaming) for v in vnics]


def test_render_attach_should_be_accepted_by_libvirt_test_driver(tmp_path):
    libvirt = pytest.importorskip("libvirt")
    from helpers import nodedev

    uri = nodedev.write_node(tmp_path / "node.xml", pfs=1, vfs=4)
    conn = libvirt.open(uri)
    try:
        vf1, vf2 = nodedev.layout(1, 4)[0].vfs[:2]
        devices = (domxml.render_attach(domxml.Vnic(alias="ua-vf1", mac="56:6f:1a:2b:00:01",
                                                    vlan=100, teaming="ua-virtio"), vf1)
                   + domxml.render_attach(domxml.Vnic(alias="ua-hd", mac=None, kind="hostdev"),
                                          vf2))
        dom = conn.defineXML("<domain type='test'><name>vm1</name><memory>1048576</memory>"
                             "<os><type>hvm</type></os><devices>%s</devices></domain>" % devices)
        dom.create()
        live = domxml.parse_domain(dom.XMLDesc(0))
        found = domxml.find_vnics(live, vf_addresses=[vf2])
        assert vnic_tuples(found) == [
            ("interface", "ua-vf1", "56:6f:1a:2b:00:01", vf1, 100, "ua-virtio", None),
            ("hostdev", "ua-hd", None, vf2, None, None, None)]
        assert domxml.referenced_vf_addresses(live) == {vf1, vf2}
    finally:
        conn.close()


# -- emulated mode and referenced VFs ----------------------------------------

def _record(host="host-a", state=metadata.UNPLUGGED):
    return metadata.MigrationRecord(host=host, phase="migrating", vnics=(
        metadata.VnicRecord(alias="ua-vf1", mac="56:6f:1a:2b:00:01", vf_address="0000:05:10.2",
                            pf="ens1f0", vlan=100, network="sriov-red", state=state),
    ))


def test_find_vnics_should_use_record_in_emulated_mode():
    root = domxml.parse_domain(
        "<domain><devices><interface type='user'><mac address='56:6F:1A:2B:00:01'/>"
        "<model type='virtio'/><alias name='ua-vf1'/></interface>"
        "<interface type='user'><mac address='56:6f:1a:2b:00:07'/><alias name='ua-other'/>"
        "</interface></devices></domain>")
    metadata.write_record(root, _record())
    [vnic] = domxml.find_vnics(root, mode=domxml.MODE_EMULATED)
    assert (vnic.alias, vnic.mac, vnic.vf_address, vnic.vlan, vnic.pf, vnic.network) == \
        ("ua-vf1", "56:6f:1a:2b:00:01", "0000:05:10.2", 100, "ens1f0", "sriov-red")
    assert domxml.find_vnics(root) == []  # hostdev mode ignores emulated NICs


@pytest.mark.parametrize("host_id, state, expected", [
    pytest.param(None, metadata.UNPLUGGED, {"0000:05:10.2"}, id="any-host"),
    pytest.param("host-a", metadata.PLUGGED, {"0000:05:10.2"}, id="record-of-this-host"),
    pytest.param("host-b", metadata.UNPLUGGED, set(), id="record-of-source-host"),
    pytest.param("host-a", metadata.FAILED, set(), id="failed-vnic"),
])
def test_referenced_vf_addresses_should_count_record_of_this_host(host_id, state, expected):
    root = domxml.parse_domain(read_domain("no_sriov"))
    metadata.write_record(root, _record(state=state))
    assert domxml.referenced_vf_addresses(root, host_id) == expected


@pytest.mark.parametrize("name, expected", [
    pytest.param("several_vfs", {"0000:05:10.0", "0000:05:10.4", "0000:05:10.1"}, id="interfaces"),
    pytest.param("plain_hostdev", {"0000:05:10.3", "0000:3b:00.0"}, id="hostdevs"),
    pytest.param("no_sriov", set(), id="none"),
])
def test_referenced_vf_addresses_should_read_hostdev_sources(name, expected):
    assert domxml.referenced_vf_addresses(domxml.parse_domain(read_domain(name))) == expected


def test_referenced_vf_addresses_should_keep_hostdevs_when_record_unreadable():
    root = domxml.parse_domain(read_domain("several_vfs"))
    metadata.write_record(root, _record())
    root.find("metadata/{%s}migration" % metadata.NS).set("version", "99")
    assert domxml.referenced_vf_addresses(root) == {"0000:05:10.0", "0000:05:10.4", "0000:05:10.1"}


def test_find_vnics_should_keep_the_guest_pci_address_and_render_attach_should_reuse_it():
    from sriov_host import metadata

    root = domxml.parse_domain(read_domain("several_vfs"))
    vnic = domxml.find_vnics(root)[0]
    assert vnic.guest_address is not None
    rec = metadata.VnicRecord(alias=vnic.alias, mac=vnic.mac, vf_address="0000:3c:00.1",
                              guest_address=vnic.guest_address)
    back = metadata.from_element(metadata.to_element(metadata.MigrationRecord(vnics=(rec,))))
    assert back.vnics[0].guest_address == vnic.guest_address
    again = domxml.vnic_from_record(back.vnics[0])
    elem = etree.fromstring(domxml.render_attach(again, "0000:3c:00.1"))
    placed = elem.find("address")
    assert placed.get("type") == "pci"
    assert str(domxml.PciAddress.from_attrs(placed.attrib)) == vnic.guest_address
    bare = etree.fromstring(domxml.render_attach(again, "0000:3c:00.1", at_guest_address=False))
    assert bare.find("address") is None and bare.find("source/address") is not None
    emulated = etree.fromstring(domxml.render_attach(again, "", mode=domxml.MODE_EMULATED))
    assert emulated.find("address").get("slot") == placed.get("slot")


STANDBYS = """<domain><devices>
  <interface type='bridge'><source bridge='ovirtmgmt'/><mac address='56:6f:1a:2b:00:01'/>
    <model type='virtio'/><teaming type='persistent'/><alias name='ua-standby'/></interface>
  <interface type='user'><mac address='56:6f:1a:2b:00:02'/><teaming type='persistent'/>
    <alias name='ua-usermode'/></interface>
  <interface type='bridge'><mac address='56:6f:1a:2b:00:03'/><alias name='ua-nosource'/></interface>
</devices></domain>"""


@pytest.mark.parametrize("alias,bridge", [
    pytest.param("ua-standby", "ovirtmgmt", id="bridge"),
    pytest.param("ua-usermode", None, id="not-a-bridge"),
    pytest.param("ua-nosource", None, id="no-source"),
    pytest.param("ua-missing", None, id="missing"),
])
def test_standby_bridge_should_name_the_partners_host_bridge(alias, bridge):
    assert domxml.standby_bridge(domxml.parse_domain(STANDBYS), alias) == bridge
