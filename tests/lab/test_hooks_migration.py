"""The hooks on real libvirtd + QEMU (emulated VF mode): migrate, time out, find no VF.

Hooks are installed with ``sriov-migration-install`` into each lab host's
hooks directory and run by the VDSM-compatible runner, in VDSM's order.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from lxml import etree

from sriov_host import inventory, metadata
from sriov_host.ledger import Ledger
from sriov_lab import domains
from sriov_lab import hookrunner as hr
from sriov_lab.hookrunner import HookRunner
from sriov_lab.migration import migrate

pytestmark = pytest.mark.lab


def _ledger(host):
    from sriov_host import config

    return Ledger(config.load(host.config_path).ledger_path)


def _config_with(host, tmp_path, **timeouts):
    """A copy of the host's config with other [timeouts]."""
    text = open(host.config_path).read()
    for key, value in timeouts.items():
        lines = [("%s = %s" % (key, value)) if ln.startswith(key + " =") else ln
                 for ln in text.splitlines()]
        text = "\n".join(lines) + "\n"
    path = tmp_path / ("%s.conf" % host.name)
    path.write_text(text)
    return str(path)


@pytest.fixture
def hooked(lab_hosts, lab_vms, tmp_path):
    """One runner per host over hooks installed by sriov-migration-install."""
    runners = []
    for h in lab_hosts:
        d = tmp_path / ("hooks-" + h.name)
        subprocess.run([sys.executable, "-m", "vdsm_hooks.install", "--hooks-dir", str(d),
                        "--hooks-only"], check=True, capture_output=True)
        runners.append(HookRunner(str(d), env=h.hook_env(), host=h.name))
    yield runners
    for h in lab_hosts:  # the VMs are destroyed without hooks: free what they held
        with _ledger(h) as ledger:
            for vm in lab_vms.uuids:
                ledger.release(vm)


def _live(conn, vm):
    return etree.fromstring(conn.lookupByUUIDString(vm).XMLDesc(0).encode())


def _aliases(root):
    return {a.get("name") for a in root.iterfind("devices/interface/alias")}


def _macs_seen_after(counter, macs):
    def until(_ready, ticks):
        later = [t for t in ticks if t.counter > counter and macs <= set(t.nics.values())]
        return later[-1] if later else None
    return until


def test_full_migration_should_bring_both_vnics_back_on_b(lab_hosts, lab_conns, lab_vms, hooked):
    a, b = lab_hosts
    vlan_vnic = lab_vms.vnic(0, 0, vlan=100)
    failover = lab_vms.vnic(0, 1, failover_alias="ua-%s" % uuid.uuid4())
    spec, _ = lab_vms.start(0, vnics=(vlan_vnic, failover))
    macs = {vlan_vnic.mac, failover.mac}
    before = domains.wait_serial(a, spec.name, _macs_seen_after(-1, macs), 60, "both NICs on A")

    result = migrate(lab_conns[0], lab_conns[1], spec.uuid, *hooked)

    assert result.ok, result.error
    assert [s.rc for s in result.steps] == [0, 0, 0, 0]
    assert result.step(hr.BEFORE_SOURCE).stderr[0].startswith("sriov-migration: vm=%s" % spec.uuid)
    live = _live(lab_conns[1], spec.uuid)
    assert {vlan_vnic.alias, failover.alias, failover.failover_alias} <= _aliases(live)
    record = metadata.read_record(live)
    assert record.host == b.host_uuid and record.phase == "migrated"
    by_alias = {r.alias: r for r in record.vnics}
    assert {r.state for r in record.vnics} == {metadata.PLUGGED}
    assert by_alias[vlan_vnic.alias].vlan == 100
    assert by_alias[failover.alias].teaming == failover.failover_alias
    b_vfs = inventory.load_nodedev_file(b.extra["inventory"]).addresses
    assert {r.vf_address for r in record.vnics} <= b_vfs
    with _ledger(a) as led_a, _ledger(b) as led_b:
        assert led_a.claims(vm_id=spec.uuid) == []
        claims = led_b.claims(vm_id=spec.uuid)
    assert {(c.mac, c.vf_address, c.state) for c in claims} == {
        (r.mac, r.vf_address, "in_use") for r in record.vnics}
    tick = domains.wait_serial(b, spec.name, _macs_seen_after(before.counter, macs), 30,
                               "both NICs on B")
    assert macs <= set(tick.nics.values())


def test_unplug_timeout_should_refuse_and_keep_the_nics(lab_hosts, lab_conns, lab_vms, hooked,
                                                        tmp_path):
    a, _ = lab_hosts
    hooked[0].env["SRIOV_MIGRATION_CONF"] = _config_with(a, tmp_path, unplug=2)
    vnic = lab_vms.vnic(0, 2)
    spec, _ = lab_vms.start(0, with_os=False, vnics=(vnic,))  # nothing will release the device
    with _ledger(a) as ledger:
        claims_before = ledger.claims()

    result = migrate(lab_conns[0], lab_conns[1], spec.uuid, *hooked)

    assert not result.ok and result.aborted_at == hr.BEFORE_SOURCE
    step = result.step(hr.BEFORE_SOURCE)
    assert step.rc == 2 and len(step.stderr) == 1
    assert vnic.mac in step.stderr[0] and "unplug" in step.stderr[0]
    assert [s.point for s in result.steps] == [hr.BEFORE_SOURCE]
    live = _live(lab_conns[0], spec.uuid)
    assert vnic.alias in _aliases(live)
    assert [r.state for r in metadata.read_record(live).vnics] == [metadata.PLUGGED]
    with _ledger(a) as ledger:
        assert ledger.claims() == claims_before


def test_no_free_vf_on_b_should_stop_at_the_destination_hook(lab_hosts, lab_conns, lab_vms,
                                                             hooked):
    _, b = lab_hosts
    inv = inventory.load_nodedev_file(b.extra["inventory"])
    fillers = ["f%07d-0000-4000-8000-000000000000" % i for i in range(len(inv.vfs))]
    with _ledger(b) as ledger:
        for i, vm in enumerate(fillers):
            ledger.reserve(vm, [{"mac": "02:00:00:00:01:%02x" % i}], inv, ttl=300)
        claims_before = ledger.claims()
    vnic = lab_vms.vnic(0, 3)
    spec, _ = lab_vms.start(0, vnics=(vnic,))
    domains.wait_ready(lab_hosts[0], spec.name)  # a guest that can let go of the NIC
    try:
        result = migrate(lab_conns[0], lab_conns[1], spec.uuid, *hooked)
        with _ledger(b) as ledger:
            claims_after = ledger.claims()
    finally:
        with _ledger(b) as ledger:
            for vm in fillers:
                ledger.release(vm)

    assert not result.ok and result.aborted_at == hr.BEFORE_DEST
    step = result.step(hr.BEFORE_DEST)
    assert step.rc == 2 and len(step.stderr) == 1
    assert "no free VF" in step.stderr[0] and vnic.mac in step.stderr[0]
    assert claims_after == claims_before
    assert lab_conns[0].lookupByUUIDString(spec.uuid).isActive()
    # The source unplugged first; its service's reconciler re-plugs (tests/service).
    record = metadata.read_record(_live(lab_conns[0], spec.uuid))
    assert [r.state for r in record.vnics] == [metadata.UNPLUGGED]
