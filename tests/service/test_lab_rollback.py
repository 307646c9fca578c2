"""Lab: a migration fails after the source unplugged, and nothing drives it any more.

Two real libvirtd hosts and a real guest (sriov_lab). The source's unplug
is done as ``SRIOV.migrate`` does it before VDSM's ``VM.migrate`` (live
detach waiting for DEVICE_REMOVED, the record says unplugged-for-migration),
but no ``SRIOV.migrate`` follows it: the process that unplugged is gone.
The destination's ``before_vm_migrate_destination`` refuses, so the
migration fails and VDSM runs no hook on the source. The reconciler of
host A's ``sriov-migrationd`` is the safety net: it must re-plug within
``rollback_grace`` + 1 s, and the guest must see its NIC again. (The
driven case, re-plugged at once, is tests/lab/test_sriov_migrate.py.)
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from jsonrpc_plugin.client import RpcClient
from jsonrpc_plugin.service import Service
from sriov_host import config, devices, domxml, libvirtconn, metadata, rollback
from sriov_lab import domains, netns
from sriov_lab.services import LabStandIns
from sriov_lab.vdsm import hooks as hr

pytestmark = pytest.mark.lab

GRACE = 2.0


def _refuse(runner, point):
    d = os.path.join(runner.hooks_dir, point)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "50_refuse")
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho 'sriov-migration: destination libvirt is gone' >&2\nexit 2\n")
    os.chmod(path, 0o755)


def _nic_seen(mac, present):
    def until(_ready, ticks):
        return ticks and (mac in ticks[-1].nics.values()) == present and ticks[-1]
    return until


def _unplug_like_sriov_migrate(dom, spec, vnic, host_uuid, cfg):
    xml = domxml.render_attach(domains.to_vnic(vnic), vnic.vf_address, mode=cfg.vf_device,
                               model=cfg.vf_model)
    unplug_ms = devices.detach_and_wait(dom, xml, vnic.alias, cfg.unplug_timeout)
    rec = domains.record_for(spec, host_uuid)
    vnics = tuple(v.with_state(metadata.UNPLUGGED, unplug_ms=unplug_ms) for v in rec.vnics)
    rollback.save_record(dom, dataclasses.replace(rec, vnics=vnics, phase="unplugged",
                                                  updated=time.time()))


def _wait_plugged(dom, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = rollback.read_live_record(dom)
        if rec and all(v.state == metadata.PLUGGED for v in rec.vnics):
            return rec
        time.sleep(0.05)
    raise AssertionError("not re-plugged within %.1f s: %s" % (timeout, rollback.read_live_record(dom)))


def test_failed_migration_should_be_rolled_back_by_the_reconciler(lab, lab_hosts, lab_conns, lab_vms,
                                                                    lab_hook_runners):
    a, _b = lab_hosts
    vnic = lab_vms.vnic(0)
    spec, dom = lab_vms.start(0, vnics=(vnic,))
    domains.wait_ready(a, spec.name)
    domains.wait_serial(a, spec.name, _nic_seen(vnic.mac, True), 30, "NIC in the guest")
    cfg = config.load(a.config_path, required=True)
    cfg.rollback_grace, cfg.reconcile_interval = GRACE, 0.5
    # A's service lives in A's namespace (if the lab has them), as the lab starts it
    svc = netns.call_in(a.extra.get("netns"), Service(cfg, insecure=True, port=0).start)
    try:
        with LabStandIns(lab, runners=lab_hook_runners) as vdsm:
            _unplug_like_sriov_migrate(dom, spec, vnic, libvirtconn.host_uuid(lab_conns[0]), cfg)
            domains.wait_serial(a, spec.name, _nic_seen(vnic.mac, False), 30, "NIC gone in the guest")
            _wait_forgotten(vdsm[0], spec.uuid, vnic.alias)
            _refuse(lab_hook_runners[1], hr.BEFORE_DEST)

            result = vdsm[0].run_migration(spec.uuid, vdsm[1])
            failed_at = time.monotonic()

            assert not result.ok and result.aborted_at == hr.BEFORE_DEST
            _assert_rolled_back(a, dom, spec, vnic, svc, failed_at)
            # re-plugged through VDSM's hotplugNic: VDSM has the NIC in its books again
            assert vnic.alias in vdsm[0].devices(spec.uuid)
            assert vnic.alias in vdsm[0].descriptor(spec.uuid)
    finally:
        svc.stop()


def _wait_forgotten(standin, vm_id, alias, timeout=10.0):
    """VDSM dropped the unplugged NIC from its device list (Vm.onDeviceRemoved)."""
    deadline = time.monotonic() + timeout
    while alias in standin.devices(vm_id):
        assert time.monotonic() < deadline, "VDSM's books still hold %s" % alias
        time.sleep(0.05)


def _assert_rolled_back(host, dom, spec, vnic, svc, failed_at):
    rec = _wait_plugged(dom, GRACE + 1.0 + 0.5)
    elapsed = time.monotonic() - failed_at
    assert elapsed <= GRACE + 1.0, elapsed
    assert rec.phase == rollback.PHASE_ROLLED_BACK and rec.vnics[0].rollback_ms is not None
    assert vnic.alias in domxml.attached_keys(domxml.parse_domain(dom.XMLDesc(0)))
    domains.wait_serial(host, spec.name, _nic_seen(vnic.mac, True), 30, "NIC back in the guest")
    client = RpcClient(svc.address, svc.port, insecure=True)  # plain HTTP: loopback, on the host
    status = netns.call_in(host.extra.get("netns"), client.call, "SRIOV.migrationStatus",
                           {"vmID": spec.uuid})
    assert status["phase"] == "rolled-back" and status["vnics"][0]["state"] == "plugged"
    assert status["vnics"][0]["rollback_ms"] is not None
