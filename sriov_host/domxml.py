"""The domain XML model: find a VM's SR-IOV vNICs, strip them, re-render them.

Everything here is pure: functions take an lxml tree (parsed once by
:func:`parse_domain`) and return data or the same tree, so the hooks do
one parse and one serialize per run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from lxml import etree

from . import metadata
from .errors import BadDomainXml, clip, shown
from .pci import PciAddress
from .xmlsafe import parse_xml

OVIRT_VM_NS = "http://ovirt.org/vm/1.0"
_OV = "{%s}" % OVIRT_VM_NS

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

KIND_INTERFACE = "interface"
KIND_HOSTDEV = "hostdev"
MODE_HOSTDEV = "hostdev"
MODE_EMULATED = "emulated"
EMULATED_MODELS = ("virtio", "e1000e")


@dataclass(frozen=True)
class Vnic:
    """One SR-IOV vNIC as the domain (or our record) describes it."""

    alias: Optional[str]
    mac: Optional[str]
    kind: str = KIND_INTERFACE
    vf_address: Optional[str] = None
    vlan: Optional[int] = None
    teaming: Optional[str] = None
    network: Optional[str] = None
    pf: Optional[str] = None
    guest_address: Optional[str] = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Identity used to match a vNIC across unplug and re-plug."""
        return self.alias or ("vf:%s" % self.vf_address)


def vnic_from_record(rec) -> Vnic:
    """The vNIC a :class:`metadata.VnicRecord` describes, to plug it again."""
    return Vnic(alias=rec.alias, mac=rec.mac, kind=rec.kind, vf_address=rec.vf_address,
                vlan=rec.vlan, teaming=rec.teaming, network=rec.network, pf=rec.pf,
                guest_address=rec.guest_address)


def parse_domain(data) -> etree._Element:
    root = parse_xml(data, "domain XML")
    if root.tag != "domain":
        raise BadDomainXml("domain XML root is <%s>, expected <domain>" % clip(root.tag))
    return root


def domain_uuid(root) -> Optional[str]:
    return (root.findtext("uuid") or "").strip() or None


def normalize_mac(text) -> str:
    mac = (text or "").strip().lower()
    if not MAC_RE.match(mac):
        raise BadDomainXml("bad MAC address %s in domain XML" % shown(text))
    return mac


def _alias(elem) -> Optional[str]:
    a = elem.find("alias")
    return a.get("name") if a is not None else None


def source_address(elem) -> Optional[str]:
    """The host PCI address in a device's ``<source>``: the VF libvirt hands the guest."""
    addr = elem.find("source/address")
    if addr is None or addr.get("type", "pci") != "pci":
        return None
    try:
        return str(PciAddress.from_attrs(addr.attrib))
    except ValueError as e:
        raise BadDomainXml(str(e)) from e


def _guest_address(elem) -> Optional[str]:
    """The PCI address the guest sees the device at; the engine passes it back on hotplug."""
    addr = elem.find("address")
    if addr is None or addr.get("type") != "pci":
        return None
    try:
        return str(PciAddress.from_attrs(addr.attrib))
    except ValueError as e:
        raise BadDomainXml("guest address: %s" % e) from e


def _vlan(elem) -> Optional[int]:
    tag = elem.find("vlan/tag")
    if tag is None:
        return None
    raw = tag.get("id", "")
    try:
        vlan = int(raw) if len(raw) <= 8 else None  # no quadratic int() of a 1 MB attribute
    except ValueError:
        vlan = None
    if vlan is None:
        raise BadDomainXml("bad VLAN tag %s in domain XML" % shown(raw))
    if not 0 <= vlan <= 4094:
        raise BadDomainXml("VLAN tag %d out of range 0..4094" % vlan)
    return vlan


def standby_bridge(root, alias: str) -> Optional[str]:
    """The host bridge of the failover partner with *alias* (``<teaming type='persistent'/>``).

    Its traffic leaves the host through that bridge, so that is where the
    MAC is announced once the VF is gone. None if the partner is not a
    bridge interface (or not there).
    """
    for elem in root.iterfind("devices/interface"):
        found = elem.find("alias")
        if found is None or found.get("name") != alias or elem.get("type") != "bridge":
            continue
        source = elem.find("source")
        return source.get("bridge") if source is not None and source.get("bridge") else None
    return None


def _teaming_peer(elem) -> Optional[str]:
    t = elem.find("teaming")
    if t is not None and t.get("type") == "transient":
        return t.get("persistent")
    return None


def _hostdev_interfaces(root, networks) -> list:
    vnics = []
    for elem in root.iterfind("devices/interface[@type='hostdev']"):
        mac = normalize_mac(elem.find("mac").get("address")) if elem.find("mac") is not None else None
        vnics.append(Vnic(
            alias=_alias(elem), mac=mac, kind=KIND_INTERFACE,
            vf_address=source_address(elem), vlan=_vlan(elem),
            teaming=_teaming_peer(elem), network=networks.get(mac),
            guest_address=_guest_address(elem),
        ))
    return vnics


def _plain_hostdevs(root, vf_addresses) -> list:
    """VFs attached as a plain ``<hostdev>``: a known VF, or one in a failover pair.

    They have no MAC, so the policy refuses them; they are found all the
    same, so no door mistakes them for a device it may ignore.
    """
    vnics = []
    for elem in root.iterfind("devices/hostdev[@mode='subsystem'][@type='pci']"):
        addr, teaming = source_address(elem), _teaming_peer(elem)
        if addr is not None and (addr in vf_addresses or teaming):
            vnics.append(Vnic(alias=_alias(elem), mac=None, kind=KIND_HOSTDEV, vf_address=addr,
                              teaming=teaming, guest_address=_guest_address(elem)))
    return vnics


def _emulated_interfaces(root, record, networks) -> list:
    """In emulated mode a vNIC is an ordinary NIC that our record names."""
    by_alias = {r.alias: r for r in record.vnics} if record else {}
    vnics = []
    for elem in root.iterfind("devices/interface"):
        rec = by_alias.get(_alias(elem))
        if rec is None:
            continue
        mac_el = elem.find("mac")
        mac = normalize_mac(mac_el.get("address")) if mac_el is not None else rec.mac
        vnics.append(Vnic(
            alias=rec.alias, mac=mac, kind=rec.kind, vf_address=rec.vf_address,
            vlan=rec.vlan, teaming=rec.teaming, pf=rec.pf,
            network=rec.network or networks.get(mac), guest_address=_guest_address(elem),
        ))
    return vnics


def find_vnics(root, mode: str = MODE_HOSTDEV, vf_addresses: Iterable[str] = ()) -> list:
    """Return the SR-IOV vNICs attached to the domain right now.

    In ``hostdev`` mode these are ``<interface type='hostdev'>`` and any
    ``<hostdev>`` whose source is a known VF. In ``emulated`` mode the
    VF identity comes from our own metadata record instead.
    """
    networks = vdsm_device_networks(root)
    if mode == MODE_EMULATED:
        return _emulated_interfaces(root, metadata.read_record(root), networks)
    return _hostdev_interfaces(root, networks) + _plain_hostdevs(root, set(vf_addresses))


def _vdsm_devices(root):
    return root.iterfind("metadata/%svm/%sdevice" % (_OV, _OV))


def vdsm_device_custom(root) -> dict:
    """Device custom properties VDSM keeps per MAC: ``{mac: {name: value}}``."""
    out = {}
    for dev in _vdsm_devices(root):
        mac = (dev.get("mac_address") or "").strip().lower()
        custom = dev.find(_OV + "custom")
        if not mac or custom is None:
            continue
        out[mac] = {etree.QName(c).localname: (c.text or "").strip() for c in custom
                    if isinstance(c.tag, str)}
    return out


def vdsm_device_networks(root) -> dict:
    out = {}
    for dev in _vdsm_devices(root):
        mac = (dev.get("mac_address") or "").strip().lower()
        net = (dev.findtext(_OV + "network") or "").strip()
        if mac and net:
            out[mac] = net
    return out


def vdsm_vm_custom(root) -> dict:
    custom = root.find("metadata/%svm/%scustom" % (_OV, _OV))
    if custom is None:
        return {}
    return {etree.QName(c).localname: (c.text or "").strip() for c in custom
            if isinstance(c.tag, str)}


def _device_elements(root):
    for elem in root.iterfind("devices/*"):
        if elem.tag in ("interface", "hostdev"):
            yield elem


def strip_vnics(root, vnics) -> etree._Element:
    """Remove the given vNICs from the tree (matched by alias, else VF address)."""
    keys = {v.key for v in vnics}
    for elem in list(_device_elements(root)):
        key = _element_key(elem)
        if key is not None and key in keys:
            elem.getparent().remove(elem)
    return root


def _element_key(elem) -> Optional[str]:
    """Alias, else ``vf:ADDRESS``; None for a device with neither (never a match)."""
    alias = _alias(elem)
    if alias:
        return alias
    addr = source_address(elem)
    return "vf:%s" % addr if addr else None


def foreign_hostdevs(root, vnics) -> list:
    """Host devices that are not among *vnics*: a GPU, an mdev, a USB device...

    No migration can carry them, so a VM that has them must not lose its
    SR-IOV vNICs to an unplug that libvirt will follow with a refusal.
    Each is named for what it is (``PCI host device 0000:65:00.0 (ua-gpu)``),
    never as a VF.
    """
    mine = {v.vf_address for v in vnics if v.vf_address} | {v.alias for v in vnics if v.alias}
    out = []
    for elem in root.iterfind("devices/hostdev"):
        kind = elem.get("type") or "?"
        addr = source_address(elem) if kind == "pci" else None
        if addr in mine or _alias(elem) in mine:
            continue
        out.append(_describe_hostdev(elem, kind, addr))
    return out


def _describe_hostdev(elem, kind: str, addr: Optional[str]) -> str:
    """``PCI host device ADDR (alias)``, ``mdev UUID``, ``usb host device``: for a message."""
    if kind == "mdev":
        found = elem.find("source/address[@uuid]")
        what = "mdev %s" % clip(found.get("uuid") if found is not None else "?")
    else:
        what = "%s host device%s" % ("PCI" if kind == "pci" else clip(kind), " " + addr if addr else "")
    alias = _alias(elem)
    return "%s (%s)" % (what, clip(alias)) if alias else what


def holds(root, key: str, vf_address: Optional[str]) -> bool:
    """Whether *root* has the vNIC *key* attached, on *vf_address* when it names one.

    A VF's MAC may be announced only while it is here on that VF: after
    a migration away (and back, onto another VF) the old PF is the wrong
    port. An emulated VF has no source address; its alias must do.
    """
    for elem in _device_elements(root):
        if _element_key(elem) == key:
            here = source_address(elem)
            return vf_address is None or here is None or here == vf_address
    return False


def attached_keys(root) -> set:
    """Aliases (or VF keys) of every interface/hostdev in a live domain."""
    keys = {_element_key(elem) for elem in _device_elements(root)}
    keys.discard(None)
    return keys


def render_attach(vnic: Vnic, vf_address: str, mode: str = MODE_HOSTDEV,
                  model: str = "virtio", at_guest_address: bool = True,
                  bridge: Optional[str] = None) -> str:
    """The device XML that plugs *vnic* on the VF at *vf_address*.

    ``managed='yes'``, unlike the ``'no'`` VDSM writes when it starts a
    VM: VDSM binds a VF to vfio-pci itself before start, and gives it back
    to the host once a NIC is removed behind its back, so a VF we hot-plug
    (on the destination, or again on the source in a rollback) may still
    be on its host driver. libvirt binds it, and unbinds it on unplug.
    """
    if mode == MODE_EMULATED:
        return _render_emulated(vnic, model, at_guest_address, bridge)
    if vnic.kind == KIND_HOSTDEV:
        elem = etree.Element("hostdev", mode="subsystem", type="pci", managed="yes")
        etree.SubElement(etree.SubElement(elem, "source"), "address",
                         PciAddress.parse(vf_address).xml_attrs())
    else:
        elem = etree.Element("interface", type="hostdev", managed="yes")
        if vnic.mac:
            etree.SubElement(elem, "mac", address=vnic.mac)
        etree.SubElement(etree.SubElement(elem, "source"), "address",
                         PciAddress.parse(vf_address).xml_attrs())
        if vnic.vlan is not None:
            etree.SubElement(etree.SubElement(elem, "vlan"), "tag", id=str(vnic.vlan))
        etree.SubElement(elem, "driver", name="vfio")
    if vnic.alias:
        etree.SubElement(elem, "alias", name=vnic.alias)
    if vnic.teaming and vnic.kind == KIND_INTERFACE:
        etree.SubElement(elem, "teaming", type="transient", persistent=vnic.teaming)
    _add_guest_address(elem, vnic, at_guest_address)
    return etree.tostring(elem, encoding="unicode")


def _add_guest_address(elem, vnic: Vnic, wanted: bool) -> None:
    """Keep the guest's PCI slot, so the guest does not rename or reorder its NICs."""
    if wanted and vnic.guest_address:
        etree.SubElement(elem, "address", dict(PciAddress.parse(vnic.guest_address).xml_attrs(),
                                               type="pci"))


def _render_emulated(vnic: Vnic, model: str, at_guest_address: bool = True,
                     bridge: Optional[str] = None) -> str:
    """An emulated PCIe NIC standing in for a VF (lab only: no SR-IOV here).

    On *bridge* (``[vf] bridge``) it has a wire, so traffic can reach the
    guest through it; without one it is a user-mode NIC. libvirt accepts
    VLAN tags and a transient teaming member only on real hostdev
    interfaces, so those stay in our metadata record instead.
    """
    if model not in EMULATED_MODELS:
        raise ValueError("emulated VF model must be one of %s" % ", ".join(EMULATED_MODELS))
    elem = etree.Element("interface", type="bridge" if bridge else "user")
    if bridge:
        etree.SubElement(elem, "source", bridge=bridge)
    if vnic.mac:
        etree.SubElement(elem, "mac", address=vnic.mac)
    etree.SubElement(elem, "model", type=model)
    if vnic.alias:
        etree.SubElement(elem, "alias", name=vnic.alias)
    _add_guest_address(elem, vnic, at_guest_address)
    return etree.tostring(elem, encoding="unicode")


def referenced_vf_addresses(root, host_id: Optional[str] = None) -> set:
    """VF addresses a domain holds: hostdev sources, plus our record's VFs.

    Used to treat VFs the engine placed on VMs this service never saw as
    taken. Record entries count too (that is how emulated VFs are seen,
    and a VF unplugged for a migration still belongs to its VM), but only
    when the record's VFs live on *host_id*: an incoming VM carries the
    source host's addresses until the destination plugs its own.
    """
    refs = set()
    for elem in root.iterfind("devices/interface[@type='hostdev']"):
        addr = source_address(elem)
        if addr:
            refs.add(addr)
    for elem in root.iterfind("devices/hostdev[@type='pci']"):
        addr = source_address(elem)
        if addr:
            refs.add(addr)
    try:
        record = metadata.read_record(root)
    except metadata.RecordError:
        record = None  # unreadable record: still count the hostdev sources above
    if record is not None and (host_id is None or record.host in (None, host_id)):
        for rec in record.vnics:
            if rec.vf_address and rec.state in (metadata.PLUGGED, metadata.UNPLUGGED):
                refs.add(rec.vf_address)
    return refs
