"""Plug vNICs through VDSM's ``VM.hotplugNic``, so VDSM keeps them in its books.

VDSM has no DEVICE_ADDED handling (virt/vm.py): a NIC attached through
libvirt directly is not in its device list, its descriptor or
``Host.dumpxmls``, the engine never sees it plugged, and a later
``hotunplugNic`` of it times out. So the service's plugs go through
``hotplugNic`` (vm.py ``Vm.hotplugNic``: ``setup()`` binds the VF to
vfio-pci, ``attachDevice``, then the device list and metadata), with the
interface XML as VDSM writes it (``managed='no'``) and the VM's own
``<ovirt-vm:device>`` metadata for that MAC, which VDSM leaves in the
domain when a NIC is removed. Everything else (detach, waits, reads) is
the libvirt device module's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable

from lxml import etree

from sriov_host import libvirtconn, xmlsafe
from sriov_host.devices import AttachOutcomeUnknown, DeviceTimeout
from sriov_host.errors import SriovError

from . import vdsm_api

log = logging.getLogger("sriov-migrationd.vdsm")

OVIRT_VM_NS = "http://ovirt.org/vm/1.0"
GUARD_RETRY = 0.05  # s between hotplugNic attempts while VDSM's _not_migrating guard refuses


def hotplug_xml(device_xml: str, live_root, mac) -> str:
    """``<hotplug><devices>NIC</devices><metadata>`` (virt/vmdevices/common.py ``dev_elems_from_xml``)."""
    nic = xmlsafe.parse_xml(device_xml, "device XML")
    if nic.tag in ("interface", "hostdev") and nic.get("managed") == "yes":
        nic.set("managed", "no")  # VDSM's own (vmdevices/network.py); its setup() binds the VF
    root = etree.Element("hotplug")
    etree.SubElement(root, "devices").append(nic)
    md = etree.SubElement(root, "metadata")
    vm = etree.SubElement(md, "{%s}vm" % OVIRT_VM_NS, nsmap={"ovirt-vm": OVIRT_VM_NS})
    for dev in live_root.iterfind("metadata/{%s}vm/{%s}device" % (OVIRT_VM_NS, OVIRT_VM_NS)):
        if mac and (dev.get("mac_address") or "").lower() == mac.lower():
            vm.append(dev)
    return etree.tostring(root, encoding="unicode")


class VdsmDevices:
    """The libvirt device module, with attaches sent through VDSM's ``VM.hotplugNic``."""

    def __init__(self, devices, vdsm_factory: Callable, cfg):
        self._devices = devices
        self._vdsm_factory = vdsm_factory
        self._cfg = cfg

    def __getattr__(self, name):
        return getattr(self._devices, name)

    def attach_and_wait(self, dom, device_xml: str, alias: str, timeout: float, **_kw) -> float:
        """hotplugNic, retried while VDSM still calls the VM migrating; then trust the live XML."""
        start = time.monotonic()
        vm_id = dom.UUIDString()
        live = xmlsafe.parse_xml(libvirtconn.live_xml(dom), "live domain XML")
        mac = xmlsafe.parse_xml(device_xml, "device XML").find("mac")
        xml = hotplug_xml(device_xml, live, mac.get("address") if mac is not None else None)
        with contextlib.closing(self._vdsm_factory(self._cfg)) as vdsm:
            self._hotplug(vdsm, vm_id, xml, alias, start + timeout)
        if not self._devices.alias_present(dom, alias):
            raise DeviceTimeout("VDSM's hotplugNic of %s on VM %s answered, but the live domain "
                                "has no such device" % (alias, vm_id), {"alias": alias})
        ms = (time.monotonic() - start) * 1000.0
        log.info("VM %s: %s plugged through VDSM's hotplugNic in %.0f ms", vm_id, alias, ms)
        return ms

    @staticmethod
    def _hotplug(vdsm, vm_id: str, xml: str, alias: str, deadline: float) -> None:
        while True:
            try:
                vdsm.hotplug_nic(vm_id, xml)
                return
            except vdsm_api.VdsmUnavailable as e:
                if e.vdsm_code == vdsm_api.MIGRATION_IN_PROGRESS and time.monotonic() < deadline:
                    time.sleep(GUARD_RETRY)  # its source thread has not yet failed (migration.py)
                    continue
                if e.vdsm_code is None:
                    raise AttachOutcomeUnknown("VM %s: VDSM's answer to hotplugNic of %s was lost "
                                               "(%s); the VF stays held" % (vm_id, alias, e.message),
                                               {"alias": alias}) from e
                raise SriovError("VM %s: VDSM refused hotplugNic of %s: %s" % (vm_id, alias, e.message),
                                 {"alias": alias, "vdsm_code": e.vdsm_code}) from e
