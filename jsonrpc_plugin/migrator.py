"""``SRIOV.migrate``: check a VM now, then drive its migration from the source host.

VDSM captures the XML it sends to the destination before any migration
hook runs, so the unplug has to come first (:mod:`.migrationdriver` runs
the steps, one thread per migration). Here: the policy's verdict and the
CPU pinning check, so that a refusal is the verb's own answer; at most
one migration per VM; and what the reconciler asks of VDSM. Each job is
kept for ``migrationStatus``; the reconciler leaves a VM alone while it
is driven.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from typing import Callable, Optional

from sriov_host import domxml, errors, libvirtconn, numa, policy, unplug
from sriov_host.errors import BadDomainXml, MigrationInProgress, NoSuchVm, NotMigratable, SriovError

from . import source_destroy, vdsm_api
from .migrationdriver import Driver
from .migrationjob import MigrationJob, finish

log = logging.getLogger("sriov-migrationd.migrate")

RECENT = 50  # ended migrations kept for SRIOV.recentMigrations (memory only: since the service started)


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
        self._recent = collections.deque(maxlen=RECENT)  # ended jobs, oldest first
        if self.cfg.migration_timeout is not None:
            log.warning("%s: [vdsm] migration_timeout is the old name of [migration] stall_timeout "
                        "(no longer a fixed cap); the stall timeout is %g s", self.cfg.path,
                        self.cfg.migration.stall_timeout)
        self._lock = threading.Lock()

    def job(self, vm_id: str) -> Optional[MigrationJob]:
        with self._lock:
            return self._jobs.get(vm_id)

    def ended(self, job: MigrationJob) -> None:
        """The driver's last word on *job*: it joins the recent ones."""
        with self._lock:
            self._recent.append(job)

    def recent(self) -> list:
        """The ended migrations this service drove since it started, newest first (at most RECENT)."""
        with self._lock:
            return [job.to_json() for job in reversed(self._recent)]

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
        finish(step, True, plan.reason)
        driver = Driver(self, job, plan, job.stall_timeout, hints, params or {})
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
