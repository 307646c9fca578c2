"""The lab's VDSM stand-in: VDSM's migration verbs, order and refusals, per lab host.

VDSM cannot run here, but ``SRIOV.migrate`` must drive *a* VDSM. A
:class:`VdsmStandIn` holds one lab host's libvirt connection, hook runner
and config, and serves, as JSON-RPC 2.0 over plain HTTP on the host's
loopback address, exactly the verbs ``SRIOV.migrate`` calls:

* ``VM.migrate {vmID, params: {dst: "ADDR:PORT", method: "online"}}``
* ``VM.getMigrationStatus {vmID}``
* ``VM.migrateCancel {vmID}``

with VDSM's result shapes and error codes (noVM 1, migrateErr 12,
migCancelErr 47, migInProgress 51, hookError 78). The migration follows
VDSM's real order (see :mod:`sriov_lab.vdsm.migration`): it is not kinder
than VDSM, or the lab would prove nothing. Peers (the other hosts'
stand-ins) live in the same process and are called directly where VDSM
would call its peer's ``migrationCreate`` over the wire.

Like VDSM, a stand-in follows DEVICE_REMOVED on its host and drops the
device from its own per-VM device list (the VF goes back to the host):
:mod:`.events` and :mod:`.devicebooks`; the destination side
(``migrationCreate``) is :mod:`.incoming`.
:class:`sriov_lab.services.LabStandIns` runs one per lab host.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from jsonrpclib import Fault

from sriov_host import libvirtconn

from .. import netns
from . import hooks as hr
from . import migration as mig
from . import vm as vdsm_nics
from .devicebooks import DeviceBooks
from .events import DomainEvents
from .incoming import IncomingMigrations

log = logging.getLogger(__name__)

def _verb(func):
    """Map VdsmError to a JSON-RPC error with VDSM's code; log the call."""

    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        try:
            return func(self, *args, **kwargs)
        except mig.VdsmError as e:
            log.info("%s: %s %s: error %d: %s", self.name, func.__name__, args or kwargs, e.code,
                     e.message)
            return Fault(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - a stand-in bug answers, it does not hang
            log.exception("%s: %s failed", self.name, func.__name__)
            return Fault(-32603, "VDSM stand-in internal error: %s" % e)

    return wrapper


@dataclass
class _Job:
    """One outgoing migration of a VM (VDSM's SourceThread state)."""

    result: mig.MigrationResult
    opts: mig.SourceOptions
    progress: int = 0

    def status(self) -> dict:
        if not self.result.source_done.is_set():
            self._update_progress()
        return self.result.vdsm_status(self.progress)

    def _update_progress(self) -> None:
        """From libvirt's job stats, as VDSM's monitor thread does; never goes back."""
        dom = self.opts.dom
        if dom is None:
            return
        try:
            stats = dom.jobStats()
            total, remaining = stats.get("data_total"), stats.get("data_remaining")
        except Exception:  # noqa: BLE001 - the job may have just ended
            return
        if total:
            self.progress = max(self.progress, min(99, int(100 * (total - remaining) / total)))


class VdsmStandIn(DeviceBooks, IncomingMigrations):
    """One lab host's VDSM, for migrations only. ``start()`` serves; ``stop()`` ends."""

    def __init__(self, name: str, cfg, hooks: hr.HookRunner, conn=None,
                 address: Optional[str] = None, port: Optional[int] = None,
                 peers: Optional[dict] = None):
        self.name, self.cfg, self.hooks = name, cfg, hooks
        self.conn = conn
        self._own_conn = conn is None
        self.address = address or cfg.vdsm_address
        self.port = cfg.vdsm_port if port is None else port
        self.peers = peers if peers is not None else {}  # "ADDR:PORT" -> VdsmStandIn
        self.before_migrate: Optional[Callable[[], None]] = None  # runs just before migrate3
        self._lock = threading.Lock()
        self._jobs: dict = {}
        self._incoming: dict = {}
        self._devices: dict = {}
        self._descriptors: dict = {}  # vm id -> VDSM's domain descriptor (the XML it last read)
        self._down: dict = {}  # migrated away, kept Down until VM.destroy: vm id -> its last XML
        self._arriving: set = set()  # between migrationCreate and _completeIncomingMigration's end
        self.max_incoming = mig.MAX_INCOMING_MIGRATIONS  # migration.incomingMigrations' bound
        self.hotunplug_timeout = vdsm_nics.HOTUNPLUG_TIMEOUT
        self.storage_pools: list = []  # what Host.getConnectedStoragePools answers
        self._host_uuid: Optional[str] = None
        self._server = None
        self._events: Optional[DomainEvents] = None

    # -- lifecycle --------------------------------------------------------------

    def __enter__(self) -> VdsmStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return "%s:%d" % (self.address, self.port)

    def start(self) -> VdsmStandIn:
        from jsonrpc_plugin.server import RpcServer, ServerThread

        if self.conn is None:
            self.conn = libvirtconn.open_connection(self.cfg, use_vdsm=False)
        try:
            self._events = DomainEvents(self).start()
            for dom in self.conn.listAllDomains(1):  # clientIF._recoverExistingVms: VDSM recovers
                self.track(dom.UUIDString())  # its running VMs' devices after a restart
            server = RpcServer((self.address, self.port), None, workers=4)
        except BaseException:
            self.stop()
            raise
        for name, func in (("VM.migrate", self.migrate), ("VM.getMigrationStatus",
                           self.get_migration_status), ("VM.migrateCancel", self.migrate_cancel),
                           ("VM.getStats", self.get_stats), ("VM.hotplugNic", self.hotplug_nic),
                           ("VM.hotunplugNic", self.hotunplug_nic), ("VM.destroy", self.destroy_vm),
                           ("Host.dumpxmls", self.dumpxmls),
                           ("Host.getConnectedStoragePools", self.connected_storage_pools)):
            server.register_function(func, name)
        self.port = server.port
        self._server = ServerThread(server).start()
        self.peers[self.endpoint] = self
        log.info("%s: VDSM stand-in serving on %s", self.name, self.endpoint)
        return self

    def stop(self, wait: bool = True) -> None:
        """Stop serving and following events; wait for running migrations.

        ``wait=False`` is a kill: it stops serving and touches nothing else
        (closing a libvirt connection another thread still uses crashes libvirt).
        """
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.peers.get(self.endpoint) is self:
            del self.peers[self.endpoint]
        if not wait:
            return
        for job in list(self._jobs.values()):
            job.result.wait(120)
        if self._events is not None:
            self._events.stop()
            self._events = None
        if self._own_conn and self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - the daemon may be gone (a demo killed it)
                pass
            self.conn = None

    # -- verbs (JSON-RPC) ---------------------------------------------------------

    @_verb
    def migrate(self, vmID, params=None):
        """VDSM's ``VM.migrate``: start the source thread, answer at once.

        The params are read as VDSM's ``SourceThread.__init__`` reads them
        (:meth:`sriov_lab.vdsm.migration.SourceOptions.from_params`); a key VDSM
        does not know is only logged (API.py, ``api_strict_mode`` off).
        """
        params = params or {}
        unknown = sorted(set(params) - mig.MIGRATE_PARAMS)
        if unknown:
            log.warning("%s: VM.migrate of %s: unknown params ignored: %s", self.name, vmID,
                        ", ".join(map(str, unknown)))
        self.lookup(vmID)
        peer = self._peer(params)
        opts = mig.SourceOptions.from_params(params, before_migrate=self.before_migrate)
        log.info("%s: VM.migrate of %s to %s: %d MiB/s, dstqemu %s, incomingLimit %s, flags %#x",
                 self.name, vmID, peer.name, opts.max_bandwidth, opts.dstqemu, opts.incoming_limit,
                 opts.vdsm_flags)
        job = self._new_job(vmID, peer, opts)
        threading.Thread(target=self._run_source, args=(peer, vmID, job.result, opts),
                         name="migsrc/%s" % vmID[:8], daemon=True).start()
        return job.status()

    @_verb
    def get_migration_status(self, vmID):
        """VDSM's ``VM.getMigrationStatus``; a VM never migrated reads "in progress", as in VDSM."""
        job = self._jobs.get(vmID)
        if job is None:
            self.lookup(vmID)
            return {"status": {"code": mig.DONE, "message": mig.IN_PROGRESS_MSG}, "progress": 0}
        return job.status()

    @_verb
    def migrate_cancel(self, vmID):
        """VDSM's ``VM.migrateCancel``: abort the libvirt job; the thread reports the end."""
        job = self._jobs.get(vmID)
        if job is None or job.result.source_done.is_set():
            self.lookup(vmID)
            raise mig.VdsmError(mig.MIG_CANCEL_ERR)
        job.opts.cancel.set()
        dom = job.opts.dom
        if dom is not None:
            try:
                dom.abortJob()
            except Exception as e:  # noqa: BLE001 - libvirt: no job (just ended or not begun)
                log.info("%s: abortJob of %s: %s", self.name, vmID, e)
        status = job.status()
        status["status"] = dict(status["status"], message="Migration process cancelled")
        return status

    @_verb
    def get_stats(self, vmID):
        """API.py ``VM.getStats``: ``[stats]`` with the status VDSM keeps (vmstatus.py)."""
        return [{"vmId": vmID, "status": self.status(vmID)}]

    @_verb
    def hotplug_nic(self, vmID, params=None):
        """vm.py ``Vm.hotplugNic`` (see :mod:`sriov_lab.vdsm_nics`)."""
        return vdsm_nics.hotplug(self, vmID, params or {})

    @_verb
    def hotunplug_nic(self, vmID, params=None):
        """vm.py ``Vm.hotunplugNic`` (see :mod:`sriov_lab.vdsm_nics`)."""
        return vdsm_nics.hotunplug(self, vmID, params or {}, self.hotunplug_timeout)

    @_verb
    def destroy_vm(self, vmID):
        """API.py ``VM.destroy``: a VM migrated away leaves the container; its ``after_vm_destroy`` runs."""
        with self._lock:
            xml = self._down.pop(vmID, None)
        if xml is None:
            dom = self.lookup(vmID)
            if dom.isActive():
                dom.destroy()
            xml = self._descriptors.get(vmID) or ""
        with self._lock:
            self._devices.pop(vmID, None)
            self._descriptors.pop(vmID, None)
        self.hooks.run(hr.AFTER_DESTROY, xml, vmID, mig.custom_properties(xml) if xml else {})
        return {"status": {"code": 0, "message": "Machine destroyed"}}

    @_verb
    def dumpxmls(self, vmList=None):
        """API.py ``Host.dumpxmls``: VDSM's own descriptors, not libvirt's live XML."""
        with self._lock:
            ids = vmList or list(self._descriptors)
            return {"domxmls": {i: self._descriptors[i] for i in ids if i in self._descriptors}}

    @_verb
    def connected_storage_pools(self):
        """API.py ``Global.getConnectedStoragePools``: an engine connects its pool on its hosts.

        None by default (no engine manages a lab host); tests set ``storage_pools``.
        """
        return list(self.storage_pools)

    # -- VDSM's books --------------------------------------------------------------

    def status(self, vm_id: str) -> str:
        """The VM's status as VDSM sets it; VDSM's noVM if it holds no such VM."""
        with self._lock:
            if vm_id in self._down:
                return "Down"  # vm.py _finishSuccessfully
            if vm_id in self._arriving:
                return "Migration Destination"  # vm.py _run, until _completeIncomingMigration ends
        if self.migrating_out(vm_id):
            return "Migration Source"  # migration.py _prepareGuest; back to Up in _recover
        dom = self.lookup(vm_id)
        return "Up" if dom.isActive() else "Down"

    def migrating_out(self, vm_id: str) -> bool:
        """migration.py ``SourceThread.migrating``: the thread runs and has not failed."""
        job = self._jobs.get(vm_id)
        return job is not None and not job.result.source_done.is_set() and job.result.code == mig.DONE

    def descriptor(self, vm_id: str) -> Optional[str]:
        with self._lock:
            return self._descriptors.get(vm_id)

    # -- in-process API (tests, the demo, :func:`migrate`) -----

    def result(self, vm_id: str) -> Optional[mig.MigrationResult]:
        """The last outgoing migration of *vm_id*: every step, timed (see ``timeline()``)."""
        job = self._jobs.get(vm_id)
        return job.result if job else None

    def wait(self, vm_id: str, timeout: float = 120.0) -> Optional[mig.MigrationResult]:
        """Wait until the migration of *vm_id* and the destination's completion have ended."""
        result = self.result(vm_id)
        if result is not None and not result.wait(timeout):
            raise TimeoutError("%s: migration of %s still running after %.0f s"
                               % (self.name, vm_id, timeout))
        return result

    def run_migration(self, vm_id: str, peer: VdsmStandIn,
                      opts: Optional[mig.SourceOptions] = None) -> mig.MigrationResult:
        """Run the source thread on the caller's thread (no server needed)."""
        opts = opts or mig.SourceOptions(before_migrate=self.before_migrate)
        job = self._new_job(vm_id, peer, opts)
        self._run_source(peer, vm_id, job.result, opts)
        return job.result

    def _run_source(self, peer: VdsmStandIn, vm_id: str, result: mig.MigrationResult,
                    opts: mig.SourceOptions) -> None:
        """The source thread; on success the VM stays in the container, Down, until VM.destroy.

        Only ``VM.destroy`` (the engine's, normally) takes it out of
        clientIF's container (see :meth:`finished_successfully`).
        """
        mig.run_source(self, peer, vm_id, result, opts)

    def finished_successfully(self, vm_id: str, domain_xml: str) -> None:
        """migration.py ``_finishSuccessfully``: Down (MigrationSucceeded) before "Migration done"."""
        with self._lock:
            self._down[vm_id] = domain_xml

    def lookup(self, vm_id: str):
        """The domain on this host; VDSM's noVM (code 1) if there is none."""
        import libvirt

        try:
            return self.conn.lookupByUUIDString(vm_id)
        except (libvirt.libvirtError, TypeError, ValueError):
            raise mig.VdsmError(mig.NO_VM, "vmId=%s" % vm_id) from None

    def devices(self, vm_id: str) -> dict:
        """``{alias: VF address or None}`` of the VM as this stand-in tracks it."""
        with self._lock:
            return dict(self._devices.get(vm_id) or {})

    def _new_job(self, vm_id: str, peer: VdsmStandIn, opts: mig.SourceOptions) -> _Job:
        self.track(vm_id)
        with self._lock:
            job = self._jobs.get(vm_id)
            if job is not None and not job.result.source_done.is_set():
                raise mig.VdsmError(mig.MIG_IN_PROGRESS, "vmId=%s" % vm_id)
            result = mig.MigrationResult(vm_id, self.name, peer.name, time.monotonic())
            job = self._jobs[vm_id] = _Job(result, opts)
        return job

    def _peer(self, params: dict) -> VdsmStandIn:
        """The destination's stand-in; VDSM would fail to connect (migrateErr) otherwise."""
        if params.get("method", "online") != "online" or params.get("mode", "remote") != "remote":
            raise mig.VdsmError(mig.MIGRATE_ERR, "only live (online, remote) migration is supported")
        dst = str(params.get("dst") or "")
        endpoint = dst if ":" in dst else "%s:%d" % (dst, self.port)  # VDSM's default port
        peer = self.peers.get(endpoint)
        if peer is None:
            raise mig.VdsmError(mig.MIGRATE_ERR, "cannot reach the destination %r: no VDSM there" % dst)
        if peer is self:
            raise mig.VdsmError(mig.MIGRATE_ERR, "the destination %r is this host" % dst)
        why = netns.unreachable(peer.address, peer.port)  # VDSM's connection to dst's VDSM
        if why:
            raise mig.VdsmError(mig.MIGRATE_ERR, "cannot reach the destination's VDSM: %s" % why)
        return peer

    def host_uuid(self) -> Optional[str]:
        if self._host_uuid is None:
            self._host_uuid = libvirtconn.host_uuid(self.conn)
        return self._host_uuid



def migrate(src_conn, dst_conn, vm_id: str, src_hooks: hr.HookRunner,
            dst_hooks: hr.HookRunner, port: Optional[int] = None,
            flags: Optional[int] = None,
            before_migrate: Optional[Callable[[], None]] = None,
            timeout: float = 600.0) -> mig.MigrationResult:
    """Migrate VM *vm_id* from *src_conn* to *dst_conn* in VDSM's strict order.

    Two in-process stand-ins (no server, no event subscriptions) play the
    hosts; this waits for the source thread and for the destination's
    ``after_vm_migrate_destination``. *before_migrate* runs just before
    the libvirt migration: the demo makes the migration fail there.
    """
    src = VdsmStandIn(src_hooks.host, mig.config_of(src_hooks), src_hooks, conn=src_conn)
    dst = VdsmStandIn(dst_hooks.host, mig.config_of(dst_hooks), dst_hooks, conn=dst_conn)
    opts = mig.SourceOptions(port=port, flags=flags, before_migrate=before_migrate)
    result = src.run_migration(vm_id, dst, opts)
    result.wait(timeout)
    return result
