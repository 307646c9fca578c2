"""The destination side of a migration, for the lab's VDSM stand-in.

Copied from oVirt/vdsm ``lib/vdsm/API.py`` (``VM.migrationCreate``),
``lib/vdsm/clientIF.py`` (``createVm``: a VM id still in the container is
refused) and ``lib/vdsm/virt/vm.py`` (``_run``, ``_completeIncomingMigration``,
``destroy``): the devices from the source's stale XML, the
``before_vm_migrate_destination`` hook, the incoming limit, and
``after_vm_migrate_destination`` on the destination's own thread once
the VM has arrived. A mixin of :class:`sriov_lab.vdsm.api.VdsmStandIn`,
whose books (``_lock``, ``_incoming``, ``_arriving``, ``_down``) it uses.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional

from . import hooks as hr
from . import hostdevices
from . import migration as mig

log = logging.getLogger(__name__)

STATUS_DONE = {"code": mig.DONE, "message": "Done"}


@dataclass
class Incoming:
    """A destination VM between migrationCreate and its end (VDSM's Vm object)."""

    src_xml: str
    custom: dict
    result: mig.MigrationResult


class IncomingMigrations:
    """VDSM's ``migrationCreate`` and the end of an incoming migration."""


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
            devices = hostdevices.resolve_devices(self.conn, self.cfg, src_dom_xml, self.name)
            with self._lock:
                self._incoming[vm_id] = Incoming(src_dom_xml, custom, result)
            hostdevices.setup_devices(self.conn, devices, vm_id, self.name, self.host_uuid())
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
