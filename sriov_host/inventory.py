"""The host's VF inventory, built from libvirt node device XML.

Parsing is pure (:func:`parse_devices`); the two sources (a live libvirt
connection, or a ``nodedev-xml:`` file standing in for SR-IOV hardware
that this machine does not have) only fetch the XML.

Only network VFs are offered: every PF with ``virt_functions`` has VFs,
crypto and storage ones too, so a VF whose PCI class is not 0x02xxxx is
listed as excluded. Where VFs are real (``[vf] device = hostdev``),
:func:`sriov_host.hostinventory.load` also excludes the VFs the host
itself uses (see :mod:`sriov_host.hostuse`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from lxml import etree

from .errors import InventoryError
from .pci import PciAddress
from .xmlsafe import parse_xml

NETWORK_CLASS = 0x02  # PCI base class "network controller"


@dataclass(frozen=True)
class Vf:
    name: str
    address: str
    pf: str
    pf_address: str
    index: int
    numa_node: Optional[int] = None
    pci_class: Optional[int] = None  # None: libvirt did not say (it prints <class> from 6.x)
    netdev: Optional[str] = None     # the VF's own interface, when a host driver made one

    @property
    def is_network(self) -> bool:
        """A NIC VF, or one of unknown class (see :func:`class_reason`)."""
        return self.pci_class is None or self.pci_class >> 16 == NETWORK_CLASS

    def to_json(self) -> dict:
        return {"name": self.name, "address": self.address, "pf": self.pf,
                "pf_address": self.pf_address, "index": self.index, "numa_node": self.numa_node}


@dataclass(frozen=True)
class Excluded:
    """A VF that is never offered, and why."""

    vf: Vf
    reason: str


@dataclass(frozen=True)
class Inventory:
    """*vfs* may be offered; *excluded* may not (and ``listVfs`` says why)."""

    vfs: tuple
    excluded: tuple = field(default=())

    def by_address(self) -> dict:
        """Every NIC VF, offered or not: how a VF a VM holds is recognized."""
        return {vf.address: vf for vf in self._nic_vfs()}

    def _nic_vfs(self):
        yield from self.vfs
        yield from (e.vf for e in self.excluded if e.vf.is_network)

    def rows(self) -> list:
        """``(vf, reason or None)`` for every VF, by PF then index."""
        out = [(vf, None) for vf in self.vfs] + [(e.vf, e.reason) for e in self.excluded]
        out.sort(key=lambda r: (r[0].pf, r[0].index))
        return out

    @property
    def pfs(self) -> list:
        return sorted({vf.pf for vf in self._nic_vfs()})

    @property
    def addresses(self) -> frozenset:
        return frozenset(vf.address for vf in self._nic_vfs())


def class_reason(pci_class: Optional[int]) -> Optional[str]:
    """Why a VF of this class is not offered, or None.

    A class libvirt did not print (before 6.x) is unknown, not refused:
    those hosts offered every VF before, and the sysfs check of
    :mod:`sriov_host.hostuse` reads the class where VFs are real.
    """
    if pci_class is None or pci_class >> 16 == NETWORK_CLASS:
        return None
    return "PCI class 0x%06x is not a network controller" % pci_class


def _addr(elem, attrs=None) -> str:
    return str(PciAddress.from_attrs(elem.attrib if attrs is None else attrs))


def _pci_info(cap):
    """Address, VF list, PF address, NUMA node and PCI class of one PCI capability."""
    try:
        address = _addr(cap, {k: cap.findtext(k) or "0" for k in ("domain", "bus", "slot", "function")})
        vfs, pf = [], None
        for sub in cap.iterfind("capability"):
            kind = sub.get("type")
            if kind == "virt_functions":
                vfs = [_addr(a) for a in sub.iterfind("address")]
            elif kind == "phys_function":
                a = sub.find("address")
                pf = _addr(a) if a is not None else None
    except ValueError as e:
        raise InventoryError("bad PCI address in node device XML: %s" % e) from None
    numa = cap.find("numa")
    node = int(numa.get("node")) if numa is not None and numa.get("node", "").lstrip("-").isdigit() else None
    return address, vfs, pf, (node if node is None or node >= 0 else None), _pci_class(cap, address)


def _pci_class(cap, address) -> Optional[int]:
    text = cap.findtext("class")
    if text is None:
        return None
    try:
        value = int(text.strip(), 16)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFFFFFF:
        raise InventoryError("bad PCI class %r of %s in node device XML" % (text[:20], address))
    return value


def parse_devices(devices: Iterable) -> Inventory:
    """Build the inventory from ``<device>`` elements (any order).

    A VF's index is its position in its PF's ``virt_functions`` list, which
    libvirt reads in ``virtfnN`` order; a PF's name is the interface of its
    ``net`` child device, falling back to its PCI address. A VF's own
    ``<class>`` decides whether it is offered; the PF's stands in only
    when the VF has no device of its own.
    """
    pci, netname = {}, {}
    for dev in devices:
        name = dev.findtext("name")
        for cap in dev.iterfind("capability"):
            kind = cap.get("type")
            if kind == "pci":
                pci[name] = _pci_info(cap)
            elif kind == "net":
                parent = dev.findtext("parent")
                if parent and cap.findtext("interface"):
                    netname[parent] = cap.findtext("interface")
    by_addr = {info[0]: (name, info) for name, info in pci.items()}
    vfs, excluded = [], []
    for pf_name, (pf_address, vf_addrs, _pf, pf_numa, pf_class) in pci.items():
        for index, vf_addr in enumerate(vf_addrs):
            vf_name, vf_info = by_addr.get(vf_addr, (PciAddress.parse(vf_addr).nodedev_name, None))
            numa, klass = (vf_info[3], vf_info[4]) if vf_info else (pf_numa, pf_class)
            vf = Vf(name=vf_name, address=vf_addr, pf=netname.get(pf_name, pf_address),
                    pf_address=pf_address, index=index, numa_node=numa, pci_class=klass,
                    netdev=netname.get(vf_name))
            reason = class_reason(klass)
            if reason is None:
                vfs.append(vf)
            else:
                excluded.append(Excluded(vf, reason))
    vfs.sort(key=lambda v: (v.pf, v.index))
    excluded.sort(key=lambda e: (e.vf.pf, e.vf.index))
    return Inventory(tuple(vfs), tuple(excluded))


def parse_devices_xml(data) -> Inventory:
    """From a ``<devices>`` document holding ``<device>`` elements."""
    root = parse_xml(data, "nodedev XML", error=InventoryError)
    if root.tag == "device":
        return parse_devices([root])
    return parse_devices(root.iterfind("device"))


def load_nodedev_file(path: str) -> Inventory:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InventoryError("cannot read nodedev inventory %s: %s" % (path, e.strerror)) from None
    return parse_devices_xml(data)


def load_from_libvirt(conn) -> Inventory:
    """Ask libvirt for every PCI and net node device (one XMLDesc each)."""
    import libvirt

    flags = (libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV
             | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET)
    try:
        docs = [d.XMLDesc(0) for d in conn.listAllDevices(flags)]
    except libvirt.libvirtError as e:
        raise InventoryError("libvirt cannot list node devices: %s" % e) from e
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return parse_devices(etree.fromstring(d.encode(), parser) for d in docs)
