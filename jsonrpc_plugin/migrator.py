"""``SRIOV.migrate``: drive one VDSM-level migration from the source host.

VDSM captures the XML it sends to the destination before any migration
hook runs, so the unplug has to come first. The order, one thread per
migration: reserve on the destination's service (mutual TLS, this host's
certificate); record, then unplug here; VDSM's ``VM.migrate``; follow
it; on failure re-plug here at once; on success wait until the
destination's hooks have plugged. Each step is kept with its timings for
``migrationStatus``; the reconciler leaves a VM alone while it is driven.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from sriov_host import allocation, domxml, errors, libvirtconn, metadata, numa, policy, rollback, unplug
from sriov_host import faultpoint as fault
from sriov_host.errors import BadDomainXml, MigrationInProgress, NoSuchVm, NotMigratable, SriovError

from . import follow, source_destroy, vdsm_api
from .client import RpcError
from .host import VmContext

log = logging.getLogger("sriov-migrationd.migrate")

POLL = 0.2
CANCEL_WAIT = 30.0  # after VM.migrateCancel, for VDSM to say how the migration ended


@dataclass
class Step:
    name: str
    start: float
    end: Optional[float] = None
    ok: Optional[bool] = None
    detail: str = ""

    def to_json(self) -> dict:
        ms = None if self.end is None else round((self.end - self.start) * 1000.0, 1)
        return {"step": self.name, "start": round(self.start, 3), "ms": ms, "ok": self.ok,
                "detail": self.detail}


@dataclass
class MigrationJob:
    """One ``SRIOV.migrate``, as ``migrationStatus`` shows it."""

    vm_id: str
    dst: str
    port: int
    phase: str = "started"
    error: Optional[str] = None
    steps: list = field(default_factory=list)
    vnics: list = field(default_factory=list)  # the destination's view at the end
    started: float = field(default_factory=time.time)
    ended: Optional[float] = None
    progress: Optional[int] = None  # VDSM's, in %, while it migrates
    stall_timeout: Optional[float] = None  # cancelled when nothing moved for this long

    @property
    def done(self) -> bool:
        """Ended: every step ran, the destination's reservation released included.

        The phase turns final a moment before that release; a caller who
        saw "done" then would find a reservation still on the destination.
        """
        return self.ended is not None

    def begin(self, name: str, phase: str) -> Step:
        self.phase = phase
        step = Step(name, time.time())
        self.steps.append(step)
        return step

    def to_json(self) -> dict:
        return {"vmID": self.vm_id, "dst": self.dst, "port": self.port, "phase": self.phase,
                "done": self.done, "error": self.error, "started": round(self.started, 3),
                "ended": None if self.ended is None else round(self.ended, 3),
                "progress": self.progress, "stall_timeout": self.stall_timeout,
                "steps": [s.to_json() for s in self.steps], "vnics": self.vnics}


def _finish(step: Step, ok: bool, detail: str = "") -> None:
    step.end, step.ok, step.detail = time.time(), ok, detail


class Migrations:
    """The migrations this host drives; at most one per VM."""

    def __init__(self, host, devices, peer_factory: Callable, vdsm_factory: Callable = vdsm_api.connect,
                 job_active: Optional[Callable] = None, metrics=None):
        self.host = host
        self.metrics = metrics
        self.cfg = host.cfg
        self.devices = devices
        self.peer_factory = peer_factory
        self.vdsm_factory = vdsm_factory
        self.job_active = job_active or (lambda dom: False)
        self._jobs = {}
        if self.cfg.migration_timeout is not None:
            log.warning("%s: [vdsm] migration_timeout is the old name of [migration] stall_timeout "
                        "(no longer a fixed cap); the stall timeout is %g s", self.cfg.path,
                        self.cfg.migration.stall_timeout)
        self._lock = threading.Lock()

    def job(self, vm_id: str) -> Optional[MigrationJob]:
        with self._lock:
            return self._jobs.get(vm_id)

    def is_driving(self, vm_id: str) -> bool:
        job = self.job(vm_id)
        return job is not None and not job.done

    def vdsm_migrating(self, vm_id: str) -> bool:
        """True when this host's VDSM says a migration of the VM is under way.

        Asked only right before a rollback; if VDSM cannot be asked, libvirt's
        job (checked by the caller) is the word. The VM's status says it
        (``Migration Source``, set in virt/migration.py ``_prepareGuest``
        and back to ``Up`` in ``_recover``), not ``getMigrationStatus``:
        VDSM answers that with "Migration in progress", code 0, for every
        VM it is not migrating (each ``Vm`` has a ``SourceThread``).
        """
        try:
            with contextlib.closing(self.vdsm_factory(self.cfg)) as vdsm:
                status = vdsm.vm_status(vm_id)
        except SriovError as e:
            log.debug("VM %s: VDSM not asked about a migration: %s", vm_id, e.message)
            return False
        return status in (vdsm_api.STATUS_MIGRATION_SOURCE, vdsm_api.STATUS_MIGRATION_DESTINATION)

    def vdsm_status(self, vm_id: str) -> Optional[str]:
        """The VM's status in this host's VDSM (``VM.getStats``); None if VDSM cannot be asked."""
        try:
            with contextlib.closing(self.vdsm_factory(self.cfg)) as vdsm:
                return vdsm.vm_status(vm_id)
        except SriovError as e:
            log.debug("VM %s: VDSM not asked for its status: %s", vm_id, e.message)
            return None

    def destroy_left(self, vm_id: str) -> Optional[bool]:
        """The reconciler's call for a VM that left while no driver watched (:mod:`.source_destroy`)."""
        ok, detail = source_destroy.destroy_migrated(self.cfg, self.vdsm_factory, vm_id)
        log.info("VM %s migrated away from this host: %s", vm_id, detail)
        if detail == source_destroy.GONE:
            self.host.ledger.forget_status(vm_id)  # no VM.destroy, so no after_vm_destroy will
        return ok

    def start(self, vm_id: str, dst: str, port: int, timeout: Optional[float],
              params: Optional[dict] = None) -> dict:
        """Check now (so a refusal is the verb's answer), then drive in a thread.

        *timeout* is the stall timeout for this call ([migration] stall_timeout
        by default); *params*, MigrateParams keys sent instead of [migration]'s.
        """
        plan, hints = self._check(vm_id, params or {})
        job = MigrationJob(vm_id, dst, port, stall_timeout=timeout or self.cfg.migration.stall_timeout)
        with self._lock:
            if self.is_driving_locked(vm_id):
                raise MigrationInProgress("a migration of VM %s is already being driven from this "
                                          "host" % vm_id, {"vmID": vm_id})
            self._jobs[vm_id] = job
        step = job.begin("check", "checking")
        _finish(step, True, plan.reason)
        driver = _Driver(self, job, plan, job.stall_timeout, hints, params or {})
        threading.Thread(target=driver.run, name="sriov-migrate-%s" % vm_id[:8], daemon=True).start()
        return {"vmID": vm_id, "dst": dst, "phase": job.phase,
                "vnics": [v["mac"] for v in plan.to_json()["vnics"]]}

    def is_driving_locked(self, vm_id: str) -> bool:
        job = self._jobs.get(vm_id)
        return job is not None and not job.done

    def _check(self, vm_id: str, params: dict):
        """The policy's plan, and the VM's NUMA ties for the destination to honour."""
        dom = self.host.lookup(vm_id)
        if dom is None or not dom.isActive():
            raise NoSuchVm("VM %s is not running on this host" % vm_id, {"vmID": vm_id})
        if self.job_active(dom):
            raise MigrationInProgress("VM %s has an active libvirt job (a migration?)" % vm_id,
                                      {"vmID": vm_id})
        root = domxml.parse_domain(libvirtconn.live_xml(dom))
        plan = unplug.build_plan(vm_id, root, self.cfg, lambda: self.host.inventory().addresses)
        if plan.verdict == policy.REFUSE:  # the hooks' dry-run gives this same plan
            raise NotMigratable("VM %s: %s" % (vm_id, plan.reason), {"vmID": vm_id})
        _check_pinning(vm_id, numa.cpu_pinning(root), params)
        return plan, _numa_hints(vm_id, root)


def _check_pinning(vm_id: str, pin: numa.CpuPinning, params: dict) -> None:
    """Refuse to let VDSM drop an exclusive CPU pinning; check cpusets/numaNodesets now.

    Without ``cpusets`` VDSM removes every ``<vcpupin>`` on the way
    (cpumanagement.replace_cpu_pinning), and VM.migrate checks the lists'
    lengths only once called (vm.py _validate_migration_cpusets), after the unplug.
    """
    for key, want, what in (("cpusets", pin.vcpus, "vCPU"), ("numaNodesets", pin.vnuma_cells,
                                                             "vNUMA cell")):
        if key in params and want and len(params[key]) != want:
            raise errors.InvalidParams("invalid params: params.%s: %d item(s) for the %d %s(s) of "
                                       "VM %s" % (key, len(params[key]), want, what, vm_id),
                                       {"field": "params." + key})
    missing = [key for key, needed in (("cpusets", True), ("numaNodesets", pin.memnodes))
               if needed and key not in params]
    if pin.dropped and missing:
        raise NotMigratable(
            "VM %s: vCPU(s) %s are pinned by CPU policy %s, and VDSM drops that pinning on a "
            "migration unless told the destination's; pass %s in SRIOV.migrate's params, as the "
            "engine does (one host CPU list per vCPU, one node list per vNUMA cell)"
            % (vm_id, ",".join(map(str, pin.dropped)), pin.policy, " and ".join(missing)),
            {"vmID": vm_id, "cpu_policy": pin.policy, "missing": missing})


def _numa_hints(vm_id: str, root) -> numa.NumaHints:
    """What the XML says of NUMA; a set that does not parse means no preference, not a refusal."""
    try:
        return numa.domain_hints(root)
    except BadDomainXml as e:
        log.warning("VM %s: no NUMA preference sent: %s", vm_id, e.message)
        return numa.NumaHints()


class _Driver:
    """The steps of one job, run in its own thread."""

    def __init__(self, owner: Migrations, job: MigrationJob, plan, stall_timeout: float,
                 hints: numa.NumaHints, params: dict):
        self.owner = owner
        self.host = owner.host
        self.cfg = owner.cfg
        self.job = job
        self.plan = plan
        self.stall_timeout = stall_timeout
        self.params = params  # the call's MigrateParams, over [migration]'s
        self.next_extend = None  # when the destination's reservation is extended next
        self.peer = None
        self.nics = [{"mac": v.mac, "alias": v.alias, "vlan": v.vlan, "network": v.network}
                     for v in plan.vnics]
        self.numa_params = hints.to_params()
        self.numa_refused = False  # the destination predates numa_nodes/cpus

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - a crashed driver must still end its job
            log.exception("SRIOV.migrate of VM %s crashed", self.job.vm_id)
            self._fail("internal error: %s: %s" % (type(e).__name__, e))
        finally:
            if self.owner.metrics is not None:
                self.owner.metrics.job_ended(self.job)
            self.job.ended = time.time()
            log.info("SRIOV.migrate vmID=%s -> %s: %s%s", self.job.vm_id, self.job.dst,
                     self.job.phase, " (%s)" % self.job.error if self.job.error else "")

    def _run(self) -> None:
        if self.nics and not self._reserve():
            return
        fault.reached(fault.AFTER_RESERVE)
        if self.plan.vnics and not self._unplug():
            self._release_peer()
            return
        fault.reached(fault.AFTER_UNPLUG)
        if not self._migrate():
            self._rollback()
            self._release_peer()
            return
        if self.plan.vnics:
            self._await_plug()
        else:
            self.job.phase = "migrated"
        fault.reached(fault.AFTER_PLUG)
        self._destroy_source()

    def _fail(self, error: str, phase: str = "failed") -> None:
        self.job.error = error
        self.job.phase = phase

    # -- the steps ----------------------------------------------------

    def _reserve(self) -> bool:
        step = self.job.begin("reserve", "reserving")
        try:
            self.peer = self.owner.peer_factory(self.job.dst, self.job.port)
            res = self._call_reserve()
        except Exception as e:  # noqa: BLE001 - RpcError/RpcUnavailable: nothing was touched
            _finish(step, False, _text(e))
            self._fail("reserveVfs on %s failed: %s; nothing was unplugged" % (self.job.dst, _text(e)))
            return False
        _finish(step, True, ", ".join("%s on %s" % (n["mac"], n["vf"]["address"]) for n in res["nics"])
                + _numa_detail(res.get("numa"), self.numa_params) + _settings_detail(res["nics"]))
        return True

    def _with_settings(self) -> list:
        """Real VFs: each NIC with its source VF's own settings (spoofchk, trust...), read now.

        The destination puts them on the VFs it reserves, with the
        privilege its hook lacks; the unplug reads them again into our record.
        """
        if self.cfg.vf_device != domxml.MODE_HOSTDEV:
            return self.nics
        ctx = VmContext(self.host, self.owner.devices, self.job.vm_id)
        held = {v.mac: unplug.source_vf_settings(ctx, v) for v in self.plan.vnics}
        return [dict(n, vf_settings=held[n["mac"]]) if held.get(n["mac"]) else n for n in self.nics]

    def _call_reserve(self) -> dict:
        """reserveVfs with the VM's NUMA ties and VF settings; without for a destination predating them."""
        try:
            return self._call_reserve_numa(self._with_settings())
        except RpcError as e:
            field = e.data.get("field") if isinstance(e.data, dict) else None
            if e.code != -32602 or not str(field).endswith(".vf_settings"):
                raise
            log.info("VM %s: %s does not take VF settings (%s); reserving without; its hook will "
                     "try to set them", self.job.vm_id, self.job.dst, e.message)
            return self._call_reserve_numa(self.nics)

    def _call_reserve_numa(self, nics) -> dict:
        params = {"vmID": self.job.vm_id, "nics": nics, "ttl": self.cfg.reservation_ttl}
        if self.numa_params and not self.numa_refused:
            try:
                return self.peer.call("SRIOV.reserveVfs", dict(params, **self.numa_params))
            except RpcError as e:
                field = e.data.get("field") if isinstance(e.data, dict) else None
                if e.code != -32602 or field not in self.numa_params:
                    raise
                log.info("VM %s: %s does not take NUMA preferences (%s); reserving without",
                         self.job.vm_id, self.job.dst, e.message)
                self.numa_refused = True
        return self.peer.call("SRIOV.reserveVfs", params)

    def _unplug(self) -> bool:
        step = self.job.begin("unplug", "unplugging")
        ctx = VmContext(self.host, self.owner.devices, self.job.vm_id)
        try:
            with self.host.vm_lock(self.job.vm_id):
                record = unplug.unplug_all(ctx, self.plan.vnics)
        except SriovError as e:
            _finish(step, False, e.message)
            self._fail("unplug failed: %s" % e.message)
            return False
        standbys = self._announce_standbys(ctx, record)
        _finish(step, True, ", ".join("%s %.0f ms" % (r.mac or r.key, r.unplug_ms or 0)
                                      for r in record.vnics)
                + "".join("; %s announced on its standby's bridge %s%s" % (
                    mac, bridge, " FAILED: %s" % err if err else "") for mac, bridge, err in standbys))
        return True

    def _announce_standbys(self, ctx, record) -> list:
        """See :func:`unplug.announce_standbys`; a failure to read the domain only costs the announce."""
        try:
            return unplug.announce_standbys(self.cfg, ctx.live_root(ctx.domain()), record)
        except Exception as e:  # noqa: BLE001 - the unplug is done; the migration goes on
            log.warning("VM %s: no standby announcement: %s", self.job.vm_id, _text(e))
            return []

    def _migrate(self) -> bool:
        step = self.job.begin("migrate", "migrating")
        params = vdsm_api.migrate_params(self.job.vm_id, "%s:%d" % (self.job.dst, self.cfg.vdsm_port),
                                         self.cfg.migration, self.cfg.migration.dstqemu_for(self.job.dst),
                                         self.params)
        log.info("VM %s: VM.migrate to %s with %s", self.job.vm_id, params["dst"], _policy_line(params))
        try:
            vdsm = self.owner.vdsm_factory(self.cfg)
        except SriovError as e:  # VDSM could not be asked: nothing started
            outcome = vdsm_api.MigrationProgress(vdsm_api.FAILED, 0, e.message)
        else:
            with contextlib.closing(vdsm):
                outcome = self._start_and_follow(vdsm, params)
        ok = outcome.state == vdsm_api.DONE
        _finish(step, ok, outcome.message)
        if not ok:
            self.job.error = "VDSM migration to %s failed: %s" % (params["dst"], outcome.message)
        return ok

    def _start_and_follow(self, vdsm, params: dict) -> vdsm_api.MigrationProgress:
        try:
            vdsm.migrate(self.job.vm_id, params)
        except SriovError as e:  # VDSM refused: nothing started
            return vdsm_api.MigrationProgress(vdsm_api.FAILED, 0, e.message)
        outcome = self._follower(vdsm, self.stall_timeout).run()
        if outcome.state == follow.STALLED:
            return self._cancel(vdsm, outcome.message)
        return outcome

    def _follower(self, vdsm, stall_timeout: float) -> follow.Follower:
        """Watch libvirt's job here, ask VDSM at most once a second; keep the reservation alive."""
        try:
            dom = self.host.lookup(self.job.vm_id)
        except SriovError as e:  # libvirtd restarting: VDSM alone, once a second
            log.info("VM %s: its libvirt job not watched: %s", self.job.vm_id, e.message)
            dom = None
        return follow.Follower(vdsm, self.job.vm_id, dom,
                               self.owner.job_active, stall_timeout, on_tick=self._keep_reservation,
                               on_silence=self._status_from_libvirt,
                               on_status=lambda status: setattr(self.job, "progress", status.progress))

    def _keep_reservation(self, now: float) -> None:
        """Extend the destination's reservation every third of its TTL while VDSM migrates."""
        every = max(1.0, self.cfg.reservation_ttl / 3.0)
        if self.next_extend is None:
            self.next_extend = now + every
        elif self.peer is not None and now > self.next_extend:
            self._extend()
            self.next_extend = now + every

    def _status_from_libvirt(self, why: str) -> Optional[vdsm_api.MigrationProgress]:
        """VDSM stopped answering: judge by the domain here (None: still migrating).

        Re-plugging a VM that is still being migrated would fight the
        migration, and one that left has nothing to re-plug here.
        """
        dom = self.host.lookup(self.job.vm_id)
        if dom is None or not dom.isActive():
            return vdsm_api.MigrationProgress(vdsm_api.DONE, 100, "the VM left this host (VDSM: %s)" % why)
        if self.owner.job_active(dom):
            return None
        return vdsm_api.MigrationProgress(vdsm_api.FAILED, 0, "VDSM does not answer (%s) and the VM "
                                          "runs here with no migration job" % why)

    def _cancel(self, vdsm, why: str) -> vdsm_api.MigrationProgress:
        """Stalled: VM.migrateCancel, then wait (bounded) for VDSM to say how it ended."""
        msg = "stalled: %s (stall timeout %.0f s); cancelled" % (why, self.stall_timeout)
        log.warning("VM %s: migration to %s %s", self.job.vm_id, self.job.dst, msg)
        try:
            vdsm.cancel(self.job.vm_id)
        except SriovError as e:
            msg += " (cancel failed: %s)" % e.message
        status = self._follower(vdsm, CANCEL_WAIT).run()
        if status.state == vdsm_api.DONE:  # it ended before the cancel took
            return status
        return vdsm_api.MigrationProgress(vdsm_api.FAILED, 0, msg)

    def _extend(self) -> None:
        try:
            self._call_reserve()
        except Exception as e:  # noqa: BLE001 - the destination hook reserves again if it lapsed
            log.info("VM %s: extending the reservation on %s failed: %s", self.job.vm_id,
                     self.job.dst, _text(e))

    def _rollback(self) -> None:
        step = self.job.begin("rollback", "rolling-back")
        dom = self.host.lookup(self.job.vm_id)
        if dom is not None and self._job_lingers(dom):
            _finish(step, False, "a libvirt job is still running on the VM")
            self._fail(self.job.error + "; a migration job is still running here, so nothing was "
                       "re-plugged now (the reconciler will, once it ends)", "failed")
            return
        if dom is None or not dom.isActive():
            _finish(step, False, "the VM no longer runs here")
            self._fail(self.job.error + "; the VM no longer runs here, nothing re-plugged")
            return
        try:
            with self.host.vm_lock(self.job.vm_id):
                result = rollback.restore_vnics(dom, self.cfg, self.host.ledger, self.host.host_id,
                                                "SRIOV.migrate: " + self.job.error, self.owner.devices)
        except SriovError as e:
            _finish(step, False, e.message)
            self._fail("%s; re-plug failed: %s" % (self.job.error, e.message), "rollback-failed")
            return
        _finish(step, result.ok, "re-plugged %s%s" % (", ".join(result.restored) or "nothing",
                "; FAILED: %s" % result.failed if result.failed else ""))
        self.job.vnics = [_source_row(r) for r in _record_vnics(dom)]
        self._fail(self.job.error, "rolled-back" if result.ok else "rollback-failed")

    def _job_lingers(self, dom, wait: float = 30.0) -> bool:
        """True if a libvirt job on the VM outlives *wait* seconds (re-plugging would fight it)."""
        deadline = time.monotonic() + wait
        while self.owner.job_active(dom):
            if time.monotonic() > deadline:
                return True
            time.sleep(POLL)
        return False

    def _release_peer(self) -> None:
        if self.peer is None:
            return
        try:
            self.peer.call("SRIOV.releaseVfs", {"vmID": self.job.vm_id})
        except Exception as e:  # noqa: BLE001 - it expires after its TTL anyway
            log.warning("VM %s: releasing the reservation on %s failed: %s", self.job.vm_id,
                        self.job.dst, _text(e))

    def _await_plug(self) -> None:
        """Wait until the destination's after hook has plugged (or failed) every vNIC."""
        step = self.job.begin("plug", "plugging")
        deadline = time.monotonic() + self.cfg.plug_timeout * max(1, len(self.nics)) + 30.0
        view = None
        while time.monotonic() < deadline:
            try:
                view = self.peer.call("SRIOV.migrationStatus", {"vmID": self.job.vm_id})
            except Exception as e:  # noqa: BLE001 - keep asking until the deadline
                log.debug("migrationStatus on %s: %s", self.job.dst, _text(e))
            if view and view.get("phase") in ("migrated", "plug-failed") \
                    and view.get("record_host") != self.host.host_id:
                break
            time.sleep(POLL)
        self.job.vnics = [dict(v, host=self.job.dst) for v in (view or {}).get("vnics", [])]
        if not view or view.get("phase") not in ("migrated", "plug-failed"):
            _finish(step, False, "the destination did not report its plug in time")
            self._fail("migrated, but %s did not report the plug in time" % self.job.dst,
                       "plug-unconfirmed")
            return
        plugged = [v for v in self.job.vnics if v["state"] == metadata.PLUGGED]
        ok = len(plugged) == len(self.job.vnics) == len(self.nics)
        _finish(step, ok, ", ".join("%s %s" % (v["mac"], v["state"]) for v in self.job.vnics))
        if ok:
            self._announce()
            self.job.phase = "migrated"
        else:
            self._fail("migrated, but not every vNIC was plugged on %s" % self.job.dst,
                       "plug-failed")

    def _destroy_source(self) -> None:
        """Take the migrated VM out of this host's VDSM, unless an engine will (:mod:`.source_destroy`)."""
        if self.cfg.destroy_source == "never":
            return
        step = self.job.begin("destroy-source", self.job.phase)
        try:
            ok, detail = source_destroy.destroy_migrated(self.cfg, self.owner.vdsm_factory, self.job.vm_id)
        except Exception as e:  # noqa: BLE001 - the migration is done; this must not undo its outcome
            ok, detail = False, "not destroyed: %s" % _text(e)
        _finish(step, bool(ok), detail)

    def _announce(self) -> None:
        """Ask the destination to announce the plugged MACs; its failure is told, not fatal."""
        step = self.job.begin("announce", "plugging")
        try:
            answer = self.peer.call("SRIOV.announce", {"vmID": self.job.vm_id})
        except Exception as e:  # noqa: BLE001 - the vNICs are plugged; only the switches lag
            _finish(step, False, "SRIOV.announce on %s failed: %s" % (self.job.dst, _text(e)))
            return
        sent = ["%s via %s" % (a["mac"], a["via"]) for a in answer.get("announced", [])]
        failed = ["%s via %s: %s" % (f["mac"], f["via"], f["error"]) for f in answer.get("failed", [])]
        _finish(step, not failed, "; ".join(sent + ["not sent: " + f for f in failed])
                or "nothing to announce through")


def _policy_line(params: dict) -> str:
    """The VM.migrate policy on one line, for the log (the schedule by its steps' count)."""
    shown = {k: v for k, v in params.items() if k not in ("vmId", "dst", "method", "mode")}
    sched = shown.pop("convergenceSchedule", None)
    return ", ".join("%s=%s" % kv for kv in sorted(shown.items())) + (
        ", convergenceSchedule=%d init + %d stalling steps" % (len(sched["init"]), len(sched["stalling"]))
        if sched else ", convergenceSchedule=VDSM's legacy")


def _settings_detail(nics) -> str:
    """What the destination did with the VF settings it was given, for the reserve step."""
    parts = []
    for n in nics:
        given = n.get("vf_settings")
        if given:
            refused = ", ".join("%s (%s)" % kv for kv in sorted(given["refused"].items()))
            parts.append("%s VF settings %s%s" % (n["mac"], given["wanted"],
                                                  "; refused: " + refused if refused else " set"))
    return "; " + "; ".join(parts) if parts else ""


def _numa_detail(outcome, sent: dict) -> str:
    """The reserve step's word on NUMA: nothing without a preference."""
    if outcome is None:
        return "; NUMA preference not taken by the destination" if sent else ""
    return "; " + allocation.numa_summary(outcome)


def _record_vnics(dom) -> list:
    record = rollback.read_live_record(dom)
    return list(record.vnics) if record else []


def _source_row(rec) -> dict:
    return {"alias": rec.alias, "mac": rec.mac, "vf_address": rec.vf_address, "state": rec.state,
            "error": rec.error, "host": "source"}


def _text(e) -> str:
    """One line; with the JSON-RPC code where the peer answered with one (2001 no free VF...)."""
    text = " ".join(str(getattr(e, "message", None) or e).split()) or type(e).__name__
    code = getattr(e, "code", None)
    return "%s (code %s)" % (text, code) if isinstance(code, int) else text
