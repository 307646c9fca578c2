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
VDSM's real order (see :mod:`sriov_lab.migration`): it is not kinder
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

from sriov_host import domxml, libvirtconn, xmlsafe
from sriov_host.pci import PciAddress

from . import hookrunner as hr
from . import migration as mig

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
        r = self.result
        if not r.source_done.is_set():
            self._update_progress()
            return {"status": {"code": mig.DONE, "message": mig.IN_PROGRESS_MSG},
                    "progress": self.progress}
        if r.ok:
            return {"status": {"code": mig.DONE, "message": mig.DONE_MSG}, "progress": 100}
        return {"status": {"code": r.code, "message": r.error}, "progress": self.progress}

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
            server = RpcServer((self.address, self.port), None, workers=4)
        except BaseException:
            self.stop()
            raise
        for name, func in (("VM.migrate", self.migrate), ("VM.getMigrationStatus",
                           self.get_migration_status), ("VM.migrateCancel", self.migrate_cancel)):
            server.register_function(func, name)
        self.port = server.port
        self._server = ServerThread(server).start()
        self.peers[self.endpoint] = self
        log.info("%s: VDSM stand-in serving on %s", self.name, self.endpoint)
        return self

    def stop(self) -> None:
        """Stop serving and following events; wait for running migrations to end."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.peers.get(self.endpoint) is self:
            del self.peers[self.endpoint]
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
        """VDSM's ``VM.migrate``: start the source thread, answer at once."""
        params = params or {}
        self.lookup(vmID)
        peer = self._peer(params)
        opts = mig.SourceOptions(before_migrate=self.before_migrate)
        job = self._new_job(vmID, peer, opts)
        threading.Thread(target=mig.run_source, args=(self, peer, vmID, job.result, opts),
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

    # -- in-process API (tests, the demo, :func:`sriov_lab.migration.migrate`) -----

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
        mig.run_source(self, peer, vm_id, job.result, opts)
        return job.result

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
        return peer

    def host_uuid(self) -> Optional[str]:
        if self._host_uuid is None:
            self._host_uuid = libvirtconn.host_uuid(self.conn)
        return self._host_uuid

    # -- destination side ----------------------------------------------------------

    def migration_create(self, vm_id: str, src_dom_xml: str,
                         result: Optional[mig.MigrationResult] = None) -> dict:
        """VDSM's ``migrationCreate``: devices from the stale XML, then the destination hook."""
        result = result or mig.MigrationResult(vm_id, "?", self.name, time.monotonic())
        result.create_start = time.monotonic()
        custom = mig.custom_properties(src_dom_xml)
        try:
            devices = mig.resolve_devices(self.conn, self.cfg, src_dom_xml, self.name)
            with self._lock:
                self._incoming[vm_id] = _Incoming(src_dom_xml, custom, result)
            mig.setup_devices(self.conn, devices, vm_id, self.name, self.host_uuid())
        except mig.VdsmError as e:
            result.aborted_at = mig.CREATE
            log.warning("%s: migrationCreate of %s refused: %s", self.name, vm_id, e.message)
            return e.response()
        finally:
            result.create_end = time.monotonic()
        run = self.hooks.run(hr.BEFORE_DEST, src_dom_xml, vm_id, custom)
        result.steps.append(run)
        if run.failed:
            result.aborted_at = hr.BEFORE_DEST
            return mig.VdsmError(mig.HOOK_ERROR, message="Destination hook failed: %s"
                                 % mig.hook_error(run)).response()
        return {"status": dict(STATUS_DONE), "migrationPort": 0, "params": {}}

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
            result.dest_done.set()

    def destroy(self, vm_id: str, result: Optional[mig.MigrationResult] = None) -> None:
        """VDSM's ``destroy`` of a half-made destination VM: ``after_vm_destroy`` runs."""
        with self._lock:
            inc = self._incoming.pop(vm_id, None)
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
