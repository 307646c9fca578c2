"""Live migration between two real lab hosts, proven from the guest's serial log.

A VM with attached SR-IOV vNICs is refused by the VDSM-order stand-in
(tests/lab/test_vdsm_standin.py); the carried record is proven there and
in tests/lab/test_sriov_migrate.py. Here: the guest itself, and the
order in which the hook points run.
"""

from __future__ import annotations

import os

import pytest

from sriov_lab import domains
from sriov_lab.guest import parse_serial
from sriov_lab.vdsm import hooks as hr
from sriov_lab.vdsm.api import migrate

pytestmark = pytest.mark.lab


def _ticks_beyond(counter, n=3):
    """A serial condition: n ticks newer than *counter* (the guest still runs)."""
    def until(_ready, ticks):
        newer = [t for t in ticks if t.counter > counter]
        return newer if len(newer) >= n else None
    return until


def test_guest_should_keep_running_on_destination_after_live_migration(
        lab_hosts, lab_conns, lab_vms, lab_hook_runners):
    a, b = lab_hosts
    spec, _dom = lab_vms.start(0)
    last_on_a = domains.wait_ready(a, spec.name).counter

    result = migrate(lab_conns[0], lab_conns[1], spec.uuid, *lab_hook_runners)

    assert result.ok, result.error
    assert lab_conns[1].lookupByUUIDString(spec.uuid).isActive()
    ticks_b = domains.wait_serial(b, spec.name, _ticks_beyond(last_on_a), 30, "ticks on B")
    counters = [t.counter for t in ticks_b]
    assert counters == sorted(counters) and counters[0] > last_on_a
    # B's QEMU wrote its own serial file: the guest booted on A, not on B.
    ready_b, _ = parse_serial(domains.read_serial(b, spec.name))
    assert ready_b is None


def _recording_hook(runner, point, name, body="", rc=0):
    d = os.path.join(runner.hooks_dir, point)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    log = os.path.join(os.path.dirname(runner.hooks_dir), "calls.log")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                'echo "%s %s $vmId $SRIOV_MIGRATION_CONF $(head -c 7 $_hook_domxml)" >> %s\n'
                "%s\necho 'sriov-migration: %s ran' >&2\nexit %d\n"
                % (runner.host, point, log, body, point, rc))
    os.chmod(path, 0o755)
    return log


def test_hook_runner_should_drive_migration_in_vdsm_order(lab_hosts, lab_conns, lab_vms,
                                                          lab_hook_runners):
    src, dst = lab_hook_runners
    for runner in lab_hook_runners:
        for point in hr.POINTS:
            log = _recording_hook(runner, point, "50_record")
    spec, _dom = lab_vms.start(0, with_os=False)

    result = migrate(lab_conns[0], lab_conns[1], spec.uuid, src, dst)

    assert result.ok, result.error
    calls = [line.split() for line in open(log).read().splitlines()]
    # The destination's after hook runs on its own thread: VDSM's source
    # does not wait for it, so it may come before or after the source's.
    order = [(c[0], c[1]) for c in calls]
    assert order[:2] == [("host-a", hr.BEFORE_SOURCE), ("host-b", hr.BEFORE_DEST)]
    assert sorted(order[2:]) == [("host-a", hr.AFTER_SOURCE), ("host-b", hr.AFTER_DEST)]
    assert {c[2] for c in calls} == {spec.uuid}
    assert {(c[0], c[3]) for c in calls} == {(h.name, h.config_path) for h in lab_hosts}
    assert all(c[4] == "<domain" for c in calls)
    assert result.step(hr.BEFORE_SOURCE).stderr == ["sriov-migration: %s ran" % hr.BEFORE_SOURCE]
    labels = [row[0] for row in result.timeline()]
    assert labels[:4] == ["guard", "create", "reserve", "migrate"]
    assert sorted(labels[4:]) == ["plug", "release"]


def test_failing_destination_hook_should_abort_and_run_no_source_hook(
        lab_conns, lab_vms, lab_hook_runners):
    src, dst = lab_hook_runners
    log = _recording_hook(src, hr.BEFORE_SOURCE, "50_record")
    _recording_hook(src, hr.AFTER_SOURCE, "50_record")
    _recording_hook(dst, hr.BEFORE_DEST, "50_refuse", rc=2)
    spec, _dom = lab_vms.start(0, with_os=False)

    result = migrate(lab_conns[0], lab_conns[1], spec.uuid, src, dst)

    assert not result.ok and result.aborted_at == hr.BEFORE_DEST
    assert result.step(hr.BEFORE_DEST).rc == 2
    assert [line.split()[1] for line in open(log).read().splitlines()] == [
        hr.BEFORE_SOURCE, hr.BEFORE_DEST]
    assert lab_conns[0].lookupByUUIDString(spec.uuid).isActive()
