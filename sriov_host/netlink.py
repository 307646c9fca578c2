"""Best-effort VF settings and interface addresses from the kernel through netlink.

Only real SR-IOV hosts have them; anywhere else the answer is None and
callers skip the check. pyroute2 costs ~140 ms to import, so it is
imported only when a check is actually made; the address dump, which
the inventory needs on hook paths too, speaks rtnetlink itself.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Optional

log = logging.getLogger(__name__)

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


# our name -> (IFLA_VF_* attribute, its field, pyroute2's set key)
_SETTING_ATTRS = {
    "spoofchk": ("IFLA_VF_SPOOFCHK", "spoofchk"),
    "trust": ("IFLA_VF_TRUST", "trust"),
    "link_state": ("IFLA_VF_LINK_STATE", "link_state"),
    "query_rss": ("IFLA_VF_RSS_QUERY_EN", "rss_query_en"),
}


def settings_from_vf_info(info):
    """A :class:`~sriov_host.vfsettings.VfSettings` from one IFLA_VF_INFO (pyroute2 nla)."""
    from .vfsettings import LINK_STATES, VfSettings

    kw = {}
    for name, (attr, key) in _SETTING_ATTRS.items():
        nla = info.get_attr(attr)
        value = nla.get(key) if nla is not None else None
        if value is None or value == _UNSET:
            continue
        if name == "link_state":
            if value < len(LINK_STATES):
                kw[name] = LINK_STATES[value]
        else:
            kw[name] = bool(value)
    rate = info.get_attr("IFLA_VF_RATE")
    if rate is not None:
        for key in ("min_tx_rate", "max_tx_rate"):
            if rate.get(key) not in (None, _UNSET):
                kw[key] = rate.get(key)
    return VfSettings(**kw)


def _vf_info(ipr, pf: str, index: int):
    for link in ipr.link("get", ifname=pf, ext_mask=1):
        vfinfo_list = link.get_attr("IFLA_VFINFO_LIST")
        for info in (vfinfo_list.get_attrs("IFLA_VF_INFO") if vfinfo_list is not None else ()):
            mac = info.get_attr("IFLA_VF_MAC")
            if mac is not None and mac.get("vf") == index:
                return info
    return None


def read_vf_settings(pf: str, index: int):
    """VF *index*'s settings as PF *pf* holds them, or None where netlink cannot tell."""
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            info = _vf_info(ipr, pf, index)
    except Exception as e:  # noqa: BLE001 - no such PF, no pyroute2: unknown, not wrong
        log.warning("cannot read the settings of VF %s of %s: %s", index, pf, e)
        return None
    return settings_from_vf_info(info) if info is not None else None


def apply_vf_settings(pf: str, index: int, changes) -> dict:
    """Set each ``(name, value)`` of :func:`vfsettings.to_change` on VF *index* through PF *pf*.

    One request per setting, so one the PF driver refuses does not take
    the others with it. Returns ``{name: why}`` for each refused one.
    """
    from .vfsettings import LINK_STATES

    refused = {}
    try:
        from pyroute2 import IPRoute

        ipr = IPRoute()
    except Exception as e:  # noqa: BLE001 - every setting is then refused, by name
        return {name: "netlink unavailable: %s" % e for name, _ in changes}
    with ipr:
        try:
            pf_index = ipr.link_lookup(ifname=pf)[0]
        except Exception as e:  # noqa: BLE001
            return {name: "PF %s not found: %s" % (pf, e) for name, _ in changes}
        for name, value in changes:
            if name == "rate":
                vf = {"vf": index, "rate": {"min_tx_rate": value[0], "max_tx_rate": value[1]}}
            elif name == "link_state":
                vf = {"vf": index, "link_state": LINK_STATES.index(value)}
            elif name == "vlan":  # only vfclean puts one back; libvirt sets a vNIC's own
                vf = {"vf": index, "vlan": int(value)}
            else:
                vf = {"vf": index, _SETTING_ATTRS[name][1]: int(value)}
            try:
                ipr.link("set", index=pf_index, vf=vf)
            except Exception as e:  # noqa: BLE001 - NetlinkError(EOPNOTSUPP/EINVAL...): the driver's no
                refused[name] = _one_line(str(e)) or type(e).__name__
    return refused


def vf_index(pf: str, address: str, sysfs: str = "/sys") -> Optional[int]:
    """Which VF of *pf* the PCI function *address* is (its ``virtfnN`` link), or None."""
    import os

    base = os.path.join(sysfs, "class", "net", pf, "device")
    try:
        names = os.listdir(base)
    except OSError:
        return None
    for name in names:
        if name.startswith("virtfn") and name[6:].isdigit():
            if os.path.basename(os.path.realpath(os.path.join(base, name))) == address:
                return int(name[6:])
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


_NLMSG = struct.Struct("=IHHII")     # len, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, ifindex
_RTA = struct.Struct("=HH")          # len, type
_NLMSG_ERROR, _NLMSG_DONE, _RTM_NEWADDR, _RTM_GETADDR = 2, 3, 20, 22
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFA_ADDRESS, _IFA_LOCAL = 1, 2


def interface_addresses(timeout: float = 2.0) -> dict:
    """``{ifname: (address, ...)}`` of every interface (IPv4 and IPv6), from one dump.

    Empty when netlink cannot tell (logged): the caller then knows of no
    address, as where there is no sysfs.
    """
    try:
        by_index = _dump_addresses(timeout)
        names = dict(socket.if_nameindex())
    except OSError as e:
        log.warning("cannot read interface addresses through netlink: %s", e)
        return {}
    return {names[i]: tuple(addrs) for i, addrs in by_index.items() if i in names}


def _dump_addresses(timeout: float) -> dict:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        req = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(_NLMSG.pack(_NLMSG.size + len(req), _RTM_GETADDR,
                              _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + req)
        out = {}
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise OSError("netlink closed the address dump")
            for kind, payload in _messages(data):
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR:
                    errno = -struct.unpack_from("=i", payload)[0]
                    raise OSError(errno, "netlink address dump failed")
                if kind == _RTM_NEWADDR:
                    parsed = parse_newaddr(payload)
                    if parsed is not None:
                        out.setdefault(parsed[0], []).append(parsed[1])


def _messages(data: bytes):
    """``(type, payload)`` of each netlink message in one datagram."""
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            raise OSError("bad netlink message length %d" % length)
        yield kind, data[offset + _NLMSG.size:offset + length]
        offset += (length + 3) & ~3


def parse_newaddr(payload: bytes) -> Optional[tuple]:
    """``(ifindex, address)`` of one RTM_NEWADDR payload; None if it has no address."""
    family, _plen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
    attrs, offset = {}, _IFADDRMSG.size
    while offset + _RTA.size <= len(payload):
        length, kind = _RTA.unpack_from(payload, offset)
        if length < _RTA.size:
            break
        attrs[kind] = payload[offset + _RTA.size:offset + length]
        offset += (length + 3) & ~3
    raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)  # IFA_LOCAL: ours on a point-to-point link
    if family not in (socket.AF_INET, socket.AF_INET6) or raw is None:
        return None
    try:
        return index, socket.inet_ntop(family, raw)
    except (ValueError, OSError):
        return None
