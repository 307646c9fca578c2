"""Source-side hook points: refuse or unplug-and-record; release afterwards.

Before the migration the source records every SR-IOV vNIC in our domain
metadata *first*, then live-detaches them one by one, waiting for
libvirt's DEVICE_REMOVED. If one does not go, the ones already removed
are put back on their own VFs and the migration is refused (rc 2).
"""

from __future__ import annotations

import time

from sriov_host import domxml, metadata, policy
from sriov_host.errors import SriovError
from sriov_host.ledger import UNPLUGGED, LedgerConflict

from .hook import FAIL, OK
from .outcome import Result

PROPERTY_ENV = policy.PROPERTY


def build_plan(ctx, root) -> policy.Plan:
    mode = ctx.cfg.vf_device
    vf_addresses = ()
    if mode == domxml.MODE_HOSTDEV and root.find("devices/hostdev") is not None:
        vf_addresses = ctx.inventory.addresses
    vnics = domxml.find_vnics(root, mode, vf_addresses)
    vm_custom = ctx.env.get(PROPERTY_ENV)
    if vm_custom is None:
        vm_custom = domxml.vdsm_vm_custom(root).get(policy.PROPERTY)
    return policy.make_plan(ctx.vm_id, vnics, domxml.vdsm_device_custom(root), vm_custom,
                            ctx.cfg.migratable_by_default)


def before_migrate_source(ctx, root, dry_run) -> Result:
    plan = build_plan(ctx, root)
    if dry_run:
        return Result(FAIL if plan.verdict == policy.REFUSE else OK, plan)
    if plan.verdict == policy.NOTHING:
        return Result(OK, plan)
    if plan.verdict == policy.REFUSE:
        return Result(FAIL, plan, ["migration refused: %s" % plan.reason])
    record = unplug_all(ctx, plan.vnics)
    domxml.strip_vnics(root, plan.vnics)
    macs = ", ".join(v.mac or v.key for v in plan.vnics)
    timings = ", ".join("%s %.0f ms" % (r.mac or r.key, r.unplug_ms or 0) for r in record.vnics)
    return Result(OK, plan, ["unplugged for migration: %s (%s)" % (macs, timings)],
                  rewritten=True)


def _pf_of(ctx, vnic):
    if vnic.pf:
        return vnic.pf
    vf = ctx.vf_by_address.get(vnic.vf_address) if vnic.vf_address else None
    return vf.pf if vf else None


def _to_record(ctx, vnic) -> metadata.VnicRecord:
    return metadata.VnicRecord(
        alias=vnic.alias, mac=vnic.mac, kind=vnic.kind, vf_address=vnic.vf_address,
        pf=_pf_of(ctx, vnic), vlan=vnic.vlan, teaming=vnic.teaming, network=vnic.network,
        state=metadata.PLUGGED)


def _check_ledger(ctx, vnics) -> None:
    """Refuse before touching anything if the ledger gives a VF to another VM."""
    mine = {v.vf_address for v in vnics if v.vf_address}
    for claim in ctx.ledger.claims():
        if claim.vf_address in mine and claim.vm_id != ctx.vm_id:
            raise LedgerConflict(
                "VF %s is held by VM %s in the ledger; refusing to unplug VM %s"
                % (claim.vf_address, claim.vm_id, ctx.vm_id))


def _live_device_xml(live_root, vnic) -> str:
    """The live element of *vnic*: libvirt detaches what matches it."""
    from lxml import etree

    for elem in live_root.iterfind("devices/*"):
        alias = elem.find("alias")
        if alias is not None and alias.get("name") == vnic.alias:
            return etree.tostring(elem, encoding="unicode")
    raise SriovError("vNIC %s (%s) is not in the live domain" % (vnic.mac, vnic.key))


def unplug_all(ctx, vnics) -> metadata.MigrationRecord:
    """Record, then detach each vNIC; on any failure put back and raise."""
    _check_ledger(ctx, vnics)
    dom = ctx.domain()
    live = ctx.live_root(dom)
    record = metadata.MigrationRecord(
        vnics=tuple(_to_record(ctx, v) for v in vnics), host=ctx.host_id,
        phase="unplugging", updated=time.time())
    ctx.save_record(dom, record)
    for vnic, rec in zip(vnics, record.vnics):
        # Intent first: if this process dies mid-detach, the record already
        # says unplugged and the reconciler re-plugs whatever is missing.
        record = record.replace_vnic(rec.with_state(metadata.UNPLUGGED))
        ctx.save_record(dom, record)
        try:
            xml = _live_device_xml(live, vnic)
            ms = ctx.devices.detach_and_wait(dom, xml, rec.key, ctx.cfg.unplug_timeout)
        except SriovError as e:
            _put_back(ctx, dom, record, rec, e)
            raise
        record = record.replace_vnic(rec.with_state(metadata.UNPLUGGED, unplug_ms=ms))
        ctx.save_record(dom, record)
    ctx.ledger.hold(ctx.vm_id, [_hold_entry(ctx, r) for r in record.vnics], UNPLUGGED)
    record = _phase(record, "unplugged")
    ctx.save_record(dom, record)
    ctx.ledger.set_status(ctx.vm_id, "unplugged", record.vnics)
    return record


def _hold_entry(ctx, rec) -> dict:
    vf = ctx.vf_by_address.get(rec.vf_address)
    if vf is None:
        raise SriovError("VF %s of vNIC %s is not in this host's inventory"
                         % (rec.vf_address, rec.mac))
    return {"vf": vf, "mac": rec.mac, "alias": rec.alias, "vlan": rec.vlan,
            "network": rec.network}


def _phase(record, phase):
    from dataclasses import replace

    return replace(record, phase=phase, updated=time.time())


def _put_back(ctx, dom, record, failed_rec, error) -> None:
    """Re-plug what is missing of what we meant to unplug, then say what happened.

    Works from the record (desired state) against the live domain, so the
    vNIC whose detach failed is re-plugged too if it went away after all.
    """
    from sriov_host import rollback

    outcome = rollback.restore_vnics(dom, ctx.cfg, ctx.ledger, ctx.host_id,
                                     reason="unplug of %s failed" % failed_rec.key,
                                     devices=ctx.devices)
    macs = {r.key: r.mac or r.key for r in record.vnics}
    error.message = "unplug of vNIC %s (%s) failed: %s; %s" % (
        failed_rec.mac, failed_rec.key, error.message,
        "re-plugged %s on their own VFs" % ", ".join(macs[k] for k in outcome.restored)
        if outcome.restored else "nothing else had been unplugged")
    if outcome.failed:
        error.message += "; re-plug FAILED for %s" % ", ".join(
            "%s (%s)" % (f["mac"], f["error"]) for f in outcome.failed)


def after_migrate_source(ctx, root, dry_run) -> Result:
    """The VM now runs elsewhere: its source VFs go back to the pool."""
    if dry_run:
        return Result(OK, policy.Plan(ctx.vm_id, policy.NOTHING, "releases source VFs"))
    released = ctx.ledger.release(ctx.vm_id)
    ctx.ledger.set_status(ctx.vm_id, "migrated-away")
    msgs = ["released %d source VF(s) after migration" % released] if released else []
    return Result(OK, None, msgs)


def after_destroy(ctx, root, dry_run) -> Result:
    """Release everything this host holds for the VM."""
    if dry_run:
        return Result(OK, policy.Plan(ctx.vm_id, policy.NOTHING, "releases all VFs"))
    released = ctx.ledger.release(ctx.vm_id)
    ctx.ledger.forget_status(ctx.vm_id)
    msgs = ["released %d VF(s) of destroyed VM" % released] if released else []
    return Result(OK, None, msgs)
