"""Which vNICs may migrate, and the plan a hook point acts on.

The rule is the feature page's: a VM migrates only when every one of
its passthrough vNICs is marked migratable. A device's own custom
property wins over the VM-wide one, which wins over the host default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import clip, shown

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
        return Decision(False, "%s %s=%s is not a boolean" % (where, PROPERTY, shown(raw)))
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


def _name(vnic) -> str:
    """How a message names a vNIC: the door's label, its MAC, else its alias, else its VF."""
    label = vnic.extra.get("label") if vnic.extra else None
    return clip(label or vnic.mac or vnic.alias or "VF %s" % vnic.vf_address)


def _macless(vnics) -> Optional[str]:
    """A VF without a MAC (a plain ``<hostdev>``) cannot be re-created on the destination."""
    found = [v for v in vnics if not v.mac]
    if not found:
        return None
    names = ", ".join(_macless_name(v) for v in found)
    plain = " (a VF attached as a plain <hostdev>, not as an SR-IOV vNIC)" if any(
        v.kind == "hostdev" for v in found) else ""
    return ("%s %s no MAC%s; only vNICs with a MAC can be re-created on the destination"
            % (names, "has" if len(found) == 1 else "have", plain))


def _macless_name(vnic) -> str:
    if vnic.extra and vnic.extra.get("label"):
        return clip(vnic.extra["label"])
    return "VF %s%s" % (vnic.vf_address or "?", " (%s)" % clip(vnic.alias) if vnic.alias else "")


def _sourceless(vnics) -> Optional[str]:
    """A vNIC whose VF is not named cannot be recorded, reserved for, or given back."""
    found = [_name(v) for v in vnics if v.mac and not v.vf_address]
    if not found:
        return None
    return ("SR-IOV vNIC(s) %s %s no source VF address (<source><address>), so no VF can be "
            "reserved or given back" % (", ".join(found), "has" if len(found) == 1 else "have"))


def _same_mac(vnics) -> Optional[str]:
    """Two vNICs sharing a MAC could not each be re-created by MAC on the destination."""
    seen = {}
    for v in vnics:
        if v.mac:
            seen.setdefault(v.mac.lower(), []).append(clip(v.key))
    twice = next(((mac, keys) for mac, keys in seen.items() if len(keys) > 1), None)
    if twice is None:
        return None
    return ("SR-IOV vNICs %s share MAC %s; each must have its own MAC to be re-created on the "
            "destination" % (", ".join(twice[1]), twice[0]))


def _blocked(vnics, decisions) -> Optional[str]:
    """Unmarked vNICs; one without a MAC is refused for that already."""
    found = [(v, d) for v, d in zip(vnics, decisions) if not d.migratable and v.mac]
    if not found:
        return None
    names = ", ".join("%s (%s)" % (_name(v), d.why) for v, d in found)
    return ("not migratable: %s; mark the vNIC profile migratable "
            "(sriov-engine set-migratable PROFILE, or custom property %s=true)" % (names, PROPERTY))


def _foreign(foreign) -> Optional[str]:
    if not foreign:
        return None
    return ("the VM also has %s, which no live migration can carry; its SR-IOV vNICs are left "
            "alone" % ", ".join(foreign))


def judge(vm_id: str, vnics, decisions, foreign=(), vfs_known: bool = True) -> Plan:
    """The one verdict every door gives (hooks, ``SRIOV.migrate``, ``sriov-engine check-vm``).

    The doors differ only in how they gather *vnics* and *decisions*.
    Without an SR-IOV vNIC there is nothing to do, whatever other host
    devices the VM has. Otherwise every problem found is named, in one line.
    *vfs_known* is False for the engine's view, where a vNIC's VF is picked
    only when it is plugged.
    """
    vnics, decisions = tuple(vnics), tuple(decisions)
    if not vnics:
        return Plan(vm_id, NOTHING, "no SR-IOV vNIC")
    problems = [p for p in (_macless(vnics), vfs_known and _sourceless(vnics), _same_mac(vnics),
                            _blocked(vnics, decisions), _foreign(foreign)) if p]
    if problems:
        return Plan(vm_id, REFUSE, "; ".join(problems), vnics, decisions)
    return Plan(vm_id, MIGRATE, "%d SR-IOV vNIC(s) migratable" % len(vnics), vnics, decisions)


def with_foreign_devices(plan: Plan, foreign) -> Plan:
    """Refuse a migration that would unplug vNICs of a VM no migration can carry."""
    if not plan.vnics or not foreign:
        return plan
    return judge(plan.vm_id, plan.vnics, plan.decisions, foreign)


def make_plan(vm_id: str, vnics, device_custom: dict, vm_custom: Optional[str],
              default: bool, foreign=()) -> Plan:
    """The verdict for a migration of this VM's currently attached vNICs."""
    vnics = tuple(vnics)
    decisions = tuple(decide(v, device_custom, vm_custom, default) for v in vnics)
    return judge(vm_id, vnics, decisions, foreign)
