"""Destination-side hook points: make sure VFs are reserved; plug and verify.

The destination learns what to plug from our record, which libvirt
carried over with the domain. It never migrates the VM back: a vNIC that
cannot be plugged is marked failed, its VF released, and rc 1 reported.
"""

from __future__ import annotations

import time
from dataclasses import replace

from sriov_host import domxml, metadata, policy
from sriov_host.errors import NoSuchVm, ReservationExpired, SriovError
from sriov_host.ledger import IN_USE, RESERVED

from .hook import ERROR, FAIL, OK
from .outcome import Result, record_plan


def _pending(root):
    record = metadata.read_record(root)
    return record, (record.by_state(metadata.UNPLUGGED) if record else [])


def _nic_request(rec) -> dict:
    return {"mac": rec.mac, "alias": rec.alias, "vlan": rec.vlan, "network": rec.network}


def _covered(ctx, pending) -> bool:
    """True when an earlier reservation (e.g. via SRIOV.reserveVfs) covers every vNIC."""
    try:
        reservation = ctx.ledger.get_reservation(ctx.vm_id)
    except (NoSuchVm, ReservationExpired):
        return False
    have = {c.mac for c in reservation.claims}
    return all(r.mac in have for r in pending)


def _still_attached(ctx, root, record) -> list:
    """SR-IOV vNICs the source left in the XML (VDSM would bind their VFs here)."""
    recorded = {r.vf_address for r in record.vnics if r.vf_address} if record else set()
    if ctx.cfg.vf_device == domxml.MODE_EMULATED:
        return domxml.find_vnics(root, domxml.MODE_EMULATED)
    return domxml.find_vnics(root, domxml.MODE_HOSTDEV, recorded)


def before_migrate_destination(ctx, root, dry_run) -> Result:
    record, pending = _pending(root)
    attached = _still_attached(ctx, root, record)
    if attached:
        macs = ", ".join(v.mac or v.key for v in attached)
        plan = record_plan(ctx.vm_id, (), policy.REFUSE, "SR-IOV vNIC(s) still attached: %s" % macs)
        return Result(FAIL, plan, [
            "mac=%s: the incoming domain XML still holds the source's SR-IOV vNIC(s); they must "
            "be unplugged before VDSM's VM.migrate (use 'sriov-client SRIOV migrate' on the "
            "source, or an oVirt engine >= 4.1)" % macs])
    if not pending:
        return Result(OK, record_plan(ctx.vm_id, (), policy.NOTHING, "no SR-IOV vNIC recorded"))
    plan = record_plan(ctx.vm_id, pending, policy.MIGRATE,
                       "%d vNIC(s) to plug on arrival" % len(pending))
    if dry_run:
        return Result(OK, plan)
    try:
        if _covered(ctx, pending):
            how = "reservation made earlier"
        else:
            ctx.ledger.reserve(ctx.vm_id, [_nic_request(r) for r in pending], ctx.inventory,
                               frozenset(ctx.domain_refs()), ctx.cfg.networks,
                               ctx.cfg.reservation_ttl)
            how = "reserved now"
    except SriovError as e:
        macs = ", ".join(r.mac for r in pending)
        return Result(FAIL, plan, ["mac=%s: cannot reserve VFs on this host: %s" % (macs, e.message)])
    ctx.ledger.set_status(ctx.vm_id, "incoming", pending)
    domxml.strip_vnics(root, domxml.find_vnics(root))
    return Result(OK, plan, ["VFs for %d vNIC(s) ready (%s)" % (len(pending), how)],
                  rewritten=True)


def _assign(record, pending, claims, host_id):
    """Point every pending entry at this host's reserved VF before plugging.

    Saved before any attach, so if this hook dies half-way the record
    names this host's VFs and the reconciler can finish (or undo) the
    plug instead of guessing from the source's addresses.
    """
    by_mac = {c.mac: c for c in claims}
    vnics = []
    for v in record.vnics:
        claim = by_mac.get(v.mac) if v in pending else None
        if claim is not None:
            v = replace(v, vf_address=claim.vf_address, pf=claim.pf)
        elif v in pending:
            v = replace(v, state=metadata.FAILED, vf_address=None,
                        error="no VF reserved on the destination")
        vnics.append(v)
    return replace(record, vnics=tuple(vnics), host=host_id, phase="plugging",
                   updated=time.time())


def _reserved_claims(ctx, pending) -> list:
    """This VM's reserved claims; reserve again if the reservation lapsed.

    A long migration can outlive the reservation's TTL. The VM is here
    now, so VFs are taken afresh rather than leaving it without NICs;
    if none is free the vNICs are marked failed by :func:`_assign`.
    """
    claims = [c for c in ctx.ledger.claims(vm_id=ctx.vm_id) if c.state == RESERVED]
    if all(r.mac in {c.mac for c in claims} for r in pending):
        return claims
    try:
        ctx.ledger.reserve(ctx.vm_id, [_nic_request(r) for r in pending], ctx.inventory,
                           frozenset(ctx.domain_refs()), ctx.cfg.networks, ctx.cfg.reservation_ttl)
    except SriovError:
        return claims
    return [c for c in ctx.ledger.claims(vm_id=ctx.vm_id) if c.state == RESERVED]


def after_migrate_destination(ctx, root, dry_run) -> Result:
    _, pending = _pending(root)
    if dry_run or not pending:
        verdict = policy.MIGRATE if pending else policy.NOTHING
        return Result(OK, record_plan(ctx.vm_id, pending, verdict, "vNICs to plug"))
    dom = ctx.domain()
    record, pending = _pending(ctx.live_root(dom))
    record = _assign(record, pending, _reserved_claims(ctx, pending), ctx.host_id)
    ctx.save_record(dom, record)
    for rec in record.by_state(metadata.UNPLUGGED):
        record = record.replace_vnic(_plug_one(ctx, dom, rec))
        ctx.save_record(dom, record)
    failed = record.by_state(metadata.FAILED)
    record = replace(record, phase="plug-failed" if failed else "migrated", updated=time.time())
    ctx.save_record(dom, record)
    ctx.ledger.set_status(ctx.vm_id, record.phase, record.vnics)
    plugged = record.by_state(metadata.PLUGGED)
    msgs = ["plugged %s" % ", ".join("%s on %s (%.0f ms)" % (r.mac, r.vf_address, r.plug_ms or 0)
                                     for r in plugged)] if plugged else []
    if failed:
        msgs.append("plug FAILED for %s; the VM stays here without them"
                    % "; ".join("mac=%s: %s" % (r.mac, r.error) for r in failed))
        return Result(ERROR, None, msgs)
    return Result(OK, None, msgs)


def _plug_one(ctx, dom, rec) -> metadata.VnicRecord:
    """Attach one vNIC on its reserved VF; on failure release the VF."""
    try:
        xml = domxml.render_attach(domxml.vnic_from_record(rec), rec.vf_address, ctx.cfg.vf_device,
                                   ctx.cfg.vf_model)
        ms = ctx.devices.attach_and_wait(dom, xml, rec.key, ctx.cfg.plug_timeout)
        _verify_vf(ctx, rec)
        ctx.ledger.set_state(ctx.vm_id, rec.vf_address, IN_USE)
    except SriovError as e:
        ctx.ledger.release_vf(ctx.vm_id, rec.vf_address)
        return rec.with_state(metadata.FAILED, error=e.message)
    return rec.with_state(metadata.PLUGGED, plug_ms=ms, error=None)


def _verify_vf(ctx, rec) -> None:
    """Where netlink knows the VF (real SR-IOV), check its MAC and VLAN."""
    if ctx.cfg.vf_device != domxml.MODE_HOSTDEV or rec.kind != domxml.KIND_INTERFACE:
        return
    from sriov_host import netlink

    vf = ctx.vf_by_address.get(rec.vf_address)
    seen = netlink.vf_settings(vf.pf, vf.index) if vf else None
    if seen is None:
        return
    mac, vlan = seen
    if mac and rec.mac and mac.lower() != rec.mac.lower():
        raise SriovError("VF %s carries MAC %s, expected %s" % (rec.vf_address, mac, rec.mac))
    if (rec.vlan or 0) != (vlan or 0):
        raise SriovError("VF %s carries VLAN %s, expected %s" % (rec.vf_address, vlan, rec.vlan))
