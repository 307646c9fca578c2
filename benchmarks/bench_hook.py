"""Hook fast path: a VM without SR-IOV vNICs, against ``python -c pass``.

Both run as fresh processes of the same interpreter, interleaved, in one
run; the figure is the ratio of medians (target: at most 3x).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from report import print_rows, row  # noqa: E402

NO_SRIOV = os.path.join(ROOT, "tests", "data", "domains", "no_sriov.xml")
TARGET = 3.0


def _time(cmd, env) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(rounds: int = 40) -> list:
    """One row: median hook run against median interpreter start."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "vdsm_hooks.install", "--hooks-dir", tmp,
                        "--hooks-only"], check=True, stdout=subprocess.DEVNULL)
        hook = os.path.join(tmp, "before_vm_migrate_source", "50_sriov_migration")
        xml = os.path.join(tmp, "domxml.xml")
        with open(NO_SRIOV, "rb") as src, open(xml, "wb") as dst:
            dst.write(src.read())
        env = dict(os.environ, _hook_domxml=xml, vmId="4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11")
        base, hooked = [], []
        for _ in range(3):  # warm the page cache
            _time([sys.executable, "-c", "pass"], env)
            _time([hook], env)
        for _ in range(rounds):
            base.append(_time([sys.executable, "-c", "pass"], env))
            hooked.append(_time([hook], env))
    b, h = statistics.median(base), statistics.median(hooked)
    return [row("hook fast path (no SR-IOV vNIC)", h * 1000, "python -c pass", b * 1000,
                "<= %.0fx baseline" % TARGET, h / b <= TARGET,
                note="fresh processes, median of %d interleaved runs" % rounds)]


def main() -> int:
    print_rows(measure())
    return 0


if __name__ == "__main__":
    sys.exit(main())
