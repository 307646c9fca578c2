"""Record, then unplug a VM's SR-IOV vNICs on the source; put back on failure.

This runs *before* VDSM's ``VM.migrate`` (driven by ``SRIOV.migrate``):
VDSM captures the domain XML it sends to the destination before any
migration hook runs, so only an unplug done earlier leaves that XML free
of the source's VFs and carrying our record.

Everything that can refuse (ledger conflicts, VFs missing from the
inventory, entries an earlier attempt left unresolved) is checked before
the first detach, so a refusal never leaves the VM without its NICs.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional, Protocol

from . import domxml, faultpoint, metadata, policy
from .errors import SriovError
from .ledger import UNPLUGGED, LedgerConflict


class UnplugContext(Protocol):
    """What an unplug needs from the host; the hooks and the service each provide one."""

    vm_id: str
    cfg: object
    ledger: object
    devices: object
    inventory: object
    vf_by_address: dict
    host_id: Optional[str]

    def domain(self): ...

    def live_root(self, dom): ...

    def save_record(self, dom, record) -> None: ...


class Unresolved(SriovError):
    """An earlier attempt left vNICs unplugged or failed; they must be put back first."""

    code = LedgerConflict.code


def build_plan(vm_id, root, cfg, inventory_addresses, vm_custom=None) -> policy.Plan:
    """The policy verdict for the vNICs attached in *root*: what every source door answers.

    *vm_custom* is the VM custom property from the hook environment; when
    absent the VM's own metadata decides.
    """
    addresses = ()
    if cfg.vf_device == domxml.MODE_HOSTDEV and root.find("devices/hostdev") is not None:
        addresses = inventory_addresses()
    vnics = domxml.find_vnics(root, cfg.vf_device, addresses)
    if vm_custom is None:
        vm_custom = domxml.vdsm_vm_custom(root).get(policy.PROPERTY)
    return policy.make_plan(vm_id, vnics, domxml.vdsm_device_custom(root), vm_custom,
                            cfg.migratable_by_default, domxml.foreign_hostdevs(root, vnics))


def _pf_of(ctx, vnic):
    if vnic.pf:
        return vnic.pf
    vf = ctx.vf_by_address.get(vnic.vf_address) if vnic.vf_address else None
    return vf.pf if vf else None


def _to_record(ctx, vnic) -> metadata.VnicRecord:
    return metadata.VnicRecord(
        alias=vnic.alias, mac=vnic.mac, kind=vnic.kind, vf_address=vnic.vf_address,
        pf=_pf_of(ctx, vnic), vlan=vnic.vlan, teaming=vnic.teaming, network=vnic.network,
        guest_address=vnic.guest_address, state=metadata.PLUGGED,
        vf_settings=source_vf_settings(ctx, vnic))


def source_vf_settings(ctx, vnic) -> Optional[str]:
    """Real VFs: what the PF holds for this vNIC's VF (spoofchk, trust...), to carry along."""
    if ctx.cfg.vf_device != domxml.MODE_HOSTDEV or vnic.kind != domxml.KIND_INTERFACE:
        return None
    vf = ctx.vf_by_address.get(vnic.vf_address) if vnic.vf_address else None
    if vf is None:
        return None
    from . import netlink

    seen = netlink.read_vf_settings(vf.pf, vf.index)
    return seen.to_text() if seen is not None and seen.items() else None


def _check_ledger(ctx, vnics) -> None:
    """Refuse before touching anything if the ledger gives a VF to another VM."""
    mine = {v.vf_address for v in vnics if v.vf_address}
    for claim in ctx.ledger.claims():
        if claim.vf_address in mine and claim.vm_id != ctx.vm_id:
            raise LedgerConflict(
                "VF %s is held by VM %s in the ledger; refusing to unplug VM %s"
                % (claim.vf_address, claim.vm_id, ctx.vm_id))


def _check_unresolved(ctx, live, vnics) -> None:
    """Refuse while an earlier attempt's entries are neither plugged nor in this plan.

    A fresh record would drop them, and then nothing would ever re-plug them.
    """
    record = metadata.read_record(live)
    if record is None:
        return
    planned = {v.key for v in vnics}
    left = [r for r in record.vnics if r.state != metadata.PLUGGED and r.key not in planned]
    if left:
        raise Unresolved(
            "vNIC(s) %s of VM %s are still %s from an earlier attempt; re-plug them first "
            "(sriov-client SRIOV restoreNics vmID=%s)"
            % (", ".join("%s (%s)" % (r.mac or "-", r.key) for r in left), ctx.vm_id,
               "/".join(sorted({r.state for r in left})), ctx.vm_id), {"vmID": ctx.vm_id})


def _live_device_xml(live_root, vnic) -> str:
    """The live element of *vnic*: libvirt detaches what matches it."""
    from lxml import etree

    for elem in live_root.iterfind("devices/*"):
        alias = elem.find("alias")
        if alias is not None and alias.get("name") == vnic.alias:
            return etree.tostring(elem, encoding="unicode")
    raise SriovError("vNIC %s (%s) is not in the live domain" % (vnic.mac, vnic.key))


def _hold_entry(ctx, rec) -> dict:
    vf = ctx.vf_by_address.get(rec.vf_address)
    if vf is None:
        raise SriovError("VF %s of vNIC %s is not in this host's inventory"
                         % (rec.vf_address, rec.mac or rec.key))
    return {"vf": vf, "mac": rec.mac, "alias": rec.alias, "vlan": rec.vlan,
            "network": rec.network}


def unplug_all(ctx: UnplugContext, vnics) -> metadata.MigrationRecord:
    """Check everything, record, then detach every vNIC at once; on a failure put back and raise.

    All detaches are requested together and waited for under one deadline,
    so a VM with four VFs is unplugged in about the time of one (under q35's
    native pciehp each takes 5-6 s).
    """
    _check_ledger(ctx, vnics)
    dom = ctx.domain()
    live = ctx.live_root(dom)
    _check_unresolved(ctx, live, vnics)
    record = metadata.MigrationRecord(
        vnics=tuple(_to_record(ctx, v) for v in vnics), host=ctx.host_id,
        phase="unplugging", updated=time.time())
    holds = [_hold_entry(ctx, r) for r in record.vnics]
    items = [(rec.key, _live_device_xml(live, vnic)) for vnic, rec in zip(vnics, record.vnics)]
    ctx.save_record(dom, record)
    # Intent first: if this process dies mid-detach, the record already says
    # unplugged and the reconciler re-plugs whatever is missing.
    record = replace(record, vnics=tuple(r.with_state(metadata.UNPLUGGED) for r in record.vnics))
    ctx.save_record(dom, record)
    faultpoint.reached(faultpoint.AFTER_RECORD)
    removed, failed = _detach_all(ctx, dom, items)
    record = replace(record, vnics=tuple(r.with_state(metadata.UNPLUGGED, unplug_ms=removed.get(r.key))
                                         for r in record.vnics))
    ctx.save_record(dom, record)
    if failed:
        raise put_back(ctx, dom, record, failed)
    ctx.ledger.hold(ctx.vm_id, holds, UNPLUGGED)
    record = replace(record, phase="unplugged", updated=time.time())
    ctx.save_record(dom, record)
    ctx.ledger.set_status(ctx.vm_id, "unplugged", record.vnics)
    return record


def announce_standbys(cfg, root, record) -> list:
    """After the unplug: announce each failover vNIC's MAC through its standby's bridge.

    The guest's net_failover now sends through the virtio standby, but the
    switches learned the MAC on the VF's port, and the guest tells them
    nothing: until they learn again, its traffic goes where the VF was.
    Returns ``[(mac, bridge, error or None)]`` (CAP_NET_RAW: the service).
    """
    from . import announce

    out = []
    for rec in record.vnics if cfg.announce else ():
        bridge = domxml.standby_bridge(root, rec.teaming) if rec.teaming and rec.mac else None
        if bridge is not None:
            out.append((rec.mac, bridge, announce.mac_on(bridge, rec.mac)))
    return out


def _detach_all(ctx, dom, items):
    """``(removed ms by key, error by key)``; one at a time where the device ops cannot batch."""
    batch = getattr(ctx.devices, "detach_all_and_wait", None)
    if batch is not None:
        return batch(dom, items, ctx.cfg.unplug_timeout)
    removed, failed = {}, {}
    for key, xml in items:
        try:
            removed[key] = ctx.devices.detach_and_wait(dom, xml, key, ctx.cfg.unplug_timeout)
        except SriovError as e:
            failed[key] = e
    return removed, failed


def put_back(ctx, dom, record, failed) -> SriovError:
    """Re-plug what is missing of what we meant to unplug; return the error that says so.

    Works from the record (desired state) against the live domain, so a
    vNIC whose detach failed is re-plugged too if it went away after all.
    """
    from . import rollback

    macs = {r.key: r.mac or r.key for r in record.vnics}
    outcome = rollback.restore_vnics(dom, ctx.cfg, ctx.ledger, ctx.host_id,
                                     reason="unplug of %s failed" % ", ".join(sorted(failed)),
                                     devices=ctx.devices)
    message = "; ".join("unplug of vNIC %s (%s) failed: %s" % (macs.get(k, k), k, e.message)
                        for k, e in failed.items())
    message += "; %s" % ("re-plugged %s on their own VFs" % ", ".join(macs[k] for k in outcome.restored)
                         if outcome.restored else "nothing else had been unplugged")
    if outcome.failed:
        message += "; re-plug FAILED for %s" % ", ".join(
            "%s (%s)" % (f["mac"], f["error"]) for f in outcome.failed)
    first = next(iter(failed.values()))
    error = type(first)(message, dict(first.data, vnics=sorted(failed)))
    return error
