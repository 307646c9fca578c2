"""Our own versioned record in the domain metadata.

The source records what it unplugged before it unplugs anything;
libvirt carries the element through migration, so the destination and
the rollback read it back with no side channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Optional

from lxml import etree

from .errors import BadDomainXml, clip, shown

NS = "http://ovirt.org/vdsm-sriov-migration/1.0"
PREFIX = "sriov"
VERSION = 1
_Q = "{%s}" % NS

PLUGGED = "plugged"
UNPLUGGED = "unplugged-for-migration"
FAILED = "failed"
STATES = (PLUGGED, UNPLUGGED, FAILED)

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_INT_FIELDS = ("vlan",)
_MS_FIELDS = ("unplug_ms", "plug_ms", "rollback_ms")
_STR_FIELDS = ("alias", "mac", "kind", "vf_address", "pf", "teaming", "network", "state", "error",
               "guest_address", "vf_settings")


@dataclass(frozen=True)
class VnicRecord:
    alias: Optional[str]
    mac: Optional[str]
    kind: str = "interface"
    vf_address: Optional[str] = None
    pf: Optional[str] = None
    vlan: Optional[int] = None
    teaming: Optional[str] = None
    network: Optional[str] = None
    guest_address: Optional[str] = None
    state: str = PLUGGED
    error: Optional[str] = None
    unplug_ms: Optional[float] = None
    plug_ms: Optional[float] = None
    rollback_ms: Optional[float] = None
    vf_settings: Optional[str] = None  # the source VF's own settings (vfsettings.to_text)

    @property
    def key(self) -> str:
        return self.alias or ("vf:%s" % self.vf_address)

    def with_state(self, state: str, **changes) -> VnicRecord:
        return replace(self, state=state, **changes)


@dataclass(frozen=True)
class MigrationRecord:
    """What this migration machinery knows about one VM's SR-IOV vNICs.

    ``host`` is the libvirt host UUID on which ``vf_address`` values are
    valid; after a migration they still name the source's VFs until the
    destination plugs its own and rewrites the record.
    """

    vnics: tuple = ()
    host: Optional[str] = None
    phase: str = "idle"
    updated: float = 0.0
    version: int = VERSION
    extra: dict = field(default_factory=dict, compare=False)

    def replace_vnic(self, vnic: VnicRecord) -> MigrationRecord:
        vnics = tuple(vnic if v.key == vnic.key else v for v in self.vnics)
        return replace(self, vnics=vnics)

    def by_state(self, state: str) -> list:
        return [v for v in self.vnics if v.state == state]


def to_element(record: MigrationRecord) -> etree._Element:
    elem = etree.Element(_Q + "migration", nsmap={PREFIX: NS})
    elem.set("version", str(record.version))
    elem.set("phase", record.phase)
    elem.set("updated", "%.3f" % record.updated)
    if record.host:
        elem.set("host", record.host)
    for v in record.vnics:
        child = etree.SubElement(elem, _Q + "vnic")
        for name in _STR_FIELDS + _INT_FIELDS + _MS_FIELDS:
            value = getattr(v, name)
            if value is not None:
                child.set(name, ("%.1f" % value) if name in _MS_FIELDS else str(value))
    return elem


def to_xml(record: MigrationRecord) -> str:
    """The record as namespaced XML, as it reads inside the domain's ``<metadata>``."""
    return etree.tostring(to_element(record), encoding="unicode")


def bare_xml(xml: str) -> str:
    """Namespaced record XML without its namespace, as ``virDomainSetMetadata`` wants it.

    libvirt puts the element in *uri* under the *key* prefix itself and
    fails ("failed to create a new XML namespace") on XML that already
    declares that prefix.
    """
    elem = etree.fromstring(xml.encode("utf-8"), etree.XMLParser(resolve_entities=False, no_network=True))
    for e in elem.iter():
        if isinstance(e.tag, str):
            e.tag = etree.QName(e).localname
    etree.cleanup_namespaces(elem)
    return etree.tostring(elem, encoding="unicode")


def to_libvirt_xml(record: MigrationRecord) -> str:
    """The string handed to ``virDomainSetMetadata`` (key ``sriov``, uri NS)."""
    return bare_xml(to_xml(record))


class RecordError(BadDomainXml):
    """Our record in the domain metadata is unreadable."""


def from_element(elem) -> MigrationRecord:
    raw = elem.get("version", "0")
    try:
        version = int(raw) if len(raw) <= 8 else None
    except ValueError:
        version = None
    if version is None:
        raise RecordError("metadata record has a bad version %s" % shown(raw))
    if version != VERSION:
        raise RecordError("metadata record version %s is not supported (want %d)"
                          % (clip(elem.get("version")), VERSION))
    vnics = tuple(_vnic_from(child) for child in elem.iterfind(_Q + "vnic"))
    try:
        updated = float(elem.get("updated", "0")[:32])
    except ValueError:
        updated = 0.0
    return MigrationRecord(vnics=vnics, host=elem.get("host"),
                           phase=elem.get("phase", "idle"), updated=updated)


def _vnic_from(child) -> VnicRecord:
    kw = {"alias": None, "mac": None}  # a plain <hostdev> vNIC has no MAC
    bad = None
    try:
        for name in _STR_FIELDS:
            if child.get(name) is not None:
                kw[name] = child.get(name)
        for name in _INT_FIELDS + _MS_FIELDS:
            raw = child.get(name)
            if raw is not None:
                bad = name
                if len(raw) > 32:  # no quadratic int() of a 1 MB attribute
                    raise ValueError(raw)
                kw[name] = int(raw) if name in _INT_FIELDS else float(raw)
    except ValueError:
        raise RecordError("metadata record has a bad vNIC field %s=%s"
                          % (bad, shown(child.get(bad)))) from None
    if kw["mac"] is not None and not _MAC_RE.match(kw["mac"]):
        raise RecordError("metadata record has a bad vNIC field mac=%s" % shown(kw["mac"]))
    if kw.get("state", PLUGGED) not in STATES:
        raise RecordError("metadata record has unknown vNIC state %s" % shown(kw["state"]))
    return VnicRecord(**kw)


def read_record(root) -> Optional[MigrationRecord]:
    """Find our record in a full domain tree, or accept the bare element."""
    if root.tag == _Q + "migration":
        return from_element(root)
    elem = root.find("metadata/" + _Q + "migration")
    return from_element(elem) if elem is not None else None


def write_record(root, record: Optional[MigrationRecord]) -> etree._Element:
    """Put (or with ``None`` remove) the record in a full domain tree."""
    meta = root.find("metadata")
    if meta is None:
        meta = etree.SubElement(root, "metadata")
    for old in meta.findall(_Q + "migration"):
        meta.remove(old)
    if record is not None:
        meta.append(to_element(record))
    return root
