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
device from its own per-VM device list (the VF goes back to the host).
:class:`sriov_lab.services.LabStandIns` runs one per lab host.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from jsonrpclib import Fault
from lxml import etree

from sriov_host import domxml, libvirtconn, xmlsafe
from sriov_host.pci import PciAddress

from .. import netns
from . import hooks as hr
from . import migration as mig
from . import vm as vdsm_nics

log = logging.getLogger(__name__)

STATUS_DONE = {"code": mig.DONE, "message": "Done"}


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


@dataclass
class _Incoming:
    """A destination VM between migrationCreate and its end (VDSM's Vm object)."""

    src_xml: str
    custom: dict
    result: mig.MigrationResult


class VdsmStandIn:
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
        self._events: Optional[_Events] = None

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
            self._events = _Events(self).start()
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

    # -- destination side ----------------------------------------------------------

    def migration_create(self, vm_id: str, src_dom_xml: str,
                         result: Optional[mig.MigrationResult] = None,
                         incoming_limit: Optional[int] = None) -> dict:
        """VDSM's ``migrationCreate``: devices from the stale XML, then the destination hook."""
        result = result or mig.MigrationResult(vm_id, "?", self.name, time.monotonic())
        result.create_start = time.monotonic()
        custom = mig.custom_properties(src_dom_xml)
        if incoming_limit:  # API.py migrationCreate: incomingMigrations.bound = incomingLimit
            self.max_incoming = incoming_limit
        with self._lock:
            held = vm_id in self._down  # clientIF.createVm: a VM id still in the container
            busy = not held and len(self._arriving) >= self.max_incoming  # vm.py _startUnderlyingVm
            if not (held or busy):
                self._arriving.add(vm_id)
        if busy:
            return self._at_limit(vm_id, incoming_limit, result)
        if held:
            result.create_end = time.monotonic()
            result.aborted_at = mig.CREATE
            log.warning("%s: migrationCreate of %s refused: the VM is still here, Down, until "
                        "VM.destroy", self.name, vm_id)
            return mig.VdsmError(mig.VM_EXISTS).response()
        try:
            devices = mig.resolve_devices(self.conn, self.cfg, src_dom_xml, self.name)
            with self._lock:
                self._incoming[vm_id] = _Incoming(src_dom_xml, custom, result)
            mig.setup_devices(self.conn, devices, vm_id, self.name, self.host_uuid())
        except mig.VdsmError as e:
            result.aborted_at = mig.CREATE
            self._arriving.discard(vm_id)
            log.warning("%s: migrationCreate of %s refused: %s", self.name, vm_id, e.message)
            return e.response()
        finally:
            result.create_end = time.monotonic()
        run = self.hooks.run(hr.BEFORE_DEST, src_dom_xml, vm_id, custom)
        result.steps.append(run)
        if run.failed:
            result.aborted_at = hr.BEFORE_DEST
            self._arriving.discard(vm_id)
            return mig.VdsmError(mig.HOOK_ERROR, message="Destination hook failed: %s"
                                 % mig.hook_error(run)).response()
        return {"status": dict(STATUS_DONE), "migrationPort": 0, "params": {}}

    def _at_limit(self, vm_id: str, incoming_limit: Optional[int], result: mig.MigrationResult) -> dict:
        """migrateLimit (82), which the source waits out; migrateErr (12) to a source that sent
        no incomingLimit: API.py ``migrationCreate``'s answer to a source older than 4.0."""
        result.create_end = time.monotonic()
        log.info("%s: migrationCreate of %s: %d incoming migration(s) already, the limit",
                 self.name, vm_id, self.max_incoming)
        if incoming_limit is None:
            result.aborted_at = mig.CREATE
            return mig.VdsmError(mig.MIGRATE_ERR).response()
        return mig.VdsmError(mig.MIGRATE_LIMIT).response()

    def complete_incoming(self, vm_id: str, result: mig.MigrationResult) -> None:
        """VDSM's ``_completeIncomingMigration``, on this host's own thread."""
        threading.Thread(target=self._complete, args=(vm_id, result),
                         name="migdst/%s" % vm_id[:8], daemon=True).start()

    def _complete(self, vm_id: str, result: mig.MigrationResult) -> None:
        try:
            with self._lock:
                inc = self._incoming.pop(vm_id, None)
            custom = inc.custom if inc else {}
            xml = self.lookup(vm_id).XMLDesc(0)
            self.track(vm_id, refresh=True)
            result.steps.append(self.hooks.run(hr.AFTER_DEST, xml, vm_id, custom))
        except Exception:  # noqa: BLE001 - logged; the source has its answer already
            log.exception("%s: completing the incoming migration of %s failed", self.name, vm_id)
        finally:
            self._arriving.discard(vm_id)  # the VM is reported Up from here on
            result.dest_done.set()

    def destroy(self, vm_id: str, result: Optional[mig.MigrationResult] = None) -> None:
        """VDSM's ``destroy`` of a half-made destination VM: ``after_vm_destroy`` runs."""
        with self._lock:
            inc = self._incoming.pop(vm_id, None)
            self._arriving.discard(vm_id)
        if inc is None:
            return  # VDSM answers noVM; the source ignores it
        try:
            dom = self.conn.lookupByUUIDString(vm_id)
            if dom.isActive():
                dom.destroy()
        except Exception as e:  # noqa: BLE001 - usually no domain (libvirt cleaned up), or no daemon
            log.debug("%s: no destination domain of %s to destroy: %s", self.name, vm_id, e)
        run = self.hooks.run(hr.AFTER_DESTROY, inc.src_xml, vm_id, inc.custom)
        (result or inc.result).steps.append(run)

    # -- device tracking (DEVICE_REMOVED) ----------------------------------------

    def track(self, vm_id: str, refresh: bool = False) -> None:
        """Start tracking a VM's devices from its live XML (VDSM's device list)."""
        with self._lock:
            if vm_id in self._devices and not refresh:
                return
        try:
            root = domxml.parse_domain(self.lookup(vm_id).XMLDesc(0))
        except Exception as e:  # noqa: BLE001 - gone meanwhile, or unreadable: nothing to track
            log.debug("%s: cannot track devices of %s: %s", self.name, vm_id, e)
            return
        devs = {a.get("name"): None for a in root.iterfind("devices/*/alias")}  # alias -> VF
        try:
            for dev in mig.host_devices(root, self.cfg.vf_device):
                devs[dev.alias] = dev.address
        except Exception as e:  # noqa: BLE001 - an unreadable record: still track the rest
            log.warning("%s: VM %s: cannot tell its VFs: %s", self.name, vm_id, e)
        with self._lock:
            self._devices[vm_id] = devs
            self._descriptors[vm_id] = etree.tostring(root, encoding="unicode")

    def add_device(self, vm_id: str, alias: Optional[str]) -> None:
        """One NIC VDSM itself plugged joins the list; the descriptor is read again.

        Only that one: a device attached behind VDSM's back stays unknown
        although the descriptor (``_updateDomainDescriptor``) now shows it.
        """
        xml = self.lookup(vm_id).XMLDesc(0)
        root = domxml.parse_domain(xml)
        vf = next((d.address for d in mig.host_devices(root, self.cfg.vf_device) if d.alias == alias),
                  None)
        with self._lock:
            self._devices.setdefault(vm_id, {})[alias] = vf
            self._descriptors[vm_id] = xml

    def device_removed(self, vm_id: str, alias: str) -> None:
        """DEVICE_REMOVED: drop the device; a VF goes back to the host, as in VDSM."""
        log.info("%s: VM %s: device removal reported: %s", self.name, vm_id, alias)
        with self._lock:
            devs = self._devices.get(vm_id)
            known = devs is not None and alias in devs
            vf = devs.pop(alias) if known else None
        if not known:
            log.warning("%s: VM %s: removed device not found in devices: %s", self.name, vm_id, alias)
        elif vf:
            log.info("%s: VM %s: vNIC %s removed; VF %s goes back to the host", self.name, vm_id,
                     alias, vf)
            if self.cfg.vf_device == "hostdev":
                self._reattach(vf)

    def _reattach(self, vf: str) -> None:
        """Give a real VF back to its host driver, as VDSM's device teardown does."""
        try:
            dev = self.conn.nodeDeviceLookupByName(PciAddress.parse(vf).nodedev_name)
            if xmlsafe.parse_xml(dev.XMLDesc(0), "node device XML").findtext("driver/name") == "vfio-pci":
                dev.reAttach()
        except Exception as e:  # noqa: BLE001 - VDSM logs a failed reattach and goes on
            log.warning("%s: cannot give VF %s back to the host: %s", self.name, vf, e)


class _Events:
    """DEVICE_REMOVED and STARTED of the host's domains, handled off libvirt's loop thread."""

    def __init__(self, standin: VdsmStandIn):
        self.standin = standin
        self._queue: queue.Queue = queue.Queue()
        self._handles: list = []
        self._thread = threading.Thread(target=self._work, name="vdsm-events/%s" % standin.name,
                                        daemon=True)

    def start(self) -> _Events:
        import libvirt

        conn = self.standin.conn
        self._handles = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                                        self._removed, None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                        self._lifecycle, None)]
        self._thread.start()
        return self

    def _removed(self, _conn, dom, alias, _opaque) -> None:
        self._queue.put((self.standin.device_removed, dom.UUIDString(), alias))

    def _lifecycle(self, _conn, dom, event, _detail, _opaque) -> None:
        import libvirt

        if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            self._queue.put((self.standin.track, dom.UUIDString()))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                item[0](*item[1:])
            except Exception:  # noqa: BLE001 - one bad event must not stop the others
                log.exception("%s: handling a libvirt event failed", self.standin.name)

    def stop(self) -> None:
        for handle in self._handles:
            try:
                self.standin.conn.domainEventDeregisterAny(handle)
            except Exception:  # noqa: BLE001 - the daemon may be gone
                pass
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(5)


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
