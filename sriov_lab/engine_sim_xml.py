"""The engine's REST XML, as the simulator writes and reads it.

Element names follow oVirt's API model (``vnic_profile``, ``pass_through/
mode``, ``custom_properties/custom_property``, ``nic/mac/address``,
``nic/plugged``, ``network/vlan@id``, ``action``, ``fault``), so ovirtsdk4
parses them as it would parse the engine's own answers.
"""

from __future__ import annotations

import fnmatch
import re
import xml.etree.ElementTree as ET
from typing import Optional

from sriov_host.xmlsafe import parse_xml

API = "/ovirt-engine/api"


def _el(parent, tag: str, text=None, **attrs) -> ET.Element:
    e = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        e.text = str(text).lower() if isinstance(text, bool) else str(text)
    return e


def _root(tag: str, collection: str, rid: Optional[str] = None) -> ET.Element:
    attrs = {"href": "%s/%s/%s" % (API, collection, rid), "id": rid} if rid else {}
    return ET.Element(tag, attrs)


def _link(parent, tag: str, collection: str, rid: Optional[str]) -> None:
    if rid:
        _el(parent, tag, href="%s/%s/%s" % (API, collection, rid), id=rid)


def _many(tag: str, build, records) -> str:
    root = ET.Element(tag)
    for r in records:
        root.append(build(r))
    return _text(root)


def _text(root: ET.Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(root, "unicode")


def _profile(sim, p: dict) -> ET.Element:
    root = _root("vnic_profile", "vnicprofiles", p["id"])
    _el(root, "name", p["name"])
    if p["custom"]:
        props = _el(root, "custom_properties")
        for name, value in p["custom"].items():
            prop = _el(props, "custom_property")
            _el(prop, "name", name)
            _el(prop, "value", value)
    if p["passthrough"]:  # the engine shows migratable only for passthrough profiles
        _el(root, "migratable", bool(p["migratable"]))
    _el(_el(root, "pass_through"), "mode", "enabled" if p["passthrough"] else "disabled")
    _el(root, "port_mirroring", False)
    _link(root, "network", "networks", p["network"])
    _link(root, "failover", "vnicprofiles", p["failover"])
    return root


def profiles(sim, records) -> str:
    return _many("vnic_profiles", lambda p: _profile(sim, p), records)


def profile(sim, p: dict) -> str:
    return _text(_profile(sim, p))


def _network(n: dict) -> ET.Element:
    root = _root("network", "networks", n["id"])
    _el(root, "name", n["name"])
    if n["vlan"] is not None:
        _el(root, "vlan", id=n["vlan"])
    _el(root, "mtu", 0)
    return root


def networks(records) -> str:
    return _many("networks", _network, records)


def network(n: dict) -> str:
    return _text(_network(n))


def _vm(v: dict) -> ET.Element:
    root = _root("vm", "vms", v["id"])
    _el(root, "name", v["name"])
    _el(root, "status", v["status"])
    _link(root, "host", "hosts", v["host"])
    return root


def vms(records) -> str:
    return _many("vms", _vm, records)


def vm(v: dict) -> str:
    return _text(_vm(v))


def _nic(v: dict, n: dict) -> ET.Element:
    root = ET.Element("nic", {"href": "%s/vms/%s/nics/%s" % (API, v["id"], n["id"]), "id": n["id"]})
    _el(root, "name", n["name"])
    _el(root, "interface", n["interface"])
    _el(root, "linked", True)
    _el(_el(root, "mac"), "address", n["mac"])
    _el(root, "plugged", bool(n["plugged"]))
    _link(root, "vnic_profile", "vnicprofiles", n["profile"])
    _link(root, "vm", "vms", v["id"])
    return root


def nics(v: dict) -> str:
    return _many("nics", lambda n: _nic(v, n), v["nics"])


def nic(v: dict, n: dict) -> str:
    return _text(_nic(v, n))


def _host(h: dict) -> ET.Element:
    root = _root("host", "hosts", h["id"])
    _el(root, "name", h["name"])
    address = h["address"]
    if h.get("service_port"):
        address = "%s:%d" % ("[%s]" % address if ":" in address else address, h["service_port"])
    _el(root, "address", address)
    _el(root, "port", 54321)
    _el(root, "status", h["status"])
    return root


def hosts(records) -> str:
    return _many("hosts", _host, records)


def host(h: dict) -> str:
    return _text(_host(h))


def action(dst: Optional[dict]) -> str:
    root = ET.Element("action")
    if dst is not None:
        _el(root, "host", href="%s/hosts/%s" % (API, dst["id"]), id=dst["id"])
    _el(root, "status", "complete")
    return _text(root)


def fault(reason: str, detail: str) -> str:
    root = ET.Element("fault")
    _el(root, "reason", reason)
    _el(root, "detail", detail)
    return _text(root)


def parse_profile_update(body: str) -> dict:
    """The fields a PUT carries: ``migratable`` (raw text) and ``custom``."""
    root = parse_xml(body, "vnic_profile update")
    out = {}
    text = root.findtext("migratable")
    if text is not None:
        out["migratable"] = text.strip()
    props = root.find("custom_properties")
    if props is not None:
        out["custom"] = {p.findtext("name"): p.findtext("value") or ""
                         for p in props.findall("custom_property")}
    return out


def parse_nic_update(body: str) -> dict:
    """The fields of a vNIC PUT we act on: ``plugged`` (raw text); others are ignored."""
    root = parse_xml(body, "nic update")
    if root.tag != "nic":
        raise ValueError("expected a <nic> element, got <%s>" % root.tag)
    out = {}
    text = root.findtext("plugged")
    if text is not None:
        out["plugged"] = text.strip()
    return out


def parse_action_host(body: str) -> Optional[str]:
    """The destination of a migrate action, by id or by name."""
    host_el = parse_xml(body, "action").find("host")
    if host_el is None:
        return None
    return host_el.get("id") or host_el.findtext("id") or host_el.findtext("name")


def search(records, text: str) -> list:
    """The engine search subset we need: ``name=VALUE`` (quoted, ``*`` wildcards)."""
    if not text:
        return list(records)
    match = re.match(r'^\s*name\s*=\s*(?:"((?:[^"\\]|\\.)*)"|(\S+))\s*$', text)
    if not match:
        raise ValueError("unsupported search: %s" % text)
    value = match.group(1) if match.group(1) is not None else match.group(2)
    value = re.sub(r"\\(.)", r"\1", value)
    return [r for r in records if fnmatch.fnmatchcase(r["name"], value)]
