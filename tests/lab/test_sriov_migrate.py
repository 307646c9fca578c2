"""``sriov-client SRIOV migrate`` end to end: real libvirtd + QEMU, the VDSM-order stand-in.

Each host runs its real ``sriov-migrationd`` over mutual TLS (lab CA),
the hooks installed by ``sriov-migration-install``, and the lab's VDSM
stand-in, which captures the domain XML before the source hook and
resolves the destination's devices from it, as VDSM does. VFs are
emulated (no SR-IOV here); the client runs as its console module, as an
administrator runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from helpers.wire import rarp_sniffer, rarp_sources
from lxml import etree

from sriov_host import announce, config, metadata
from sriov_host.ledger import Ledger
from sriov_lab import datapath, demo_report, domains, traffic
from sriov_lab.services import LabServices, LabStandIns

pytestmark = pytest.mark.lab

TIMEOUTS = {"rollback_grace": 5, "reconcile_interval": 0.5, "unplug": 3, "plug": 3}


@pytest.fixture(scope="module")
def services(lab, tmp_path_factory):
    with LabServices(lab, str(tmp_path_factory.mktemp("sriov-migrate")), **TIMEOUTS) as svc:
        yield svc


@pytest.fixture
def vdsm(lab, services, tmp_path):
    with LabStandIns(lab, hooks_root=str(tmp_path / "hooks")) as standins:
        yield standins


@pytest.fixture
def vms(lab_vms, lab_hosts):
    """This test's VMs; after it, whatever the ledgers hold for them is freed."""
    yield lab_vms
    lab_vms.cleanup()
    for host in lab_hosts:
        with _ledger(host) as ledger:
            for vm in lab_vms.uuids:
                ledger.release(vm)


def _ledger(host):
    return Ledger(config.load(host.config_path).ledger_path)


def _claims(host, vm_id=None):
    with _ledger(host) as ledger:
        return ledger.claims(vm_id=vm_id)


def sriov_migrate(services, spec, timeout=120):
    """``sriov-client -a A SRIOV migrate vmID=... dst=B``: (rc, final job, stderr lines)."""
    dst = services.services[1]
    argv = [sys.executable, "-m", "jsonrpc_plugin.client", *services.client_args(0), "SRIOV",
            "migrate", "vmID=%s" % spec.uuid, "dst=%s" % dst.host.address, "port=%d" % dst.port,
            "timeout=%d" % timeout]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 60)
    try:
        job = json.loads(proc.stdout)
    except ValueError:
        job = None
    return proc.returncode, job, proc.stderr.splitlines()


def _steps(job) -> dict:
    return {s["step"]: s for s in job["steps"]}


def _live(conn, spec):
    root = etree.fromstring(conn.lookupByUUIDString(spec.uuid).XMLDesc(0).encode())
    aliases = {a.get("name") for a in root.iterfind("devices/interface/alias")}
    slots = {i.find("mac").get("address"): i.find("address").get("slot")
             for i in root.iterfind("devices/interface") if i.find("address") is not None}
    return aliases, metadata.read_record(root), slots


def _macs_seen_after(counter, macs):
    def until(_ready, ticks):
        later = [t for t in ticks if t.counter > counter and macs <= set(t.nics.values())]
        return later[-1] if later else None
    return until


def test_migrate_should_bring_every_vnic_back_on_b_at_its_guest_slot(
        lab_hosts, lab_conns, vms, services, vdsm):
    a, b = lab_hosts
    vlan_vnic = vms.vnic(0, 0, vlan=100)
    failover = vms.vnic(0, 1, failover_alias="ua-%s" % uuid.uuid4())
    spec, _ = vms.start(0, vnics=(vlan_vnic, failover), persistent_teaming=True)
    macs = {vlan_vnic.mac, failover.mac}
    before = domains.wait_serial(a, spec.name, _macs_seen_after(-1, macs), 60, "both NICs on A")
    _, _, slots_on_a = _live(lab_conns[0], spec)

    rc, job, progress = sriov_migrate(services, spec)

    assert rc == 0 and job["phase"] == "migrated", (progress, job, domains.qemu_log_tail(b, spec.name))
    assert [s["step"] for s in job["steps"]][:4] == ["check", "reserve", "unplug", "migrate"]
    assert all(s["ok"] for s in job["steps"])
    assert any("unplug" in line for line in progress)
    result = vdsm[0].wait(spec.uuid, timeout=30)
    assert result is not None and result.ok, result and result.error
    guard = result.step("before_vm_migrate_source")
    assert guard.rc == 0  # nothing attached any more when VDSM ran it
    aliases, record, slots_on_b = _live(lab_conns[1], spec)
    assert {vlan_vnic.alias, failover.alias, failover.failover_alias} <= aliases
    assert record.host == b.host_uuid and record.phase == "migrated"
    assert {r.state for r in record.vnics} == {metadata.PLUGGED}
    by_mac = {r.mac: r for r in record.vnics}
    assert by_mac[vlan_vnic.mac].vlan == 100
    assert by_mac[failover.mac].teaming == failover.failover_alias
    assert {m: slots_on_b[m] for m in macs} == {m: slots_on_a[m] for m in macs}
    assert _claims(a, spec.uuid) == []
    assert {(c.mac, c.vf_address, c.state) for c in _claims(b, spec.uuid)} == {
        (r.mac, r.vf_address, "in_use") for r in record.vnics}
    tick = domains.wait_serial(b, spec.name, _macs_seen_after(before.counter, macs), 30,
                               "both NICs in the guest on B")
    assert macs <= set(tick.nics.values())


def test_migrate_failing_in_libvirt_should_replug_on_a_at_once(lab_hosts, lab_conns, vms,
                                                               services, vdsm):
    a, b = lab_hosts
    vnic = vms.vnic(0, 2)
    spec, _ = vms.start(0, vnics=(vnic,))
    before = domains.wait_serial(a, spec.name, _macs_seen_after(-1, {vnic.mac}), 60, "NIC on A")
    # B already runs a domain with this UUID: the migration fails after the unplug.
    vms.start(1, with_os=False, uuid=spec.uuid, name=spec.name + "-on-b")

    rc, job, progress = sriov_migrate(services, spec)

    assert rc == 1 and job["phase"] == "rolled-back", (progress, job)
    steps = _steps(job)
    assert steps["unplug"]["ok"] and not steps["migrate"]["ok"]
    replug_after = (steps["rollback"]["start"] + steps["rollback"]["ms"] / 1000.0
                    - steps["migrate"]["start"] - steps["migrate"]["ms"] / 1000.0)
    assert replug_after <= 1.0, job["steps"]  # at once, not after rollback_grace
    assert any(vnic.mac in line for line in progress), progress  # one line per vNIC
    aliases, record, _ = _live(lab_conns[0], spec)
    assert vnic.alias in aliases
    assert [r.state for r in record.vnics] == [metadata.PLUGGED]
    assert _claims(b, spec.uuid) == []
    domains.wait_serial(a, spec.name, _macs_seen_after(before.counter, {vnic.mac}), 30,
                        "the NIC back in the guest on A")


def test_migrate_should_keep_the_nics_when_the_unplug_times_out(lab_hosts, lab_conns, vms,
                                                                services, vdsm):
    a, b = lab_hosts
    vnic = vms.vnic(0, 3)
    spec, _ = vms.start(0, with_os=False, vnics=(vnic,))  # nothing will release the device
    claims_before = _claims(a)

    rc, job, progress = sriov_migrate(services, spec)

    assert rc == 1 and job["phase"] == "failed", (progress, job)
    assert "still present" in job["error"] and vnic.mac in job["error"]
    assert "migrate" not in _steps(job) and vdsm[0].result(spec.uuid) is None
    aliases, record, _ = _live(lab_conns[0], spec)
    assert vnic.alias in aliases and [r.state for r in record.vnics] == [metadata.PLUGGED]
    assert _claims(a) == claims_before
    assert _claims(b, spec.uuid) == []


def test_migrate_should_unplug_nothing_when_b_has_no_free_vf(lab_hosts, lab_conns, vms,
                                                             services, vdsm):
    _, b = lab_hosts
    vnic = vms.vnic(0, 4)
    spec, _ = vms.start(0, with_os=False, vnics=(vnic,))
    client_b = services.client(1)
    fillers = [str(uuid.uuid4()) for v in client_b.call("SRIOV.listVfs") if v["state"] == "free"]
    try:
        for i, vm in enumerate(fillers):
            client_b.call("SRIOV.reserveVfs", {"vmID": vm, "nics": [{"mac": "02:00:00:00:03:%02x" % i}]})
        claims_before = _claims(b)
        rc, job, progress = sriov_migrate(services, spec)
        claims_after = _claims(b)
    finally:
        for vm in fillers:
            client_b.call("SRIOV.releaseVfs", {"vmID": vm})

    assert rc == 1 and job["phase"] == "failed", (progress, job)
    assert "2001" in job["error"] and "unplug" not in _steps(job)
    aliases, record, _ = _live(lab_conns[0], spec)
    assert vnic.alias in aliases and record.phase == "idle"
    assert claims_after == claims_before


def test_plain_vdsm_migrate_should_be_refused_by_the_source_hook(lab_hosts, lab_conns, vms,
                                                                 services, vdsm):
    vnic = vms.vnic(0, 5)
    spec, _ = vms.start(0, with_os=False, vnics=(vnic,))
    claims = [_claims(h) for h in lab_hosts]

    vdsm.client(0).call("VM.migrate", {"vmID": spec.uuid, "params": {
        "vmId": spec.uuid, "dst": vdsm[1].endpoint, "method": "online"}})
    result = vdsm[0].wait(spec.uuid, timeout=60)

    guard = result.step("before_vm_migrate_source")
    assert not result.ok and guard.rc == 2 and len(guard.stderr) == 1
    assert vnic.mac in guard.stderr[0] and "SRIOV migrate" in guard.stderr[0]
    status = vdsm.client(0).call("VM.getMigrationStatus", {"vmID": spec.uuid})
    assert status["status"]["code"] != 0, status
    aliases, record, _ = _live(lab_conns[0], spec)
    assert vnic.alias in aliases and record.phase == "idle"
    assert [_claims(h) for h in lab_hosts] == claims


def test_migrate_should_keep_the_traffic_gap_to_the_nic_absent_time(
        lab, lab_hosts, lab_conns, vms, services, vdsm, tmp_path):
    a, _b = lab_hosts
    vnic = vms.vnic(0, 3)
    spec, _ = vms.start(0, vnics=(vnic,), bridge=a.extra["bridge"],
                        guest_ip=(vnic.mac, "%s/%d" % (datapath.guest_ip(), datapath.PREFIX)))
    domains.wait_serial(a, spec.name, _macs_seen_after(-1, {vnic.mac}), 60, "NIC on A")
    with rarp_sniffer(lab.datapath.switch) as sniffer:
        with traffic.Pinger(lab.datapath.netns, datapath.guest_ip(), str(tmp_path)) as pinger:
            assert pinger.wait_reply(0.0, 30.0) is not None, "the guest never answered on A"
            rc, job, progress = sriov_migrate(services, spec)
            assert rc == 0 and job["phase"] == "migrated", (progress, job)
            assert pinger.wait_reply(demo_report.step_end(job, "plug"), 30.0) is not None
        announced = rarp_sources(sniffer)
    t = pinger.result
    absent = demo_report.nic_absent(job)[0] * 1000.0
    assert t.recovered and t.lost > 0, t
    assert t.longest_gap_ms <= absent + traffic.ANNOUNCED_SLACK_MS, (t, absent)
    assert announced.count(vnic.mac) == len(announce.ROUNDS_MS), announced


def test_migrate_should_take_the_vm_out_of_the_source_vdsm_where_no_engine_will(
        lab_hosts, vms, services, vdsm):
    """VDSM keeps a migrated VM Down until VM.destroy and refuses it back (exist).

    No engine manages a lab host (no storage pool connected), so
    SRIOV.migrate destroys it (issue 20 item 6); with an engine it would not.
    """
    spec, _ = vms.start(0, vnics=(), with_os=False)  # the source's VDSM side is what is tested

    rc, job, progress = sriov_migrate(services, spec)

    assert rc == 0, (progress, job)
    step = _steps(job)["destroy-source"]
    assert step["ok"] and "VM.destroy" in step["detail"], step
    with pytest.raises(Exception) as gone:
        vdsm[0].status(spec.uuid)
    assert getattr(gone.value, "code", None) == 1  # VDSM's noVM: the container let it go


def test_migrate_should_leave_the_plugged_vnics_in_the_destination_vdsms_books(
        lab_hosts, lab_conns, vms, services, vdsm):
    """B's service plugs through VDSM's hotplugNic: VDSM knows the NIC, so the engine's
    later hotunplugNic of it (before its own next migration) works (issue 20 item 3)."""
    vnic = vms.vnic(0, 3)
    spec, _ = vms.start(0, vnics=(vnic,))
    domains.wait_ready(lab_hosts[0], spec.name)

    rc, job, progress = sriov_migrate(services, spec)

    assert rc == 0, (progress, job)
    assert vnic.alias in vdsm[1].devices(spec.uuid)
    assert vnic.alias in vdsm[1].descriptor(spec.uuid)
    xml = etree.tostring(etree.fromstring(lab_conns[1].lookupByUUIDString(spec.uuid).XMLDesc(
        0).encode()).xpath("devices/interface[alias/@name=$a]", a=vnic.alias)[0], encoding="unicode")
    vdsm[1].hotunplug_timeout = 10.0
    done = vdsm.client(1).call("VM.hotunplugNic", {"vmID": spec.uuid, "params": {
        "vmId": spec.uuid, "xml": "<hotplug><devices>%s</devices></hotplug>" % xml}})
    assert done["status"]["code"] == 0


def test_migrate_should_leave_the_source_vm_to_an_engine_that_manages_the_host(
        lab_hosts, vms, services, vdsm):
    """An engine destroys every Down VM itself (VmAnalyzer.proceedDownVm); one that vanished
    first can be marked failed or, if HA, restarted: with an engine, SRIOV.migrate leaves it."""
    vdsm[0].storage_pools = ["5849b030-626e-47cb-ad90-3ce782d831b3"]  # as on an engine's host
    spec, _ = vms.start(0, vnics=(), with_os=False)

    rc, job, progress = sriov_migrate(services, spec)

    assert rc == 0, (progress, job)
    step = _steps(job)["destroy-source"]
    assert step["ok"] and "engine" in step["detail"], step
    assert vdsm[0].status(spec.uuid) == "Down"
