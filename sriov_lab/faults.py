"""``sriov-lab faults``: a fault at every step of ``SRIOV.migrate``, and the invariants after.

One lab (two hosts, their services over mutual TLS, the hooks, the VDSM
stand-ins) runs the whole matrix. For each (step, fault) cell the lab's
VM, with two SR-IOV vNICs, is migrated from the host it runs on to the
other with ``SRIOV.migrate``; the migration is held at the step
(:mod:`sriov_host.faultpoint`), the fault is applied
(:mod:`sriov_lab.faults_inject`), everything killed comes back as
systemd would bring it back, and once the restarts settled the
invariants (:mod:`sriov_lab.faults_check`) are polled for a bounded time:
the reservation TTL plus the reconciler's grace plus a margin. A cell
whose invariants do not hold by then is given the one documented repair
(``SRIOV.restoreNics`` on the host running the VM) and said so.

The table: one row per cell, with the outcome (where the VM ended and
how ``SRIOV.migrate`` ended), the time from the fault to the first
moment every invariant held, and whether they did. Engine-driven
migrations and drains are not in the matrix (see docs/faults.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

from jsonrpc_plugin.client import RpcError, RpcUnavailable
from sriov_host import faultpoint as fp

from . import domains, faults_check
from . import faults_inject as fi
from .guest import ensure_guest
from .lab import Lab
from .services import LabServices, LabStandIns, install_hooks
from .vdsm import hooks as hr

TIMEOUTS = {"rollback_grace": 5, "reconcile_interval": 0.5, "unplug": 3, "plug": 3,
            "reservation_ttl": 10}
MARGIN = 15.0  # s beyond the TTL and the grace, for the reconcilers' passes
SLOW_MIGRATION = {"maxBandwidth": 8}  # MiB/s: "during the migration" needs a migration to be in
HOLDER_WAIT = 60.0

# The hook that runs nearest after each step (host role, hook point); steps with none: n/a.
STEP_HOOK = {fp.AFTER_UNPLUG: ("src", hr.BEFORE_SOURCE), fp.BEFORE_DEST_PLUG: ("dst", hr.AFTER_DEST),
             fp.AFTER_PLUG: ("src", hr.AFTER_DESTROY)}
LIMITS = {
    (fp.DURING_MIGRATION, fi.KILL_SRC_VDSM):
        "the stand-in runs in the lab's process: its migration thread cannot be killed",
    (fp.DURING_MIGRATION, fi.KILL_DST_VDSM):
        "the stand-in runs in the lab's process: the source calls its peer in-process",
}
QUICK = ((fp.AFTER_RESERVE, fi.KILL_DST_SERVICE), (fp.AFTER_UNPLUG, fi.KILL_SRC_SERVICE),
         (fp.BEFORE_DEST_PLUG, fi.KILL_DST_SERVICE), (fp.BETWEEN_DETACHES, fi.KILL_SRC_LIBVIRTD))


@dataclass
class Row:
    step: str
    fault: str
    outcome: str
    recovery: Optional[float] = None  # s from the fault to every invariant holding
    held: str = "-"  # "yes", "NO", "after <documented command>", "-" (not run)
    detail: str = ""

    def cells(self) -> list:
        rec = "-" if self.recovery is None else "%.1f s" % self.recovery
        return [self.step, self.fault, self.outcome, rec, self.held]


class Matrix:
    """The lab and its VM, kept across cells; ``with Matrix(...) as m: m.run_cell(step, fault)``."""

    def __init__(self, guest, log=print):
        self.guest, self.log = guest, log
        self.lab = self.services = self.standins = self.hold = self.injector = None
        self.runners: list = []
        self.vm: Optional[faults_check.Expected] = None
        self.counter = 0

    def __enter__(self) -> Matrix:
        self.lab = Lab(2).start()
        try:
            work = os.path.join(self.lab.root, "faults")
            os.makedirs(work)
            self.hold = fi.Hold(os.path.join(work, "hold", "fault.json"), self.lab.user)
            os.environ[fp.ENV] = self.hold.path  # inherited by the services and the hooks only here
            self.services = LabServices(self.lab, work, **TIMEOUTS).start()
            self.hooks_root = os.path.join(work, "hooks")
            self.runners = [fi.KillingHookRunner(r) for r in install_hooks(self.lab, self.hooks_root)]
            self.standins = LabStandIns(self.lab, runners=self.runners).start()
            self.injector = fi.Injector(self.lab, self.services, self.standins,
                                        TIMEOUTS["reservation_ttl"])
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        os.environ.pop(fp.ENV, None)
        for part in (self.standins, self.services):
            if part is not None:
                part.stop()
        if self.lab is not None:
            self.lab.stop()

    # -- one cell -------------------------------------------------------------

    def run_cell(self, step: str, fault: str) -> Row:
        if (step, fault) in LIMITS:
            return Row(step, fault, "not run: " + LIMITS[(step, fault)])
        if fault == fi.KILL_HOOK and step not in STEP_HOOK:
            return Row(step, fault, "n/a: no hook runs at this step")
        self._ensure_vm()
        src = self._where()
        dst = 1 - src
        reached = self._start(step, fault, src, dst)
        if not reached:
            self.hold.release()
            row = self._settle(step, fault, src, None)
            row.outcome = "step not reached; " + row.outcome
            return row
        t_fault = time.monotonic()
        if fault != fi.KILL_HOOK:
            self.injector.apply(fault, src, dst)
        self.hold.release()
        for r in self.runners:
            r.kill_point = None
        return self._settle(step, fault, src, t_fault)

    def _start(self, step, fault, src, dst) -> bool:
        """Arm, call SRIOV.migrate, and wait until the migration is at the step."""
        hook = STEP_HOOK.get(step) if fault == fi.KILL_HOOK else None
        for r in self.runners:
            r.kill_point = None
            r.killed.clear()
        if hook is not None:
            self.runners[src if hook[0] == "src" else dst].kill_point = hook[1]
        elif step != fp.DURING_MIGRATION:
            self.hold.arm(step)
        svc = self.services.services[dst]
        params = {"vmID": self.vm.uuid, "dst": svc.host.address, "port": svc.port}
        if step == fp.DURING_MIGRATION:
            params["params"] = SLOW_MIGRATION
        self.services.client(src).call("SRIOV.migrate", params)
        if hook is not None:
            return self.runners[src if hook[0] == "src" else dst].killed.wait(HOLDER_WAIT)
        if step == fp.DURING_MIGRATION:
            return self._migration_job_seen(src)
        return self.hold.wait_reached(HOLDER_WAIT) is not None

    def _migration_job_seen(self, src: int) -> bool:
        conn = self.lab.hosts[src].connect()
        try:
            dom = conn.lookupByUUIDString(self.vm.uuid)
            deadline = time.monotonic() + HOLDER_WAIT
            while time.monotonic() < deadline:
                stats = dom.jobStats()
                if stats.get("type", 0) == 2 and stats.get("data_processed", 0) > 0:  # unbounded job
                    return True
                time.sleep(0.05)
            return False
        finally:
            conn.close()

    def _settle(self, step, fault, src, t_fault) -> Row:
        """Wait for the restarts and the job, then poll the invariants for a bounded time."""
        self.injector.settle()
        start = t_fault or time.monotonic()
        phase = self._wait_job(src)
        wait_until = time.monotonic() + 300.0
        while faults_check.migration_jobs(self.lab, self.vm.uuid) and time.monotonic() < wait_until:
            time.sleep(0.3)  # a libvirt migration the dead driver left goes on: let it end
        deadline = time.monotonic() + TIMEOUTS["reservation_ttl"] + TIMEOUTS["rollback_grace"] + MARGIN
        first_ok, found = None, []
        while time.monotonic() < deadline:
            found = faults_check.problems(self.lab, self.services, self.standins, self.vm,
                                          self.hooks_root)
            if not found:
                if first_ok is None:
                    first_ok = time.monotonic()
                elif time.monotonic() - first_ok >= 2.0:  # held for two seconds: settled
                    break
            else:
                first_ok = None
            time.sleep(0.5)
        where = self._where()
        outcome = "%s (%s)" % ("on dst" if where != src else "stayed on src", phase)
        if first_ok is not None and not found:
            return Row(step, fault, outcome, first_ok - start, "yes")
        repairs = self._repair(where, found)
        left = faults_check.problems(self.lab, self.services, self.standins, self.vm, self.hooks_root)
        if repairs and not left:
            return Row(step, fault, outcome, None, "after " + " + ".join(repairs), "; ".join(found))
        row = Row(step, fault, outcome, None, "NO", "; ".join(left or found))
        self._reset_vm()
        return row

    def _wait_job(self, src: int, timeout: float = 180.0) -> str:
        """How SRIOV.migrate ended on the source ("lost" if its service was restarted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                job = self.services.client(src, timeout=5.0).call(
                    "SRIOV.migrationStatus", {"vmID": self.vm.uuid}).get("migration")
            except (RpcError, RpcUnavailable):
                job = None
            if job is None:
                return "job lost"
            if job.get("done"):
                return job["phase"]
            time.sleep(0.3)
        return "job still running"

    def _repair(self, where: Optional[int], found: list) -> list:
        """The documented commands, where they apply; returns those that ran."""
        done = []
        for i, standin in enumerate(self.standins.standins):
            if i != where and any(p.startswith("host %d: VDSM still holds the VM (Down)" % i)
                                  for p in found):
                self.standins.client(i).call("VM.destroy", {"vmID": self.vm.uuid})
                done.append("vdsm-client VM destroy (%s)" % standin.name)
        if where is not None and any("vNIC" in p or "record of" in p for p in found):
            try:
                self.services.client(where, timeout=60.0).call("SRIOV.restoreNics",
                                                               {"vmID": self.vm.uuid})
                done.append("sriov-client SRIOV restoreNics (%s)" % self.lab.hosts[where].name)
            except (RpcError, RpcUnavailable) as e:
                self.log("  restoreNics on host %d: %s" % (where, e))
        return done

    def recover(self) -> None:
        """After a crashed cell: every service and stand-in back, no hold, a fresh VM next."""
        self.hold.release()
        self.injector.settle()
        for i, svc in enumerate(self.services.services):
            if svc.proc.poll() is not None:
                self.services.restart(i)
        self._reset_vm()

    # -- the VM -----------------------------------------------------------------

    def _where(self) -> Optional[int]:
        for i, host in enumerate(self.lab.hosts):
            conn = host.connect()
            try:
                dom = conn.lookupByUUIDString(self.vm.uuid)
                if dom.isActive() and dom.state()[0] == faults_check.VIR_DOMAIN_RUNNING:
                    return i
            except Exception:  # noqa: BLE001 - not on this host
                pass
            finally:
                conn.close()
        return None

    def _ensure_vm(self) -> None:
        if self.vm is not None and self._where() is not None:
            return
        self._reset_vm()
        self.counter += 1
        host = self.lab.hosts[0]
        layout = host.extra["layout"]
        vnics = tuple(domains.VnicSpec(mac="52:54:00:fa:%02x:%02x" % (self.counter % 256, n),
                                       vf_address=host.vf_addresses()[n], pf=layout[n % len(layout)].name,
                                       vlan=100 + n) for n in range(2))
        spec = domains.DomainSpec(name="fault-vm-%d" % self.counter, guest=self.guest, vnics=vnics)
        conn = host.connect()
        try:
            domains.start(conn, spec)
            macs = {v.mac for v in vnics}
            domains.wait_serial(host, spec.name, lambda _r, ticks: any(
                macs <= set(t.nics.values()) for t in ticks), 120, "the fault VM's NICs")
            from lxml import etree

            root = etree.fromstring(conn.lookupByUUIDString(spec.uuid).XMLDesc(0).encode())
        finally:
            conn.close()
        slots = {i.find("alias").get("name"): i.find("address").get("slot")
                 for i in root.iterfind("devices/interface") if i.find("alias") is not None}
        self.vm = faults_check.Expected(spec.uuid, spec.name,
                                        {v.alias: (v.mac, v.vlan, slots.get(v.alias)) for v in vnics})

    def _reset_vm(self) -> None:
        """Destroy the VM everywhere and free what the ledgers hold for it."""
        if self.vm is None:
            return
        for i, standin in enumerate(self.standins.standins):
            standin.destroy_vm(self.vm.uuid)  # VDSM's VM.destroy: after_vm_destroy releases
            try:
                self.services.client(i).call("SRIOV.releaseVfs", {"vmID": self.vm.uuid})
            except (RpcError, RpcUnavailable):
                pass
        self.vm = None


def table(rows: list, date: str) -> str:
    head = ["step", "fault", "outcome", "recovery", "invariants"]
    body = [r.cells() for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["fault matrix, %s" % date, "  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) for cells in body]
    for r in rows:
        if r.detail:
            lines.append("  %s / %s: %s" % (r.step, r.fault, r.detail))
    return "\n".join(lines)


def add_args(p) -> None:
    p.add_argument("--quick", action="store_true",
                   help="only the cells CI runs (%d)" % len(QUICK))
    p.add_argument("--step", action="append", choices=fp.STEPS, help="only this step (repeatable)")
    p.add_argument("--fault", action="append", choices=fi.FAULTS, help="only this fault (repeatable)")


def cells(args) -> list:
    if args.quick:
        return list(QUICK)
    return [(s, f) for s in fp.STEPS for f in fi.FAULTS
            if (not args.step or s in args.step) and (not args.fault or f in args.fault)]


def run(args) -> int:
    todo = cells(args)
    guest = ensure_guest()
    rows = []
    t0 = time.monotonic()
    with Matrix(guest) as matrix:
        print("lab up; %d cell(s)" % len(todo), flush=True)
        for step, fault in todo:
            try:
                row = matrix.run_cell(step, fault)
            except Exception as e:  # noqa: BLE001 - one cell's crash is its row; the lab goes on
                row = Row(step, fault, "crashed: %s: %s" % (type(e).__name__, e), None, "NO")
                matrix.recover()
            rows.append(row)
            print("  %s / %s: %s, %s%s" % (step, fault, row.outcome, " ".join(row.cells()[3:]),
                                           " [%s]" % row.detail if row.detail else ""), flush=True)
        root = matrix.lab.root
    left = faults_check.processes_under(root)
    print(table(rows, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print("matrix: %d cell(s) in %.0f s; lab processes left after it: %s"
          % (len(rows), time.monotonic() - t0, left or "none"))
    ran = [r for r in rows if r.held != "-"]
    return 0 if ran and all(r.held == "yes" for r in ran) and not left else 1
