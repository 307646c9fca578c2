"""``sriov-engine watch``: plug back the passthrough vNICs engine-driven migrations left unplugged.

An engine >= 4.1 unplugs every plugged passthrough vNIC before it migrates
and, when the migration fails, never plugs them back on the source
(``MigrateVmCommand.runningFailed``); after a success a failed plug on the
destination leaves them unplugged too (12003, 12004). The watcher follows
the engine's events, learns from them which vNICs each migration unplugged
(see ``watch_model``), and once the VM has been Up and not migrating for a
grace period sets ``plugged=true`` on each of those still unplugged,
through REST, so the engine picks the VF and keeps its books.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .errors import AdapterError, EngineFault
from .model import Vnic
from .watch_io import StateFile, WatchMetrics, newest_event_id, read_events
from .watch_model import NicView, Tracker, plan, plug_failed, plugged

log = logging.getLogger("sriov-engine")


@dataclass
class WatchOptions:
    state_file: str
    poll_interval: float = 5.0
    grace: float = 10.0
    page_size: int = 100
    retry_base: float = 5.0
    retry_cap: float = 300.0
    rerun_wait: float = 300.0
    clock: Callable[[], float] = field(default=time.time)
    sleep: Callable[[float], None] = field(default=time.sleep)


class Watcher:
    """One engine, one state file; :meth:`run_once` is one pass, :meth:`run` loops."""

    def __init__(self, engine_factory, opts: WatchOptions, metrics: Optional[WatchMetrics] = None):
        self._factory = engine_factory
        self.opts = opts
        self.metrics = metrics or WatchMetrics()
        self.state = StateFile(opts.state_file)
        self.engine = None
        self.last_id: Optional[int] = None
        self.tracker = Tracker(rerun_wait=opts.rerun_wait)
        self._load()

    def _load(self) -> None:
        data = self.state.load()
        if data is not None:
            self.last_id = data["last_id"]
            try:
                self.tracker = Tracker.from_json(data["migrations"], rerun_wait=self.opts.rerun_wait)
            except TypeError:
                log.error("state file %s holds unreadable migrations; they are dropped",
                          self.state.path)
            log.info("resuming after event %d with %d open migration(s)", self.last_id,
                     len(self.tracker.migrations))

    def close(self) -> None:
        if self.engine is not None:
            self.engine.__exit__(None, None, None)
            self.engine = None

    def run_once(self) -> bool:
        """One pass: read new events, act on what is due, save. False if the engine failed us."""
        try:
            if self.engine is None:
                self.engine = self._factory().__enter__()
            if self.last_id is None:
                self.last_id = newest_event_id(self.engine)
                log.info("no saved state: following events after %d", self.last_id)
                self._save()
            self._read()
            self._act()
            return True
        except AdapterError as e:
            self.metrics.errors.inc()
            log.error("engine pass failed: %s; retrying in %gs", e.message, self.opts.poll_interval)
            self.close()
            return False
        finally:
            self.metrics.pending.set(len(self.tracker.due()))

    def run(self, stop: Callable[[], bool]) -> None:
        while not stop():
            self.run_once()
            self.opts.sleep(self.opts.poll_interval)

    def _read(self) -> None:
        events = read_events(self.engine, self.last_id, self.opts.page_size)
        if events and events[0].id > self.last_id + 1:
            self.metrics.gaps.inc()
            log.info("events %d..%d were not seen (deleted or skipped by the engine)",
                     self.last_id + 1, events[0].id - 1)
        now = self.opts.clock()
        for ev in events:
            self.metrics.events.inc()
            for note in self.tracker.feed(ev, now):
                log.info("%s", note)
            if ev.code in (64, 65, 120, 140, 1111, 12003, 12004):
                self.metrics.triggers.labels(code=str(ev.code)).inc()
        for note in self.tracker.expire(now):
            log.info("%s", note)
        if events:
            self.last_id = events[-1].id
            self._save()

    def _save(self) -> None:
        try:
            self.state.save(self.last_id, self.tracker.to_json())
        except OSError as e:
            log.error("cannot write state file %s: %s", self.state.path, e.strerror)

    def _act(self) -> None:
        changed = False
        for mig in self.tracker.due():
            changed |= self._act_on(mig)
        if changed:
            self._save()

    def _view(self, vm_id: str) -> tuple:
        """(vm, status, [NicView]) now; all None if the VM was deleted."""
        try:
            vm = self.engine.vm(vm_id)
        except EngineFault as e:
            if e.status == 404:
                return None, None, None
            raise
        nics = [NicView(v.id, v.name, v.plugged, v.passthrough) for v in self.engine.vnics(vm)]
        return vm, vm.status, nics

    def _act_on(self, mig) -> bool:
        vm, status, nics = self._view(mig.vm_id)
        now = self.opts.clock()
        verdict, what = plan(mig, status, nics, now, self.opts.grace)
        if verdict == "wait":
            return False
        if verdict in ("drop", "done"):
            if verdict == "drop":
                self.metrics.skipped.labels(reason=what).inc()
                log.warning("VM %s: %s; vNIC(s) %s not plugged back", mig.vm_id, what,
                            ", ".join(mig.todo_names()) or "-")
            self.tracker.finish(mig)
            return True
        for nic in what:
            self._plug(vm, mig, nic, now)
        return True

    def _plug(self, vm, mig, nic, now) -> None:
        trigger = mig.trigger or {}
        vnic = Vnic(id=nic.id, name=nic.name, mac=None, interface=None, profile=None)
        try:
            result = self.engine.plug_vnic(vm, vnic)
        except EngineFault as e:
            delay = plug_failed(mig, nic.name, now, self.opts.retry_base, self.opts.retry_cap)
            self.metrics.plugs.labels(outcome="failed").inc()
            log.warning("VM %s (%s): plugging vNIC %s after event %s failed: %s; retry in %gs",
                        vm.name, vm.id, nic.name, trigger.get("id"), e.message, delay)
            return
        if result is False:
            plug_failed(mig, nic.name, now, self.opts.retry_base, self.opts.retry_cap)
            self.metrics.plugs.labels(outcome="failed").inc()
            log.warning("VM %s: the engine accepted plugged=true on vNIC %s but shows it unplugged",
                        vm.name, nic.name)
            return
        plugged(mig, nic.name)
        took = self.opts.clock() - (trigger.get("time") or now)
        self.metrics.plugs.labels(outcome="plugged").inc()
        self.metrics.nic_back.observe(max(0.0, took))
        log.info("VM %s (%s): vNIC %s plugged again on host %s after event %s (code %s); "
                 "%.1fs from the failure to the NIC back", vm.name, vm.id, nic.name,
                 self.engine.host_name(vm.host_id), trigger.get("id"), trigger.get("code"), took)
