"""sriov_host.rollback.restore_vnics with fakes: by identity, idempotent, every failure reported."""

from __future__ import annotations

import pytest

from sriov_host import metadata, rollback
from sriov_host.config import Config
from sriov_host.ledger import IN_USE

from .fakes import HOST, FakeDevices, FakeDomain, FakeLedger


def vnic(n, state=metadata.UNPLUGGED):
    return metadata.VnicRecord(alias="ua-n%d" % n, mac="00:1a:4a:16:01:%02x" % n,
                               vf_address="0000:3c:00.%d" % n, pf="ens1f0", vlan=10 + n, state=state)


def record(*vnics, host=HOST):
    return metadata.MigrationRecord(vnics=tuple(vnics), host=host, phase="unplugged", updated=1.0)


@pytest.fixture
def cfg():
    return Config(vf_device="hostdev", plug_timeout=3.0)


def test_restore_should_replug_only_what_is_missing_by_alias(cfg):
    dom = FakeDomain(record(vnic(1), vnic(2), vnic(3, metadata.PLUGGED)), attached=["ua-n2", "ua-n3"])
    devices, ledger = FakeDevices(), FakeLedger(held={"0000:3c:00.1", "0000:3c:00.2"})
    result = rollback.restore_vnics(dom, cfg, ledger, HOST, "test", devices)
    assert [a for a, _ in devices.calls] == ["ua-n1"]
    xml = devices.calls[0][1]
    assert "00:1a:4a:16:01:01" in xml and "bus='0x3c'" in xml.replace('"', "'") and "ua-n1" in xml
    assert "<tag id=\"11\"/>" in xml
    assert result.restored == ["ua-n1"] and result.already == ["ua-n2"] and result.ok
    assert {v.alias: v.state for v in dom.record.vnics} == {
        "ua-n1": metadata.PLUGGED, "ua-n2": metadata.PLUGGED, "ua-n3": metadata.PLUGGED}
    assert dom.record.phase == rollback.PHASE_ROLLED_BACK
    assert dom.record.vnics[0].rollback_ms is not None
    _type, xml_written, key, uri, flags = dom.metadata_calls[0]
    assert (key, uri, flags) == ("sriov", metadata.NS, rollback.VIR_DOMAIN_AFFECT_LIVE)
    assert "xmlns" not in xml_written
    assert ledger.states == {"0000:3c:00.1": IN_USE, "0000:3c:00.2": IN_USE}
    assert ledger.status[0][1] == "rolled-back"


def test_restore_should_be_idempotent(cfg):
    dom = FakeDomain(record(vnic(1)))
    devices = FakeDevices()
    rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "first", devices)
    second = rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "second", devices)
    assert len(devices.calls) == 1 and second.restored == [] and second.phase is None


def test_restore_should_report_every_failure_and_go_on(cfg):
    dom = FakeDomain(record(vnic(1), vnic(2), vnic(3)))
    devices = FakeDevices(fail={"ua-n1", "ua-n3"})
    result = rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "test", devices)
    assert [f["alias"] for f in result.failed] == ["ua-n1", "ua-n3"]
    assert "guest said no" in result.failed[0]["error"]
    assert result.restored == ["ua-n2"] and result.phase == rollback.PHASE_ROLLBACK_FAILED
    states = {v.alias: v.state for v in dom.record.vnics}
    assert states == {"ua-n1": metadata.FAILED, "ua-n2": metadata.PLUGGED, "ua-n3": metadata.FAILED}
    again = rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "reconciler", FakeDevices())
    assert again.restored == []  # failed ones wait for restoreNics
    retry = rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "restoreNics", FakeDevices(),
                                   retry_failed=True)
    assert sorted(retry.restored) == ["ua-n1", "ua-n3"]


def test_restore_should_not_touch_a_record_of_another_host(cfg):
    dom = FakeDomain(record(vnic(1), host="someone-else"))
    devices = FakeDevices()
    result = rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "test", devices)
    assert devices.calls == [] and result.restored == [] and dom.metadata_calls == []


def test_restore_should_render_emulated_nics_in_lab_mode():
    cfg = Config(vf_device="emulated", vf_model="e1000e")
    dom = FakeDomain(record(vnic(1)))
    devices = FakeDevices()
    rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "test", devices)
    assert "e1000e" in devices.calls[0][1] and "hostdev" not in devices.calls[0][1]


def test_restore_without_record_should_do_nothing(cfg):
    dom = FakeDomain(None)
    result = rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "t", FakeDevices())
    assert result.to_json()["restored"] == []


def test_restore_on_demand_should_replug_a_plugged_vnic_the_guest_let_go_later(cfg):
    dom = FakeDomain(record(vnic(1, metadata.PLUGGED), vnic(2, metadata.PLUGGED)), attached=["ua-n2"])
    devices = FakeDevices()
    assert rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "reconciler", devices).restored == []
    result = rollback.restore_vnics(dom, cfg, FakeLedger(), HOST, "restoreNics", devices,
                                    retry_failed=True)
    assert [a for a, _ in devices.calls] == ["ua-n1"]
    assert result.restored == ["ua-n1"] and result.already == []
