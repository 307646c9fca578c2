"""The engine simulator's migrate action, as ``MigrateVmCommand`` runs it (engine >= 4.1).

ovirt-engine ``MigrateVmCommand``: ``perform`` unplugs each plugged,
migratable passthrough vNIC (``unplugPassthroughNics``, each logged 1014
with the command's correlation id) before the start event (62);
``runningSucceded`` plugs them on the destination (1012; 1013 and 12003 for
those it cannot); ``runningFailed`` plugs nothing back (65); ``rerun`` (128)
tries another host with the same command. A mixin of
:class:`sriov_lab.engine_sim.EngineSimulator`, whose books it uses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

from . import engine_sim_xml as ex
from .engine_sim_http import Fault


@dataclass
class Migration:
    """What the migrate callback receives; ``src``/``dst`` are host records."""

    vm_id: str
    vm_name: str
    src: dict
    dst: dict
    unplugged: list = field(default_factory=list)  # vNIC ids unplugged for it (alias ua-<id>)
    correlation_id: str = ""
    tried: list = field(default_factory=list)  # destination host ids, in order (reruns)
    not_plugged: list = field(default_factory=list)  # vNIC names the destination could not plug
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    ok: Optional[bool] = None
    error: Optional[str] = None


class MigrateVmCommand:
    """The migrate and cancel actions; needs the simulator's hosts, VMs, event log and lock."""

    def _migratable_passthrough(self, nic: dict) -> bool:
        profile = self.profiles.get(nic["profile"])
        return bool(profile and profile["passthrough"] and profile["migratable"] is True)

    def _unplug_for_migration(self, vm: dict, corr: str) -> list:
        """``MigrateVmCommand.unplugPassthroughNics``: each one an ``ActivateDeactivateVmNic``
        logged as 1014 with the migration's correlation id, before the start event."""
        unplugged = []
        for nic in vm["nics"]:
            if nic["plugged"] and self._migratable_passthrough(nic):
                nic["plugged"] = False
                unplugged.append(nic["id"])
                self._log_nic(1014, vm, nic, corr)
        return unplugged

    def _migrate(self, vm_id: str, body: str, corr: str = "") -> str:
        vm = self._get(self.vms, vm_id)
        dst_key = ex.parse_action_host(body)
        if vm["status"] != "up":
            raise Fault(409, "Operation Failed", "[Cannot migrate VM. VM %s is not running.]" % vm["name"])
        try:
            dst = self.hosts[self._id(self.hosts, dst_key)] if dst_key else None
        except KeyError:
            raise Fault(404, "Operation Failed", "Entity not found: host %s" % dst_key) from None
        if dst is None or dst["id"] == vm["host"]:
            raise Fault(409, "Operation Failed", "[Cannot migrate VM. The destination host is "
                         "missing or is the source host.]")
        mig = Migration(vm_id, vm["name"], dict(self.hosts[vm["host"]]), dict(dst), correlation_id=corr)
        mig.unplugged = self._unplug_for_migration(vm, corr)
        self._log_migration(62, vm, mig)
        vm["status"] = "migrating"
        self.migrations.append(mig)
        threading.Thread(target=self._run_migration, args=(vm, mig), daemon=True).start()
        return ex.action(dst)

    def _run_migration(self, vm: dict, mig: Migration) -> None:
        """``MigrateVmCommand`` after ``perform``: ``runningSucceded`` plugs on the destination
        (1013 and 12003 for those it cannot); ``runningFailed`` releases the destination and
        plugs nothing back; ``rerun`` (128) tries the next of ``rerun_hosts`` with the same
        command, so the same correlation id, without unplugging again."""
        while True:
            mig.tried.append(mig.dst["id"])
            ok, error = self._attempt(mig)
            with self._lock:
                rerun_to = None if ok else self._next_rerun(mig)
                if rerun_to is None:
                    self._finish(vm, mig, ok, error)
                    break
                self._log_migration(128, vm, mig)
                mig.dst = dict(rerun_to)
                self._log_migration(62, vm, mig)
        mig.done.set()

    def _attempt(self, mig: Migration) -> tuple:
        try:
            if self._callback is not None:
                return self._callback(mig) is not False, None
            return not mig.cancelled.wait(self.migrate_seconds), None
        except Exception as e:  # a failed lab migration is an outcome, not a crash
            return False, "%s: %s" % (type(e).__name__, e)

    def _next_rerun(self, mig: Migration) -> Optional[dict]:
        if mig.cancelled.is_set():
            return None
        for key in self.rerun_hosts:
            host = self.hosts.get(self._id(self.hosts, key)) if key else None
            if host and host["id"] != mig.src["id"] and host["id"] not in mig.tried:
                return host
        return None

    def _finish(self, vm: dict, mig: Migration, ok: bool, error: Optional[str]) -> None:
        mig.ok, mig.error = ok, error
        vm["status"] = "up"
        vm["host"] = mig.dst["id"] if ok else mig.src["id"]
        if not ok:  # after a failure the engine leaves them unplugged
            self._log_migration(65, vm, mig)
            return
        for nic in vm["nics"]:
            if nic["id"] not in mig.unplugged:
                continue
            if self._vf_free(vm["host"], nic) and self._host_plug(vm, nic) is None:
                nic["plugged"] = True
                self._log_nic(1012, vm, nic, mig.correlation_id)
            else:
                mig.not_plugged.append(nic["name"])
                self._log_nic(1013, vm, nic, mig.correlation_id)
        if mig.not_plugged:
            self.event_log.log(12003, vm, self.hosts.get(vm["host"]), mig.correlation_id,
                               NamesOfNotRepluggedNics=",".join(mig.not_plugged))
        self._log_migration(63, vm, mig)

    def _log_migration(self, code: int, vm: dict, mig: Migration) -> None:
        self.event_log.log(code, vm, self.hosts.get(mig.src["id"]), mig.correlation_id,
                           DestinationVdsName=mig.dst["name"])

    def _cancel(self, vm_id: str) -> str:
        vm = self._get(self.vms, vm_id)
        running = [m for m in self.migrations if m.vm_id == vm_id and not m.done.is_set()]
        if vm["status"] != "migrating" or not running:
            raise Fault(409, "Operation Failed", "[Cannot cancel migration for non migrating VM.]")
        for m in running:
            m.cancelled.set()
        return ex.action(None)
