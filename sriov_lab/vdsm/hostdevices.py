"""The destination's devices from the source's stale XML, as VDSM's ``migrationCreate`` builds them.

Copied from oVirt/vdsm ``lib/vdsm/virt/vm.py`` (``Vm.__init__``: each
hostdev device resolved to a node device by the *source's* name, through
``vmdevices/hostdevice.py`` ``get_device_params``) and the devices'
``setup()`` (``detach_detachable``, where libvirt refuses a VF another
domain uses). In the lab's ``emulated`` VF mode also each vNIC our record
names, by the VF address the record gives it. A refusal is VDSM's
migrateErr at ``migrationCreate``; :mod:`.incoming` calls these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from sriov_host import domxml
from sriov_host.errors import BadDomainXml
from sriov_host.pci import PciAddress

from .define import CREATE, MIGRATE_ERR, VdsmError


@dataclass(frozen=True)
class HostDevice:
    """A device of the captured XML that VDSM resolves to a node device by name."""

    kind: str  # "interface" (hostdev vNIC), "hostdev", or "emulated" (lab VF vNIC)
    alias: Optional[str]
    mac: Optional[str]
    address: str  # PCI address on the source

    @property
    def nodedev_name(self) -> str:
        return PciAddress.parse(self.address).nodedev_name

    def describe(self) -> str:
        what = "vNIC %s (%s)" % (self.mac or "-", self.alias or "no alias")
        if self.kind == domxml.KIND_HOSTDEV:
            what = "hostdev %s" % (self.alias or "-")
        return "%s on VF %s (node device %s)" % (what, self.address, self.nodedev_name)


def host_devices(root, vf_mode: str) -> list:
    """The devices VDSM's ``Vm.__init__`` would resolve by node device name.

    Every ``<interface type='hostdev'>`` and PCI ``<hostdev>`` (VDSM calls
    ``get_device_params`` for each); in ``emulated`` mode also every NIC
    our record names, by the VF address the record gives it.
    """
    out = []
    for elem in root.iterfind("devices/interface[@type='hostdev']"):
        addr, mac = domxml.source_address(elem), elem.find("mac")
        if addr:
            out.append(HostDevice(domxml.KIND_INTERFACE, _alias(elem),
                                  mac.get("address") if mac is not None else None, addr))
    for elem in root.iterfind("devices/hostdev[@mode='subsystem'][@type='pci']"):
        addr = domxml.source_address(elem)
        if addr:
            out.append(HostDevice(domxml.KIND_HOSTDEV, _alias(elem), None, addr))
    if vf_mode == domxml.MODE_EMULATED:
        for v in domxml.find_vnics(root, domxml.MODE_EMULATED):
            if v.vf_address:
                out.append(HostDevice(domxml.MODE_EMULATED, v.alias, v.mac, v.vf_address))
    return out


def _alias(elem) -> Optional[str]:
    a = elem.find("alias")
    return a.get("name") if a is not None else None


def _vf_node_devices(conn, cfg) -> Callable[[str], bool]:
    """Whether the host has a node device of a name, as ``nodeDeviceLookupByName`` says."""
    import libvirt

    from sriov_host import hostinventory
    from sriov_host.errors import InventoryError

    try:
        names = {vf.name for vf in hostinventory.load(cfg, conn).vfs}
    except InventoryError as e:
        raise VdsmError(MIGRATE_ERR, "cannot read the node devices: %s" % e.message, CREATE) from e

    def exists(name: str) -> bool:
        if name in names:
            return True
        if cfg.nodedev_xml_path:  # the lab's stand-in for the node device tree
            return False
        try:
            conn.nodeDeviceLookupByName(name)
        except libvirt.libvirtError:
            return False
        return True

    return exists


def resolve_devices(conn, cfg, src_xml: str, host: str) -> list:
    """VDSM's ``Vm.__init__`` on the destination: each device's node device must exist."""
    try:
        devices = host_devices(domxml.parse_domain(src_xml), cfg.vf_device)
    except BadDomainXml as e:
        raise VdsmError(MIGRATE_ERR, "cannot read the source's domain XML: %s" % e.message,
                        CREATE) from e
    if devices:
        exists = _vf_node_devices(conn, cfg)
        for dev in devices:
            if not exists(dev.nodedev_name):
                raise VdsmError(MIGRATE_ERR, "Virtual machine creation failed on %s: no node device "
                                "with matching name '%s' for %s" % (host, dev.nodedev_name,
                                                                   dev.describe()), CREATE)
    return devices


def _vf_users(conn, vm_id: str, host_uuid: Optional[str]) -> dict:
    """``{VF address: domain name}`` over the host's running domains but *vm_id*."""
    import libvirt

    users = {}
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            if dom.UUIDString() == vm_id:
                continue
            root = domxml.parse_domain(dom.XMLDesc(0))
        except (libvirt.libvirtError, BadDomainXml):
            continue  # gone meanwhile, or not ours to read
        for addr in domxml.referenced_vf_addresses(root, host_uuid):
            users.setdefault(addr, dom.name())
    return users


def setup_devices(conn, devices, vm_id: str, host: str, host_uuid: Optional[str]) -> None:
    """VDSM's device ``setup()`` (``detach_detachable``): libvirt refuses a VF in use."""
    if not devices:
        return
    users = _vf_users(conn, vm_id, host_uuid)
    for dev in devices:
        if dev.address in users:
            raise VdsmError(MIGRATE_ERR, "device setup failed on %s: Requested operation is not "
                            "valid: PCI device %s is in use by domain %s (%s)"
                            % (host, dev.address, users[dev.address], dev.describe()), CREATE)
