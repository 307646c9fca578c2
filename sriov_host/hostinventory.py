"""This host's VF inventory as the hooks and the service use it.

The node device listing (:mod:`sriov_host.inventory`, pure parsing) less,
where VFs are real, the VFs the host itself uses (:mod:`sriov_host.hostuse`,
which reads sysfs). Apart from both so neither imports the other.
"""

from __future__ import annotations

from . import hostuse, inventory
from .errors import InventoryError
from .inventory import Inventory


def load(cfg, conn=None, probe=None) -> Inventory:
    """The inventory the config names; *conn* is needed only for ``libvirt``.

    With real VFs (``[vf] device = hostdev``) the VFs the host uses are
    excluded too, as *probe* (default: this host's sysfs) tells; a VF
    with no sysfs entry, as in the lab, has no host use known.
    """
    path = cfg.nodedev_xml_path
    if path:
        inv = inventory.load_nodedev_file(path)
    elif conn is None:
        raise InventoryError("inventory source 'libvirt' needs a libvirt connection")
    else:
        inv = inventory.load_from_libvirt(conn)
    if cfg.vf_device != "hostdev":
        return inv
    return hostuse.exclude_host_used(inv, probe if probe is not None else hostuse.SysfsProbe())
