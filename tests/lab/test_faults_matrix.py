"""``sriov-lab faults`` end to end: one (step, fault) cell through the CLI, as CI runs the quick set.

The cell: SRIOV.migrate held after its unplug, the source's
sriov-migrationd killed with SIGKILL there and started again as systemd
would; the reconciler of the new process must re-plug both vNICs on the
source, and every invariant (one QEMU, each vNIC once at its guest slot,
ledgers and VDSM's books agreeing with libvirt, nothing left running)
must hold within the bounded wait.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sriov_lab.fixtures import lab_unavailable_reason

pytestmark = pytest.mark.lab


def test_faults_cell_should_recover_from_a_killed_source_service_after_the_unplug(lab_guest):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    argv = [sys.executable, "-m", "sriov_lab.cli", "faults", "--step", "after-unplug",
            "--fault", "kill -9 src sriov-migrationd"]

    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd="/",
                          env=dict(os.environ))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split("  ") for line in proc.stdout.splitlines()
            if line.startswith("after-unplug ")]
    assert len(rows) == 1, proc.stdout
    cells = [c.strip() for c in rows[0] if c.strip()]
    assert cells[1] == "kill -9 src sriov-migrationd"
    assert cells[2].startswith("stayed on src")  # the VM never left: its vNICs re-plugged there
    assert cells[-1] == "yes"
    assert "lab processes left after it: none" in proc.stdout
