"""What the adapter prints: tables and JSON built from the model's views."""

from __future__ import annotations

from typing import Optional, Sequence

from .model import Profile, Verdict


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A plain aligned text table; None shows as ``-``."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _mode(profile: Profile) -> str:
    return "enabled" if profile.passthrough else "disabled"


def _flag(profile: Profile) -> Optional[bool]:
    """The engine shows ``migratable`` only for passthrough profiles."""
    return profile.migratable if profile.passthrough else None


def profiles_table(profiles: Sequence[Profile]) -> str:
    rows = [(p.name, p.network, p.vlan, _mode(p), _flag(p), p.property_value,
             "yes" if p.failover_id else None, p.id) for p in profiles]
    return table(("PROFILE", "NETWORK", "VLAN", "PASSTHROUGH", "MIGRATABLE",
                  "SRIOV_MIGRATABLE", "FAILOVER", "ID"), rows)


def profile_json(p: Profile) -> dict:
    return {
        "id": p.id, "name": p.name, "network": p.network, "network_id": p.network_id,
        "vlan": p.vlan, "pass_through": _mode(p), "migratable": _flag(p),
        "sriov_migratable": p.property_value, "failover": p.failover_id,
        "custom_properties": dict(p.custom),
    }


def verdict_table(verdict: Verdict) -> str:
    rows = []
    for v in verdict.vnics:
        p = v.profile
        rows.append((v.name, v.mac, p.name if p else None, p.network if p else None,
                     p.vlan if p else None, v.migratable, p.property_value if p else None))
    return table(("VNIC", "MAC", "PROFILE", "NETWORK", "VLAN", "MIGRATABLE", "SRIOV_MIGRATABLE"),
                 rows)


def verdict_json(vm_name: str, vm_id: str, verdict: Verdict) -> dict:
    return {
        "vm": vm_name, "vm_id": vm_id, "migratable": verdict.migratable,
        "reason": verdict.reason,
        "vnics": [{
            "name": v.name, "id": v.id, "mac": v.mac, "alias": v.alias,
            "profile": v.profile.name if v.profile else None,
            "profile_id": v.profile.id if v.profile else None,
            "network": v.profile.network if v.profile else None,
            "vlan": v.profile.vlan if v.profile else None,
            "migratable": v.migratable,
            "sriov_migratable": v.profile.property_value if v.profile else None,
        } for v in verdict.vnics],
    }


def property_warnings(verdict: Verdict) -> list:
    """Hosts behind engines before 4.1 read the custom property, not the flag."""
    out = []
    for v in verdict.vnics:
        if v.profile and v.migratable and v.profile.property_value is not True:
            out.append("note: profile %s is migratable but lacks sriov_migratable=true; hosts "
                       "behind engines before 4.1 will refuse it (run set-migratable %s)"
                       % (v.profile.name, v.profile.id))
    return out
