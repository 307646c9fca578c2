"""Put a VF's own settings back once no VM holds it (issue 20 item 7).

A VM leaves its settings on its VF (trust, spoofchk, rate limits, link
state, VLAN), and the next VM there would inherit them: a trusted VF lets
a guest change its MAC and go promiscuous. So before this project first
changes a VF's settings, the VF's own are recorded in the ledger
(:func:`remember`, once per VF: a later change keeps the first record).

VMs leave VFs in many places (hooks after a migration or a destroy, a
rollback, the reconciler), mostly as user vdsm, without the CAP_NET_ADMIN
that setting them needs. So a recorded VF that no claim and no domain
holds is to be cleaned: the ledger hands none out, and the service puts
them back (:func:`clean_released`) before each reservation and in each
reconciler pass. The record goes once the VF shows its own settings again.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Protocol

from . import vfrestore
from .errors import SriovError
from .vfrestore import VfState

log = logging.getLogger(__name__)


class VfKernel(Protocol):
    """Where a VF's settings live: its PF, through netlink on a real host."""

    def index(self, pf: str, vf_address: str) -> Optional[int]: ...

    def read(self, pf: str, index: int) -> Optional[VfState]: ...

    def apply(self, pf: str, index: int, changes: list) -> dict: ...


class NetlinkVfs:
    """:class:`VfKernel` over :mod:`sriov_host.netlink`, looked up at each call."""

    def index(self, pf: str, vf_address: str) -> Optional[int]:
        from . import netlink

        return netlink.vf_index(pf, vf_address)

    def read(self, pf: str, index: int) -> Optional[VfState]:
        from . import netlink

        settings = netlink.read_vf_settings(pf, index)
        if settings is None:
            return None
        mac_vlan = netlink.vf_settings(pf, index)  # its VLAN reads None for none
        return VfState(settings, (mac_vlan[1] or 0) if mac_vlan is not None else None)

    def apply(self, pf: str, index: int, changes: list) -> dict:
        from . import netlink

        return netlink.apply_vf_settings(pf, index, changes)


NETLINK = NetlinkVfs()


def remember(ledger, pf: str, vf_address: str, kernel: VfKernel = NETLINK) -> bool:
    """Record VF *vf_address*'s own settings unless they are already; False if they cannot be read."""
    if ledger.has_original(vf_address):
        return True
    index = kernel.index(pf, vf_address)
    state = kernel.read(pf, index) if index is not None else None
    if state is None:
        log.warning("cannot read the settings of VF %s on %s, so they cannot be put back later",
                    vf_address, pf)
        return False
    if ledger.remember_original(vf_address, pf, state.settings.to_text(), state.vlan):
        log.debug("VF %s on %s: own settings %r, VLAN %s recorded", vf_address, pf,
                  state.settings.to_text(), state.vlan)
    return True


def remember_for_plug(ctx, rec, kernel: VfKernel = NETLINK) -> None:
    """Before a plug puts *rec*'s settings and VLAN on its VF, record the VF's own.

    ``SRIOV.reserveVfs`` has usually done it; a reservation the plug made
    afresh has not. Best effort: a failure is logged, the vNIC is plugged.
    """
    from .domxml import MODE_HOSTDEV

    if ctx.cfg.vf_device != MODE_HOSTDEV or not rec.vf_address or not rec.pf:
        return
    if not (rec.vf_settings or rec.vlan):
        return
    try:
        remember(ctx.ledger, rec.pf, rec.vf_address, kernel)
    except Exception as e:  # noqa: BLE001 - sqlite busy, netlink gone: the plug matters more
        log.warning("VM %s: own settings of VF %s not recorded: %s", ctx.vm_id, rec.vf_address, e)


def clean_released(ledger, domain_refs: Callable[[], object], kernel: VfKernel = NETLINK) -> dict:
    """Put back the recorded settings of each VF no claim and no domain holds.

    *domain_refs* gives the VF addresses domains reference; it is asked
    only when some VF is to be cleaned. Returns ``{address: why not, or None}``.
    """
    rows = ledger.originals()
    if not rows:
        return {}
    try:
        taken = domain_refs()
    except SriovError as e:
        log.warning("not restoring the settings of released VFs now: %s", e.message)
        return {}
    return {row.vf_address: restore(ledger, row, kernel) for row in rows
            if row.vf_address not in taken}


def restore(ledger, row, kernel: VfKernel = NETLINK) -> Optional[str]:
    """Put *row*'s original back on its VF and drop the record; else keep it, and say why."""
    try:
        changes, error = _put_back(row, vfrestore.original_of(row), kernel)
    except Exception as e:  # noqa: BLE001 - one VF's failure must not stop the others
        changes, error = [], "%s: %s" % (type(e).__name__, " ".join(str(e).split()))
    if error is None:
        if ledger.original_restored(row.vf_address) and changes:
            log.info("VF %s on %s: own settings put back (%s)", row.vf_address, row.pf,
                     ", ".join("%s=%s" % c for c in changes))
        return None
    level = logging.WARNING if ledger.original_not_restored(row.vf_address, error) else logging.DEBUG
    log.log(level, "VF %s on %s keeps its last VM's settings and is not handed out: %s",
            row.vf_address, row.pf, error)
    return error


def _put_back(row, original: VfState, kernel: VfKernel) -> tuple:
    """``(changes, error or None)``: set what differs, then check the VF shows it."""
    index = kernel.index(row.pf, row.vf_address)
    if index is None:
        return [], "%s is not a VF of %s here" % (row.vf_address, row.pf)
    changes = vfrestore.restore_changes(original, kernel.read(row.pf, index))
    if not changes:
        return [], None
    refused = kernel.apply(row.pf, index, changes)
    if refused:
        return changes, "%s refused %s" % (row.pf, ", ".join(
            "%s (%s)" % (name, why) for name, why in sorted(refused.items())))
    wrong = vfrestore.still_different(original, kernel.read(row.pf, index))
    if wrong:
        return changes, "%s shows other values for %s after they were set" % (row.pf, ", ".join(wrong))
    return changes, None
