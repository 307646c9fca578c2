"""Source-side hook points: a guard before the migration; release afterwards.

VDSM captures the domain XML it sends to the destination *before*
``before_vm_migrate_source`` runs, and the destination acts on the VF
addresses in it. So this hook never unplugs: a VM that still has SR-IOV
vNICs attached is refused (rc 2) with the way to migrate it, and nothing
is touched. ``SRIOV.migrate`` (or an engine >= 4.1) unplugs them before
it asks VDSM to migrate; by then this hook finds nothing to refuse.
"""

from __future__ import annotations

from sriov_host import policy, unplug
from sriov_host.errors import clip
from sriov_host.ledger import IN_USE, UNPLUGGED

from .outcome import Result
from .rc import FAIL, OK

PROPERTY_ENV = policy.PROPERTY


def build_plan(ctx, root) -> policy.Plan:
    return unplug.build_plan(ctx.vm_id, root, ctx.cfg, lambda: ctx.inventory.addresses,
                             ctx.env.get(PROPERTY_ENV))


def guard_message(plan) -> str:
    """One line: which vNICs are attached, why that stops VDSM, and what to do."""
    macs = ", ".join(v.mac or clip(v.key) for v in plan.vnics)
    if plan.verdict == policy.REFUSE:
        return "migration refused: %s" % plan.reason
    return ("migration refused: SR-IOV vNIC(s) %s still attached; VDSM sends the destination "
            "the domain XML taken before this hook, so they cannot be unplugged here. "
            "Migrate with 'sriov-client SRIOV migrate vmID=%s dst=HOST' on this host, "
            "or through an oVirt engine >= 4.1" % (macs, plan.vm_id))


def before_migrate_source(ctx, root, dry_run) -> Result:
    plan = build_plan(ctx, root)
    if dry_run:
        return Result(FAIL if plan.verdict == policy.REFUSE else OK, plan)
    if plan.verdict == policy.NOTHING:
        return Result(OK, plan)
    return Result(FAIL, plan, [guard_message(plan)])


# What an instance that ran here held. A reservation (``reserved``) is for
# an instance still to come, e.g. one made here for a migration back after
# A->B while VDSM destroys the old instance; it is never the destroyed one's,
# and expires by itself if nobody comes.
INSTANCE_STATES = (IN_USE, UNPLUGGED)


def after_migrate_source(ctx, root, dry_run) -> Result:
    """The VM now runs elsewhere: its source VFs go back to the pool."""
    if dry_run:
        return Result(OK, policy.Plan(ctx.vm_id, policy.NOTHING, "releases source VFs"))
    released = ctx.ledger.release(ctx.vm_id, INSTANCE_STATES)
    ctx.ledger.set_status(ctx.vm_id, "migrated-away")
    msgs = ["released %d source VF(s) after migration" % released] if released else []
    return Result(OK, None, msgs)


def after_destroy(ctx, root, dry_run) -> Result:
    """Release what the destroyed instance held here; keep a reservation for a coming one."""
    if dry_run:
        return Result(OK, policy.Plan(ctx.vm_id, policy.NOTHING, "releases the VM's VFs"))
    released = ctx.ledger.release(ctx.vm_id, INSTANCE_STATES)
    ctx.ledger.forget_status(ctx.vm_id)
    msgs = ["released %d VF(s) of destroyed VM" % released] if released else []
    return Result(OK, None, msgs)
