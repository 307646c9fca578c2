"""Lab VMs look to the hooks like VDSM's: ovirt-vm metadata, our record, failover pairs."""

from __future__ import annotations

import pytest
from lxml import etree

from sriov_host import domxml, libvirtconn, metadata

pytestmark = pytest.mark.lab


def test_lab_vm_should_carry_vdsm_metadata_and_our_record(lab_conns, lab_vms):
    vnic = lab_vms.vnic(0, n=3)
    spec, dom = lab_vms.start(0, with_os=False, machine="q35", vnics=(vnic,))

    root = domxml.parse_domain(dom.XMLDesc(0))

    assert domxml.vdsm_device_custom(root) == {vnic.mac: {"sriov_migratable": "true"}}
    assert domxml.vdsm_device_networks(root) == {vnic.mac: "lab-net"}
    record = metadata.read_record(root)
    assert record.host == libvirtconn.host_uuid(lab_conns[0])
    assert [(v.alias, v.vf_address, v.state) for v in record.vnics] == [
        (vnic.alias, vnic.vf_address, metadata.PLUGGED)]
    found = domxml.find_vnics(root, mode=domxml.MODE_EMULATED)
    assert [(v.alias, v.mac, v.vf_address) for v in found] == [
        (vnic.alias, vnic.mac, vnic.vf_address)]


def test_persistent_teaming_on_user_virtio_should_be_accepted_without_transient_peer(lab_vms):
    vnic = lab_vms.vnic(0, failover_alias="ua-partner")
    spec, dom = lab_vms.start(0, with_os=False, vnics=(vnic,), persistent_teaming=True)

    root = etree.fromstring(dom.XMLDesc(0).encode())

    partner = root.xpath("devices/interface[alias/@name='ua-partner']")[0]
    assert partner.find("teaming").get("type") == "persistent"
    assert partner.find("mac").get("address") == vnic.mac
    record = metadata.read_record(root)
    assert record.vnics[0].teaming == "ua-partner"
