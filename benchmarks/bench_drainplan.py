"""Benchmark: planning a drain of 64 VMs over 4 destinations of 8 PFs x 128 VFs.

Each destination is a libvirt test-driver host whose ledger already
holds a quarter of its VFs; its ``SRIOV.listVfs`` is called in-process
(no TLS, no JSON), as the source's drain reads it over the wire. The 64
VMs have 1 to 4 vNICs each on two networks (blue on even PFs, red on
odd ones), a third of them with a NUMA node to prefer. Measured: the
four ``listVfs`` plus the plan (:func:`sriov_host.drainplan.plan`), the
median of the rounds; the baseline is the four ``listVfs`` alone, in
the same rounds. Target: the whole under 200 ms (DESIGN.md).

    python benchmarks/bench_drainplan.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import libvirt  # noqa: E402
from helpers import nodedev  # noqa: E402
from report import print_rows, row  # noqa: E402

from jsonrpc_plugin.host import HostContext, LockedLedger  # noqa: E402
from jsonrpc_plugin.verbs import Verbs  # noqa: E402
from sriov_host import config, drainplan  # noqa: E402
from sriov_host.ledger import Ledger  # noqa: E402

NAME = "drain plan: 64 VMs over 4 x (8 PFs x 128 VFs)"
TARGET_MS = 200.0
PFS, VFS, DESTS, VMS = 8, 128, 4, 64


def _destination(tmp: str, d: int) -> Verbs:
    base = os.path.join(tmp, "dst%d" % d)
    os.makedirs(base)
    uri = nodedev.write_node(os.path.join(base, "node.xml"), PFS, VFS)
    pfs = [p.name for p in nodedev.layout(PFS, VFS)]
    cfg = config.loads("[libvirt]\nuri = %s\n[ledger]\npath = %s\n[vf]\ndevice = emulated\n"
                       "[networks]\nblue = %s\nred = %s\n"
                       % (uri, os.path.join(base, "ledger.sqlite"), ", ".join(pfs[0::2]),
                          ", ".join(pfs[1::2])))
    ledger = LockedLedger(Ledger(cfg.ledger_path))
    host = HostContext(cfg, ledger, lambda: libvirt.open(uri))
    for i, vf in enumerate(host.inventory().vfs[::4]):
        ledger.hold("bbbbbbbb-%04d-4000-8000-%012d" % (d, i), [{"vf": vf, "mac": "02:00:%02x:%02x:%02x:00"
                                                              % (d, i >> 8, i & 0xff)}], "in_use")
    return Verbs(host)


def _needs() -> list:
    out = []
    for n in range(VMS):
        nics = tuple(drainplan.NicNeed("52:54:00:%02x:%02x:00" % (n, k), "ua-%d-%d" % (n, k), None,
                                       "blue" if (n + k) % 2 else "red") for k in range(1 + n % 4))
        out.append(drainplan.VmNeed("vm-%d" % n, nics, (n % 2,) if n % 3 == 0 else ()))
    return out


def _round(dests: list, needs: list) -> tuple:
    t0 = time.perf_counter()
    inventories = [drainplan.Destination("dst%d" % i, drainplan.pools_from_vfs(v.listVfs()))
                   for i, v in enumerate(dests)]
    t1 = time.perf_counter()
    plan = drainplan.plan(needs, inventories)
    t2 = time.perf_counter()
    if not plan.feasible:
        raise RuntimeError("the plan left %d VM(s) out: %s" % (len(plan.unplaced), plan.unplaced[:2]))
    return (t2 - t0) * 1000.0, (t1 - t0) * 1000.0, (t2 - t1) * 1000.0


def measure(rounds: int = 15) -> list:
    with tempfile.TemporaryDirectory(prefix="bench-drainplan-") as tmp:
        dests = [_destination(tmp, d) for d in range(DESTS)]
        needs = _needs()
        _round(dests, needs)  # warm: inventories parsed and cached, as in a running service
        runs = [_round(dests, needs) for _ in range(rounds)]
    whole, lists, plans = (statistics.median(r[i] for r in runs) for i in range(3))
    return [row(NAME, whole, "4 x listVfs alone", lists, "< %.0f ms" % TARGET_MS, whole < TARGET_MS,
                note="median of %d rounds; the plan itself %.1f ms (%d vNICs, NUMA on a third); "
                     "listVfs in-process on test-driver hosts with a quarter of the VFs held"
                     % (rounds, plans, sum(len(v.nics) for v in needs)))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    print_rows(measure(args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
