"""The reconciler: expire reservations, and roll back migrations that failed.

VDSM runs no hook on the source when a migration fails, so a VM can stay
here with its SR-IOV vNICs unplugged. Each pass looks for running VMs
whose record (on this host's VFs) still lists vNICs unplugged-for-
migration, and re-plugs them once the VM has had no libvirt job for
``rollback_grace`` seconds. On a destination it plugs an arrived VM's
vNICs, through VDSM, as soon as VDSM reports the VM Up. libvirt events
(lifecycle, job completed, migration iteration) mark when a job was last
seen and wake the loop early; a periodic pass runs regardless, every
``reconcile_interval``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from sriov_host import domxml, faultpoint, metadata, rollback, vfclean
from sriov_host.errors import BadDomainXml, SriovError
from sriov_host.ledger import IN_USE, UNPLUGGED

log = logging.getLogger("sriov-migrationd.reconciler")

VIR_CONNECT_LIST_DOMAINS_ACTIVE = 1
STATUS_UP = "Up"  # VDSM's vmstatus.UP, set once an incoming migration is complete
STATUS_MIGRATION_DESTINATION = "Migration Destination"  # vmstatus.MIGRATION_DESTINATION
MIGRATED_AWAY = "migrated-away"  # the ledger's status after after_vm_migrate_source
ARRIVAL_POLL = 0.05  # s between looks at VDSM's status of an arriving VM
VIR_DOMAIN_RUNNING = 1


class Reconciler:
    def __init__(self, host, devices, job_active: Callable, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, busy: Optional[Callable[[str], bool]] = None,
                 vdsm_migrating: Optional[Callable[[str], bool]] = None, metrics=None,
                 vdsm_status: Optional[Callable[[str], Optional[str]]] = None,
                 destroy_left: Optional[Callable[[str], object]] = None):
        self.host = host
        self.metrics = metrics
        self.cfg = host.cfg
        self.devices = devices
        self.job_active = job_active
        self.clock = clock
        self.wall = wall
        self.busy = busy or (lambda uuid: False)
        self.vdsm_migrating = vdsm_migrating or (lambda uuid: False)
        self.vdsm_status = vdsm_status or (lambda uuid: None)  # None: VDSM could not be asked
        self.destroy_left = destroy_left  # a VM that left while no driver watched: VDSM's Down copy
        self._left_asked = {}  # vm id -> when destroy_left last ran for it
        self._last_job = {}
        self._first_seen = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._events_conn = None

    # -- thread -------------------------------------------------------

    def start(self) -> Reconciler:
        self._thread = threading.Thread(target=self._run, name="sriov-reconciler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            due = None
            try:
                due = self.run_once()
            except SriovError as e:
                log.warning("reconcile pass failed: %s", e.message)
            except Exception:
                log.exception("reconcile pass failed")
            wait = self.cfg.reconcile_interval
            if due is not None:
                wait = max(0.05, min(wait, due - self.clock()))
            self._wake.wait(wait)
            self._wake.clear()

    # -- one pass -----------------------------------------------------

    def run_once(self) -> Optional[float]:
        """Protect arriving VMs' VFs, expire, roll back or finish; returns when to look again."""
        conn = self.host.conn()
        self._ensure_events(conn)
        host_id = self.host.host_id
        doms = [(dom, dom.UUIDString()) for dom in conn.listAllDomains(VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
        records = {uuid: self._record(dom, uuid) for dom, uuid in doms}
        arriving = {uuid for uuid, rec in records.items() if _arriving(rec, host_id)}
        for uuid in arriving:  # its record names the source's VFs: no domain scan protects ours
            self.host.ledger.extend_reserved(uuid, self.cfg.reservation_ttl)
        for claim in self.host.ledger.expire():
            log.info("reservation of VF %s for VM %s expired", claim.vf_address, claim.vm_id)
        now = self.clock()
        running, due = set(), None
        for dom, uuid in doms:
            running.add(uuid)
            check = self._check_arrival if uuid in arriving else self._check
            when = check(dom, uuid, records[uuid], host_id, now)
            if when is not None:
                due = when if due is None else min(due, when)
        self._forget_except(running)
        self._release_orphans(running)
        self._destroy_migrated_away(running)
        vfclean.clean_released(self.host.ledger, self.host.domain_refs)  # settings VMs left on VFs
        return due

    def _check(self, dom, uuid: str, record, host_id, now: float) -> Optional[float]:
        """Roll back this VM if due; else return when it will be (None: nothing pending)."""
        if not rollback.pending_vnics(record, host_id):
            self._forget(uuid)
            return None
        return self._when_quiet(dom, uuid, record, now, self._restore)

    def _check_arrival(self, dom, uuid: str, record, host_id, now: float) -> Optional[float]:
        """An arrived VM with vNICs to plug: plug them once VDSM reports it Up.

        The plug goes through VDSM's ``hotplugNic``; VDSM completes an
        incoming migration (``_completeIncomingMigration``, its
        ``after_vm_migrate_destination`` hooks included) before it reports
        the VM Up, and a hotplug racing that is not known to be safe. A
        libvirt lifecycle event wakes this pass when the VM resumes. If VDSM
        cannot be asked, the plug waits for the record to be quiet for the
        grace period, as a safety net.
        """
        if not _running(dom):
            self._last_job[uuid] = now  # still paused: the incoming migration is not over
            return now + self.cfg.reconcile_interval
        status = self.vdsm_status(uuid)
        if status is None:
            return self._when_quiet(dom, uuid, record, now, self._finish_arrival)
        if status == STATUS_MIGRATION_DESTINATION:
            return now + ARRIVAL_POLL  # VDSM is still completing the incoming migration
        if status != STATUS_UP:
            return now + self.cfg.reconcile_interval  # paused, say: look again, not in a tight loop
        faultpoint.reached(faultpoint.BEFORE_DEST_PLUG)
        lock = self.host.vm_lock(uuid)
        if not lock.acquire(blocking=False):
            return now + ARRIVAL_POLL
        try:
            self._finish_arrival(dom, uuid)
        finally:
            lock.release()
        self._forget(uuid)
        return None

    def _when_quiet(self, dom, uuid: str, record, now: float, act) -> Optional[float]:
        """Run *act* once the VM has had no job and no record write for the grace period."""
        self._first_seen.setdefault(uuid, now)
        if self.busy(uuid) or self.job_active(dom):  # SRIOV.migrate drives it, or libvirt migrates
            self._last_job[uuid] = now
            return now + self.cfg.rollback_grace
        due = self._quiet_since(uuid, record, now) + self.cfg.rollback_grace
        if now < due:
            return due
        lock = self.host.vm_lock(uuid)
        if not lock.acquire(blocking=False):
            return now + self.cfg.reconcile_interval  # restoreNics is on it
        try:
            if self.busy(uuid) or self.job_active(dom) or self.vdsm_migrating(uuid):
                self._last_job[uuid] = self.clock()
                return None
            act(dom, uuid)
        finally:
            lock.release()
        self._forget(uuid)
        return None

    def _finish_arrival(self, dom, uuid: str) -> None:
        from sriov_host import plug

        from .host import VmContext

        log.info("VM %s arrived with SR-IOV vNICs to plug; plugging them now", uuid)
        try:
            record = plug.plug_arrived(VmContext(self.host, self.devices, uuid), dom)
        except SriovError as e:
            log.warning("plugging the vNICs of arrived VM %s failed: %s", uuid, e.message)
            return
        if self.metrics is not None:
            for v in record.vnics:
                if v.plug_ms is not None:
                    self.metrics.plug.labels(by="reconciler").observe(v.plug_ms / 1000.0)
        clean, lines = plug.report(record)
        (log.info if clean else log.warning)("arrived VM %s: %s", uuid, "; ".join(lines))

    def _restore(self, dom, uuid: str) -> None:
        reason = "migration did not complete (no libvirt job for %.0f s)" % self.cfg.rollback_grace
        try:
            result = rollback.restore_vnics(dom, self.cfg, self.host.ledger, self.host.host_id,
                                            reason, self.devices)
        except SriovError as e:
            log.warning("rollback of VM %s failed: %s", uuid, e.message)
            return
        if self.metrics is not None and result.restored and result.rollback_ms is not None:
            self.metrics.rollback.labels(by="reconciler").observe(result.rollback_ms / 1000.0)
        log.info("rollback of VM %s: %s, restored %s, already attached %s, failed %s (%.1f ms)",
                 uuid, result.phase, result.restored, result.already, result.failed,
                 result.rollback_ms or 0.0)

    def _quiet_since(self, uuid: str, record, now: float) -> float:
        """The latest of: its last job seen, and the last write to its record.

        The source hook rewrites the record after every vNIC it unplugs, so
        a long unplug keeps the VM out of the reconciler's hands.
        """
        marks = [self._last_job.get(uuid)]
        if record.updated:
            marks.append(now - max(0.0, self.wall() - record.updated))
        marks = [m for m in marks if m is not None]
        return max(marks) if marks else self._first_seen[uuid]

    def _record(self, dom, uuid: str):
        try:
            xml = dom.XMLDesc(0)
        except Exception as e:  # noqa: BLE001 - gone while we looked
            log.debug("cannot read VM %s: %s", uuid, e)
            return None
        if metadata.NS not in xml:
            return None
        try:
            return metadata.read_record(domxml.parse_domain(xml))
        except BadDomainXml as e:
            log.warning("VM %s: unreadable migration record: %s", uuid, e.message)
            return None

    def _forget(self, uuid: str) -> None:
        self._last_job.pop(uuid, None)
        self._first_seen.pop(uuid, None)

    def _forget_except(self, running: set) -> None:
        for uuid in set(self._last_job) | set(self._first_seen):
            if uuid not in running:
                self._forget(uuid)

    def _release_orphans(self, running: set) -> None:
        """VFs the ledger gives to VMs that no longer run here (a hook missed it)."""
        stale = self.wall() - max(self.cfg.rollback_grace, self.cfg.reconcile_interval)
        for claim in self.host.ledger.claims():
            if (claim.state in (IN_USE, UNPLUGGED) and claim.vm_id not in running
                    and claim.updated < stale):
                n = self.host.ledger.release_vf(claim.vm_id, claim.vf_address)
                if n:
                    log.info("released VF %s of VM %s, which no longer runs here",
                             claim.vf_address, claim.vm_id)

    def _destroy_migrated_away(self, running: set) -> None:
        """VMs that left (after_vm_migrate_source said so) and that no SRIOV.migrate finished with.

        Its driver takes the source's Down copy out of VDSM at the end; if
        it died after the VM left, nobody would (see jsonrpc_plugin.source_destroy).
        Asked once per grace period at most: an engine's host answers "leave it".
        """
        if self.destroy_left is None:
            return
        now, grace = self.wall(), max(self.cfg.rollback_grace, self.cfg.reconcile_interval)
        for vm_id, updated in self.host.ledger.vms_in_phase(MIGRATED_AWAY):
            if vm_id in running or self.busy(vm_id) or updated > now - grace \
                    or self._left_asked.get(vm_id, 0) > now - max(60.0, grace):
                continue
            self._left_asked[vm_id] = now
            try:
                self.destroy_left(vm_id)
            except SriovError as e:
                log.info("VM %s left this host; its Down copy in VDSM not handled: %s", vm_id, e.message)

    # -- events -------------------------------------------------------

    def note_job(self, uuid: str) -> None:
        """A job ran just now on this VM: restart its grace period, look again soon."""
        self._last_job[uuid] = self.clock()
        self._wake.set()

    def _ensure_events(self, conn) -> None:
        if conn is self._events_conn:
            return
        self._events_conn = conn
        try:
            import libvirt

            for ev in (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                       libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION):
                conn.domainEventRegisterAny(None, ev, self._on_event, ev)
        except Exception as e:  # noqa: BLE001 - periodic passes still run without events
            log.info("libvirt events unavailable (%s); reconciling every %.1f s",
                     " ".join(str(e).split()), self.cfg.reconcile_interval)

    def _on_event(self, _conn, dom, *_rest) -> None:
        """On libvirt's event thread: note and wake, nothing else."""
        try:
            self.note_job(dom.UUIDString())
        except Exception:  # noqa: BLE001
            self._wake.set()


def _arriving(record, host_id) -> bool:
    """The record still names another host's VFs, with vNICs waiting to be plugged here."""
    return bool(record is not None and host_id and record.host and record.host != host_id
                and record.by_state(metadata.UNPLUGGED))


def _running(dom) -> bool:
    """Running, not paused: an incoming migration's domain is paused until it completes."""
    try:
        return dom.state()[0] == VIR_DOMAIN_RUNNING
    except AttributeError:  # a fake without state(): treat as running
        return True
    except Exception:  # noqa: BLE001 - gone while we looked: nothing to plug
        return False
