"""Runs inside the real-VF lab's L1 host: this project's hostdev path on a real VF.

``python3 -m sriov_lab.realvf_l1`` (the checkout is on L1's /src). The
inventory comes from libvirt's nodedev tree (``[inventory] source =
libvirt``), the vNIC is rendered as VDSM's ``<interface type='hostdev'>``
with MAC and VLAN and plugged by :func:`sriov_host.devices.attach_and_wait`
into a small domain, and the VF is read back through the PF (``ip link``
and :mod:`sriov_host.netlink`). The domain has no OS, so the VF is given
back by destroying it (the guest-side unplug is the real-VF demo's, with
an L2 OS). Prints one JSON line for :mod:`sriov_lab.realvf`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from sriov_host import config, devices, domxml, hostinventory, libvirtconn, netlink

from .realvf import parse_vf_lines

MAC, VLAN = "52:54:00:aa:00:01", 42
ALIAS = "ua-5eed0000-0000-4000-8000-000000000001"
CONFIG = ("[libvirt]\nuri = qemu:///system\n[inventory]\nsource = libvirt\n[vf]\ndevice = hostdev\n"
          "[ledger]\npath = /tmp/ledger.sqlite\n")
DOMAIN = """<domain type='qemu'><name>l2-probe</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>
<controller type='pci' index='0' model='pcie-root'/>
<controller type='pci' index='1' model='pcie-root-port'/>
<controller type='pci' index='2' model='pcie-root-port'/>
<memballoon model='none'/></devices></domain>"""


def _driver(address: str) -> str:
    return os.path.basename(os.path.realpath("/sys/bus/pci/devices/%s/driver" % address))


def _ip_link(pf: str, index: int) -> list:
    text = subprocess.run(["ip", "link", "show", pf], capture_output=True, text=True).stdout
    return list(parse_vf_lines(text).get(index, (None, None)))


def _vf_netdev_mac(address: str) -> str:
    """The MAC igbvf gave the VF's own netdev (random when the PF never answered its reset)."""
    base = "/sys/bus/pci/devices/%s/net" % address
    try:
        with open(os.path.join(base, os.listdir(base)[0], "address")) as f:
            return f.read().strip()
    except (OSError, IndexError):
        return "-"


def _igbvf_agrees(inv) -> list:
    """``[address, igbvf's MAC, the PF's vf N MAC]`` per VF on igbvf.

    igbvf learns its MAC from the PF over the VF mailbox; when that fails
    it takes a random one the PF does not know, so the two differ.
    """
    out = []
    for vf in inv.vfs:
        if _driver(vf.address) == "igbvf":
            out.append([vf.address, _vf_netdev_mac(vf.address), _ip_link(vf.pf, vf.index)[0]])
    return out


def main() -> int:
    cfg = config.loads(CONFIG)
    conn = libvirtconn.open_connection(cfg, use_vdsm=False)
    inv = hostinventory.load(cfg, conn)
    vf = inv.vfs[0]
    report = {"inventory": [v.address for v in inv.vfs], "mac": MAC, "vlan": VLAN,
              "vf": {"address": vf.address, "pf": vf.pf, "index": vf.index},
              "igbvf_before": _igbvf_agrees(inv)}
    dom = conn.createXML(DOMAIN, 0)
    try:
        vnic = domxml.Vnic(alias=ALIAS, mac=MAC, vf_address=vf.address, vlan=VLAN)
        xml = domxml.render_attach(vnic, vf.address, mode=domxml.MODE_HOSTDEV)
        report["plug_ms"] = devices.attach_and_wait(dom, xml, ALIAS, 60)
        report["driver_plugged"] = _driver(vf.address)
        report["ip_link_plugged"] = _ip_link(vf.pf, vf.index)
        report["netlink_plugged"] = netlink.vf_settings(vf.pf, vf.index)
    finally:
        dom.destroy()
    for _ in range(100):  # libvirt gives a managed VF back to its host driver
        if _driver(vf.address) != "vfio-pci":
            break
        time.sleep(0.1)
    report["driver_released"] = _driver(vf.address)
    report["ip_link_released"] = _ip_link(vf.pf, vf.index)
    report["igbvf_released"] = [_vf_netdev_mac(vf.address), report["ip_link_released"][0]]
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
