"""Run every benchmark and print one table against DESIGN.md's targets.

    python benchmarks/run_all.py [--quick] [--markdown FILE] [--real-vf]

It is a report: it exits 0 even when a target is missed, and says MISSED.
A benchmark that crashes becomes a MISSED row with the error, so one
broken bench does not hide the others. ``--markdown`` writes the same
table with the date and the machine, for the README.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from report import markdown_table, print_rows, row  # noqa: E402

# (module, full-run kwargs, --quick kwargs)
BENCHES = [
    ("bench_hook", {"rounds": 40}, {"rounds": 10}),
    ("bench_inventory", {"reps": 15}, {"reps": 5}),
    ("bench_numa", {"rounds": 200}, {"rounds": 50}),
    ("bench_drainplan", {"rounds": 15}, {"rounds": 5}),
    ("bench_rpc", {"seconds": 3.0}, {"seconds": 1.0}),
    ("bench_flood", {"rounds": 5}, {"rounds": 2}),
    ("bench_lab", {"rounds": 3}, {"rounds": 1}),
    ("bench_traffic", {"rounds": 1}, {"rounds": 1}),  # ~1.5 min: the gap without the announce is ~40 s
    ("bench_unplug", {}, {}),
    ("bench_watch", {"rounds": 3}, {"rounds": 1}),
    ("bench_drain", {}, {}),  # ~2 min: a three-host lab, 8 guests booted
]
REAL_VF = ("bench_realvf", {}, {})  # 4-5 min, nested TCG: only with --real-vf


def run_bench(module: str, kwargs: dict) -> list:
    """The bench's rows; a crash is a MISSED row naming the error."""
    t0 = time.monotonic()
    try:
        rows = importlib.import_module(module).measure(**kwargs)
    except Exception as e:  # noqa: BLE001 - reported in the table, the others still run
        rows = [row(module, None, "-", None, "runs", False,
                    note="failed: %s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))]
    print("%s: %.1f s" % (module, time.monotonic() - t0), file=sys.stderr, flush=True)
    return rows


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """What the numbers were measured on: arch, CPU, cores, Python."""
    return "%s, %s, %d CPU(s), Python %s" % (platform.machine(), _cpu_model(), os.cpu_count() or 0,
                                            platform.python_version())


def write_markdown(path: str, rows: list, quick: bool) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = ("## Benchmarks\n\n%s on %s%s.\n\n"
            % (now, machine(), " (--quick)" if quick else ""))
    missed = [r["name"] for r in rows if r["ok"] is False]
    tail = "\n\nMISSED: %s\n" % "; ".join(missed) if missed else "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + markdown_table(rows) + tail)


def _sigterm(_sig, _frame):
    raise KeyboardInterrupt("SIGTERM")  # unwinds the lab's context managers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions (about 1 min)")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    p.add_argument("--real-vf", action="store_true",
                   help="also the real-VF lab's NIC-absent comparison (4-5 min more)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    rows = []
    for module, full, quick in BENCHES + ([REAL_VF] if args.real_vf else []):
        rows += run_bench(module, quick if args.quick else full)
    print("\n%s\n" % machine())
    print_rows(rows)
    if args.markdown:
        write_markdown(args.markdown, rows, args.quick)
        print("\nwrote %s" % args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
