"""The engine simulator's audit log, served as ``/ovirt-engine/api/events``.

Shapes and rules from the engine's source:
- codes: ``AuditLogType.java``; descriptions: ``AuditLogMessages.properties``
  (the watcher reads the vNIC name out of 1012/1014 and the list out of 12003);
- ``EventMapper.map``: ``<event id href>`` with ``code``, ``description``,
  ``correlation_id`` (only when set), ``custom_id``, ``flood_rate``,
  ``index``, ``origin``, ``severity``, ``time``, ``host``/``vm`` links;
- listing (``BackendEventsResource`` -> ``AbstractBackendCollectionResource``
  -> ``SyntaxChecker``): ``from`` is exclusive (``audit_log_id > from``),
  newest first (``audit_log_id DESC``), ``max`` cuts, and the search's
  ``page N`` skips (N-1)*max.
"""

from __future__ import annotations

import re
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Optional

API = "/ovirt-engine/api"

MESSAGES = {
    61: "VM ${VmName} is down.",
    62: "Migration started (VM: ${VmName}, Source: ${VdsName}, Destination: ${DestinationVdsName}, "
        "User: admin@internal-authz). ",
    63: "Migration completed (VM: ${VmName}, Source: ${VdsName}, Destination: ${DestinationVdsName}).",
    65: "Migration failed (VM: ${VmName}, Source: ${VdsName}).",
    120: "Migration failed (VM: ${VmName}, Source: ${VdsName}, Destination: ${DestinationVdsName}).",
    128: "Failed to migrate VM ${VmName} to Host ${DestinationVdsName}. Trying to migrate to "
         "another Host.",
    1012: "Network Interface ${InterfaceName} (PCI Passthrough) was plugged to VM ${VmName}. "
          "(User: admin@internal-authz)",
    1013: "Failed to plug Network Interface ${InterfaceName} (PCI Passthrough) to VM ${VmName}. "
          "(User: admin@internal-authz)",
    1014: "Network Interface ${InterfaceName} (PCI Passthrough) was unplugged from VM ${VmName}. "
          "(User: admin@internal-authz)",
    12003: "After migration of ${VmName}, following vm nics failed to be plugged back: "
           "${NamesOfNotRepluggedNics}.",
    12004: "After migration of ${VmName} vm nics failed to be plugged back.",
}
SEVERITY = {65: "error", 64: "error", 120: "error", 128: "warning", 1013: "error",
            12003: "error", 12004: "error"}


class EventLog:
    """Ids strictly increasing from *first_id*; thread-safe."""

    def __init__(self, first_id: int = 1):
        self._lock = threading.Lock()
        self._next = first_id
        self.events: list = []

    def log(self, code: int, vm: Optional[dict] = None, host: Optional[dict] = None,
            correlation_id: Optional[str] = None, description: Optional[str] = None,
            **values) -> dict:
        """Append one event; ``${Name}`` placeholders come from *values*, VmName from *vm*."""
        if vm is not None:
            values.setdefault("VmName", vm["name"])
        if host is not None:
            values.setdefault("VdsName", host["name"])
        text = description if description is not None else MESSAGES.get(code, "event %d" % code)
        text = re.sub(r"\$\{(\w+)\}", lambda m: str(values.get(m.group(1), "")), text)
        with self._lock:
            ev = {"id": self._next, "code": code, "time": time.time(), "description": text,
                  "correlation_id": correlation_id, "severity": SEVERITY.get(code, "normal"),
                  "vm": vm["id"] if vm else None, "host": host["id"] if host else None}
            self._next += 1
            self.events.append(ev)
        return ev

    def skip(self, n: int) -> None:
        """Leave a gap in the ids, as a deleted or rolled-back audit_log row does."""
        with self._lock:
            self._next += n

    def query(self, query: dict) -> list:
        """The list action's answer for ``from``, ``max`` and ``search=page N``."""
        after = int(query.get("from", -1))
        limit = int(query["max"]) if "max" in query else None
        page = _page(query.get("search", ""))
        with self._lock:
            found = [e for e in self.events if e["id"] > after]
        found.sort(key=lambda e: e["id"], reverse=True)
        if limit is None:
            return found
        return found[(page - 1) * limit:page * limit]


def _page(search: str) -> int:
    if not search.strip():
        return 1
    match = re.fullmatch(r"\s*(?:events\s*:\s*)?page\s+(\d+)\s*", search, re.IGNORECASE)
    if not match:
        raise ValueError("unsupported events search: %s" % search)
    return max(1, int(match.group(1)))


def _el(parent, tag, text=None, **attrs):
    e = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        e.text = str(text)
    return e


def event_element(ev: dict) -> ET.Element:
    root = ET.Element("event", {"href": "%s/events/%d" % (API, ev["id"]), "id": str(ev["id"])})
    _el(root, "description", ev["description"])
    if ev["code"] is not None:  # a malformed event, for the watcher's tests
        _el(root, "code", ev["code"])
    if ev["correlation_id"]:
        _el(root, "correlation_id", ev["correlation_id"])
    _el(root, "custom_id", -1)
    _el(root, "flood_rate", 30)
    _el(root, "index", ev["id"])
    _el(root, "origin", "oVirt")
    _el(root, "severity", ev["severity"])
    stamp = datetime.fromtimestamp(ev["time"], timezone.utc).isoformat(timespec="milliseconds")
    _el(root, "time", stamp)
    if ev["host"]:
        _el(root, "host", href="%s/hosts/%s" % (API, ev["host"]), id=ev["host"])
    if ev["vm"]:
        _el(root, "vm", href="%s/vms/%s" % (API, ev["vm"]), id=ev["vm"])
    return root


def events_xml(events: list) -> str:
    root = ET.Element("events")
    for ev in events:
        root.append(event_element(ev))
    return '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(root, "unicode")
