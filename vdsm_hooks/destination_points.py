"""Destination-side hook points: make sure VFs are reserved; plug and verify.

The destination learns what to plug from our record, which libvirt
carried over with the domain. It never migrates the VM back: a vNIC that
cannot be plugged is marked failed, its VF released, and rc 1 reported.
"""

from __future__ import annotations

from sriov_host import allocation, domxml, metadata, numa, plug, policy
from sriov_host.errors import BadDomainXml, NoSuchVm, ReservationExpired, SriovError

from .hook import ERROR, FAIL, OK
from .outcome import Result, record_plan


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
    record, pending = plug.pending(root)
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
        how = "reservation made earlier" if _covered(ctx, pending) else _reserve(ctx, root, pending)
    except SriovError as e:
        macs = ", ".join(r.mac for r in pending)
        return Result(FAIL, plan, ["mac=%s: cannot reserve VFs on this host: %s" % (macs, e.message)])
    ctx.ledger.set_status(ctx.vm_id, "incoming", pending)
    domxml.strip_vnics(root, domxml.find_vnics(root))
    return Result(OK, plan, ["VFs for %d vNIC(s) ready (%s)" % (len(pending), how)],
                  rewritten=True)


def _reserve(ctx, root, pending) -> str:
    """Reserve here, preferring VFs on the NUMA nodes the VM is tied to; say how it went."""
    try:
        hints, why = numa.domain_hints(root), ""
    except BadDomainXml as e:  # a preference never stops a migration
        hints, why = numa.NumaHints(), "; no NUMA preference: %s" % e.message
    prefer = allocation.numa_preference(hints.nodes, hints.cpus, ctx.cpu_nodes)
    res = ctx.ledger.reserve(ctx.vm_id, [plug.nic_request(r) for r in pending], ctx.inventory,
                             frozenset(ctx.domain_refs()), ctx.cfg.networks,
                             ctx.cfg.reservation_ttl, prefer_nodes=prefer.nodes if prefer else ())
    report = allocation.numa_report(prefer, [(c.mac, ctx.vf_by_address.get(c.vf_address))
                                             for c in res.claims])
    return "reserved now" + (why or ("; " + allocation.numa_summary(report) if report else ""))


def after_migrate_destination(ctx, root, dry_run) -> Result:
    _, todo = plug.pending(root)
    if dry_run or not todo:
        verdict = policy.MIGRATE if todo else policy.NOTHING
        return Result(OK, record_plan(ctx.vm_id, todo, verdict, "vNICs to plug"))
    record = plug.plug_arrived(ctx, ctx.domain())
    return Result(*plug_report(record))


def plug_report(record):
    """VDSM's rc and one message per outcome: plugged, plugged with a problem, failed."""
    plugged, failed = record.by_state(metadata.PLUGGED), record.by_state(metadata.FAILED)
    msgs = ["plugged %s" % ", ".join("%s on %s (%.0f ms)" % (r.mac, r.vf_address, r.plug_ms or 0)
                                     for r in plugged)] if plugged else []
    warned = [r for r in plugged if r.error]
    if warned:
        msgs.append("plugged with a problem: %s" % "; ".join("mac=%s: %s" % (r.mac, r.error)
                                                            for r in warned))
    if failed:
        msgs.append("plug FAILED for %s; the VM stays here without them"
                    % "; ".join("mac=%s: %s" % (r.mac, r.error) for r in failed))
    return ERROR if failed or warned else OK, None, msgs
