"""A VF's own settings, which travel with its vNIC from the source VF to the destination VF.

libvirt carries a hostdev vNIC's MAC and VLAN; the PF also holds
``spoofchk``, ``trust``, ``link_state``, ``min/max_tx_rate`` and
``query_rss`` per VF, and an admin who set them on the source expects the
VM to keep them. The source reads them before the unplug (into our
record, as :func:`to_text`), and the plug applies each one that differs
on the new VF through its PF before attaching, then reads them back. A
destination PF driver may refuse one (igb has no ``link_state``, no
``min_tx_rate``); that is reported by name, never dropped silently.

Pure logic; :mod:`sriov_host.netlink` reads and writes the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

LINK_STATES = ("auto", "enable", "disable")  # IFLA_VF_LINK_STATE 0, 1, 2
_BOOLS = ("spoofchk", "trust", "query_rss")
_INTS = ("min_tx_rate", "max_tx_rate")  # Mb/s, 0 = no limit


@dataclass(frozen=True)
class VfSettings:
    """What a PF holds for one VF; None where the kernel did not say."""

    spoofchk: Optional[bool] = None
    trust: Optional[bool] = None
    link_state: Optional[str] = None
    min_tx_rate: Optional[int] = None
    max_tx_rate: Optional[int] = None
    query_rss: Optional[bool] = None

    def items(self) -> list:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def to_text(self) -> str:
        """``spoofchk=off,trust=on,...``: how our record carries them."""
        return ",".join("%s=%s" % (name, _show(value)) for name, value in self.items())


def _show(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def from_text(text: Optional[str]) -> VfSettings:
    """The settings a record carries; ValueError naming the bad item."""
    out = VfSettings()
    for item in filter(None, (text or "").split(",")):
        name, sep, raw = item.partition("=")
        if not sep:
            raise ValueError("VF setting %r has no value" % item)
        if name in _BOOLS:
            if raw not in ("on", "off"):
                raise ValueError("VF setting %s must be on or off, not %r" % (name, raw))
            value = raw == "on"
        elif name in _INTS:
            if not raw.isdigit():
                raise ValueError("VF setting %s must be a whole number of Mb/s, not %r" % (name, raw))
            value = int(raw)
        elif name == "link_state":
            if raw not in LINK_STATES:
                raise ValueError("VF setting link_state must be one of %s, not %r"
                                 % ("/".join(LINK_STATES), raw))
            value = raw
        else:
            raise ValueError("unknown VF setting %r" % name)
        out = replace(out, **{name: value})
    return out


def to_change(wanted: VfSettings, current: Optional[VfSettings]) -> list:
    """``[(name, value)]`` of *wanted* that the VF does not hold yet, in a stable order.

    With *current* unknown every wanted setting is applied. The two rates
    go together (the kernel sets them in one request), as ``rate``.
    """
    now = dict(current.items()) if current is not None else {}
    todo = [(n, v) for n, v in wanted.items() if now.get(n) != v]
    rates = [(n, v) for n, v in todo if n in _INTS]
    out = [(n, v) for n, v in todo if n not in _INTS]
    if rates:
        merged = {n: v for n, v in wanted.items() if n in _INTS}
        out.append(("rate", (merged.get("min_tx_rate", now.get("min_tx_rate", 0)) or 0,
                             merged.get("max_tx_rate", now.get("max_tx_rate", 0)) or 0)))
    return out


def mismatches(wanted: VfSettings, seen: Optional[VfSettings], skip=()) -> list:
    """Names whose value the VF does not show after the plug (unknown counts as shown)."""
    if seen is None:
        return []
    have = dict(seen.items())
    return [n for n, v in wanted.items()
            if n not in skip and n in have and have[n] != v]


def setting_names(change: str) -> tuple:
    """The record's names behind one change (``rate`` is both rates)."""
    return _INTS if change == "rate" else (change,)
