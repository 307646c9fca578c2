"""Which passthrough vNICs an engine-driven migration unplugged, and when to plug them back.

Pure: engine events in, decisions out; no SDK, no clock of its own.

What the engine records (ovirt-engine, read for this module):
- ``MigrateVmCommand.perform`` runs ``unplugPassthroughNics`` first: one
  internal ``ActivateDeactivateVmNic`` per plugged passthrough vNIC, each
  logged at its end as 1014 ``NETWORK_DEACTIVATE_VM_INTERFACE_SUCCESS``
  with the migration's correlation id ("Network Interface ${InterfaceName}
  (${InterfaceType}) was unplugged from VM ${VmName}", AuditLogMessages).
  Only then is the start (62, or 67 system-initiated) logged.
- ``runningSucceded`` plugs them on the destination (1012 each, 1013 on a
  failure, then 12003 naming the NICs not plugged back, or 12004) before 63.
- ``runningFailed`` and ``rerun`` release the destination's VFs and never
  plug the source's back; a failure is 64/65/120/140/1111, a rerun 128
  (``reexecuteCommand`` keeps the same command, so the same correlation id,
  and ``unplugPassthroughNics`` does not unplug twice).
- ``EventMapper``: ``<event id>`` is the audit_log_id, with ``code``,
  ``time``, ``correlation_id``, ``description``, ``vm@id``, ``host@id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

# AuditLogType.java
VM_DOWN = 61
START, START_SYSTEM = 62, 67
DONE = 63
FAILURES = frozenset({64, 65, 120, 140, 1111})
RERUN = 128
NIC_PLUGGED, NIC_PLUG_FAILED, NIC_UNPLUGGED = 1012, 1013, 1014
NOT_ALL_PLUGGED_BACK, PLUGGING_FAILED = 12003, 12004
STARTS = frozenset({START, START_SYSTEM})
AFTER_ARRIVAL = frozenset({NOT_ALL_PLUGGED_BACK, PLUGGING_FAILED})
RELEVANT = STARTS | FAILURES | AFTER_ARRIVAL | {VM_DOWN, DONE, RERUN, NIC_PLUGGED, NIC_UNPLUGGED}

_NIC_RE = re.compile(r"^Network Interface (.+?) \([^()]*\) was (?:un)?plugged (?:to|from) VM ")
_NOT_PLUGGED_RE = re.compile(r"failed to be plugged back: (.*?)\.?$")


@dataclass(frozen=True)
class Event:
    """One ``<event>`` of the engine's audit log, as far as the watcher reads it."""

    id: int
    code: int
    time: Optional[float] = None
    correlation_id: Optional[str] = None
    vm_id: Optional[str] = None
    host_id: Optional[str] = None
    description: str = ""


@dataclass(frozen=True)
class NicView:
    """A vNIC as the engine shows it when the watcher is about to act."""

    id: str
    name: str
    plugged: Optional[bool]
    passthrough: bool


def nic_name(description: str) -> Optional[str]:
    """The vNIC a 1012/1014 names (``NETWORK_(DE)ACTIVATE_VM_INTERFACE_SUCCESS``)."""
    match = _NIC_RE.match(description or "")
    return match.group(1) if match else None


def not_plugged_back(description: str) -> Optional[set]:
    """The names 12003 lists (``NamesOfNotRepluggedNics``, comma-joined), or None."""
    match = _NOT_PLUGGED_RE.search(description or "")
    if not match:
        return None
    return {n.strip() for n in match.group(1).split(",") if n.strip()}


@dataclass
class Migration:
    """One migration command (one correlation id) of one VM, and what it unplugged."""

    vm_id: str
    correlation_id: str
    first_event: int
    seen: float
    unplugged: list = field(default_factory=list)
    state: str = "unplugging"  # unplugging|running|rerun|done|failed
    trigger: Optional[dict] = None  # {"id", "code", "time"} of the event that calls for a plug
    excluded: list = field(default_factory=list)  # plugged by the engine or touched by an admin
    plugged_by_us: list = field(default_factory=list)
    attempts: dict = field(default_factory=dict)  # name -> [count, next try]
    up_since: Optional[float] = None
    only: Optional[list] = None  # 12003's list: only these were not plugged back

    def todo_names(self) -> list:
        skip = set(self.excluded) | set(self.plugged_by_us)
        names = [n for n in self.unplugged if n not in skip]
        return [n for n in names if self.only is None or n in self.only]


@dataclass
class Tracker:
    """Migrations by correlation id, fed events in id order."""

    migrations: dict = field(default_factory=dict)
    candidate_ttl: float = 600.0
    done_ttl: float = 600.0
    rerun_wait: float = 300.0

    def of_vm(self, vm_id: str) -> list:
        return [m for m in self.migrations.values() if m.vm_id == vm_id]

    def feed(self, ev: Event, now: float) -> list:
        """Apply one event; returns what to log (one line each)."""
        if ev.code not in RELEVANT or not ev.vm_id:
            return []
        if ev.code == NIC_UNPLUGGED:
            return self._unplugged(ev, now)
        if ev.code == NIC_PLUGGED:
            return self._plugged(ev)
        if ev.code == VM_DOWN:
            return self._drop_vm(ev.vm_id, "VM went down (event %d)" % ev.id)
        mig = self._find(ev)
        if mig is None:
            return []
        mig.seen = now
        if ev.code in STARTS:
            return self._started(mig, ev)
        if ev.code == RERUN:
            mig.state = "rerun"
            return ["VM %s: migration %s trying a rerun (event %d); waiting for its outcome"
                    % (mig.vm_id, mig.correlation_id, ev.id)]
        if ev.code == DONE:
            if mig.state != "failed":
                mig.state = "done"
            return []
        return self._failed(mig, ev, now)

    def _find(self, ev: Event) -> Optional[Migration]:
        """By correlation id; without one, the VM's newest migration."""
        mig = self.migrations.get(ev.correlation_id or "")
        if mig is not None and mig.vm_id == ev.vm_id:
            return mig
        if ev.correlation_id and ev.code in STARTS:
            return self._new(ev, ev.correlation_id, time_of(ev))
        mine = sorted(self.of_vm(ev.vm_id), key=lambda m: m.first_event)
        return mine[-1] if mine and not ev.correlation_id else None

    def _new(self, ev: Event, corr: str, now: float) -> Migration:
        mig = Migration(ev.vm_id, corr, ev.id, now)
        self.migrations[corr] = mig
        return mig

    def _unplugged(self, ev: Event, now: float) -> list:
        name = nic_name(ev.description)
        if name is None:
            return ["event %d: code 1014 without a vNIC name; ignored" % ev.id]
        notes = self._touched_by_others(ev, name, "unplugged")
        mig = self.migrations.get(ev.correlation_id or "")
        if mig is None and ev.correlation_id:
            mig = self._new(ev, ev.correlation_id, now)
        if mig is not None and mig.vm_id == ev.vm_id and mig.state == "unplugging":
            if name not in mig.unplugged:
                mig.unplugged.append(name)
        return notes

    def _plugged(self, ev: Event) -> list:
        name = nic_name(ev.description)
        if name is None:
            return []
        mig = self.migrations.get(ev.correlation_id or "")
        if mig is not None and mig.vm_id == ev.vm_id and name not in mig.excluded:
            mig.excluded.append(name)  # the engine plugged it back itself
        return self._touched_by_others(ev, name, "plugged")

    def _touched_by_others(self, ev: Event, name: str, how: str) -> list:
        """Another command (an admin, a new migration) changed *name*: never touch it again."""
        notes = []
        for mig in self.of_vm(ev.vm_id):
            if mig.correlation_id == ev.correlation_id or name not in mig.unplugged:
                continue
            if name in mig.plugged_by_us or name in mig.excluded:
                continue
            mig.excluded.append(name)
            notes.append("VM %s: vNIC %s %s by another command (event %d); the watcher leaves it"
                         % (ev.vm_id, name, how, ev.id))
        return notes

    def _started(self, mig: Migration, ev: Event) -> list:
        notes = []
        for other in self.of_vm(mig.vm_id):
            if other is not mig and other.state in ("failed", "rerun", "running", "done"):
                del self.migrations[other.correlation_id]
                if other.state == "failed" and other.todo_names():
                    notes.append("VM %s migrates again (event %d); vNIC(s) %s of migration %s "
                                 "are left unplugged" % (mig.vm_id, ev.id,
                                                         ", ".join(other.todo_names()),
                                                         other.correlation_id))
        mig.state = "running"
        return notes

    def _failed(self, mig: Migration, ev: Event, now: float) -> list:
        if ev.code == NOT_ALL_PLUGGED_BACK:
            mig.only = sorted(not_plugged_back(ev.description) or []) or None
        if mig.state == "failed":
            return []
        mig.state = "failed"
        mig.up_since = None
        mig.trigger = {"id": ev.id, "code": ev.code, "time": time_of(ev, now)}
        if not mig.todo_names():
            return []
        return ["VM %s: migration %s ended with event %d (code %d); vNIC(s) %s to plug back"
                % (mig.vm_id, mig.correlation_id, ev.id, ev.code, ", ".join(mig.todo_names()))]

    def _drop_vm(self, vm_id: str, why: str) -> list:
        notes = []
        for mig in self.of_vm(vm_id):
            del self.migrations[mig.correlation_id]
            if mig.state == "failed" and mig.todo_names():
                notes.append("VM %s: %s; vNIC(s) %s not plugged back"
                             % (vm_id, why, ", ".join(mig.todo_names())))
        return notes

    def expire(self, now: float) -> list:
        """Forget unplugs no migration claimed, ended migrations, and reruns with no outcome."""
        notes = []
        for mig in list(self.migrations.values()):
            idle = now - mig.seen
            if mig.state == "unplugging" and idle > self.candidate_ttl:
                del self.migrations[mig.correlation_id]
            elif mig.state == "done" and idle > self.done_ttl:
                del self.migrations[mig.correlation_id]
            elif mig.state == "rerun" and idle > self.rerun_wait:
                mig.state = "failed"
                mig.trigger = {"id": mig.first_event, "code": RERUN, "time": mig.seen}
                notes.append("VM %s: rerun of migration %s gave no outcome in %gs; treated as "
                             "failed" % (mig.vm_id, mig.correlation_id, self.rerun_wait))
        return notes

    def due(self) -> list:
        return [m for m in self.migrations.values() if m.state == "failed"]

    def finish(self, mig: Migration) -> None:
        self.migrations.pop(mig.correlation_id, None)

    def to_json(self) -> dict:
        return {cid: vars(m).copy() for cid, m in self.migrations.items()}

    @classmethod
    def from_json(cls, data: dict, **kw) -> Tracker:
        tracker = cls(**kw)
        for cid, fields in data.items():
            tracker.migrations[cid] = Migration(**fields)
        return tracker


def time_of(ev: Event, default: float = 0.0) -> float:
    return ev.time if ev.time is not None else default


def plan(mig: Migration, status: Optional[str], nics: Optional[list], now: float,
         grace: float) -> tuple:
    """What to do for one failed migration now: ("wait"|"drop"|"done"|"plug", why or NicViews).

    *status* None means the VM is gone. A vNIC is plugged only if this
    migration unplugged it, nobody plugged or unplugged it since, and the
    engine still shows it an unplugged passthrough vNIC.
    """
    if status is None:
        return "drop", "VM deleted"
    if status == "down":
        return "drop", "VM is down"
    if status != "up":
        mig.up_since = None
        return "wait", "VM is %s" % status
    if mig.up_since is None:
        mig.up_since = now
    if now - mig.up_since < grace:
        return "wait", "VM up for less than %gs" % grace
    names = mig.todo_names()
    todo = [n for n in (nics or []) if n.name in names and n.plugged is False and n.passthrough]
    todo = [n for n in todo if _attempt_due(mig, n.name, now)]
    if not todo:
        waiting = [n for n in names if n in mig.attempts]
        return ("wait", "retry backoff") if waiting and _still_unplugged(nics, waiting) else (
            "done", "nothing left to plug")
    return "plug", todo


def _attempt_due(mig: Migration, name: str, now: float) -> bool:
    attempt = mig.attempts.get(name)
    return attempt is None or now >= attempt[1]


def _still_unplugged(nics, names) -> bool:
    return any(n.name in names and n.plugged is False for n in (nics or []))


def plug_failed(mig: Migration, name: str, now: float, base: float = 5.0, cap: float = 300.0) -> float:
    """Note a failed plug; returns the delay before the next try (doubling, capped)."""
    count = mig.attempts.get(name, [0, 0.0])[0] + 1
    delay = min(cap, base * 2 ** (count - 1))
    mig.attempts[name] = [count, now + delay]
    return delay


def plugged(mig: Migration, name: str) -> None:
    """Note our own plug, so the 1012 it causes and any replay never plug it again."""
    if name not in mig.plugged_by_us:
        mig.plugged_by_us.append(name)
    mig.attempts.pop(name, None)
