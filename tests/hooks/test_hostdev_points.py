"""The hostdev-mode unplug and plug paths, with libvirt's live domain faked.

No machine here has SR-IOV, and libvirt's test driver cannot hot-plug, so
these tests stand a small fake in for the live domain and the device
operations (tests/helpers/livedomain.py). Everything else is real: the
hook entry point, config, the nodedev inventory, the sqlite ledger and
our metadata record. The source's unplug runs before VDSM's
``VM.migrate`` (``SRIOV.migrate`` drives it), so the source side here is
:func:`sriov_host.unplug.unplug_all` over the hooks' own context, and the
source *hook* is the guard.
"""

from __future__ import annotations

import pytest
from helpers.corpus import read_domain
from helpers.hookhost import HostFixture
from helpers.livedomain import HOST, VM, FakeConn, FakeDevices, FakeDomain
from lxml import etree

from sriov_host import metadata, plug, rollback, unplug
from sriov_host.errors import SriovError
from sriov_host.ledger import IN_USE, Ledger
from vdsm_hooks.context import HookContext
from vdsm_hooks.hook import main

MACS = ["56:6f:1a:2b:01:01", "56:6f:1a:2b:01:02", "56:6f:1a:2b:01:03"]
OTHER_VM = "0b0b0b0b-0000-4000-8000-000000000001"


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


def unplug_here(dom, devices):
    """What SRIOV.migrate does on the source before VDSM's VM.migrate."""
    ctx = HookContext("sriov-migrate", VM, {}, conn=FakeConn(dom), devices=devices)
    try:
        root = ctx.live_root(dom)
        plan = unplug.build_plan(VM, root, ctx.cfg, lambda: set(ctx.vf_by_address))
        return unplug.unplug_all(ctx, plan.vnics)
    finally:
        ctx.close()


def plug_on_arrival(dom, devices, tmp_path):
    """What sriov-migrationd does once VDSM reports the arrived VM Up: ``(rc, lines)``.

    The hook at after_vm_migrate_destination attaches nothing (it must not:
    VDSM would not learn the NIC); it runs first, as VDSM runs it, and the
    service's plug follows. rc is what the hook used to report: 1 on any
    failure or problem.
    """
    untouched = FakeDevices()
    rc, _ = hook("after_vm_migrate_destination", dom, untouched, tmp_path)
    assert rc == 0 and untouched.calls == []
    ctx = HookContext("sriov-migrationd", VM, {}, conn=FakeConn(dom), devices=devices)
    try:
        clean, lines = plug.report(plug.plug_arrived(ctx, dom))
    finally:
        ctx.close()
    return (0 if clean else 1), "\n".join(lines)


def arrived_on_b(tmp_path, monkeypatch, src):
    """The VM as it lands on host B: the XML libvirt carries over, B's config in force."""
    (tmp_path / "b").mkdir()
    host_b = HostFixture(tmp_path / "b", pfs=2, vfs=8)
    monkeypatch.setenv("SRIOV_MIGRATION_CONF", str(host_b.conf))
    return FakeDomain(src.XMLDesc().encode()), host_b


def test_source_hook_should_refuse_attached_vfs_and_unplug_nothing(host8, tmp_path, capsys):
    dom, devices = FakeDomain(source_xml()), FakeDevices()
    given = dom.XMLDesc().encode()
    rc, xml = hook("before_vm_migrate_source", dom, devices, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert all(m in err for m in MACS) and "SRIOV migrate" in err
    assert devices.calls == [] and xml == given
    assert dom.record() is None and host8.claims(VM) == []


def test_unplug_should_record_then_unplug_every_vf_and_hold_them(host8):
    dom, devices = FakeDomain(source_xml()), FakeDevices()
    vf_aliases = dom.vf_aliases()
    record = unplug_here(dom, devices)
    assert sorted(devices.calls) == sorted(("detach", a) for a in vf_aliases)
    assert not set(vf_aliases) & set(dom.aliases())
    assert dom.record().vnics == record.vnics
    assert record.host == HOST and record.phase == "unplugged"
    assert [(r.state, r.unplug_ms) for r in record.vnics] == [(metadata.UNPLUGGED, 12.0)] * 3
    assert {r.pf for r in record.vnics} == {"ens1f0"}
    claims = host8.claims(VM)
    assert sorted(c.mac for c in claims) == MACS
    assert {c.state for c in claims} == {"unplugged-for-migration"}


def test_unplug_should_put_back_what_it_removed_when_one_vf_is_stuck(host8):
    dom = FakeDomain(source_xml())
    vf_aliases = dom.vf_aliases()
    devices = FakeDevices(stuck={vf_aliases[2]})
    with pytest.raises(SriovError) as refused:
        unplug_here(dom, devices)
    assert MACS[2] in refused.value.message and "re-plugged" in refused.value.message
    attached = [c[1] for c in devices.calls if c[0] == "attach"]
    assert sorted(attached) == sorted(vf_aliases[:2])
    assert all(etree.fromstring(x).get("managed") == "yes" for x in devices.attached_xml)
    assert set(vf_aliases) <= set(dom.aliases())
    assert {r.state for r in dom.record().vnics} == {metadata.PLUGGED}
    assert host8.claims(VM) == []


def test_unplug_should_refuse_before_any_detach_when_the_ledger_gives_a_vf_to_another_vm(host8):
    dom, devices = FakeDomain(source_xml()), FakeDevices()
    with Ledger(str(host8.ledger)) as ledger:
        vf = ledger_vf(host8, "0000:05:00.1")
        ledger.hold(OTHER_VM, [{"vf": vf, "mac": "56:6f:00:00:00:99", "alias": "ua-x",
                                "vlan": None, "network": None}], IN_USE)
    with pytest.raises(SriovError) as refused:
        unplug_here(dom, devices)
    assert "0000:05:00.1" in refused.value.message and OTHER_VM in refused.value.message
    assert devices.calls == [] and dom.record() is None
    assert host8.claims(VM) == []


def test_unplug_should_refuse_before_any_detach_when_a_vf_is_not_in_the_inventory(host8):
    xml = source_xml().replace(b'<address bus="0x05" domain="0x0000" function="0x1"',
                               b'<address bus="0x0e" domain="0x0000" function="0x1"')
    assert xml != source_xml()
    dom, devices = FakeDomain(xml), FakeDevices()
    with pytest.raises(SriovError) as refused:
        unplug_here(dom, devices)
    assert "0000:0e:00.1" in refused.value.message
    assert devices.calls == [] and host8.claims(VM) == []
    assert dom.vf_macs() == MACS


def test_retried_unplug_should_refuse_while_an_earlier_attempt_left_a_vnic_unplugged(host8):
    dom = FakeDomain(source_xml())
    vf_aliases = dom.vf_aliases()
    unplug_here(dom, FakeDevices())
    # The migration failed and the re-plug of the third vNIC failed too.
    with Ledger(str(host8.ledger)) as ledger:
        rollback.restore_vnics(dom, host8_cfg(), ledger, HOST, "test: migration failed",
                               FakeDevices(broken={vf_aliases[2]}))
    assert dom.vf_macs() == MACS[:2]
    devices = FakeDevices()
    with pytest.raises(SriovError) as refused:
        unplug_here(dom, devices)
    assert MACS[2] in refused.value.message and "restoreNics" in refused.value.message
    assert devices.calls == [] and dom.vf_macs() == MACS[:2]
    states = {r.mac: r.state for r in dom.record().vnics}
    assert states[MACS[2]] == metadata.FAILED


def ledger_vf(host, address):
    from sriov_host import config, hostinventory

    return hostinventory.load(config.load(str(host.conf)), None).by_address()[address]


def host8_cfg():
    from sriov_host import config

    return config.load()


def test_destination_should_plug_reserved_vfs_as_hostdev_and_mark_them_in_use(
        host8, tmp_path, capsys, monkeypatch):
    src = FakeDomain(source_xml())
    unplug_here(src, FakeDevices())
    incoming, host_b = arrived_on_b(tmp_path, monkeypatch, src)
    assert hook("before_vm_migrate_destination", incoming, FakeDevices(), tmp_path)[0] == 0
    reserved = {c.mac: c.vf_address for c in host_b.claims(VM)}
    assert sorted(reserved) == MACS
    devices = FakeDevices()
    rc, err = plug_on_arrival(incoming, devices, tmp_path)
    assert rc == 0, err
    record = incoming.record()
    assert record.host == HOST and record.phase == "migrated"
    assert {r.mac: r.vf_address for r in record.vnics} == reserved
    assert len(devices.attached_xml) == 3
    for call, xml in zip(devices.calls, devices.attached_xml):
        elem = etree.fromstring(xml)
        assert elem.get("type") == "hostdev" and elem.get("managed") == "yes"
        assert elem.find("alias").get("name") == call[1]
    assert {c.state for c in host_b.claims(VM)} == {"in_use"}


def test_destination_should_refuse_an_xml_that_still_holds_the_vfs(host8, tmp_path, capsys,
                                                                    monkeypatch):
    incoming, host_b = arrived_on_b(tmp_path, monkeypatch, FakeDomain(source_xml()))
    rc, _ = hook("before_vm_migrate_destination", incoming, FakeDevices(), tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and MACS[0] in err
    assert host_b.claims(VM) == []


def test_destination_should_release_the_vf_of_a_vnic_it_cannot_plug(host8, tmp_path, capsys):
    src = FakeDomain(source_xml())
    unplug_here(src, FakeDevices())
    assert hook("after_vm_migrate_source", src, FakeDevices(), tmp_path)[0] == 0  # one host, both sides
    incoming = FakeDomain(src.XMLDesc().encode())
    assert hook("before_vm_migrate_destination", incoming, FakeDevices(), tmp_path)[0] == 0
    bad = incoming.record().vnics[1].alias
    rc, err = plug_on_arrival(incoming, FakeDevices(broken={bad}), tmp_path)
    assert rc == 1 and "plug FAILED" in err and MACS[1] in err and "VF busy" in err
    states = {r.alias: r.state for r in incoming.record().vnics}
    assert states[bad] == metadata.FAILED
    assert sorted(s for a, s in states.items() if a != bad) == [metadata.PLUGGED] * 2
    assert incoming.record().phase == "plug-failed"
    assert sorted(c.mac for c in host8.claims(VM)) == [MACS[0], MACS[2]]


def test_destination_should_reserve_again_when_the_reservation_lapsed_in_flight(host8, tmp_path,
                                                                                capsys):
    src = FakeDomain(source_xml())
    unplug_here(src, FakeDevices())
    assert hook("after_vm_migrate_source", src, FakeDevices(), tmp_path)[0] == 0
    incoming = FakeDomain(src.XMLDesc().encode())
    assert hook("before_vm_migrate_destination", incoming, FakeDevices(), tmp_path)[0] == 0
    with Ledger(str(host8.ledger)) as ledger:  # a migration longer than the TTL
        ledger.release(VM)
    rc, err = plug_on_arrival(incoming, FakeDevices(), tmp_path)
    assert rc == 0, err
    assert {r.state for r in incoming.record().vnics} == {metadata.PLUGGED}
    assert sorted((c.mac, c.state) for c in host8.claims(VM)) == [(m, "in_use") for m in MACS]


def _landed(tmp_path):
    """A VM unplugged here, migrated onto this same host, its reservation made."""
    return _landed_from(FakeDomain(source_xml()), tmp_path)


def test_destination_should_detach_and_free_a_vf_whose_mac_check_fails(host8, tmp_path, capsys,
                                                                       monkeypatch):
    from sriov_host import netlink

    incoming = _landed(tmp_path)
    wrong = incoming.record().vnics[0]
    target = {c.mac: c for c in host8.claims(VM)}[wrong.mac]  # the VF reserved here
    vf_index = ledger_vf(host8, target.vf_address).index
    monkeypatch.setattr(netlink, "vf_settings", lambda pf, index: (
        ("02:00:00:00:00:01", wrong.vlan) if (pf, index) == (target.pf, vf_index) else None))
    devices = FakeDevices()
    rc, err = plug_on_arrival(incoming, devices, tmp_path)
    assert rc == 1 and wrong.mac in err and "02:00:00:00:00:01" in err
    assert ("detach", wrong.alias) in devices.calls
    states = {r.mac: r for r in incoming.record().vnics}
    assert states[wrong.mac].state == metadata.FAILED
    assert "detached again and VF released" in states[wrong.mac].error
    assert wrong.mac not in incoming.vf_macs()
    assert sorted(c.mac for c in host8.claims(VM)) == sorted(set(MACS) - {wrong.mac})


class ExpiringDevices(FakeDevices):
    """An attach that outlives the claim: the ledger entry lapses while it runs."""

    def __init__(self, ledger_path, vf_address):
        super().__init__()
        self.ledger_path, self.vf_address = ledger_path, vf_address

    def attach_and_wait(self, dom, xml, alias, timeout):
        ms = super().attach_and_wait(dom, xml, alias, timeout)
        if self.vf_address is not None:  # the first attach outlives its claim
            with Ledger(self.ledger_path) as ledger:
                ledger.release_vf(VM, self.vf_address)
            self.vf_address = None
        return ms


def test_destination_should_claim_again_a_vf_whose_claim_lapsed_during_the_plug(host8, tmp_path,
                                                                               capsys):
    incoming = _landed(tmp_path)
    first = {c.mac: c for c in host8.claims(VM)}[incoming.record().vnics[0].mac]
    devices = ExpiringDevices(str(host8.ledger), first.vf_address)
    rc, err = plug_on_arrival(incoming, devices, tmp_path)
    assert rc == 1 and "claim lapsed during the plug" in err and first.mac in err  # reported
    by_mac = {r.mac: r for r in incoming.record().vnics}
    assert {r.state for r in by_mac.values()} == {metadata.PLUGGED}
    assert "claimed again" in by_mac[first.mac].error
    assert sorted((c.mac, c.state) for c in host8.claims(VM)) == [(m, "in_use") for m in MACS]


# -- VF settings travel with the vNIC (issue 13 item 2) ------------------------------

IGB_DEFAULTS = "spoofchk=on,trust=off,link_state=auto,min_tx_rate=0,max_tx_rate=0,query_rss=off"


class FakePfs:
    """What the PFs hold per VF, read and set as netlink would; *refuse* names what the driver refuses.

    Every read and set lands in *timeline*, shared with the devices, so a
    test sees whether a setting was put on the VF before its attach.
    """

    def __init__(self, host, timeline, refuse=()):
        from sriov_host import vfsettings

        self.vfsettings, self.host, self.timeline, self.refuse = vfsettings, host, timeline, set(refuse)
        self.held = {}

    def index(self, pf, address):
        vf = ledger_vf(self.host, address)
        return vf.index if vf.pf == pf else None

    def read(self, pf, index):
        return self.held.get((pf, index), self.vfsettings.from_text(IGB_DEFAULTS))

    def apply(self, pf, index, changes):
        refused = {}
        for name, value in changes:
            self.timeline.append(("set", pf, index, name))
            if name in self.refuse:
                refused[name] = "Operation not supported"
                continue
            values = {"min_tx_rate": value[0], "max_tx_rate": value[1]} if name == "rate" else {name: value}
            from dataclasses import replace

            self.held[(pf, index)] = replace(self.read(pf, index), **values)
        return refused


class TimedDevices(FakeDevices):
    def __init__(self, timeline, **kw):
        super().__init__(**kw)
        self.timeline = timeline

    def attach_and_wait(self, dom, xml, alias, timeout):
        self.timeline.append(("attach", alias))
        return super().attach_and_wait(dom, xml, alias, timeout)


def fake_pfs(monkeypatch, host, timeline, refuse=()):
    from sriov_host import netlink

    pfs = FakePfs(host, timeline, refuse)
    monkeypatch.setattr(netlink, "read_vf_settings", pfs.read)
    monkeypatch.setattr(netlink, "apply_vf_settings", pfs.apply)
    monkeypatch.setattr(netlink, "vf_index", pfs.index)
    return pfs


def test_unplug_should_record_each_vfs_own_settings(host8, monkeypatch):
    from sriov_host import vfsettings

    pfs = fake_pfs(monkeypatch, host8, [])
    dom = FakeDomain(source_xml())
    first = ledger_vf(host8, domxml_vf_addresses(dom)[0])
    pfs.held[(first.pf, first.index)] = vfsettings.from_text(
        "spoofchk=off,trust=on,link_state=enable,min_tx_rate=0,max_tx_rate=300,query_rss=on")

    record = unplug_here(dom, FakeDevices())

    assert record.vnics[0].vf_settings == ("spoofchk=off,trust=on,link_state=enable,min_tx_rate=0,"
                                           "max_tx_rate=300,query_rss=on")
    assert [r.vf_settings for r in record.vnics[1:]] == [IGB_DEFAULTS] * 2
    assert dom.record().vnics[0].vf_settings == record.vnics[0].vf_settings


def domxml_vf_addresses(dom) -> list:
    from sriov_host import domxml

    return [v.vf_address for v in domxml.find_vnics(etree.fromstring(dom.XMLDesc().encode()))]


def test_destination_should_put_the_settings_on_its_vf_before_the_plug(host8, tmp_path, capsys,
                                                                       monkeypatch):
    from sriov_host import vfsettings

    timeline = []
    pfs = fake_pfs(monkeypatch, host8, timeline)
    src = FakeDomain(source_xml())
    first = ledger_vf(host8, domxml_vf_addresses(src)[0])
    wanted = "spoofchk=off,trust=on,link_state=auto,min_tx_rate=0,max_tx_rate=300,query_rss=off"
    pfs.held[(first.pf, first.index)] = vfsettings.from_text(wanted)
    incoming = _landed_from(src, tmp_path)
    moved = incoming.record().vnics[0]
    target = ledger_vf(host8, {c.mac: c for c in host8.claims(VM)}[moved.mac].vf_address)
    timeline.clear()

    rc, err = plug_on_arrival(incoming, TimedDevices(timeline), tmp_path)

    assert rc == 0, err
    assert pfs.read(target.pf, target.index).to_text() == wanted
    sets = [e[3] for e in timeline if e[0] == "set" and e[1:3] == (target.pf, target.index)]
    assert sorted(sets) == ["rate", "spoofchk", "trust"]  # only what differs
    assert timeline.index(("attach", moved.alias)) > max(
        i for i, e in enumerate(timeline) if e[0] == "set" and e[1:3] == (target.pf, target.index))
    assert incoming.record().vnics[0].error is None


def _landed_from(src, tmp_path):
    """*src* unplugged here, migrated onto this same host, its reservation made."""
    unplug_here(src, FakeDevices())
    assert hook("after_vm_migrate_source", src, FakeDevices(), tmp_path)[0] == 0
    incoming = FakeDomain(src.XMLDesc().encode())
    assert hook("before_vm_migrate_destination", incoming, FakeDevices(), tmp_path)[0] == 0
    return incoming


def test_destination_should_name_each_setting_its_pf_refuses_and_still_plug(host8, tmp_path, capsys,
                                                                            monkeypatch):
    from sriov_host import vfsettings

    pfs = fake_pfs(monkeypatch, host8, [], refuse={"link_state", "rate"})  # as igb does
    src = FakeDomain(source_xml())
    first = ledger_vf(host8, domxml_vf_addresses(src)[0])
    pfs.held[(first.pf, first.index)] = vfsettings.from_text(
        "spoofchk=off,trust=off,link_state=disable,min_tx_rate=10,max_tx_rate=300,query_rss=off")
    incoming = _landed_from(src, tmp_path)
    capsys.readouterr()

    rc, err = plug_on_arrival(incoming, FakeDevices(), tmp_path)

    assert rc == 1 and "plugged with a problem" in err  # reported, not a failed plug
    rec = incoming.record().vnics[0]
    assert rec.state == metadata.PLUGGED and incoming.record().phase == "migrated"
    for name in ("link_state", "min_tx_rate", "max_tx_rate"):
        assert name in rec.error and name in err
    assert "spoofchk" not in rec.error and rec.mac in err
    target = ledger_vf(host8, rec.vf_address)
    assert pfs.read(target.pf, target.index).spoofchk is False


def test_rollback_should_put_the_settings_back_on_the_source_vf(host8, monkeypatch):
    from sriov_host import vfsettings

    timeline = []
    pfs = fake_pfs(monkeypatch, host8, timeline)
    dom = FakeDomain(source_xml())
    first = ledger_vf(host8, domxml_vf_addresses(dom)[0])
    wanted = "spoofchk=off,trust=on,link_state=auto,min_tx_rate=0,max_tx_rate=0,query_rss=off"
    pfs.held[(first.pf, first.index)] = vfsettings.from_text(wanted)
    unplug_here(dom, FakeDevices())
    pfs.held[(first.pf, first.index)] = vfsettings.from_text(IGB_DEFAULTS)  # the VF was reset
    timeline.clear()

    with Ledger(str(host8.ledger)) as ledger:
        result = rollback.restore_vnics(dom, host8_cfg(), ledger, HOST, "test: migration failed",
                                        TimedDevices(timeline))

    assert result.ok
    assert pfs.read(first.pf, first.index).to_text() == wanted
    alias = dom.record().vnics[0].alias
    assert [e[3] for e in timeline[:2]] == ["spoofchk", "trust"] and timeline[2] == ("attach", alias)
