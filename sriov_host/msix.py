"""Whether a guest's driver has taken up a passed-through VF, read from the VF's MSI-X enable bit.

A failover guest keeps receiving on its virtio standby until its driver
has probed the new VF; announcing the MAC from the VF's PF before then
pulls the traffic to a port the guest cannot receive on yet (and a guest
that never loads a driver for the VF would never get it back). The host
sees the moment: a VF driver enables MSI-X while probing (igbvf, iavf,
mlx5), and QEMU's VFIO enables it on the physical VF at once. The host
can read that bit from the VF's config space in sysfs, which vfio-pci
leaves readable.

The bit says so only while the VF is bound to a VFIO driver: a free VF
on its host driver (iavf, igbvf in the lab) has MSI-X enabled by that
driver, and libvirt rebinds the VF to vfio-pci for the attach, which
clears it.

The service runs as vdsm with CAP_NET_ADMIN and CAP_NET_RAW only, and
without CAP_SYS_ADMIN the kernel hands out only the first 64 bytes of
config space, where no capability list lives. So the first signal read
is one any user can: the VF's ``msi_irqs`` directory, which the kernel's
MSI code creates (one entry per vector) when vfio-pci enables MSI or
MSI-X for the guest and removes when it disables it; ``msi_bus``, present
wherever the kernel has MSI support, says its absence means "not
enabled". The config-space bit is read only where that cannot tell.

:func:`enabled` is pure (config space bytes in, the bit out);
:func:`enabled_on`, :func:`vectors_on` and :func:`taken_up` read sysfs.
"""

from __future__ import annotations

import os
from typing import Optional

from .hostuse import link_name

SYSFS_PCI = "/sys/bus/pci/devices"
_STATUS, _STATUS_CAP_LIST = 0x06, 0x10
_CAP_POINTER = 0x34
_CAP_MSIX = 0x11
_MSIX_ENABLE = 0x8000
_MAX_CAPS = 48  # a malformed list must not loop: 256 bytes hold at most 48 capabilities


def enabled(config: bytes) -> Optional[bool]:
    """The MSI-X Enable bit of a PCI function; None if its config space has no MSI-X capability."""
    if len(config) < 64 or not config[_STATUS] & _STATUS_CAP_LIST:
        return None
    ptr = config[_CAP_POINTER] & 0xFC
    for _ in range(_MAX_CAPS):
        if ptr < 0x40 or ptr + 4 > len(config):
            return None
        if config[ptr] == _CAP_MSIX:
            return bool(int.from_bytes(config[ptr + 2:ptr + 4], "little") & _MSIX_ENABLE)
        ptr = config[ptr + 1] & 0xFC
    return None


def enabled_on(address: str, sysfs: str = SYSFS_PCI) -> Optional[bool]:
    """:func:`enabled` for the VF at *address*; None where its config space cannot be read."""
    try:
        with open("%s/%s/config" % (sysfs, address), "rb") as f:
            return enabled(f.read(256))
    except OSError:
        return None


def vectors_on(address: str, sysfs: str = SYSFS_PCI) -> Optional[bool]:
    """Whether the VF at *address* has MSI vectors enabled, from ``msi_irqs``; readable by anyone.

    None where the kernel shows no MSI support for it (no ``msi_bus``).
    """
    dev = "%s/%s" % (sysfs, address)
    try:
        return bool(os.listdir(dev + "/msi_irqs"))
    except FileNotFoundError:
        return False if os.path.exists(dev + "/msi_bus") else None
    except OSError:
        return None


def taken_up(address: str, sysfs: str = SYSFS_PCI) -> Optional[bool]:
    """Whether a guest's driver has taken up the VF at *address*; None where sysfs cannot tell.

    False while the VF is bound to a host driver, not a VFIO one
    (vfio-pci, or a variant such as mlx5_vfio_pci).
    """
    driver = link_name("%s/%s/driver" % (sysfs, address))
    if driver is not None and "vfio" not in driver:
        return False
    vectors = vectors_on(address, sysfs)
    return vectors if vectors is not None else enabled_on(address, sysfs)
