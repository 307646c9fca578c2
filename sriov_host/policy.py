"""Which vNICs may migrate, and the plan a hook point acts on.

The rule is the feature page's: a VM migrates only when every one of
its passthrough vNICs is marked migratable. A device's own custom
property wins over the VM-wide one, which wins over the host default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

PROPERTY = "sriov_migratable"

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")

MIGRATE = "migrate"
REFUSE = "refuse"
NOTHING = "nothing"


def parse_bool(text) -> Optional[bool]:
    """``true/false/yes/no/1/0`` in any case; None for anything else."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


@dataclass(frozen=True)
class Decision:
    migratable: bool
    why: str


def decide(vnic, device_custom: dict, vm_custom: Optional[str], default: bool) -> Decision:
    """Decide one vNIC. *vm_custom* is the VM property's raw value or None."""
    raw = device_custom.get(vnic.mac or "", {}).get(PROPERTY)
    if raw is not None:
        return _from_raw(raw, "profile custom property")
    if vm_custom is not None:
        return _from_raw(vm_custom, "VM custom property")
    return Decision(default, "host default (migratable_by_default=%s)" % str(default).lower())


def _from_raw(raw: str, where: str) -> Decision:
    value = parse_bool(raw)
    if value is None:
        return Decision(False, "%s %s=%r is not a boolean" % (where, PROPERTY, raw))
    return Decision(value, "%s %s=%s" % (where, PROPERTY, raw))


@dataclass(frozen=True)
class Plan:
    vm_id: str
    verdict: str
    reason: str
    vnics: tuple = ()
    decisions: tuple = ()

    def to_json(self) -> dict:
        return {
            "vm_id": self.vm_id,
            "verdict": self.verdict,
            "reason": self.reason,
            "vnics": [
                {"mac": v.mac, "alias": v.alias, "vf_address": v.vf_address, "vlan": v.vlan,
                 "migratable": d.migratable, "teaming": v.teaming}
                for v, d in zip(self.vnics, self.decisions)
            ],
        }


def _same_mac(vnics):
    """(MAC, [keys]) of the first MAC two vNICs share, or None."""
    seen = {}
    for v in vnics:
        if v.mac:
            seen.setdefault(v.mac.lower(), []).append(v.key)
    return next(((mac, keys) for mac, keys in seen.items() if len(keys) > 1), None)


def with_foreign_devices(plan: Plan, foreign) -> Plan:
    """Refuse a migration that would unplug vNICs of a VM no migration can carry."""
    if plan.verdict != MIGRATE or not foreign:
        return plan
    return Plan(plan.vm_id, REFUSE, "the VM also has host device(s) %s that no live migration can "
                "carry; its SR-IOV vNICs are left alone" % ", ".join(foreign), plan.vnics,
                plan.decisions)


def make_plan(vm_id: str, vnics, device_custom: dict, vm_custom: Optional[str],
              default: bool) -> Plan:
    """The verdict for a migration of this VM's currently attached vNICs."""
    vnics = tuple(vnics)
    if not vnics:
        return Plan(vm_id, NOTHING, "no SR-IOV vNIC")
    decisions = tuple(decide(v, device_custom, vm_custom, default) for v in vnics)
    twice = _same_mac(vnics)
    if twice:
        return Plan(vm_id, REFUSE, "SR-IOV vNICs %s share MAC %s; each must have its own MAC to be "
                    "re-created on the destination" % (", ".join(twice[1]), twice[0]), vnics, decisions)
    blocked = [(v, d) for v, d in zip(vnics, decisions) if not d.migratable]
    if blocked:
        names = ", ".join("%s (%s)" % (v.mac or v.alias or v.vf_address, d.why) for v, d in blocked)
        reason = ("not migratable: %s; mark the vNIC profile migratable "
                  "(sriov-engine set-migratable PROFILE, or custom property %s=true)"
                  % (names, PROPERTY))
        return Plan(vm_id, REFUSE, reason, vnics, decisions)
    return Plan(vm_id, MIGRATE, "%d SR-IOV vNIC(s) migratable" % len(vnics), vnics, decisions)
