"""Destination-side hook points: make sure VFs are reserved; leave the plug to the service.

The destination learns what to plug from our record, which libvirt
carried over with the domain. The plug itself is ``sriov-migrationd``'s
(its reconciler, :func:`sriov_host.plug.plug_arrived`): it goes through
VDSM's ``VM.hotplugNic`` so VDSM keeps the NIC in its books, and VDSM
accepts that safely only once it reports the VM Up, which is after this
hook point (virt/vm.py ``_completeIncomingMigration``). A hook that
attached through libvirt here would leave a NIC VDSM never learns of.
"""

from __future__ import annotations

from dataclasses import replace

from sriov_host import allocation, domxml, numa, plug, policy
from sriov_host.errors import BadDomainXml, NoSuchVm, ReservationExpired, SriovError, clip

from . import arrival_point
from .outcome import Result, record_plan
from .rc import FAIL, OK


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
        macs = ", ".join(v.mac or clip(v.key) for v in attached)
        plan = record_plan(ctx.vm_id, (), policy.REFUSE, "SR-IOV vNIC(s) still attached: %s" % macs)
        return Result(FAIL, plan, [
            "mac=%s: the incoming domain XML still holds the source's SR-IOV vNIC(s); they must "
            "be unplugged before VDSM's VM.migrate (use 'sriov-client SRIOV migrate' on the "
            "source, or an oVirt engine >= 4.1)" % macs])
    if not pending:
        return Result(OK, record_plan(ctx.vm_id, (), policy.NOTHING, "no SR-IOV vNIC recorded"))
    plan = arrival_plan(ctx, root, pending)
    if plan.verdict == policy.REFUSE:
        return Result(FAIL, plan, ["migration refused: %s" % plan.reason])
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


def arrival_plan(ctx, root, pending) -> policy.Plan:
    """The source's policy again, on what the source recorded: no door may say yes to a no.

    The profile and VM custom properties travel in the domain XML, so the
    verdict matches the source's as long as both hosts share ``[policy]``.
    """
    vm_custom = ctx.env.get(policy.PROPERTY)
    if vm_custom is None:
        vm_custom = domxml.vdsm_vm_custom(root).get(policy.PROPERTY)
    plan = policy.make_plan(ctx.vm_id, [domxml.vnic_from_record(r) for r in pending],
                            domxml.vdsm_device_custom(root), vm_custom,
                            ctx.cfg.migratable_by_default, domxml.foreign_hostdevs(root, ()))
    if plan.verdict != policy.MIGRATE:
        return plan
    return replace(plan, reason="%d vNIC(s) to plug on arrival" % len(pending))


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
    """Attach nothing: say what sriov-migrationd will plug once VDSM reports the VM Up."""
    _, todo = plug.pending(root)
    verdict = policy.MIGRATE if todo else policy.NOTHING
    plan = record_plan(ctx.vm_id, todo, verdict, "vNICs to plug")
    if dry_run or not todo:
        return Result(OK, plan)
    return Result(OK, plan, [arrival_point.left_to_service(r.mac or clip(r.key) for r in todo)])
