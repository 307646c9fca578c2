"""Follow one VDSM migration from its source: libvirt's job often, VDSM at most once a second.

VDSM logs every ``VM.getMigrationStatus`` at INFO, so asking it five
times a second filled vdsm.log (issue 20 item 11). The local libvirt job
is cheap to read and ends when the transfer does, so it is watched every
:data:`LIBVIRT_POLL`; VDSM is asked every :data:`VDSM_POLL`, and at once
(then a few times in quick succession, while it records the outcome) when
the libvirt job ends: a failure is still re-plugged within a tick of VDSM
saying so.

No fixed deadline: a migration of a large VM may take long and still move.
It is cancelled when nothing has moved for the stall timeout: neither
VDSM's status and progress, nor libvirt's remaining data (its low mark,
as VDSM's own monitor judged a stall: migration.py ``MonitorThread``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from sriov_host.errors import SriovError

from . import vdsm_api
from .vdsm_api import FAILED, IN_PROGRESS, LIMIT_WAIT, MigrationProgress

log = logging.getLogger("sriov-migrationd.migrate")

LIBVIRT_POLL = 0.1  # the local job: one libvirt call, no VDSM log line
VDSM_POLL = 1.0  # at most this often otherwise
END_BURST = (0.1, 0.2, 0.4)  # after the libvirt job ends: VDSM sets its outcome a moment later
STATUS_MISSES = 3  # failed VDSM answers in a row before libvirt decides
VM_STATUS_EVERY = 5.0  # "in progress" and no libvirt job: is the VM still "Migration Source"?
STALLED = "stalled"  # Follower.run's outcome when nothing moved for the stall timeout


class StallClock:
    """When VDSM's status or progress, or libvirt's remaining data, last moved."""

    def __init__(self, now: float):
        self.moved = now
        self._seen = None
        self._lowmark: Optional[int] = None

    def vdsm(self, now: float, status: MigrationProgress) -> None:
        seen = (status.code, status.message, status.progress)
        if seen != self._seen:
            self._seen, self.moved = seen, now

    def libvirt(self, now: float, remaining: Optional[int]) -> None:
        if remaining is not None and (self._lowmark is None or remaining < self._lowmark):
            self._lowmark, self.moved = remaining, now

    def still_for(self, now: float) -> float:
        return now - self.moved


class Asker:
    """When VDSM is due: every VDSM_POLL, and at once (then END_BURST) when libvirt's job ends."""

    def __init__(self, now: float):
        self.next = now
        self.ended = False  # the libvirt job ended since the last ask
        self._burst: list = []
        self._active = False

    def due(self, now: float, active: bool) -> bool:
        if self._active and not active:
            self._burst, self.next, self.ended = list(END_BURST), now, True
        self._active = active
        return now >= self.next

    def asked(self, now: float) -> None:
        self.next = now + (self._burst.pop(0) if self._burst else VDSM_POLL)
        self.ended = False


class Follower:
    """One migration's follow loop; :meth:`run` returns VDSM's outcome, or STALLED."""

    def __init__(self, vdsm, vm_id: str, dom, job_active: Callable, stall_timeout: float,
                 on_tick: Callable = lambda now: None, on_silence: Callable = lambda why: None,
                 on_status: Callable = lambda status: None, clock=time.monotonic, sleep=time.sleep):
        self.vdsm, self.vm_id, self.dom = vdsm, vm_id, dom
        self.job_active, self.stall_timeout = job_active, stall_timeout
        self.on_tick, self.on_silence, self.on_status = on_tick, on_silence, on_status
        self.clock, self.sleep = clock, sleep
        self.asks = 0  # VDSM getMigrationStatus calls made
        self._misses = 0
        self._next_vm_status = 0.0
        self._last = MigrationProgress(IN_PROGRESS)
        self._job_seen = False  # libvirt's migration job has run on this host

    def run(self) -> MigrationProgress:
        now = self.clock()
        stall, asker = StallClock(now), Asker(now)
        while True:
            active = self._active()
            if asker.due(now, active):
                if asker.ended:
                    self._next_vm_status = 0.0
                status = self._ask(active)
                asker.asked(self.clock())
                if status is not None and status.state != IN_PROGRESS:
                    return status
                if status is not None:
                    self._last = status
                    stall.vdsm(now, status)
                    self.on_status(status)
                stall.libvirt(now, self._remaining(active))
            if stall.still_for(now) > self.stall_timeout:
                return MigrationProgress(STALLED, self._last.progress, "no progress for %.0f s (VDSM: "
                                         "%d%%, %s)" % (stall.still_for(now), self._last.progress,
                                                        self._last.message or "no answer"))
            self.on_tick(now)
            self.sleep(LIBVIRT_POLL)
            now = self.clock()

    def _active(self) -> bool:
        active = self.dom is not None and bool(self.job_active(self.dom))
        self._job_seen = self._job_seen or active
        return active

    def _remaining(self, active: bool) -> Optional[int]:
        """libvirt's remaining data of the job (jobInfo's dataRemaining); None without one."""
        if not active:
            return None
        try:
            return int(self.dom.jobInfo()[5])
        except Exception:  # noqa: BLE001 - the job just ended, or a driver without job info
            return None

    def _ask(self, active: bool) -> Optional[MigrationProgress]:
        """VDSM's status; after STATUS_MISSES failed answers, the caller's libvirt judgement."""
        self.asks += 1
        try:
            status = self.vdsm.migration_status(self.vm_id)
        except SriovError as e:
            self._misses += 1
            return self.on_silence(e.message) if self._misses >= STATUS_MISSES else None
        self._misses = 0
        if status.state == IN_PROGRESS and not active and (status.code == LIMIT_WAIT or self._job_seen):
            return self._idle_outcome(status)
        return status

    def _idle_outcome(self, status: MigrationProgress) -> MigrationProgress:
        """VDSM says "in progress" but libvirt has no job here: still under way, or over and failed.

        Code 82: VDSM keeps it after a failure that sets no other error
        (migration.py ``_recover``). After libvirt's job has run: a VDSM
        that restarted meanwhile answers "Migration in progress" for every
        VM (each ``Vm`` gets a ``SourceThread`` in ``__init__``), and a
        migration that libvirtd lost ends with no outcome at all. Either
        way the VM's status tells: ``Up`` here again, not ``Migration
        Source`` (and a migration that succeeded leaves it ``Down``).
        """
        vm_status = getattr(self.vdsm, "vm_status", None)
        now = self.clock()
        if vm_status is None or now < self._next_vm_status:
            return status
        self._next_vm_status = now + VM_STATUS_EVERY
        try:
            state = vm_status(self.vm_id)
        except SriovError as e:
            log.debug("VM %s: VDSM's VM status not read: %s", self.vm_id, e.message)
            return status
        if state != vdsm_api.STATUS_UP:
            return status
        if status.code == LIMIT_WAIT:
            return MigrationProgress(FAILED, status.progress, "%s, and the VM is Up here again: the "
                                     "migration failed after waiting at the destination's limit"
                                     % status.message, status.code)
        return MigrationProgress(FAILED, status.progress, "VDSM answers '%s', but libvirt's migration "
                                 "job is gone and the VM is Up here again: the migration ended without "
                                 "an outcome (libvirtd or VDSM restarted?)" % status.message, status.code)
