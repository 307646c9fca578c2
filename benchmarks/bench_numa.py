"""Benchmark: a NUMA-preferring reservation against a plain one, 8 PFs x 128 VFs.

The service's ``SRIOV.reserveVfs`` verb is called in-process (no TLS, no
JSON: only what the preference adds is of interest) on a libvirt test
driver host of 8 PFs x 128 VFs on two NUMA nodes (PF p on node p % 2)
whose ledger already holds half of the VFs for other VMs. Each round
reserves 4 vNICs for one VM, then releases them outside the clock; the
plain call and the preferring ones alternate in every round, so they
share the machine's noise. Two preferring forms:

- ``numa_nodes``: the nodes of the VM's ``<numatune>``;
- ``cpus``: pinned host CPUs, mapped through a sysfs node tree (a fake
  one with 2 nodes x 32 CPUs) read on every call, as the service does.

Target: each costs at most 1.5x the plain reservation.

    python benchmarks/bench_numa.py [--rounds N]
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
from sriov_host import config, topology  # noqa: E402
from sriov_host.ledger import Ledger  # noqa: E402

TARGET = 1.5
PFS, VFS, NICS = 8, 128, 4
VM = "aaaaaaaa-0000-4000-8000-000000000001"
FORMS = {"plain": {}, "numa_nodes": {"numa_nodes": [1]}, "cpus": {"cpus": [40, 41]}}


def fake_sysfs_nodes(root: str, nodes: int = 2, per_node: int = 32) -> str:
    for node in range(nodes):
        os.makedirs(os.path.join(root, "node%d" % node))
        with open(os.path.join(root, "node%d" % node, "cpulist"), "w", encoding="ascii") as f:
            f.write("%d-%d\n" % (node * per_node, (node + 1) * per_node - 1))
    return root


def _verbs(tmp: str) -> Verbs:
    """The verbs over a test-driver host whose ledger holds every other VF."""
    uri = nodedev.write_node(os.path.join(tmp, "node.xml"), PFS, VFS)
    cfg = config.loads("[libvirt]\nuri = %s\n[ledger]\npath = %s\n"
                       % (uri, os.path.join(tmp, "ledger.sqlite")))
    ledger = LockedLedger(Ledger(cfg.ledger_path))
    host = HostContext(cfg, ledger, lambda: libvirt.open(uri),
                       cpu_topology=topology.SysfsTopology(fake_sysfs_nodes(os.path.join(tmp, "sys"))))
    inv = host.inventory()
    for i, vf in enumerate(inv.vfs[::2]):
        ledger.hold("bbbbbbbb-0000-4000-8000-%012d" % i, [{"vf": vf, "mac": "02:00:00:%02x:%02x:00"
                                                           % (i >> 8, i & 0xff)}], "in_use")
    return Verbs(host)


def _reserve(verbs: Verbs, params: dict) -> float:
    """ms of one reserveVfs; the VFs are released after, off the clock."""
    nics = [{"mac": "00:1a:4a:16:05:%02x" % i} for i in range(NICS)]
    t0 = time.perf_counter()
    res = verbs.reserveVfs(vmID=VM, nics=nics, ttl=60, **params)
    ms = (time.perf_counter() - t0) * 1000.0
    if not isinstance(res, dict):
        raise RuntimeError("reserveVfs failed: %s" % (res,))
    if params and not res["numa"]["honoured"]:
        raise RuntimeError("the preference was not honoured: %s" % res["numa"])
    verbs.host.ledger.release(VM)
    return ms


def _timings(rounds: int) -> dict:
    libvirt.registerErrorHandler(lambda *a: None, None)
    with tempfile.TemporaryDirectory() as tmp:
        verbs = _verbs(tmp)
        try:
            for params in FORMS.values():  # warm-up: inventory cache, sqlite pages
                _reserve(verbs, params)
            times = {form: [] for form in FORMS}
            for _ in range(rounds):
                for form, params in FORMS.items():
                    times[form].append(_reserve(verbs, params))
        finally:
            verbs.host.close()
            verbs.host.ledger.close()
    return {form: statistics.median(t) for form, t in times.items()}


def measure(rounds: int = 200) -> list:
    t = _timings(rounds)
    note = ("in-process verb on a test-driver host, %d of %d VFs held, %d vNICs per call, "
            "median of %d interleaved rounds" % (PFS * VFS // 2, PFS * VFS, NICS, rounds))
    return [row("reserveVfs %dx%d VFs, NUMA-preferring (%s)" % (PFS, VFS, form), t[form],
                "plain reserveVfs", t["plain"], "<= %.1fx plain" % TARGET,
                t[form] <= TARGET * t["plain"], note=note + extra)
            for form, extra in (("numa_nodes", ""),
                                ("cpus", "; the 2-node sysfs tree read on every call"))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args(argv)
    rows = measure(args.rounds)
    print_rows(rows)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
