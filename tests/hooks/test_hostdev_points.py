"""The hostdev-mode unplug and plug paths, with libvirt's domain faked.

No machine here has SR-IOV, and libvirt's test driver cannot hot-plug, so
these tests stand a ten-line fake in for the live domain and the device
operations (STYLE: small protocols, fakes with failure flags and a call
record). Everything else is real: the hook entry point, config, the
nodedev inventory, the sqlite ledger and our metadata record.
"""

from __future__ import annotations

import copy

import pytest
from helpers.corpus import read_domain
from helpers.hookhost import HostFixture
from lxml import etree

from sriov_host import metadata
from sriov_host.devices import DeviceTimeout
from sriov_host.errors import LibvirtFailure
from vdsm_hooks.hook import main

VM = "7a9c0e12-3b4d-4e5f-8a6b-7c8d9e0f1a22"
HOST = "aaaaaaaa-1111-4222-8333-444444444444"
MACS = ["56:6f:1a:2b:01:01", "56:6f:1a:2b:01:02", "56:6f:1a:2b:01:03"]


class FakeDomain:
    """A live domain: XML in memory, metadata set the way libvirt sets it."""

    def __init__(self, xml: bytes):
        self.root = etree.fromstring(xml)

    def UUIDString(self):
        return VM

    def XMLDesc(self, flags=0):
        return etree.tostring(self.root, encoding="unicode")

    def setMetadata(self, kind, xml, key, uri, flags=0):
        elem = etree.fromstring(xml)
        for e in elem.iter():
            e.tag = "{%s}%s" % (uri, e.tag)
        meta = self.root.find("metadata")
        for old in meta.findall("{%s}*" % uri):
            meta.remove(old)
        meta.append(copy.deepcopy(elem))

    def vf_aliases(self):
        return [i.find("alias").get("name")
                for i in self.root.iterfind("devices/interface[@type='hostdev']")]

    def aliases(self):
        return [a.get("name") for a in self.root.iterfind("devices/*/alias")]

    def record(self):
        return metadata.read_record(self.root)


class FakeConn:
    def __init__(self, dom):
        self.dom = dom

    def lookupByUUIDString(self, uuid):
        return self.dom

    def getCapabilities(self):
        return "<capabilities><host><uuid>%s</uuid></host></capabilities>" % HOST

    def listAllDomains(self, flags=0):
        return [self.dom]


class FakeDevices:
    """detach/attach that change the fake's XML; *stuck* aliases never leave."""

    def __init__(self, stuck=(), broken=()):
        self.stuck, self.broken, self.calls = set(stuck), set(broken), []

    def detach_and_wait(self, dom, xml, alias, timeout):
        self.calls.append(("detach", alias))
        if alias in self.stuck:
            raise DeviceTimeout("device %s still present after %.1f s" % (alias, timeout))
        for elem in dom.root.find("devices"):
            a = elem.find("alias")
            if a is not None and a.get("name") == alias:
                elem.getparent().remove(elem)
        return 12.0

    def attach_and_wait(self, dom, xml, alias, timeout):
        self.calls.append(("attach", alias, xml))
        if alias in self.broken:
            raise LibvirtFailure("attach of %s failed: VF busy" % alias)
        dom.root.find("devices").append(etree.fromstring(xml))
        return 3.0


@pytest.fixture
def host8(tmp_path, monkeypatch):
    h = HostFixture(tmp_path, pfs=2, vfs=8)
    monkeypatch.setenv("SRIOV_MIGRATION_CONF", str(h.conf))
    return h


def source_xml() -> bytes:
    """several_vfs.xml with its VFs moved onto the fixture inventory's addresses."""
    return read_domain("several_vfs").replace(b'slot="0x10"', b'slot="0x00"')


def hook(point, dom, devices, tmp_path):
    path = tmp_path / "domxml.xml"
    path.write_bytes(dom.XMLDesc().encode())
    env = {"_hook_domxml": str(path), "vmId": VM}
    rc = main(["--point", point], env=env, conn=FakeConn(dom), devices=devices)
    return rc, path.read_bytes()


def hook_keeps_file(point, dom, devices, tmp_path):
    """Run the hook; also say whether the XML file was left as it was given."""
    given = dom.XMLDesc().encode()
    rc, after = hook(point, dom, devices, tmp_path)
    return rc, after == given


def test_source_should_record_then_unplug_every_vf_and_hold_them(host8, tmp_path, capsys):
    dom, devices = FakeDomain(source_xml()), FakeDevices()
    vf_aliases = dom.vf_aliases()
    rc, xml = hook("before_vm_migrate_source", dom, devices, tmp_path)
    assert rc == 0, capsys.readouterr().err
    assert [c[:2] for c in devices.calls] == [("detach", a) for a in vf_aliases]
    assert not set(vf_aliases) & set(dom.aliases())
    record = dom.record()
    assert record.host == HOST and record.phase == "unplugged"
    assert [(r.state, r.unplug_ms) for r in record.vnics] == [(metadata.UNPLUGGED, 12.0)] * 3
    assert {r.pf for r in record.vnics} == {"ens1f0"}
    assert b'type="hostdev"' not in xml
    claims = host8.claims(VM)
    assert sorted(c.mac for c in claims) == MACS and {c.state for c in claims} == {
        "unplugged-for-migration"}


def test_source_should_put_back_what_it_removed_when_one_vf_is_stuck(host8, tmp_path, capsys):
    dom = FakeDomain(source_xml())
    vf_aliases = dom.vf_aliases()
    devices = FakeDevices(stuck={vf_aliases[2]})
    rc, file_kept = hook_keeps_file("before_vm_migrate_source", dom, devices, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert MACS[2] in err and "re-plugged" in err
    attached = [c for c in devices.calls if c[0] == "attach"]
    assert [c[1] for c in attached] == vf_aliases[:2]
    assert all("managed=\"yes\"" in c[2] or "managed='yes'" in c[2] for c in attached), attached
    assert set(vf_aliases) <= set(dom.aliases())
    assert {r.state for r in dom.record().vnics} == {metadata.PLUGGED}
    assert host8.claims(VM) == []
    assert file_kept  # the file is left alone on a refusal


def test_destination_should_plug_reserved_vfs_as_hostdev_and_mark_them_in_use(
        host8, tmp_path, capsys, monkeypatch):
    src = FakeDomain(source_xml())
    assert hook("before_vm_migrate_source", src, FakeDevices(), tmp_path)[0] == 0
    incoming = FakeDomain(src.XMLDesc().encode())  # what libvirt carries over
    (tmp_path / "b").mkdir()
    host_b = HostFixture(tmp_path / "b", pfs=2, vfs=8)
    monkeypatch.setenv("SRIOV_MIGRATION_CONF", str(host_b.conf))
    assert hook("before_vm_migrate_destination", incoming, FakeDevices(), tmp_path)[0] == 0
    reserved = {c.mac: c.vf_address for c in host_b.claims(VM)}
    devices = FakeDevices()
    rc, _ = hook("after_vm_migrate_destination", incoming, devices, tmp_path)
    assert rc == 0, capsys.readouterr().err
    record = incoming.record()
    assert record.host == HOST and record.phase == "migrated"
    assert {r.mac: r.vf_address for r in record.vnics} == reserved
    for call in devices.calls:
        elem = etree.fromstring(call[2])
        assert elem.get("type") == "hostdev" and elem.get("managed") == "yes"
        assert elem.find("alias").get("name") == call[1]
    assert {c.state for c in host_b.claims(VM)} == {"in_use"}


def test_destination_should_release_the_vf_of_a_vnic_it_cannot_plug(host8, tmp_path, capsys):
    src = FakeDomain(source_xml())
    assert hook("before_vm_migrate_source", src, FakeDevices(), tmp_path)[0] == 0
    assert hook("after_vm_migrate_source", src, FakeDevices(), tmp_path)[0] == 0  # one host, both sides
    incoming = FakeDomain(src.XMLDesc().encode())
    assert hook("before_vm_migrate_destination", incoming, FakeDevices(), tmp_path)[0] == 0
    bad = incoming.record().vnics[1].alias
    rc, _ = hook("after_vm_migrate_destination", incoming, FakeDevices(broken={bad}), tmp_path)
    err = capsys.readouterr().err
    assert rc == 1 and "plug FAILED" in err and MACS[1] in err and "VF busy" in err
    states = {r.alias: r.state for r in incoming.record().vnics}
    assert states[bad] == metadata.FAILED
    assert sorted(s for a, s in states.items() if a != bad) == [metadata.PLUGGED] * 2
    assert incoming.record().phase == "plug-failed"
    assert sorted(c.mac for c in host8.claims(VM)) == [MACS[0], MACS[2]]


def test_destination_should_reserve_again_when_the_reservation_lapsed_in_flight(host8, tmp_path,
                                                                                capsys):
    from sriov_host.ledger import Ledger

    src = FakeDomain(source_xml())
    assert hook("before_vm_migrate_source", src, FakeDevices(), tmp_path)[0] == 0
    assert hook("after_vm_migrate_source", src, FakeDevices(), tmp_path)[0] == 0
    incoming = FakeDomain(src.XMLDesc().encode())
    assert hook("before_vm_migrate_destination", incoming, FakeDevices(), tmp_path)[0] == 0
    with Ledger(str(host8.ledger)) as ledger:  # a migration longer than the TTL
        ledger.release(VM)
    rc, _ = hook("after_vm_migrate_destination", incoming, FakeDevices(), tmp_path)
    assert rc == 0, capsys.readouterr().err
    assert {r.state for r in incoming.record().vnics} == {metadata.PLUGGED}
    assert sorted((c.mac, c.state) for c in host8.claims(VM)) == [(m, "in_use") for m in MACS]
