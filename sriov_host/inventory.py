"""The host's VF inventory, built from libvirt node device XML.

Parsing is pure (:func:`parse_devices`); the two sources (a live libvirt
connection, or a ``nodedev-xml:`` file standing in for SR-IOV hardware
that this machine does not have) only fetch the XML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from lxml import etree

from .errors import InventoryError
from .pci import PciAddress
from .xmlsafe import parse_xml


@dataclass(frozen=True)
class Vf:
    name: str
    address: str
    pf: str
    pf_address: str
    index: int
    numa_node: Optional[int] = None

    def to_json(self) -> dict:
        return {"name": self.name, "address": self.address, "pf": self.pf,
                "pf_address": self.pf_address, "index": self.index, "numa_node": self.numa_node}


@dataclass(frozen=True)
class Inventory:
    vfs: tuple

    def by_address(self) -> dict:
        return {vf.address: vf for vf in self.vfs}

    @property
    def pfs(self) -> list:
        return sorted({vf.pf for vf in self.vfs})

    @property
    def addresses(self) -> frozenset:
        return frozenset(vf.address for vf in self.vfs)


def _addr(elem, attrs=None) -> str:
    return str(PciAddress.from_attrs(elem.attrib if attrs is None else attrs))


def _pci_info(cap):
    """Address, VF list, PF address and NUMA node of one PCI capability."""
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
    return address, vfs, pf, (node if node is None or node >= 0 else None)


def parse_devices(devices: Iterable) -> Inventory:
    """Build the inventory from ``<device>`` elements (any order).

    A VF's index is its position in its PF's ``virt_functions`` list, which
    libvirt reads in ``virtfnN`` order; a PF's name is the interface of its
    ``net`` child device, falling back to its PCI address.
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
    vfs = []
    for pf_name, (pf_address, vf_addrs, _pf, _numa) in pci.items():
        for index, vf_addr in enumerate(vf_addrs):
            vf_name, vf_info = by_addr.get(vf_addr, (PciAddress.parse(vf_addr).nodedev_name, None))
            numa = vf_info[3] if vf_info else _numa
            vfs.append(Vf(name=vf_name, address=vf_addr, pf=netname.get(pf_name, pf_address),
                          pf_address=pf_address, index=index, numa_node=numa))
    vfs.sort(key=lambda v: (v.pf, v.index))
    return Inventory(tuple(vfs))


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


def load(cfg, conn=None) -> Inventory:
    """The inventory the config names; *conn* is needed only for ``libvirt``."""
    path = cfg.nodedev_xml_path
    if path:
        return load_nodedev_file(path)
    if conn is None:
        raise InventoryError("inventory source 'libvirt' needs a libvirt connection")
    return load_from_libvirt(conn)
