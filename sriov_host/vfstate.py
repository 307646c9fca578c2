"""Which VFs are free: the ledger's claims plus what running domains hold.

The engine puts VFs on VMs this service never saw, so a VF counts as
taken when the ledger has it *or* any domain on the host references it.
A VF the inventory excludes (not a NIC VF, or the host's own) is never
free: it is listed as ``excluded``, with the reason.
"""

from __future__ import annotations

from typing import Optional

from . import domxml
from .errors import BadDomainXml, LibvirtFailure
from .ledger import IN_USE

FREE = "free"
RESERVED = "reserved"
EXCLUDED = "excluded"


def vf_table(inventory, claims, domain_refs: dict, pf: Optional[str] = None,
             kernel: Optional[dict] = None) -> list:
    """Rows for ``SRIOV.listVfs``; *domain_refs* maps VF address to VM UUID.

    *kernel* (``{(pf, index): (mac, vlan)}`` from netlink, where the host
    has real VFs) fills MAC and VLAN for VFs the ledger does not describe,
    such as those the engine placed itself. A VF that a VM holds shows
    its holder even if the inventory excludes it; ``reason`` still says why.
    """
    by_addr = {c.vf_address: c for c in claims}
    rows = []
    for vf, reason in inventory.rows():
        if pf is not None and vf.pf != pf:
            continue
        row = dict(vf.to_json(), state=FREE if reason is None else EXCLUDED, vm_id=None, mac=None,
                   vlan=None, reason=reason)
        claim = by_addr.get(vf.address)
        if claim is not None:
            state = RESERVED if claim.state == RESERVED else IN_USE
            row.update(state=state, vm_id=claim.vm_id, mac=claim.mac, vlan=claim.vlan)
        elif vf.address in domain_refs:
            row.update(state=IN_USE, vm_id=domain_refs[vf.address])
        if row["mac"] is None and kernel and (vf.pf, vf.index) in kernel:
            row["mac"], row["vlan"] = kernel[(vf.pf, vf.index)]
        rows.append(row)
    return rows


def scan_domain_refs(conn, host_id: Optional[str] = None) -> dict:
    """VF address -> VM UUID for every domain libvirt knows on this host.

    A domain whose XML cannot be read is skipped with its UUID noted by
    the caller's logs; an unreadable libvirt is an error, since treating
    its VFs as free could hand one VF to two VMs.
    """
    import libvirt

    refs = {}
    try:
        domains = conn.listAllDomains(0)
    except libvirt.libvirtError as e:
        raise LibvirtFailure("cannot list domains: %s" % e) from e
    for dom in domains:
        try:
            xml = dom.XMLDesc(0)
            root = domxml.parse_domain(xml)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # went away while we looked
            raise LibvirtFailure("cannot read domain %s: %s" % (dom.UUIDString(), e)) from e
        except BadDomainXml:
            continue
        for addr in domxml.referenced_vf_addresses(root, host_id):
            refs[addr] = dom.UUIDString()
    return refs
