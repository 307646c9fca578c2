"""Best-effort VF settings from the kernel through netlink (pyroute2).

Only real SR-IOV hosts have them; anywhere else the answer is None and
callers skip the check. pyroute2 costs ~140 ms to import, so it is
imported only when a check is actually made.
"""

from __future__ import annotations

from typing import Optional

_UNSET = 4294967295  # pyroute2's reading of a field the kernel did not send


def vfs_of_pf(pf: str) -> dict:
    """``{vf index: (mac, vlan)}`` for one PF; empty where netlink cannot tell."""
    try:
        from pyroute2 import IPRoute
    except ImportError:
        return {}
    try:
        with IPRoute() as ipr:
            links = ipr.link("get", ifname=pf, ext_mask=1)
    except Exception:  # noqa: BLE001 - no such PF, no permission: unknown, not wrong
        return {}
    out = {}
    for link in links:
        vfinfo_list = link.get_attr("IFLA_VFINFO_LIST")
        if vfinfo_list is None:
            continue
        for info in vfinfo_list.get_attrs("IFLA_VF_INFO"):
            mac_attr = info.get_attr("IFLA_VF_MAC")
            if mac_attr is None:
                continue
            vlan_attr = info.get_attr("IFLA_VF_VLAN")
            vlan = vlan_attr.get("vlan") if vlan_attr else None
            out[mac_attr.get("vf")] = (mac_attr.get("mac"), None if vlan in (None, _UNSET, 0) else vlan)
    return out


def kernel_vf_settings(pfs) -> dict:
    """``{(pf, index): (mac, vlan)}`` for every PF netlink knows (best effort)."""
    return {(pf, index): value for pf in pfs for index, value in vfs_of_pf(pf).items()}


def vf_settings(pf: str, index: int) -> Optional[tuple]:
    """``(mac, vlan)`` of VF *index* on PF *pf*, or None if unknown."""
    return vfs_of_pf(pf).get(index)
