"""Real-VF lab: how long the guest is without its NICs, SRIOV.migrate vs raw libvirt, in one L1.

Runs the real-VF demo's success scenario with ``--raw-baseline``
(``sriov_lab.realvf.demo``): a VM with two real VFs (one VLAN-tagged,
one in a failover pair) is migrated A to B with ``SRIOV.migrate``, then
back B to A with plain libvirt calls (detach both, ``migrate3``, attach
both), and the demo prints both NIC-absent times. One trial: each needs
an L2 boot under nested TCG (4-5 min warm; the cache is built first when
cold). There is no target: L1 runs under TCG, where every hook process
costs seconds of Python start-up, so the ratio says what the hooks cost
there, not on a host. Needs root (else skipped); run_all adds it with
``--real-vf``.

    python benchmarks/bench_realvf.py
"""

from __future__ import annotations

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from report import print_rows, row, skipped  # noqa: E402

NAME = "real-VF NIC-absent: SRIOV.migrate vs raw libvirt"
BASELINE = "raw detach x2+migrate3+attach x2, same L1"
TARGET = "demo passes; ratio reported"
_LINE = re.compile(r"NIC-absent, same VM, same hosts: SRIOV\.migrate ([\d.]+) s .*raw libvirt ([\d.]+) s")


def parse(lines) -> tuple:
    """``(SRIOV.migrate s, raw s)`` from the demo's output, or None."""
    for line in lines:
        m = _LINE.search(line)
        if m:
            return float(m.group(1)), float(m.group(2))
    return None


def measure() -> list:
    if os.geteuid() != 0:
        return [skipped(NAME, BASELINE, TARGET, "needs root (QEMU, VFIO in L1)")]
    from sriov_lab import realvf

    lines = []
    passed = realvf.demo(("success",), raw_baseline=True, say=lines.append)
    found = parse(lines)
    if found is None:
        tail = [ln for ln in lines if "FAIL" in ln][:1] or lines[-1:]
        return [row(NAME, None, BASELINE, None, TARGET, False,
                    note="no comparison printed: %s" % (tail[0].strip() if tail else "no output"))]
    ours, raw = found
    return [row(NAME, ours * 1000.0, BASELINE, raw * 1000.0, TARGET, passed,
                note="%+.1f s; demo %s" % (ours - raw, "passed" if passed else "FAILED"))]


if __name__ == "__main__":
    print_rows(measure())
