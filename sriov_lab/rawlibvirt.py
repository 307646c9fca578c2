"""Plain libvirt, by hand: the baseline the benchmarks and the real-VF demo compare against.

Register for the device event first, detach (or attach) every vNIC,
then wait for every event under one deadline; ``migrate3`` live over
loopback. No hooks, no ledger, no record: the floor any machinery pays.
"""

from __future__ import annotations

import contextlib
import threading

from lxml import etree

from sriov_host import domxml

from .errors import LabError


class DeviceEvents:
    """One device event of one domain, registered before acting; aliases as they arrive."""

    def __init__(self, conn, dom, event_id: int, timeout: float):
        self.conn, self.dom, self.event_id, self.timeout = conn, dom, event_id, timeout
        self.seen: set = set()
        self.cond = threading.Condition()
        self.handle = None

    def __enter__(self) -> DeviceEvents:
        self.handle = self.conn.domainEventRegisterAny(self.dom, self.event_id, self._event, None)
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):  # the connection may be gone
            self.conn.domainEventDeregisterAny(self.handle)

    def _event(self, _conn, _dom, alias, _opaque) -> None:
        with self.cond:
            self.seen.add(alias)
            self.cond.notify_all()

    def wait(self, aliases, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: set(aliases) <= self.seen, self.timeout):
                raise LabError("%s: no event for %s within %.0f s"
                               % (what, sorted(set(aliases) - self.seen), self.timeout))


def vnic_xml(dom, aliases) -> list:
    """Each vNIC's live device XML (MAC, alias, guest PCI slot), as dumpxml shows it."""
    root = domxml.parse_domain(dom.XMLDesc(0))
    out = []
    for alias in aliases:
        elem = root.find("devices/*/alias[@name='%s']/.." % alias)
        if elem is None:
            raise LabError("vNIC %s is not attached" % alias)
        out.append(etree.tostring(elem, encoding="unicode"))
    return out


def detach(conn, dom, aliases, timeout: float = 15.0) -> None:
    import libvirt

    with DeviceEvents(conn, dom, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, timeout) as removed:
        for alias in aliases:
            dom.detachDeviceAlias(alias, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        removed.wait(aliases, "raw detach")


def attach(conn, dom, aliases, xmls, timeout: float = 15.0) -> None:
    import libvirt

    with DeviceEvents(conn, dom, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, timeout) as added:
        for xml in xmls:
            dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        added.wait(aliases, "raw attach")
