"""Real-VF lab: how long the guest is without its NICs, SRIOV.migrate vs raw libvirt, in one L1.

Runs the real-VF demo's success scenario with ``--raw-baseline``
(``sriov_lab.realvf.demo``): a VM with two real VFs (one VLAN-tagged,
one in a failover pair) is migrated A to B with ``SRIOV.migrate``, then
back B to A with plain libvirt calls (detach both, ``migrate3``, attach
both), and the demo prints both NIC-absent times. One trial: each needs
an L2 boot under nested TCG (4-5 min warm; the cache is built first when
cold). There is no target: L1 runs under TCG, where every hook process
costs seconds of Python start-up, so the ratio says what the hooks cost
there, not on a host. The same run gives the failover pair's traffic
gaps (the demo streams echoes to it): up to the migration's end, against
the migration itself; after it, against the NIC-absent time; and from
when the guest took up its new VF, against the NIC-absent time too.
Needs root (else skipped); run_all adds it with ``--real-vf``.

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

from sriov_lab.traffic import FAILOVER_SLACK_MS, SWITCH_BOUND_MS  # noqa: E402

NAME = "real-VF NIC-absent: SRIOV.migrate vs raw libvirt"
BASELINE = "raw detach x2+migrate3+attach x2, same L1"
TARGET = "demo passes; ratio reported"
_LINE = re.compile(r"NIC-absent, same VM, same hosts: SRIOV\.migrate ([\d.]+) s .*raw libvirt ([\d.]+) s")
FAILOVER = "real-VF failover pair: traffic gap, unplug to migration end"
FAILOVER_BASE = "the libvirt migration itself"
FAILOVER_TARGET = "gap <= the migration + %.0f s" % (FAILOVER_SLACK_MS / 1000.0)
AFTER = "real-VF failover pair: traffic gap after the migration"
AFTER_BASE = "NIC-absent time, same migration"
SWITCH = "real-VF failover pair: gap from the guest taking up its new VF"
SWITCH_BASE = "NIC-absent time, same migration"
SWITCH_TARGET = "gap <= %.0f s (without: >= 23 s)" % (SWITCH_BOUND_MS / 1000.0)
_DURING = re.compile(r"through the libvirt migration \(([\d.]+) s, of which the migration ([\d.]+) s\) "
                     r"the longest gap was ([\d.]+) s")
_ABSENT = re.compile(r"NIC-absent time: ([\d.]+) s")
_AFTER = re.compile(r"after the migration the longest gap was ([\d.]+) s")
_SWITCH = re.compile(r"from when the guest took up its new VF the longest gap was ([\d.]+) s")


def parse(lines) -> tuple:
    """``(SRIOV.migrate s, raw s)`` from the demo's output, or None."""
    for line in lines:
        m = _LINE.search(line)
        if m:
            return float(m.group(1)), float(m.group(2))
    return None


def failover_rows(lines) -> list:
    """The failover pair's traffic rows from the demo's output (none if it printed none)."""
    during = next((m for m in map(_DURING.search, lines) if m), None)
    after = next((m for m in map(_AFTER.search, lines) if m), None)
    absent = next((m for m in map(_ABSENT.search, lines) if m), None)
    switch = next((m for m in map(_SWITCH.search, lines) if m), None)
    if during is None:
        return []
    _window, took, gap = (float(g) * 1000.0 for g in during.groups())
    out = [row(FAILOVER, gap, FAILOVER_BASE, took, FAILOVER_TARGET,
               gap <= max(took, 1000.0) + FAILOVER_SLACK_MS,
               note="100 echoes/s through the lab's switch in L1 to the pair's address; the "
                    "virtio standby carries them while the VF is away")]
    if absent is None:
        return out
    absent_ms = float(absent.group(1)) * 1000.0
    if after is not None:
        out.append(row(AFTER, float(after.group(1)) * 1000.0, AFTER_BASE, absent_ms, "reported", True,
                       note="from the libvirt migration's end (README, Network downtime)"))
    if switch is not None:
        gap = float(switch.group(1)) * 1000.0
        out.append(row(SWITCH, gap, SWITCH_BASE, absent_ms, SWITCH_TARGET, gap <= SWITCH_BOUND_MS,
                       note="net_failover drops standby traffic from the VF's probe until it is "
                            "up; the MAC is announced each second from the probe (its MSI-X "
                            "enable); without that, the sender's ARP entry has to expire"))
    return out


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
                note="%+.1f s; demo %s" % (ours - raw, "passed" if passed else "FAILED"))
            ] + failover_rows(lines)


if __name__ == "__main__":
    print_rows(measure())
