"""A live libvirt domain, its connection and the device ops, faked in memory.

No machine here can hot-unplug a VF and libvirt's test driver has no
detach, so hook and service tests that need a live domain with SR-IOV
vNICs use these (STYLE: small protocols, fakes with failure flags and a
call record). Everything around them stays real.
"""

from __future__ import annotations

import copy

from lxml import etree

from sriov_host import metadata
from sriov_host.devices import DeviceTimeout
from sriov_host.errors import LibvirtFailure

VM = "7a9c0e12-3b4d-4e5f-8a6b-7c8d9e0f1a22"
HOST = "aaaaaaaa-1111-4222-8333-444444444444"


class FakeDomain:
    """A live domain: XML in memory, metadata set the way libvirt sets it."""

    def __init__(self, xml: bytes, uuid: str = VM):
        self.root = etree.fromstring(xml)
        self.uuid = uuid
        self.active = True

    def UUIDString(self):
        return self.uuid

    def XMLDesc(self, flags=0):
        return etree.tostring(self.root, encoding="unicode")

    def isActive(self):
        return self.active

    def jobInfo(self):
        return [0] * 12

    def setMetadata(self, kind, xml, key, uri, flags=0):
        elem = etree.fromstring(xml)
        for e in elem.iter():
            e.tag = "{%s}%s" % (uri, e.tag)
        meta = self.root.find("metadata")
        for old in meta.findall("{%s}*" % uri):
            meta.remove(old)
        meta.append(copy.deepcopy(elem))

    def vf_aliases(self):
        return [i.find("alias").get("name")
                for i in self.root.iterfind("devices/interface[@type='hostdev']")]

    def vf_macs(self):
        return sorted(m.get("address") for m in
                      self.root.iterfind("devices/interface[@type='hostdev']/mac"))

    def aliases(self):
        return [a.get("name") for a in self.root.iterfind("devices/*/alias")]

    def record(self):
        return metadata.read_record(self.root)


class FakeConn:
    """The host's libvirt connection, holding one domain."""

    def __init__(self, dom, host=HOST):
        self.dom, self.host = dom, host

    def lookupByUUIDString(self, uuid):
        import libvirt

        if uuid != self.dom.uuid:
            e = libvirt.libvirtError("Domain not found")
            e.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 0, "", None, None, 0, 0)
            raise e
        return self.dom

    def getCapabilities(self):
        return "<capabilities><host><uuid>%s</uuid></host></capabilities>" % self.host

    def listAllDomains(self, flags=0):
        return [self.dom] if self.dom.active else []

    def isAlive(self):
        return True

    def close(self):
        pass


class FakeDevices:
    """Detach/attach that change the fake's XML, with a call record.

    *stuck* aliases never leave; an attach of a *broken* alias fails; like
    libvirt, an attach at a guest PCI slot in *taken_slots* is refused.
    """

    def __init__(self, stuck=(), broken=(), taken_slots=()):
        self.stuck, self.broken, self.taken_slots = set(stuck), set(broken), set(taken_slots)
        self.calls, self.attached_xml = [], []

    def detach_and_wait(self, dom, xml, alias, timeout):
        self.calls.append(("detach", alias))
        if alias in self.stuck:
            raise DeviceTimeout("device %s still present after %.1f s" % (alias, timeout))
        for elem in dom.root.find("devices"):
            a = elem.find("alias")
            if a is not None and a.get("name") == alias:
                elem.getparent().remove(elem)
        return 12.0

    def attach_and_wait(self, dom, xml, alias, timeout):
        self.calls.append(("attach", alias))
        if alias in self.broken:
            raise LibvirtFailure("attach of %s failed: VF busy" % alias)
        elem = etree.fromstring(xml)
        placed = elem.find("address")
        if placed is not None and placed.get("slot") in self.taken_slots:
            raise LibvirtFailure("XML error: Attempted double use of PCI Address 0000:00:%s.0"
                                 % placed.get("slot")[2:])
        self.attached_xml.append(xml)
        dom.root.find("devices").append(elem)
        return 3.0
