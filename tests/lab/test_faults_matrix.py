"""``sriov-lab faults`` end to end: two (step, fault) cells through the CLI, as CI runs the quick set.

Both cells kill the source's sriov-migrationd (SIGKILL) while
SRIOV.migrate is held at a step, and start it again as systemd would:

* after the unplug: the new process's reconciler must re-plug both
  vNICs on the source, where the VM stayed;
* after the libvirt migration, before the destination's plug: the
  destination must plug, and the source's new process must take the
  migrated VM's Down copy out of its VDSM, as the dead driver would have
  (without it, VDSM refuses the VM coming back).

In both, every invariant (one QEMU, each vNIC once at its guest slot,
ledgers and VDSM's books agreeing with libvirt, nothing left running)
must hold within the bounded wait, with no repair command.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sriov_lab.fixtures import lab_unavailable_reason

pytestmark = pytest.mark.lab

FAULT = "kill -9 src sriov-migrationd"


def _row(stdout: str, step: str) -> list:
    rows = [[c.strip() for c in line.split("  ") if c.strip()] for line in stdout.splitlines()
            if line.startswith(step + " ")]
    assert len(rows) == 1, stdout
    return rows[0]


def test_faults_cells_should_recover_from_a_killed_source_service(lab_guest):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    argv = [sys.executable, "-m", "sriov_lab.cli", "faults", "--step", "after-unplug",
            "--step", "before-dest-plug", "--fault", FAULT]

    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd="/",
                          env=dict(os.environ))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    stayed, moved = _row(proc.stdout, "after-unplug"), _row(proc.stdout, "before-dest-plug")
    assert stayed[1] == moved[1] == FAULT
    assert stayed[2].startswith("stayed on src") and stayed[-1] == "yes", stayed
    assert moved[2].startswith("on dst") and moved[-1] == "yes", moved
    assert "lab processes left after it: none" in proc.stdout
