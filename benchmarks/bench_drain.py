"""Lab drain: 4 VMs with ``SRIOV.evacuate`` (max_parallel=2) against 4 sequential ``SRIOV.migrate``.

One run, one fresh three-host lab (real libvirtd, real guests under
TCG) with each host's ``sriov-migrationd`` (mutual TLS) and VDSM
stand-in. Sequential: four fresh VMs on A (two emulated vNICs each),
each moved by ``SRIOV.migrate`` in turn, to B and C alternately, the
next one called once the last has ended (``migrationStatus``). Drain:
four fresh VMs of the same shape on A, one ``SRIOV.evacuate`` to B and
C, ``evacuateStatus`` polled until it ends. Wall time from the first
call to the last VM's end; guests are booted outside the clock. Each
VM's NIC-absent time is the unplug step's start to the plug step's end,
as the service reports it. Targets (DESIGN.md): the drain at most 0.65x
the sequential time, and no VM's NIC-absent time above 1.5x that of the
VM of the same rank in the sequential run.

    python benchmarks/bench_drain.py
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from report import print_rows, row, skipped  # noqa: E402

WALL = "lab drain of 4 VMs, max_parallel=2"
ABSENT = "lab drain: worst NIC-absent vs sequential"
WALL_BASE = "4 sequential SRIOV.migrate"
ABSENT_BASE = "same-rank VM, sequential"
WALL_TARGET = "<= 0.65x"
ABSENT_TARGET = "<= 1.5x"
VMS, VNICS = 4, 2
TIMEOUTS = {"rollback_grace": 5, "reconcile_interval": 0.5, "unplug": 3, "plug": 3}


class DrainBench:
    """A three-host lab with services and stand-ins; VMs booted on A."""

    def __init__(self, workdir: str):
        from sriov_lab.guest import ensure_guest

        self.workdir, self.guest, self.vms, self.booted = workdir, ensure_guest(), [], 0
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> DrainBench:
        from sriov_host import config, libvirtconn
        from sriov_lab.lab import Lab
        from sriov_lab.services import LabServices, LabStandIns

        with self.stack as stack:
            self.lab = stack.enter_context(Lab(3))
            self.conns = [libvirtconn.open_connection(config.load(h.config_path), use_vdsm=False)
                          for h in self.lab.hosts]
            self.services = stack.enter_context(LabServices(self.lab, self.workdir, **TIMEOUTS))
            stack.enter_context(LabStandIns(self.lab, hooks_root=os.path.join(self.workdir, "hooks")))
            stack.callback(self.cleanup)
            self.stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def boot(self, count: int) -> list:
        """*count* fresh VMs on A, two vNICs each on unused VFs, all guests up."""
        from sriov_lab import domains

        a, specs = self.lab.hosts[0], []
        layout = a.extra["layout"]
        for _ in range(count):
            n = self.booted
            self.booted += 1
            vnics = tuple(domains.VnicSpec(mac="52:54:00:dd:%02x:%02x" % (n, k),
                                           vf_address=a.vf_addresses()[(VNICS * n + k) % 16],
                                           pf=layout[k % len(layout)].name) for k in range(VNICS))
            spec = domains.DomainSpec(name="drain-%d" % n, guest=self.guest, vnics=vnics)
            self.vms.append(spec.uuid)
            domains.start(self.conns[0], spec)
            specs.append(spec)
        for spec in specs:
            domains.wait_ready(a, spec.name, timeout=120)
        return specs

    def cleanup(self) -> None:
        for vm in self.vms:
            for i, conn in enumerate(self.conns):
                with contextlib.suppress(Exception):
                    conn.lookupByUUIDString(vm).destroy()
                with contextlib.suppress(Exception):
                    self.services.client(i, timeout=5.0).call("SRIOV.releaseVfs", {"vmID": vm})
        self.vms = []

    def dst(self, i: int) -> tuple:
        svc = self.services.services[i]
        return svc.host.address, svc.port


def _migrate_ms(steps) -> str:
    """The VM's unplug/migrate/plug step times, ms (the migrate step first, for the median)."""
    ms = {s["step"]: s["ms"] for s in steps}
    return "%.0f/%.0f/%.0f" % tuple(ms.get(k) or 0 for k in ("unplug", "migrate", "plug"))


def _absent_ms(job: dict) -> float:
    from jsonrpc_plugin.evacuate import nic_absent_ms

    ms = nic_absent_ms(job)
    if job["phase"] != "migrated" or ms is None:
        raise RuntimeError("VM %s ended %s: %s" % (job["vmID"], job["phase"], job.get("error")))
    return ms


def sequential(env: DrainBench) -> tuple:
    specs = env.boot(VMS)
    a = env.services.client(0)
    absent, migrate = [], []
    t0 = time.monotonic()
    for i, spec in enumerate(specs):
        host, port = env.dst(1 + i % 2)
        a.call("SRIOV.migrate", {"vmID": spec.uuid, "dst": host, "port": port, "timeout": 120})
        while True:
            job = a.call("SRIOV.migrationStatus", {"vmID": spec.uuid})["migration"]
            if job and job["done"]:
                break
            time.sleep(0.05)
        absent.append(_absent_ms(job))
        migrate.append(_migrate_ms(job["steps"]))
    return (time.monotonic() - t0) * 1000.0, absent, migrate


def drain(env: DrainBench) -> tuple:
    specs = env.boot(VMS)
    a = env.services.client(0)
    dsts = ["%s:%d" % env.dst(i) for i in (1, 2)]
    t0 = time.monotonic()
    a.call("SRIOV.evacuate", {"dsts": dsts, "max_parallel": 2})
    while True:
        status = a.call("SRIOV.evacuateStatus")
        if status["ended"] is not None:
            break
        time.sleep(0.05)
    wall = (time.monotonic() - t0) * 1000.0
    by_vm = {r["vmID"]: r for r in status["vms"]}
    absent, migrate = [], []
    for spec in specs:
        r = by_vm[spec.uuid]
        if r["outcome"] != "migrated" or r["nic_absent_ms"] is None:
            raise RuntimeError("VM %s ended %s: %s" % (spec.uuid, r["outcome"], r["error"]))
        absent.append(r["nic_absent_ms"])
        migrate.append(_migrate_ms(r["steps"]))
    return wall, absent, migrate


def _mig(steps: list) -> list:
    return [float(s.split("/")[1]) for s in steps]


def rows(seq, drn, load) -> list:
    (seq_ms, seq_absent, seq_migrate), (drain_ms, drain_absent, drain_migrate) = seq, drn
    ratios = [d / s for d, s in zip(drain_absent, seq_absent)]
    worst = max(range(VMS), key=lambda i: ratios[i])
    each = ", ".join("%.0f/%.0f" % (s, d) for s, d in zip(seq_absent, drain_absent))
    return [
        row(WALL, drain_ms, WALL_BASE, seq_ms, WALL_TARGET, drain_ms <= 0.65 * seq_ms,
            note="one run each, fresh VMs with %d vNICs, guests booted off the clock, on %d CPU(s) "
                 "(load average %.1f before, %.1f after); VDSM's migrate step, median sequential "
                 "%.0f ms, two at once %.0f ms: QEMU under TCG shares those CPUs between both "
                 "migrations and every guest" % (VNICS, os.cpu_count() or 0, load[0], os.getloadavg()[0],
                                                 statistics.median(_mig(seq_migrate)),
                                                 statistics.median(_mig(drain_migrate)))),
        row(ABSENT, drain_absent[worst], ABSENT_BASE, seq_absent[worst], ABSENT_TARGET,
            max(ratios) <= 1.5, ratio=max(ratios),
            note="NIC-absent ms sequential/drain per VM rank: %s (median %.0f/%.0f); unplug/migrate/"
                 "plug steps ms, sequential: %s; drain: %s"
                 % (each, statistics.median(seq_absent), statistics.median(drain_absent),
                    ", ".join(seq_migrate), ", ".join(drain_migrate))),
    ]


def measure() -> list:
    from sriov_lab.fixtures import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        return [skipped(WALL, WALL_BASE, WALL_TARGET, reason),
                skipped(ABSENT, ABSENT_BASE, ABSENT_TARGET, reason)]
    try:
        base = os.environ.get("SRIOV_LAB_RUNTIME") or None
        with tempfile.TemporaryDirectory(prefix="bench-drain-", dir=base) as tmp, DrainBench(tmp) as env:
            load = os.getloadavg()
            seq = sequential(env)
            env.cleanup()
            return rows(seq, drain(env), load)
    except Exception as e:  # noqa: BLE001 - the rows say why
        why = "failed: %s: %s" % (type(e).__name__, " ".join(str(e).split())[:300])
        return [row(WALL, None, WALL_BASE, None, WALL_TARGET, False, note=why),
                row(ABSENT, None, ABSENT_BASE, None, ABSENT_TARGET, False, note=why)]


def main(argv=None) -> int:
    print_rows(measure())
    return 0


if __name__ == "__main__":
    sys.exit(main())
