"""Pure decisions of the engine adapter: no SDK, no network.

The engine's objects are first turned into the small views below (see
``engine.py``), so which profile a name means, whether a VM may migrate,
what the destination must reserve and how a migration is going can all
be tested with plain data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from sriov_host.domxml import KIND_HOSTDEV
from sriov_host.domxml import Vnic as HostVnic
from sriov_host.policy import NOTHING, PROPERTY, REFUSE, Decision, judge, parse_bool

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
DEFAULT_SERVICE_PORT = 54325
SETTLING = ("migrating", "powering_up", "wait_for_launch", "restoring_state")


class LookupFailed(Exception):
    """A name matched nothing, or more than one thing."""


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    passthrough: bool
    migratable: Optional[bool]
    network_id: Optional[str] = None
    network: Optional[str] = None
    vlan: Optional[int] = None
    failover_id: Optional[str] = None
    custom: dict = field(default_factory=dict)

    @property
    def property_value(self) -> Optional[bool]:
        """The ``sriov_migratable`` custom property, as hosts would read it."""
        raw = self.custom.get(PROPERTY)
        return None if raw is None else parse_bool(raw)


@dataclass(frozen=True)
class Vnic:
    id: str
    name: str
    mac: Optional[str]
    interface: Optional[str]
    profile: Optional[Profile]
    plugged: Optional[bool] = None

    @property
    def alias(self) -> str:
        """VDSM names a user device ``ua-<device id>``; the engine matches on it."""
        return "ua-%s" % self.id

    @property
    def passthrough(self) -> bool:
        if self.interface == "pci_passthrough":
            return True
        return bool(self.profile and self.profile.passthrough)

    @property
    def migratable(self) -> bool:
        return bool(self.profile and self.profile.migratable)


@dataclass(frozen=True)
class HostDevice:
    """A host device attached to the VM itself (``/vms/{id}/hostdevices``), not a vNIC."""

    name: str  # the engine's (libvirt's nodedev) name, e.g. pci_0000_05_10_2
    capability: Optional[str] = None  # pci, usb_device, scsi...
    vf: bool = False  # it has a physical function: a VF passed through without a vNIC

    @property
    def pci_address(self) -> Optional[str]:
        """``pci_0000_05_10_2`` -> ``0000:05:10.2``; None for anything else."""
        m = NODEDEV_PCI_RE.match(self.name or "")
        return "%s:%s:%s.%s" % m.groups() if m else None


NODEDEV_PCI_RE = re.compile(r"^pci_([0-9a-f]{4})_([0-9a-f]{2})_([0-9a-f]{2})_([0-7])$")


@dataclass(frozen=True)
class Verdict:
    migratable: bool
    reason: str
    vnics: tuple = ()
    blockers: tuple = ()


def decide_vm(vnics: Sequence[Vnic], host_devices: Sequence[HostDevice] = ()) -> Verdict:
    """The hosts' policy (:func:`sriov_host.policy.judge`) on the engine's view of the VM.

    The engine's migratable flag of each plugged passthrough vNIC's profile
    stands where a host reads ``sriov_migratable``; a VF attached as a plain
    host device has no MAC, and any other host device cannot migrate: the
    same rules, so check-vm never says yes where a host says no.
    """
    sriov = tuple(v for v in vnics if v.passthrough and v.plugged is not False)
    vfs = [d for d in host_devices if d.vf]
    host_vnics = [_host_vnic(v) for v in sriov] + [_host_vf(d) for d in vfs]
    decisions = [Decision(v.migratable, "profile flag migratable=%s" % str(v.migratable).lower())
                 for v in sriov] + [Decision(True, "no profile: refused for its missing MAC") for _ in vfs]
    foreign = ["%s host device %s" % (d.capability or "?", d.name) for d in host_devices if not d.vf]
    plan = judge("", host_vnics, decisions, foreign, vfs_known=False)
    blockers = tuple(v for v in sriov if not v.migratable)
    if plan.verdict == NOTHING:
        return Verdict(True, "no passthrough vNICs", sriov)
    if plan.verdict == REFUSE:
        return Verdict(False, plan.reason, sriov, blockers)
    return Verdict(True, "all %d passthrough vNIC(s) migratable" % len(sriov), sriov)


def _host_vnic(vnic: Vnic) -> HostVnic:
    return HostVnic(alias=vnic.alias, mac=vnic.mac,
                    extra={"label": "%s (profile %s)" % (vnic.name, _profile_name(vnic))})


def _host_vf(device: HostDevice) -> HostVnic:
    return HostVnic(alias=None, mac=None, kind=KIND_HOSTDEV, vf_address=device.pci_address,
                    extra={"label": "host device %s" % device.name})


def _profile_name(vnic: Vnic) -> str:
    return vnic.profile.name if vnic.profile else "<none>"


def reservation_nics(vnics: Sequence[Vnic]) -> list:
    """The ``nics`` param of ``SRIOV.reserveVfs`` for the passthrough vNICs.

    An unplugged vNIC holds no VF and gets none on the destination (neither
    the engine nor the hooks plug it), so it needs no reservation.
    """
    out = []
    for v in vnics:
        if not v.passthrough or v.plugged is False:
            continue
        profile = v.profile
        out.append({
            "mac": v.mac,
            "alias": v.alias,
            "vlan": profile.vlan if profile else None,
            "network": profile.network if profile else None,
        })
    return out


def plugged_passthrough(vnics: Sequence[Vnic]) -> tuple:
    """The passthrough vNICs the engine shows plugged: all a failed migration may re-plug."""
    return tuple(v for v in vnics if v.passthrough and v.plugged is True)


def nics_to_replug(plugged_before: Sequence[Vnic], now: Sequence[Vnic]) -> tuple:
    """Those of *plugged_before* the engine now shows unplugged, by vNIC id.

    A vNIC unplugged before the migration was never in *plugged_before*, so
    it stays as the admin left it; one deleted meanwhile is not in *now*.
    """
    ids = {v.id for v in plugged_before}
    return tuple(v for v in now if v.id in ids and v.plugged is False)


def replug_state(status: Optional[str], host_id: Optional[str], src: str, dst: str) -> tuple:
    """After a failed migration, may we re-plug? ("wait"|"replug"|"skip", why)."""
    if status in SETTLING:
        return "wait", status
    if status == "up" and host_id == dst:
        return "skip", "the VM reached the destination after all; the engine plugs its vNICs there"
    if host_id == src or status == "down":
        return "replug", ("VM is %s on its source host" % status) if host_id else "VM is down"
    return "skip", "VM is %s on another host (%s) than its source" % (status, host_id)


def pick_profile(profiles: Sequence[Profile], key: str) -> Profile:
    """Find a profile by id, ``name`` or ``network/name``; refuse ambiguity."""
    by_id = [p for p in profiles if p.id == key]
    if by_id:
        return by_id[0]
    matches = [p for p in profiles if p.name == key]
    if not matches and "/" in key:
        network, name = key.split("/", 1)
        matches = [p for p in profiles if p.name == name and p.network == network]
    if not matches:
        raise LookupFailed("no vNIC profile named or with id %r" % key)
    if len(matches) > 1:
        listed = "; ".join("%s/%s (id %s)" % (p.network or "?", p.name, p.id) for p in matches)
        raise LookupFailed("vNIC profile name %r is ambiguous; use NETWORK/NAME or an id: %s"
                           % (key, listed))
    return matches[0]


def updated_custom(custom: dict, on: bool) -> dict:
    """Profile custom properties with ``sriov_migratable`` set, or removed."""
    out = {k: v for k, v in custom.items() if k != PROPERTY}
    if on:
        out[PROPERTY] = "true"
    return out


def refuse_reason(profile: Profile, on: bool) -> Optional[str]:
    """Why set-migratable must not touch *profile*, or None."""
    if not profile.passthrough:
        return ("vNIC profile %s is not a passthrough profile (pass_through mode is disabled); "
                "'migratable' applies only to SR-IOV passthrough profiles, and the engine "
                "would silently ignore it" % profile.name)
    return None


def service_endpoint(address: str, default_port: int = DEFAULT_SERVICE_PORT) -> tuple:
    """Split a host record's address into (host, port) for the host service.

    An engine keeps a bare name or IP; a trailing ``:PORT`` (``[v6]:PORT``)
    is honoured so a lab can run two services on one machine.
    """
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port)
    return address, default_port


def migration_state(status: str, host_id: Optional[str], src: str, dst: str,
                    seen_migrating: bool, settled: bool) -> tuple:
    """Read one poll of the VM: ("wait"|"done"|"failed", why).

    *settled* says the grace time after the migrate action has passed, so a
    VM that is up on its source without ever having shown ``migrating``
    counts as a migration that ended before we saw it.
    """
    if status == "up" and host_id == dst:
        return "done", "VM is up on the destination"
    if status in SETTLING:
        return "wait", status
    if status == "up" and host_id == src:
        if seen_migrating or settled:
            return "failed", "migration ended and the VM is still up on its source host"
        return "wait", "migration starting"
    if status == "up":
        return "failed", "VM is up on another host (%s) than the destination" % host_id
    return "failed", "VM status is %s" % status


def looks_like_id(text: str) -> bool:
    return bool(UUID_RE.match(text))
