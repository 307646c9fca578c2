"""What the verbs and the reconciler share: libvirt, the ledger, the inventory.

The libvirt connection is opened lazily and reopened when libvirtd went
away; the inventory is cached briefly because node devices change only
when an admin changes ``sriov_numvfs``; the sqlite ledger is used by one
thread at a time (its transactions are per connection), and a lock per
VM keeps the reconciler and ``restoreNics`` off the same domain at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Optional

from sriov_host import hostinventory, libvirtconn, topology, vfstate
from sriov_host.errors import LibvirtFailure

log = logging.getLogger(__name__)

INVENTORY_TTL = 10.0
MAX_BACKOFF = 8.0


class LockedLedger:
    """A Ledger whose every call holds one lock (a sqlite connection is not re-entrant)."""

    def __init__(self, ledger):
        self._ledger = ledger
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self._ledger, name)
        if not callable(attr):
            return attr

        def locked(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return locked


class HostContext:
    def __init__(self, cfg, ledger, conn_factory: Optional[Callable] = None,
                 clock: Callable[[], float] = time.monotonic,
                 cpu_topology: Optional[topology.CpuTopology] = None):
        self.cfg = cfg
        self.ledger = ledger
        self.cpu_topology = cpu_topology or topology.SysfsTopology()
        self._conn_factory = conn_factory or (lambda: libvirtconn.open_connection(cfg))
        self._conn = None
        self._conn_lock = threading.Lock()
        self._backoff, self._retry_at = 0.0, 0.0
        self._host_id = None
        self._inventory = None
        self._inventory_key = None
        self._inventory_lock = threading.Lock()
        self._vm_locks = {}
        self._vm_locks_guard = threading.Lock()
        self.clock = clock

    def conn(self):
        """The connection, reopened after libvirtd went away, with backoff between tries.

        While libvirtd is down a caller gets LibvirtFailure at once instead of
        every verb and reconciler pass hammering the socket.
        """
        with self._conn_lock:
            if self._conn is not None and not _alive(self._conn):
                log.warning("libvirt connection to %s lost; reconnecting", self.cfg.libvirt_uri)
                self._conn = None
            if self._conn is None:
                now = self.clock()
                if now < self._retry_at:
                    raise LibvirtFailure("libvirt is unavailable; next try in %.1f s"
                                         % (self._retry_at - now))
                try:
                    self._conn = self._conn_factory()
                except LibvirtFailure:
                    self._backoff = min(MAX_BACKOFF, self._backoff * 2 or 0.5)
                    self._retry_at = now + self._backoff
                    raise
                self._backoff, self._retry_at = 0.0, 0.0
            return self._conn

    def close(self):
        with self._conn_lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001 - closing a dead connection is fine
                    pass
                self._conn = None

    @property
    def host_id(self) -> Optional[str]:
        """libvirt's host UUID: the owner stamp on our metadata records."""
        if self._host_id is None:
            self._host_id = libvirtconn.host_uuid(self.conn())
        return self._host_id

    def inventory(self):
        key = self._inventory_cache_key()
        with self._inventory_lock:
            if self._inventory is None or key != self._inventory_key:
                self._inventory = hostinventory.load(self.cfg, None if self.cfg.nodedev_xml_path
                                                     else self.conn())
                self._inventory_key = key
            return self._inventory

    def _inventory_cache_key(self):
        path = self.cfg.nodedev_xml_path
        if path:
            try:
                st = os.stat(path)
                return (path, st.st_mtime_ns, st.st_size)
            except OSError:
                return (path, None)
        return int(self.clock() // INVENTORY_TTL)

    def domain_refs(self) -> dict:
        return vfstate.scan_domain_refs(self.conn(), self.host_id)

    def cpu_nodes(self) -> dict:
        """``{host CPU: NUMA node}``, read when a reservation names pinned CPUs."""
        return self.cpu_topology.cpu_nodes()

    def lookup(self, vm_id: str):
        """The VM's domain on this host, or None if libvirt does not know it."""
        import libvirt

        try:
            return self.conn().lookupByUUIDString(vm_id)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise LibvirtFailure("cannot look up VM %s: %s" % (vm_id, e), {"vmID": vm_id}) from e

    def is_running_here(self, vm_id: str) -> bool:
        dom = self.lookup(vm_id)
        try:
            return bool(dom is not None and dom.isActive())
        except Exception:  # noqa: BLE001 - gone while we looked
            return False

    def vm_lock(self, vm_id: str) -> threading.Lock:
        with self._vm_locks_guard:
            lock = self._vm_locks.get(vm_id)
            if lock is None:
                lock = self._vm_locks[vm_id] = threading.Lock()
            return lock


def _alive(conn) -> bool:
    try:
        return bool(conn.isAlive())
    except Exception:  # noqa: BLE001
        return False


class VmContext:
    """One VM on this host, shaped as the shared unplug/plug code wants it.

    The same attributes as the hooks' HookContext, over the service's
    long-lived connection, ledger and inventory.
    """

    def __init__(self, host: HostContext, devices, vm_id: str):
        self.vm_id = vm_id
        self.cfg = host.cfg
        self.ledger = host.ledger
        self.devices = devices
        self.inventory = host.inventory()
        self.vf_by_address = self.inventory.by_address()
        self.host_id = host.host_id
        self._host = host

    def domain(self):
        return libvirtconn.lookup(self._host.conn(), self.vm_id)

    def live_root(self, dom):
        from sriov_host import domxml

        return domxml.parse_domain(libvirtconn.live_xml(dom))

    def save_record(self, dom, record) -> None:
        """Every save refreshes ``updated``, which the reconciler's grace counts from."""
        from dataclasses import replace

        from sriov_host import rollback

        rollback.save_record(dom, replace(record, updated=time.time()))

    def domain_refs(self) -> dict:
        return self._host.domain_refs()
