"""What a hook run needs from the host, opened lazily and closed once.

Config is read here, at the edge; the point handlers get a context and
never read files or open connections themselves, so tests can hand them
a context over libvirt's test driver or a fake.
"""

from __future__ import annotations

import time
from typing import Optional

from sriov_host import config as config_mod
from sriov_host import hostinventory
from sriov_host.ledger import Ledger


class HookContext:
    def __init__(self, point: str, vm_id: str, env, cfg=None, conn=None, ledger=None,
                 devices=None, clock=time.monotonic, cpu_topology=None):
        self.point = point
        self.vm_id = vm_id
        self.env = env
        self._cfg = cfg
        self._conn = conn
        self._ledger = ledger
        self._devices = devices
        self._cpu_topology = cpu_topology
        self._inventory = None
        self._vf_by_address = None
        self._host_id = None
        self._owned = []
        self.clock = clock

    # -- lazily opened edges -------------------------------------------

    @property
    def cfg(self):
        if self._cfg is None:
            self._cfg = config_mod.load()
        return self._cfg

    @property
    def conn(self):
        if self._conn is None:
            from sriov_host import libvirtconn

            self._conn = libvirtconn.open_connection(self.cfg)
            self._owned.append(self._conn.close)
        return self._conn

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.cfg.ledger_path)
            self._owned.append(self._ledger.close)
        return self._ledger

    @property
    def devices(self):
        if self._devices is None:
            from sriov_host import devices

            self._devices = devices
        return self._devices

    @property
    def inventory(self):
        if self._inventory is None:
            conn = None if self.cfg.nodedev_xml_path else self.conn
            self._inventory = hostinventory.load(self.cfg, conn)
        return self._inventory

    @property
    def vf_by_address(self) -> dict:
        """The inventory's VFs by PCI address, built once per hook run."""
        if self._vf_by_address is None:
            self._vf_by_address = self.inventory.by_address()
        return self._vf_by_address

    @property
    def host_id(self) -> Optional[str]:
        if self._host_id is None:
            from sriov_host import libvirtconn

            self._host_id = libvirtconn.host_uuid(self.conn)
        return self._host_id

    def cpu_nodes(self) -> dict:
        """``{host CPU: NUMA node}`` of this host (sysfs unless a test hands one in)."""
        if self._cpu_topology is None:
            from sriov_host import topology

            self._cpu_topology = topology.SysfsTopology()
        return self._cpu_topology.cpu_nodes()

    def domain_refs(self) -> dict:
        from sriov_host import vfstate

        return vfstate.scan_domain_refs(self.conn, self.host_id)

    def close(self):
        for closer in reversed(self._owned):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must not mask the outcome
                pass
        self._owned = []

    # -- the live domain -----------------------------------------------

    def domain(self):
        from sriov_host import libvirtconn

        return libvirtconn.lookup(self.conn, self.vm_id)

    def live_root(self, dom):
        from sriov_host import domxml, libvirtconn

        return domxml.parse_domain(libvirtconn.live_xml(dom))

    def save_record(self, dom, record) -> None:
        """Write our record into the live domain metadata (AFFECT_LIVE).

        Every save refreshes ``updated``: the reconciler's grace counts from
        it, so a long unplug of many vNICs is never mistaken for an
        abandoned one.
        """
        from dataclasses import replace

        from sriov_host import rollback

        rollback.save_record(dom, replace(record, updated=time.time()))
