"""VDSM's per-VM device list and domain descriptor, for the lab's VDSM stand-in.

Copied from oVirt/vdsm ``lib/vdsm/virt/vm.py``: the devices VDSM knows
(read from the live XML when it starts or recovers a VM, ``_devices``),
its descriptor (``_updateDomainDescriptor``), and ``onDeviceRemoved``
(DEVICE_REMOVED drops the device; a VF goes back to the host driver, as
``vmdevices/hostdevice.py`` ``teardown`` does). Its books matter: a NIC
attached behind VDSM's back stays unknown to it (see :mod:`.vm`). A
mixin of :class:`sriov_lab.vdsm.api.VdsmStandIn`, whose ``_lock``,
``_devices`` and ``_descriptors`` it keeps.
"""

from __future__ import annotations

import logging
from typing import Optional

from lxml import etree

from sriov_host import domxml, xmlsafe
from sriov_host.pci import PciAddress

from . import hostdevices

log = logging.getLogger(__name__)


class DeviceBooks:
    """What VDSM knows of each VM's devices."""


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
            for dev in hostdevices.host_devices(root, self.cfg.vf_device):
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
        vf = next((d.address for d in hostdevices.host_devices(root, self.cfg.vf_device) if d.alias == alias),
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
