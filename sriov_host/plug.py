"""Plug an arrived VM's SR-IOV vNICs on this host's reserved VFs, and verify them.

The destination's ``sriov-migrationd`` (its reconciler) calls
:func:`plug_arrived` once VDSM reports the arrived VM Up, with device
operations that attach through VDSM's ``VM.hotplugNic``
(:mod:`jsonrpc_plugin.vdsm_devices`), so VDSM keeps the NICs in its books.
The VM is never migrated back: a vNIC that cannot be plugged is marked
failed and its VF released. After any
failure past a successful attach, ledger, record and guest are made to
agree again: detach what was attached, or keep its VF claimed.
"""

from __future__ import annotations

import time
from dataclasses import replace

from . import domxml, faultpoint, metadata, vfclean
from .devices import AttachOutcomeUnknown
from .errors import SriovError
from .ledger import IN_USE, RESERVED


def pending(root):
    """Our record in *root* and its vNICs still unplugged-for-migration."""
    record = metadata.read_record(root)
    return record, (record.by_state(metadata.UNPLUGGED) if record else [])


def nic_request(rec) -> dict:
    return {"mac": rec.mac, "alias": rec.alias, "vlan": rec.vlan, "network": rec.network}


def plug_arrived(ctx, dom):
    """Assign this host's reserved VFs to the record, then plug each; returns the record."""
    record, todo = pending(ctx.live_root(dom))
    record = _assign(record, todo, _reserved_claims(ctx, todo), ctx.host_id)
    ctx.save_record(dom, record)
    for n, rec in enumerate(record.by_state(metadata.UNPLUGGED)):
        if n:
            faultpoint.reached(faultpoint.DURING_PLUG)
        record = record.replace_vnic(_plug_one(ctx, dom, rec))
        ctx.save_record(dom, record)
    failed = record.by_state(metadata.FAILED)
    record = replace(record, phase="plug-failed" if failed else "migrated", updated=time.time())
    ctx.save_record(dom, record)
    ctx.ledger.set_status(ctx.vm_id, record.phase, record.vnics)
    return record


def report(record) -> tuple:
    """``(clean, lines)``: one line per outcome (plugged, plugged with a problem, failed)."""
    plugged, failed = record.by_state(metadata.PLUGGED), record.by_state(metadata.FAILED)
    lines = ["plugged %s" % ", ".join("%s on %s (%.0f ms)" % (r.mac, r.vf_address, r.plug_ms or 0)
                                      for r in plugged)] if plugged else []
    warned = [r for r in plugged if r.error]
    if warned:
        lines.append("plugged with a problem: %s" % "; ".join("mac=%s: %s" % (r.mac, r.error)
                                                             for r in warned))
    if failed:
        lines.append("plug FAILED for %s; the VM stays here without them"
                     % "; ".join("mac=%s: %s" % (r.mac, r.error) for r in failed))
    return not (failed or warned), lines


def _assign(record, todo, claims, host_id):
    """Point every pending entry at this host's reserved VF before plugging.

    Saved before any attach, so if this hook dies half-way the record
    names this host's VFs and the reconciler can finish (or undo) the
    plug instead of guessing from the source's addresses.
    """
    by_mac = {c.mac: c for c in claims}
    vnics = []
    for v in record.vnics:
        claim = by_mac.get(v.mac) if v in todo else None
        if claim is not None:
            v = replace(v, vf_address=claim.vf_address, pf=claim.pf)
        elif v in todo:
            v = replace(v, state=metadata.FAILED, vf_address=None,
                        error="no VF reserved on the destination")
        vnics.append(v)
    return replace(record, vnics=tuple(vnics), host=host_id, phase="plugging",
                   updated=time.time())


def _reserved_claims(ctx, todo) -> list:
    """This VM's reserved claims; reserve again if the reservation lapsed.

    A long migration can outlive the reservation's TTL. The VM is here
    now, so VFs are taken afresh rather than leaving it without NICs;
    if none is free the vNICs are marked failed by :func:`_assign`.
    """
    claims = [c for c in ctx.ledger.claims(vm_id=ctx.vm_id) if c.state == RESERVED]
    if all(r.mac in {c.mac for c in claims} for r in todo):
        return claims
    try:
        ctx.ledger.reserve(ctx.vm_id, [nic_request(r) for r in todo], ctx.inventory,
                           frozenset(ctx.domain_refs()), ctx.cfg.networks, ctx.cfg.reservation_ttl)
    except SriovError:
        return claims
    return [c for c in ctx.ledger.claims(vm_id=ctx.vm_id) if c.state == RESERVED]


def attach_vnic(devices, dom, cfg, rec):
    """Attach *rec* on its VF at its old guest PCI address; elsewhere only if that is taken.

    On real VFs the source VF's own settings (spoofchk, trust...) are put
    on this VF through its PF first, and read back after the attach.
    Returns ``(device_xml, ms, warning)``; the warning says when the guest
    address could not be kept (the guest may then name the NIC anew) and
    names every VF setting the PF refused or does not show.
    """
    settings = _carry_settings(cfg, rec)
    vnic = domxml.vnic_from_record(rec)
    xml = domxml.render_attach(vnic, rec.vf_address, cfg.vf_device, cfg.vf_model,
                               bridge=cfg.vf_bridge)
    try:
        ms, warning = devices.attach_and_wait(dom, xml, rec.key, cfg.plug_timeout), None
    except SriovError as e:
        if not rec.guest_address:
            raise
        first = e.message
        xml = domxml.render_attach(vnic, rec.vf_address, cfg.vf_device, cfg.vf_model,
                                   at_guest_address=False, bridge=cfg.vf_bridge)
        ms = devices.attach_and_wait(dom, xml, rec.key, cfg.plug_timeout)
        warning = ("guest PCI address %s could not be kept (%s); plugged at another address"
                   % (rec.guest_address, " ".join(first.split())))
    notes = [w for w in (warning, _settings_note(rec, settings)) if w]
    return xml, ms, "; ".join(notes) or None


def announce_vnic(cfg, dom, rec) -> tuple:
    """Tell the switches where *rec*'s MAC is now (see :mod:`announce`): ``(via, error)``.

    Real VFs announce through their PF, tagged with the vNIC's VLAN;
    emulated ones through ``[vf] bridge``; *via* is None where there is
    nothing to announce through. It needs CAP_NET_RAW, which the service
    has and VDSM's hooks (user vdsm) do not: the service sends it, after
    the destination hook's plug (``SRIOV.announce``) and after a re-plug.
    A failover vNIC is announced once a second for ``[vf] announce_for``
    seconds, while *dom* still has it on the same VF, from when its guest
    has taken up the VF (:mod:`msix`; where that cannot be read, and for
    an emulated VF, which is no PCI device here, at once).
    """
    if not cfg.announce or not rec.mac:
        return None, None
    if cfg.vf_device == domxml.MODE_HOSTDEV:
        via, vlan = rec.pf, rec.vlan
    else:
        via, vlan = cfg.vf_bridge, None
    if not via:
        return None, None
    from . import announce, devices, msix

    def still():
        return devices.still_holds(dom, rec.key, rec.vf_address)

    if not rec.teaming:
        return via, announce.mac_on(via, rec.mac, vlan, announce.ROUNDS_MS, still)

    def ready():
        return msix.taken_up(rec.vf_address) is not False

    return via, announce.mac_on(via, rec.mac, vlan, announce.rounds(cfg.announce_for), still,
                                ready if cfg.vf_device == domxml.MODE_HOSTDEV else None)


def _carry_settings(cfg, rec):
    """Put the record's VF settings on *rec*'s VF through its PF; ``(wanted, index, refused)``.

    Only what differs is set, one setting per request; a refusal is kept
    by name (it is reported once the vNIC is plugged, which it still is).
    """
    if cfg.vf_device != domxml.MODE_HOSTDEV or not rec.vf_settings or not rec.pf:
        return None
    from . import vfsettings

    try:
        wanted = vfsettings.from_text(rec.vf_settings)
    except ValueError as e:
        return None, None, {"vf_settings": "unreadable in our record: %s" % e}
    index, refused = put_vf_settings(rec.pf, rec.vf_address, wanted)
    return wanted, index, refused


def put_vf_settings(pf: str, vf_address: str, wanted) -> tuple:
    """Set each of *wanted* that VF *vf_address* of *pf* does not hold: ``(index, refused)``.

    One netlink request per setting (CAP_NET_ADMIN): ``SRIOV.reserveVfs``
    does it on the destination's service when the VF is reserved, and the
    plug again for whatever is still missing (unprivileged, it is refused
    and named). *refused* maps each setting not set to the reason.
    """
    from . import netlink, vfsettings

    index = netlink.vf_index(pf, vf_address)
    if index is None:
        return None, {n: "%s is not a VF of %s here" % (vf_address, pf) for n, _v in wanted.items()}
    changes = vfsettings.to_change(wanted, netlink.read_vf_settings(pf, index))
    refused = {}
    for change, why in netlink.apply_vf_settings(pf, index, changes).items():
        refused.update({n: why for n in vfsettings.setting_names(change)})
    return index, refused


def _settings_note(rec, settings):
    """After the plug: which carried settings the PF refused, or does not show."""
    if settings is None:
        return None
    from . import netlink, vfsettings

    wanted, index, refused = settings
    missing = []
    if wanted is not None and index is not None:
        seen = netlink.read_vf_settings(rec.pf, index)
        missing = vfsettings.mismatches(wanted, seen, skip=refused)
    parts = ["%s (%s)" % (n, why) for n, why in sorted(refused.items())]
    parts += ["%s (set, but the PF shows another value)" % n for n in missing]
    if not parts:
        return None
    return "VF settings not carried to %s on %s: %s" % (rec.vf_address, rec.pf, ", ".join(parts))


def _plug_one(ctx, dom, rec) -> metadata.VnicRecord:
    """Attach one vNIC on its reserved VF; ledger, record and guest end up agreeing."""
    vfclean.remember_for_plug(ctx, rec)  # its own settings, put back once it is released
    try:
        xml, ms, warning = attach_vnic(ctx.devices, dom, ctx.cfg, rec)
    except SriovError as e:
        if isinstance(e, AttachOutcomeUnknown):  # it may land yet: never free a VF a guest may get
            _hold_in_use(ctx, rec)
            return rec.with_state(metadata.FAILED, error="%s; VF %s kept in use" % (e.message,
                                                                                    rec.vf_address))
        ctx.ledger.release_vf(ctx.vm_id, rec.vf_address)
        return rec.with_state(metadata.FAILED, error=e.message)
    try:
        _verify_vf(ctx, rec)
    except SriovError as e:
        return _undo_attach(ctx, dom, rec, xml, "verification failed: %s" % e.message)
    try:
        ctx.ledger.set_state(ctx.vm_id, rec.vf_address, IN_USE)
    except SriovError as e:
        return _keep_claim(ctx, dom, rec, xml, ms, e)
    return rec.with_state(metadata.PLUGGED, plug_ms=ms, error=warning)


def _undo_attach(ctx, dom, rec, xml, why) -> metadata.VnicRecord:
    """Detach what we attached and free the VF; if it will not go, keep it in use."""
    try:
        ctx.devices.detach_and_wait(dom, xml, rec.key, ctx.cfg.unplug_timeout)
    except SriovError as e:
        _hold_in_use(ctx, rec)
        return rec.with_state(metadata.PLUGGED, error="%s; detaching it again failed (%s), so "
                              "the VF stays in the guest and in use" % (why, e.message))
    ctx.ledger.release_vf(ctx.vm_id, rec.vf_address)
    return rec.with_state(metadata.FAILED, error="%s; detached again and VF released" % why)


def _keep_claim(ctx, dom, rec, xml, ms, error) -> metadata.VnicRecord:
    """The VF is in the guest but its claim is gone (expired): claim it again, or undo."""
    try:
        _hold_in_use(ctx, rec)
    except SriovError as e:
        return _undo_attach(ctx, dom, rec, xml, "the claim lapsed (%s) and the VF is now held "
                            "elsewhere (%s)" % (error.message, e.message))
    return rec.with_state(metadata.PLUGGED, plug_ms=ms,
                          error="claim lapsed during the plug (%s); claimed again" % error.message)


def _hold_in_use(ctx, rec) -> None:
    vf = ctx.vf_by_address.get(rec.vf_address)
    if vf is None:
        raise SriovError("VF %s is not in this host's inventory" % rec.vf_address)
    ctx.ledger.hold(ctx.vm_id, [{"vf": vf, "mac": rec.mac, "alias": rec.alias, "vlan": rec.vlan,
                                 "network": rec.network}], IN_USE)


def _verify_vf(ctx, rec) -> None:
    """Where netlink knows the VF (real SR-IOV), check its MAC and VLAN."""
    if ctx.cfg.vf_device != domxml.MODE_HOSTDEV or rec.kind != domxml.KIND_INTERFACE:
        return
    from . import netlink

    vf = ctx.vf_by_address.get(rec.vf_address)
    seen = netlink.vf_settings(vf.pf, vf.index) if vf else None
    if seen is None:
        return
    mac, vlan = seen
    if mac and rec.mac and mac.lower() != rec.mac.lower():
        raise SriovError("VF %s carries MAC %s, expected %s" % (rec.vf_address, mac, rec.mac))
    if (rec.vlan or 0) != (vlan or 0):
        raise SriovError("VF %s carries VLAN %s, expected %s" % (rec.vf_address, vlan, rec.vlan))
