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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import libvirt  # noqa: E402
from helpers import nodedev  # noqa: E402
from lxml import etree  # noqa: E402

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--pfs", type=int, default=8)
    ap.add_argument("--vfs", type=int, default=128)
    args = ap.parse_args(argv)
    libvirt.registerErrorHandler(lambda *a: None, None)

    with tempfile.TemporaryDirectory() as tmp:
        devices_path = os.path.join(tmp, "devices.xml")
        with open(devices_path, "w", encoding="utf-8") as f:
            f.write(nodedev.devices_xml(args.pfs, args.vfs))
        t0 = time.perf_counter()
        conn = libvirt.open(nodedev.write_node(os.path.join(tmp, "node.xml"), args.pfs, args.vfs))
        open_ms = (time.perf_counter() - t0) * 1000.0
        with open(devices_path, "rb") as f:
            data = f.read()
        try:
            expected = args.pfs * args.vfs
            assert len(inventory.load_from_libvirt(conn).vfs) == expected
            assert inventory.load_nodedev_file(devices_path) == inventory.load_from_libvirt(conn)
            floor = median_ms(lambda: etree.fromstring(data), args.reps)
            results = {
                "libvirt": median_ms(lambda: inventory.load_from_libvirt(conn), args.reps),
                "nodedev-xml": median_ms(lambda: inventory.load_nodedev_file(devices_path),
                                         args.reps),
            }
        finally:
            conn.close()

    print("inventory of %d PFs x %d VFs (%d VFs, %d KiB of nodedev XML), median of %d runs"
          % (args.pfs, args.vfs, expected, len(data) // 1024, args.reps))
    print("  lxml parse alone (floor)  %7.2f ms" % floor)
    ok = True
    for name, ms in results.items():
        verdict = "ok" if ms < TARGET_MS else "OVER TARGET"
        ok = ok and ms < TARGET_MS
        print("  %-25s %7.2f ms  %5.1fx lxml  (target < %.0f ms: %s)"
              % (name, ms, ms / floor, TARGET_MS, verdict))
    print("  (test driver open, once:   %7.2f ms, not part of the inventory)" % open_ms)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
