"""VDSM's ``VM.hotplugNic`` and ``VM.hotunplugNic``, as strict as VDSM, for the lab's stand-in.

Copied from oVirt/vdsm ``lib/vdsm/virt/vm.py`` (``Vm.hotplugNic``,
``Vm.hotunplugNic``, ``_hotunplug_device``, ``_waitForDeviceRemoval``),
``lib/vdsm/virt/vmdevices/common.py`` (``dev_elems_from_xml``) and
``vmdevices/network.py`` (``Interface.setup``). What matters for this
project is VDSM's *books*: a NIC plugged through ``hotplugNic`` joins the
VM's device list, so its removal event is handled and a later
``hotunplugNic`` of it works; a NIC attached through libvirt behind VDSM's
back is not in the list, and ``hotunplugNic`` of it falls back to
``dev_from_xml``, never sees its removal event and fails after
``hotunplug_timeout`` (30 s) although libvirt removed it.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from sriov_host import xmlsafe

from . import define as mig

log = logging.getLogger(__name__)

HOTPLUG_NIC_FAILED = 49  # lib/vdsm/common/exception.py HotplugNicFailed
HOTUNPLUG_NIC_FAILED = 50  # HotunplugNicFailed
HOTUNPLUG_TIMEOUT = 30.0  # lib/vdsm/common/config.py.in [vars] hotunplug_timeout
HOTUNPLUG_CHECK_INTERVAL = 1.0  # [vars] hotunplug_check_interval
AFFECT_LIVE = 1


def nic_element(xml) -> tuple:
    """``dev_elems_from_xml``: the first device under ``devices`` and its alias; one line if not."""
    if not isinstance(xml, str) or not xml.strip():
        raise mig.VdsmError(HOTPLUG_NIC_FAILED, message="Failed to hotplug NIC: no xml given")
    try:
        root = xmlsafe.parse_xml(xml, "hotplug XML")
    except Exception as e:  # noqa: BLE001 - VDSM answers a parse error as the verb's failure
        raise mig.VdsmError(HOTPLUG_NIC_FAILED, message="Failed to hotplug NIC: %s" % e) from None
    devices = root.find("devices")
    nic = devices[0] if devices is not None and len(devices) else None
    if nic is None or nic.tag != "interface":
        raise mig.VdsmError(HOTPLUG_NIC_FAILED, message="Failed to hotplug NIC: no <interface> "
                            "under <devices>")
    alias = nic.find("alias")
    return nic, (alias.get("name") if alias is not None else None)


def not_migrating(standin, vm_id: str) -> None:
    """vm.py ``_not_migrating``: refused while this VM's *outgoing* migration runs (code 51)."""
    if standin.migrating_out(vm_id):
        raise mig.VdsmError(mig.MIG_IN_PROGRESS, "vmId=%s" % vm_id)


def setup(standin, nic) -> None:
    """``Interface.setup``: ``detach_detachable`` of a hostdev vNIC's VF (to vfio-pci)."""
    if nic.get("type") != "hostdev":
        return
    addr = nic.find("source/address")
    if addr is None:
        return
    name = "pci_%04x_%02x_%02x_%x" % tuple(int(addr.get(k, "0"), 16)
                                          for k in ("domain", "bus", "slot", "function"))
    try:
        dev = standin.conn.nodeDeviceLookupByName(name)
        if xmlsafe.parse_xml(dev.XMLDesc(0), "node device XML").findtext("driver/name") != "vfio-pci":
            dev.dettach()
    except Exception as e:  # noqa: BLE001 - VDSM lets the attach fail then
        log.warning("%s: detach_detachable(%s): %s", standin.name, name, e)


def hotplug(standin, vm_id: str, params: dict) -> dict:
    """``Vm.hotplugNic``: guard, setup, attach, then the device list and descriptor."""
    import libvirt
    from lxml import etree

    not_migrating(standin, vm_id)
    dom = standin.lookup(vm_id)
    nic, alias = nic_element((params or {}).get("xml"))
    nic_xml = etree.tostring(nic, encoding="unicode")
    setup(standin, nic)
    try:
        dom.attachDeviceFlags(nic_xml, AFFECT_LIVE)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise mig.VdsmError(mig.NO_VM, "vmId=%s" % vm_id) from e
        raise mig.VdsmError(HOTPLUG_NIC_FAILED, message=str(e)) from e
    standin.add_device(vm_id, alias)  # device_conf.append(nic); _updateDomainDescriptor
    mac = nic.find("mac")
    return {"status": {"code": 0, "message": "Done"},
            "vmList": {"devices": [{"macAddr": mac.get("address") if mac is not None else None,
                                    "alias": alias}], "xml": standin.descriptor(vm_id)}}


def hotunplug(standin, vm_id: str, params: dict, timeout: Optional[float] = None) -> dict:
    """``Vm.hotunplugNic``: a known NIC waits for its event; an unknown one times out."""
    import libvirt

    not_migrating(standin, vm_id)
    dom = standin.lookup(vm_id)
    nic, alias = nic_element((params or {}).get("xml"))
    known = alias is not None and alias in standin.devices(vm_id)  # lookup.device_from_xml_alias
    if not known:
        log.info("%s: VM %s: hotunplugNic of a NIC not in VDSM's device list (%s): dev_from_xml",
                 standin.name, vm_id, alias)
    from lxml import etree

    try:
        dom.detachDeviceFlags(etree.tostring(nic, encoding="unicode"), AFFECT_LIVE)
    except libvirt.libvirtError as e:
        raise mig.VdsmError(HOTUNPLUG_NIC_FAILED, message=str(e)) from e
    deadline = time.monotonic() + (HOTUNPLUG_TIMEOUT if timeout is None else timeout)
    while not (known and alias not in standin.devices(vm_id)):  # hotunplug_event, set on removal
        if time.monotonic() > deadline:
            raise mig.VdsmError(HOTUNPLUG_NIC_FAILED, message="Timeout detaching %s" % alias)
        time.sleep(min(HOTUNPLUG_CHECK_INTERVAL, 0.05))
    return {"status": {"code": 0, "message": "Done"}, "vmList": {}}
