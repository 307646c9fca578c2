"""What to set on a VF so that it holds its own settings again after a VM has left it.

A VF keeps what was set for its last VM (``trust``, ``spoofchk``, rate
limits, link state, VLAN) and the next VM on it would inherit them. The
settings it had before this project first changed them are recorded
(:mod:`sriov_host.vfclean`); this module says what differs from them.

Pure logic; :mod:`sriov_host.vfclean` reads and writes the kernel and the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import vfsettings
from .vfsettings import VfSettings


@dataclass(frozen=True)
class VfState:
    """A VF's settings as its PF holds them, and its VLAN (0: none; None: unknown)."""

    settings: VfSettings
    vlan: Optional[int] = None


def original_of(row) -> VfState:
    """The state a ledger ``VfOriginal`` row recorded."""
    return VfState(vfsettings.from_text(row.settings), row.vlan)


def restore_changes(original: VfState, current: Optional[VfState]) -> list:
    """``[(name, value)]`` that puts *original* back over *current* (unknown: all of it).

    The settings as :func:`vfsettings.to_change` gives them, then
    ``("vlan", n)`` where the VLAN is known and differs.
    """
    changes = vfsettings.to_change(original.settings, current.settings if current else None)
    if original.vlan is not None and (current is None or current.vlan != original.vlan):
        changes.append(("vlan", original.vlan))
    return changes


def still_different(original: VfState, seen: Optional[VfState]) -> list:
    """Names the VF still shows otherwise after a restore (what it does not show counts as put back)."""
    if seen is None:
        return []
    names = vfsettings.mismatches(original.settings, seen.settings)
    if original.vlan is not None and seen.vlan is not None and seen.vlan != original.vlan:
        names.append("vlan")
    return names
