"""The demo's scenarios, one function each: success, rollback, unplug-timeout, no-free-vf, plain-vdsm-migrate.

Part of ``sriov-lab demo`` (:mod:`sriov_lab.demo`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid

from sriov_host import domxml, metadata

from . import demo_report as report
from . import domains
from . import inventory as lab_inventory
from .demo_checks import (
    _check_guest_vfs,
    _check_pf_carries,
    _check_settings,
    _last_counter,
    _migrated,
    _set_vf_settings,
    check_stream_crossed_firewall,
)
from .demo_stage import (
    _EPOCH_TO_MONO,
    REAL_VF_TIMEOUTS,
    TIMEOUTS,
    Stage,
    _guest_slots,
    _guest_view,
    _host_vfs,
    _ledger_claims,
    _live,
    _sriov_migrate,
    _start_vm,
    _steps,
)
from .demo_traffic import _check_traffic, _start_traffic, _traffic_back


def scenario_success(st: Stage) -> None:
    spec = _start_vm(st)
    before = _guest_view(st, 0, spec, timeout=st.waits["boot"])
    slots = _guest_slots(st, 0, spec)
    on_a = [(v, v.vf_address) for v in spec.vnics]
    if st.real_vf:
        _check_pf_carries(st, 0, on_a, "before the unplug")
        _check_guest_vfs(st, 0, spec, before.counter - 1)
        settings = _set_vf_settings(st, spec.vnics[0])
    with contextlib.ExitStack() as stream:
        pinger = _start_traffic(st, spec, stream)
        rc, job = _sriov_migrate(st, spec)
        _migrated(st, spec, before, slots, on_a, rc, job, settings if st.real_vf else None)
        check_stream_crossed_firewall(st)
        if pinger is not None:
            _traffic_back(st, pinger, job, stream)
    if pinger is not None:
        _check_traffic(st, spec, pinger, job)
    absent = report.nic_absent(job)
    if st.raw_baseline and absent:
        raw = _raw_migrate_back(st, spec)
        report.step("NIC-absent, same VM, same hosts: SRIOV.migrate %.2f s (%s to %s), raw libvirt "
                    "%.2f s (%s back to %s: detach x%d, migrate3, attach x%d): %.2fx raw, %+.2f s",
                    absent[0], st.names[0], st.names[1], raw, st.names[1], st.names[0],
                    len(spec.vnics), len(spec.vnics), absent[0] / raw, absent[0] - raw)


def _raw_migrate_back(st: Stage, spec) -> float:
    """Migrate the VM back to A with plain libvirt calls (services stopped); NIC-absent seconds.

    The same vNICs are detached on B, the VM migrated with ``migrate3``,
    and the vNICs attached on A's own VFs again: the floor any machinery
    pays, measured on the same VM and hosts as the SRIOV.migrate before it.
    """
    import libvirt

    from . import rawlibvirt
    from .inventory import free_port
    from .vdsm.migration import _migrate_params

    st.services.stop()  # no reconciler may act on a VM moved behind its back
    aliases = [v.alias for v in spec.vnics]
    dom = st.conns[1].lookupByUUIDString(spec.uuid)
    mode = domxml.MODE_HOSTDEV if st.real_vf else domxml.MODE_EMULATED
    xmls = [domxml.render_attach(domains.to_vnic(v), v.vf_address, mode=mode, at_guest_address=False)
            for v in spec.vnics]
    timeout = REAL_VF_TIMEOUTS["unplug"] if st.real_vf else TIMEOUTS["unplug"] * 5
    t0 = time.monotonic()
    rawlibvirt.detach(st.conns[1], dom, aliases, timeout)
    dom.migrate3(st.conns[0], _migrate_params(free_port()), libvirt.VIR_MIGRATE_LIVE)
    rawlibvirt.attach(st.conns[0], st.conns[0].lookupByUUIDString(spec.uuid), aliases, xmls, timeout)
    return time.monotonic() - t0


def scenario_rollback(st: Stage) -> None:
    spec = _start_vm(st)
    before = _guest_view(st, 0, spec, timeout=st.waits["boot"])
    dst = st.lab.hosts[1]
    settings = _set_vf_settings(st, spec.vnics[0]) if st.real_vf else None

    def crash_destination():
        report.step("stopping %s's libvirtd (kill -9) after the unplug: the migration will fail",
                    dst.name)
        os.kill(dst.pid, signal.SIGKILL)
        dst.proc.wait()

    st.vdsm[0].before_migrate = crash_destination
    rc, job = _sriov_migrate(st, spec)
    replugged_at = _last_counter(st, 0, spec)
    report.migration(job, st.vdsm[0].result(spec.uuid), None, _EPOCH_TO_MONO)
    steps = _steps(job)
    st.check(rc == 1 and job and job["phase"] == "rolled-back",
             "sriov-client exited 1: the migration failed and %s re-plugged its own VFs" % st.names[0])
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "both vNICs are attached on %s again"
             % st.names[0])
    if "migrate" in steps and "rollback" in steps:
        took = steps["rollback"][1] - steps["migrate"][1]
        report.rollback(record, took)
        target = 10.0 if st.real_vf else 1.0  # a real VF's hot-plug into nested TCG: ~1-2 s each
        st.check(took <= target, "re-plugged %.2f s after the failure, at once (target <= %g s; the "
                 "reconciler's rollback_grace of %s s is only the safety net)"
                 % (took, target, st.services.timeouts["rollback_grace"]))
    st.check(_ledger_claims(dst, spec.uuid) == [], "the reservation on %s was released" % dst.name)
    if st.real_vf and record:
        by_alias = {v.alias: v for v in spec.vnics}
        _check_pf_carries(st, 0, [(by_alias[r.alias], r.vf_address) for r in record.vnics],
                          "after the re-plug")
        _check_settings(st, 0, spec.vnics[0].vf_address, settings, "after the re-plug")
    _guest_view(st, 0, spec, after=before.counter)
    st.check(True, "the guest sees both MACs again on %s" % st.names[0])
    if st.real_vf:
        _check_guest_vfs(st, 0, spec, replugged_at)


def scenario_unplug_timeout(st: Stage) -> None:
    spec = _start_vm(st, with_os=False)
    report.step("this guest has no OS: nothing will ever release a device")
    claims_before = _ledger_claims(st.lab.hosts[0])
    rc, job = _sriov_migrate(st, spec)
    report.migration(job, None, None, _EPOCH_TO_MONO)
    st.check(rc == 1 and job and job["phase"] == "failed" and "still present" in (job["error"] or ""),
             "sriov-client exited 1: the unplug timed out (%s s) and the migration was not started"
             % TIMEOUTS["unplug"])
    st.check(st.vdsm[0].result(spec.uuid) is None, "VDSM was never asked to migrate")
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "the VM keeps both vNICs on %s" % st.names[0])
    st.check(record and {r.state for r in record.vnics} == {metadata.PLUGGED}, "our record says plugged")
    st.check(_ledger_claims(st.lab.hosts[0]) == claims_before, "the source ledger is unchanged")
    st.check(_ledger_claims(st.lab.hosts[1], spec.uuid) == [],
             "the reservation on %s was released" % st.names[1])


def scenario_no_free_vf(st: Stage) -> None:
    spec = _start_vm(st, with_os=False)
    dst = st.lab.hosts[1]
    own = {vf.address for vf in _host_vfs(st, 1)}
    free = [v for v in st.services.client(1).call("SRIOV.listVfs")
            if v["state"] == "free" and v["address"] in own]
    for i, _vf in enumerate(free):
        st.services.client(1).call("SRIOV.reserveVfs", {
            "vmID": str(uuid.uuid4()),
            "nics": [{"mac": "02:00:00:00:02:%02x" % i, "network": lab_inventory.NETWORK}]})
    report.step("filled %s's pool: %d VFs reserved by other VMs", dst.name, len(free))
    claims_before = _ledger_claims(dst)
    rc, job = _sriov_migrate(st, spec)
    report.migration(job, None, None, _EPOCH_TO_MONO)
    st.check(rc == 1 and job and job["phase"] == "failed" and "2001" in (job["error"] or ""),
             "sriov-client exited 1: reserveVfs on %s answered 2001 no free VF" % dst.name)
    st.check(job and "unplug" not in _steps(job), "nothing was unplugged: the migration was not started")
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "the VM keeps both vNICs")
    st.check(record and record.phase == "idle", "our record was not touched")
    st.check(_ledger_claims(dst) == claims_before, "the destination ledger is unchanged")
    if st.real_vf:
        _check_pf_carries(st, 0, [(v, v.vf_address) for v in spec.vnics], "still (nothing unplugged)")


def scenario_plain_vdsm_migrate(st: Stage) -> None:
    spec = _start_vm(st, with_os=False)
    claims = [_ledger_claims(h) for h in st.lab.hosts]
    dst = st.vdsm[1]
    report.step("VM.migrate vmID=%s dst=%s on %s's VDSM, as 'vdsm-client VM migrate' does",
                spec.uuid, dst.endpoint, st.names[0])
    st.vdsm.client(0).call("VM.migrate", {"vmID": spec.uuid, "params": {
        "vmId": spec.uuid, "dst": dst.endpoint, "method": "online"}})
    result = st.vdsm[0].wait(spec.uuid, timeout=60)
    status = st.vdsm.client(0).call("VM.getMigrationStatus", {"vmID": spec.uuid})
    report.migration(None, result, None, _EPOCH_TO_MONO)
    guard = result.step("before_vm_migrate_source") if result else None
    st.check(status["status"]["code"] != 0, "VDSM reports the migration failed: %s"
             % status["status"]["message"])
    st.check(guard is not None and guard.rc == 2 and any("SRIOV migrate" in line for line in guard.stderr),
             "the source hook refused it (rc 2) and said to use 'sriov-client SRIOV migrate'")
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "the VM keeps both vNICs on %s" % st.names[0])
    st.check(record and record.phase == "idle", "our record was not touched")
    st.check([_ledger_claims(h) for h in st.lab.hosts] == claims, "both ledgers are unchanged")


RUNNERS = {"success": scenario_success, "rollback": scenario_rollback,
           "unplug-timeout": scenario_unplug_timeout, "no-free-vf": scenario_no_free_vf,
           "plain-vdsm-migrate": scenario_plain_vdsm_migrate}
