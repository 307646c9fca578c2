"""The steps of one ``SRIOV.migrate``, in VDSM's order, on the job's own thread.

Reserve on the destination's service; record, then unplug here; VDSM's
``VM.migrate``, followed until it ends or stalls; on failure re-plug here
at once; on success wait until the destination's hooks have plugged,
announce, and take the VM out of this host's VDSM. :mod:`.migrator`
checks and starts it; the drain (:mod:`.evacuate`) runs it too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Optional

from sriov_host import allocation, domxml, metadata, numa, rollback, unplug
from sriov_host import faultpoint as fault
from sriov_host.errors import SriovError

from . import follow, source_destroy, vdsm_api
from .host import VmContext
from .migrationjob import MigrationJob, finish
from .rpcerrors import RpcError, one_line

log = logging.getLogger("sriov-migrationd.migrate")

POLL = 0.2
CANCEL_WAIT = 30.0  # after VM.migrateCancel, for VDSM to say how the migration ended


class Driver:
    """The steps of one job, run in its own thread."""

    def __init__(self, owner, job: MigrationJob, plan, stall_timeout: float,
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
            self.owner.ended(self.job)
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
            finish(step, False, one_line(e))
            self._fail("reserveVfs on %s failed: %s; nothing was unplugged" % (self.job.dst, one_line(e)))
            return False
        finish(step, True, ", ".join("%s on %s" % (n["mac"], n["vf"]["address"]) for n in res["nics"])
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
            finish(step, False, e.message)
            self._fail("unplug failed: %s" % e.message)
            return False
        standbys = self._announce_standbys(ctx, record)
        finish(step, True, ", ".join("%s %.0f ms" % (r.mac or r.key, r.unplug_ms or 0)
                                      for r in record.vnics)
                + "".join("; %s announced on its standby's bridge %s%s" % (
                    mac, bridge, " FAILED: %s" % err if err else "") for mac, bridge, err in standbys))
        return True

    def _announce_standbys(self, ctx, record) -> list:
        """See :func:`unplug.announce_standbys`; a failure to read the domain only costs the announce."""
        try:
            return unplug.announce_standbys(self.cfg, ctx.live_root(ctx.domain()), record)
        except Exception as e:  # noqa: BLE001 - the unplug is done; the migration goes on
            log.warning("VM %s: no standby announcement: %s", self.job.vm_id, one_line(e))
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
        finish(step, ok, outcome.message)
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
                     self.job.dst, one_line(e))

    def _rollback(self) -> None:
        step = self.job.begin("rollback", "rolling-back")
        dom = self.host.lookup(self.job.vm_id)
        if dom is not None and self._job_lingers(dom):
            finish(step, False, "a libvirt job is still running on the VM")
            self._fail(self.job.error + "; a migration job is still running here, so nothing was "
                       "re-plugged now (the reconciler will, once it ends)", "failed")
            return
        if dom is None or not dom.isActive():
            finish(step, False, "the VM no longer runs here")
            self._fail(self.job.error + "; the VM no longer runs here, nothing re-plugged")
            return
        try:
            with self.host.vm_lock(self.job.vm_id):
                result = rollback.restore_vnics(dom, self.cfg, self.host.ledger, self.host.host_id,
                                                "SRIOV.migrate: " + self.job.error, self.owner.devices)
        except SriovError as e:
            finish(step, False, e.message)
            self._fail("%s; re-plug failed: %s" % (self.job.error, e.message), "rollback-failed")
            return
        finish(step, result.ok, "re-plugged %s%s" % (", ".join(result.restored) or "nothing",
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
                        self.job.dst, one_line(e))

    def _await_plug(self) -> None:
        """Wait until the destination's after hook has plugged (or failed) every vNIC."""
        step = self.job.begin("plug", "plugging")
        deadline = time.monotonic() + self.cfg.plug_timeout * max(1, len(self.nics)) + 30.0
        view = None
        while time.monotonic() < deadline:
            try:
                view = self.peer.call("SRIOV.migrationStatus", {"vmID": self.job.vm_id})
            except Exception as e:  # noqa: BLE001 - keep asking until the deadline
                log.debug("migrationStatus on %s: %s", self.job.dst, one_line(e))
            if view and view.get("phase") in ("migrated", "plug-failed") \
                    and view.get("record_host") != self.host.host_id:
                break
            time.sleep(POLL)
        self.job.vnics = [dict(v, host=self.job.dst) for v in (view or {}).get("vnics", [])]
        if not view or view.get("phase") not in ("migrated", "plug-failed"):
            finish(step, False, "the destination did not report its plug in time")
            self._fail("migrated, but %s did not report the plug in time" % self.job.dst,
                       "plug-unconfirmed")
            return
        plugged = [v for v in self.job.vnics if v["state"] == metadata.PLUGGED]
        ok = len(plugged) == len(self.job.vnics) == len(self.nics)
        finish(step, ok, ", ".join("%s %s" % (v["mac"], v["state"]) for v in self.job.vnics))
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
            ok, detail = False, "not destroyed: %s" % one_line(e)
        finish(step, bool(ok), detail)

    def _announce(self) -> None:
        """Ask the destination to announce the plugged MACs; its failure is told, not fatal."""
        step = self.job.begin("announce", "plugging")
        try:
            answer = self.peer.call("SRIOV.announce", {"vmID": self.job.vm_id})
        except Exception as e:  # noqa: BLE001 - the vNICs are plugged; only the switches lag
            finish(step, False, "SRIOV.announce on %s failed: %s" % (self.job.dst, one_line(e)))
            return
        sent = ["%s via %s" % (a["mac"], a["via"]) for a in answer.get("announced", [])]
        failed = ["%s via %s: %s" % (f["mac"], f["via"], f["error"]) for f in answer.get("failed", [])]
        finish(step, not failed, "; ".join(sent + ["not sent: " + f for f in failed])
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
