"""Whether the host itself uses a VF: then it is never offered to a VM.

A VF is the host's when its netdev carries an address, is a port of a
bond, bridge or Open vSwitch, has a macvtap (or VLAN...) on top of it,
or when the VF is bound to a driver that is neither a VF NIC driver nor
vfio-pci (igb_uio, uio_pci_generic: DPDK). :func:`host_use_reasons`
decides from observed facts and is pure; :class:`SysfsProbe` observes
them under a root path, so tests build a fake sysfs tree.

Limits: a DPDK application on vfio-pci looks like a free VF (libvirt
then fails to open its VFIO group); an IPv6 link-local address alone is
not use, since the kernel gives one to every interface that is up.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, replace
from typing import Callable, Optional, Protocol

from .inventory import Excluded, class_reason

log = logging.getLogger(__name__)

# Drivers a free VF may be bound to: a VF NIC driver, or ready for passthrough.
PASSTHROUGH_DRIVERS = frozenset({"vfio-pci"})
VF_NIC_DRIVERS = frozenset({
    "ixgbevf", "iavf", "i40evf", "igbvf", "mlx4_core", "mlx5_core", "bnxt_en", "qede",
    "qlcnic", "bnx2x", "be2net", "cxgb4vf", "enic", "sfc", "sfc_ef100", "nfp", "nfp_netvf",
    "hinic", "liquidio_vf", "octeontx2-nicvf", "rvu_nicvf", "ionic", "txgbevf", "ngbevf",
    "fm10k", "thunder-nicvf",
})
_FREE_VF_DRIVERS = PASSTHROUGH_DRIVERS | VF_NIC_DRIVERS


@dataclass(frozen=True)
class Netdev:
    """What the host does with one of a VF's network interfaces."""

    name: str
    addresses: tuple = ()
    master: Optional[str] = None
    master_kind: Optional[str] = None   # bond, bridge, openvswitch, or None (unknown)
    uppers: tuple = ()                  # (name, kind or None) stacked on it, the master aside


@dataclass(frozen=True)
class VfFacts:
    """What the host shows of one VF (None fields: not known)."""

    pci_class: Optional[int] = None
    driver: Optional[str] = None
    netdevs: tuple = ()


def host_use_reasons(facts: VfFacts) -> list:
    """Why the host holds this VF: an empty list if it does not."""
    klass = class_reason(facts.pci_class)
    if klass:
        return [klass]  # not a NIC VF at all: its driver and netdevs say nothing more
    reasons = []
    driver = facts.driver
    if driver and driver not in _FREE_VF_DRIVERS and not facts.netdevs:
        reasons.append("bound to driver %s" % driver)  # a netdev means a kernel NIC driver
    for nd in facts.netdevs:
        reasons.extend(_netdev_reasons(nd))
    return reasons


def _netdev_reasons(nd: Netdev) -> list:
    out = ["has address %s on %s" % (a, nd.name) for a in nd.addresses if _counts(a)]
    if nd.master:
        if nd.master_kind == "bridge":
            out.append("%s is in bridge %s" % (nd.name, nd.master))
        elif nd.master_kind == "openvswitch":
            out.append("%s is in Open vSwitch (master %s)" % (nd.name, nd.master))
        else:
            out.append("%s is enslaved to %s" % (nd.name, nd.master))
    for name, kind in nd.uppers:
        out.append("has %s %s on %s" % (kind or "upper device", name, nd.name))
    return out


def _counts(address: str) -> bool:
    """An IPv6 link-local address is the kernel's, not the admin's."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return True
    return not (ip.version == 6 and ip.is_link_local)


def host_use_reason(facts: Optional[VfFacts]) -> Optional[str]:
    """One line for ``listVfs``, or None when the host does not use the VF."""
    reasons = host_use_reasons(facts) if facts is not None else []
    return "; ".join(reasons) or None


class HostUseProbe(Protocol):
    def facts(self, vf) -> Optional[VfFacts]:
        """The VF's facts, or None when this host shows nothing of it."""


class SysfsProbe:
    """Reads a VF's facts from sysfs under *root*; addresses from *addresses*.

    *addresses* returns ``{ifname: (address, ...)}`` for the whole host;
    it is called at most once, and only if some VF has a netdev.
    """

    def __init__(self, root: str = "/", addresses: Optional[Callable[[], dict]] = None):
        self.root = root
        self._address_source = addresses
        self._addresses = None

    def facts(self, vf) -> Optional[VfFacts]:
        dev = self._path("sys/bus/pci/devices", vf.address)
        try:
            names = set(os.listdir(os.path.join(dev, "net")))
        except OSError:  # no netdev: a VF on vfio-pci, on DPDK's driver, or no VF here at all
            if not os.path.isdir(dev):
                return None
            names = set()
        if vf.netdev and os.path.isdir(self._path("sys/class/net", vf.netdev)):
            names.add(vf.netdev)
        klass = vf.pci_class  # libvirt's, where it printed one; else sysfs tells
        if klass is None:
            klass = _read_class(os.path.join(dev, "class"))
        return VfFacts(klass, link_name(os.path.join(dev, "driver")),
                       tuple(self._netdev(n) for n in sorted(names)))

    def _path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    def _netdev(self, name: str) -> Netdev:
        base = self._path("sys/class/net", name)
        entries = _listdir(base)
        master = link_name(os.path.join(base, "master")) if "master" in entries else None
        uppers = tuple((u, self._kind(u)) for u in sorted(
            e[len("upper_"):] for e in entries if e.startswith("upper_")) if u != master)
        return Netdev(name, tuple(self.addresses().get(name, ())), master,
                      self._kind(master) if master else None, uppers)

    def _kind(self, name: str) -> Optional[str]:
        base = self._path("sys/class/net", name)
        if name == "ovs-system":  # the datapath every OVS port is enslaved to
            return "openvswitch"
        for sub, kind in (("bonding", "bond"), ("bridge", "bridge"), ("macvtap", "macvtap"),
                          ("ipvtap", "ipvtap")):
            if os.path.isdir(os.path.join(base, sub)):
                return kind
        return _devtype(os.path.join(base, "uevent"))

    def addresses(self) -> dict:
        if self._addresses is None:
            source = self._address_source
            if source is None:
                from . import netlink

                source = netlink.interface_addresses
            self._addresses = source()
        return self._addresses


def exclude_host_used(inv, probe: HostUseProbe):
    """The inventory with every VF the host uses moved to ``excluded``."""
    keep, excluded = [], list(inv.excluded)
    for vf in inv.vfs:
        facts = probe.facts(vf)
        reason = host_use_reason(facts)
        if reason is None:
            keep.append(vf)
            continue
        if facts.pci_class is not None:
            vf = replace(vf, pci_class=facts.pci_class)
        log.info("VF %s (%s VF %d) is not offered: %s", vf.address, vf.pf, vf.index, reason)
        excluded.append(Excluded(vf, reason))
    if len(keep) == len(inv.vfs):
        return inv
    excluded.sort(key=lambda e: (e.vf.pf, e.vf.index))
    return replace(inv, vfs=tuple(keep), excluded=tuple(excluded))


def _listdir(path: str) -> list:
    try:
        return os.listdir(path)
    except OSError:
        return []


def link_name(path: str) -> Optional[str]:
    """The name a sysfs symlink points at (a driver, a master); None if there is none."""
    try:
        return os.path.basename(os.readlink(path)) or None
    except OSError:
        return None


def _read_class(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip(), 16)
    except (OSError, ValueError):
        return None


def _devtype(uevent: str) -> Optional[str]:
    try:
        with open(uevent, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("DEVTYPE="):
                    return line[len("DEVTYPE="):].strip() or None
    except OSError:
        pass
    return None
