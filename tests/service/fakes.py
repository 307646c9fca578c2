"""Ten-line fakes of a libvirt domain, the device ops and the ledger."""

from __future__ import annotations

from sriov_host import domxml, metadata, xmlsafe

HOST = "6c1a1b2e-0000-4000-8000-0000000000aa"
VM = "cccccccc-0000-4000-8000-000000000003"


class FakeDomain:
    def __init__(self, record, attached=(), uuid=VM, job=0):
        self.uuid, self.record, self.attached, self.job = uuid, record, list(attached), job
        self.metadata_calls = []

    def UUIDString(self):
        return self.uuid

    def XMLDesc(self, flags=0):
        root = domxml.parse_domain("<domain><uuid>%s</uuid><devices>%s</devices></domain>" % (
            self.uuid, "".join("<interface type='user'><alias name='%s'/></interface>" % a
                               for a in self.attached)))
        return xmlsafe.to_text(metadata.write_record(root, self.record))

    def setMetadata(self, type, xml, key, uri, flags=0):
        self.metadata_calls.append((type, xml, key, uri, flags))
        self.record = _parse_bare(xml)
        return 0

    def isActive(self):
        return True

    def jobInfo(self):
        return [self.job] + [0] * 11


def _parse_bare(xml):
    """libvirt would put the bare element into our namespace; do the same."""
    from lxml import etree

    elem = etree.fromstring(xml)
    ns = "{%s}" % metadata.NS
    for e in elem.iter():
        e.tag = ns + e.tag
    return metadata.from_element(elem)


class FakeDevices:
    def __init__(self, fail=()):
        self.fail, self.calls = set(fail), []

    def attach_and_wait(self, dom, xml, alias, timeout):
        self.calls.append((alias, xml))
        if alias in self.fail:
            raise RuntimeError("guest said no to %s" % alias)
        dom.attached.append(alias)
        return 1.0


class FakeLedger:
    def __init__(self, held=()):
        self.held, self.states, self.status = set(held), {}, []

    def set_state(self, vm_id, vf, state):
        from sriov_host.errors import NoSuchVm

        if vf not in self.held:
            raise NoSuchVm("not held")
        self.states[vf] = state

    def set_status(self, vm_id, phase, vnics=()):
        self.status.append((vm_id, phase, [(v.key, v.state, v.rollback_ms) for v in vnics]))
