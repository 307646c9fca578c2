"""Benchmark: the VF inventory of 8 PFs x 128 VFs must build in under 100 ms.

Two sources are measured, in the same run, against parsing the same
nodedev XML with lxml alone (the floor any inventory pays):

- ``libvirt``: libvirt's test driver loaded with a generated host
  (``listAllDevices`` + one ``XMLDesc`` per device, then our parse);
- ``nodedev-xml``: the same devices as a ``<devices>`` file.

Run: ``python benchmarks/bench_inventory.py [--reps N] [--pfs P] [--vfs V]``.
Exits 1 if a median misses the target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

import libvirt  # noqa: E402
from helpers import nodedev  # noqa: E402
from lxml import etree  # noqa: E402
from report import print_rows, row  # noqa: E402

from sriov_host import inventory  # noqa: E402

TARGET_MS = 100.0


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _timings(pfs: int, vfs: int, reps: int) -> dict:
    """Median ms of the lxml floor and of both inventory sources, same devices."""
    libvirt.registerErrorHandler(lambda *a: None, None)
    with tempfile.TemporaryDirectory() as tmp:
        devices_path = os.path.join(tmp, "devices.xml")
        with open(devices_path, "w", encoding="utf-8") as f:
            f.write(nodedev.devices_xml(pfs, vfs))
        t0 = time.perf_counter()
        conn = libvirt.open(nodedev.write_node(os.path.join(tmp, "node.xml"), pfs, vfs))
        open_ms = (time.perf_counter() - t0) * 1000.0
        with open(devices_path, "rb") as f:
            data = f.read()
        try:
            assert len(inventory.load_from_libvirt(conn).vfs) == pfs * vfs
            assert inventory.load_nodedev_file(devices_path) == inventory.load_from_libvirt(conn)
            return {
                "floor": median_ms(lambda: etree.fromstring(data), reps),
                "libvirt": median_ms(lambda: inventory.load_from_libvirt(conn), reps),
                "nodedev-xml": median_ms(lambda: inventory.load_nodedev_file(devices_path), reps),
                "kib": len(data) // 1024, "open_ms": open_ms,
            }
        finally:
            conn.close()


def measure(reps: int = 15, pfs: int = 8, vfs: int = 128) -> list:
    """One row per inventory source, against parsing the same XML with lxml."""
    t = _timings(pfs, vfs, reps)
    notes = {"libvirt": "test driver; its open (%.0f ms, once) not counted" % t["open_ms"],
             "nodedev-xml": "a <devices> file"}
    return [row("inventory %dx%d VFs (%s)" % (pfs, vfs, source), t[source],
                "lxml parse alone", t["floor"], "< %.0f ms" % TARGET_MS, t[source] < TARGET_MS,
                note="%s; %d KiB of nodedev XML, median of %d" % (notes[source], t["kib"], reps))
            for source in notes]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--pfs", type=int, default=8)
    ap.add_argument("--vfs", type=int, default=128)
    args = ap.parse_args(argv)
    rows = measure(args.reps, args.pfs, args.vfs)
    print_rows(rows)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
