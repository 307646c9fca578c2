"""Each lab host's stand-in SR-IOV hardware and its config file.

There are no VFs here, so every host gets a nodedev-xml inventory file:
libvirt node device ``<device>`` elements under a ``<devices>`` root,
shaped exactly as ``virsh nodedev-dumpxml`` prints them for an Intel
82599 (ixgbe) card, and a config file (``[vf] device = emulated``) that
points the product at that inventory, at the host's own libvirtd and at
its VDSM stand-in.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Optional

from lxml import etree

from sriov_host.pci import PciAddress

from . import sasl

PF_PRODUCT = ("0x10fb", "82599ES 10-Gigabit SFI/SFP+ Network Connection")
VF_PRODUCT = ("0x10ed", "82599 Ethernet Controller Virtual Function")
VENDOR = ("0x8086", "Intel Corporation")
NETWORK = "lab-net"
CONFIG_NAME = "sriov-migration.conf"
INVENTORY_NAME = "nodedev.xml"
STATE_DIR = "sriov-migration"


@dataclass(frozen=True)
class Pf:
    name: str
    address: PciAddress
    vfs: tuple
    numa_node: int = 0


def layout(index: int, pfs: int = 2, vfs: int = 8) -> list:
    """PF/VF addresses of host *index*; ixgbe interleaves VFs of its PFs.

    Hosts get different buses (0x05, 0x06, ...) so a timeline shows the
    VF changing across a migration.
    """
    bus = 0x05 + index
    out = []
    for p in range(pfs):
        vf_addrs = []
        for k in range(vfs):
            n = k * pfs + p
            vf_addrs.append(PciAddress(0, bus, 0x10 + n // 8, n % 8))
        out.append(Pf("ens1f%d" % p, PciAddress(0, bus, 0, p), tuple(vf_addrs), numa_node=p % 2))
    return out


def _pci_caps(parent, addr: PciAddress, product, numa_node: int):
    cap = etree.SubElement(parent, "capability", type="pci")
    etree.SubElement(cap, "class").text = "0x020000"
    for name in ("domain", "bus", "slot", "function"):
        etree.SubElement(cap, name).text = str(getattr(addr, name))
    etree.SubElement(cap, "product", id=product[0]).text = product[1]
    etree.SubElement(cap, "vendor", id=VENDOR[0]).text = VENDOR[1]
    return cap


def _device(root, addr: PciAddress, parent: str, driver: str):
    dev = etree.SubElement(root, "device")
    etree.SubElement(dev, "name").text = addr.nodedev_name
    etree.SubElement(dev, "path").text = "/sys/devices/pci0000:00/0000:00:03.0/%s" % (addr,)
    etree.SubElement(dev, "parent").text = parent
    etree.SubElement(etree.SubElement(dev, "driver"), "name").text = driver
    return dev


def _addr_elem(parent, addr: PciAddress):
    etree.SubElement(parent, "address", {k: v for k, v in addr.xml_attrs().items() if k != "type"})


def _pf_device(root, pf: Pf, group: int):
    dev = _device(root, pf.address, "pci_0000_00_03_0", "ixgbe")
    cap = _pci_caps(dev, pf.address, PF_PRODUCT, pf.numa_node)
    vfs = etree.SubElement(cap, "capability", type="virt_functions", maxCount="63")
    for vf in pf.vfs:
        _addr_elem(vfs, vf)
    _addr_elem(etree.SubElement(cap, "iommuGroup", number=str(group)), pf.address)
    etree.SubElement(cap, "numa", node=str(pf.numa_node))


def _vf_device(root, pf: Pf, vf: PciAddress, group: int):
    dev = _device(root, vf, "pci_0000_00_03_0", "ixgbevf")
    cap = _pci_caps(dev, vf, VF_PRODUCT, pf.numa_node)
    _addr_elem(etree.SubElement(cap, "capability", type="phys_function"), pf.address)
    _addr_elem(etree.SubElement(cap, "iommuGroup", number=str(group)), vf)
    etree.SubElement(cap, "numa", node=str(pf.numa_node))


def _net_device(root, pf: Pf, index: int, p: int):
    mac = "90:e2:ba:%02x:00:%02x" % (index, p)
    dev = etree.SubElement(root, "device")
    etree.SubElement(dev, "name").text = "net_%s_%s" % (pf.name, mac.replace(":", "_"))
    etree.SubElement(dev, "path").text = "/sys/devices/pci0000:00/0000:00:03.0/%s/net/%s" % (
        str(pf.address), pf.name)
    etree.SubElement(dev, "parent").text = pf.address.nodedev_name
    cap = etree.SubElement(dev, "capability", type="net")
    etree.SubElement(cap, "interface").text = pf.name
    etree.SubElement(cap, "address").text = mac
    etree.SubElement(cap, "link", speed="10000", state="up")
    etree.SubElement(cap, "capability", type="80203")


def nodedev_xml(index: int, pfs: int = 2, vfs: int = 8) -> str:
    """The inventory document of host *index*."""
    root = etree.Element("devices")
    group = 30
    for p, pf in enumerate(layout(index, pfs, vfs)):
        _pf_device(root, pf, group)
        _net_device(root, pf, index, p)
        for vf in pf.vfs:
            group += 1
            _vf_device(root, pf, vf, group)
        group += 1
    return etree.tostring(root, encoding="unicode", pretty_print=True)


def config_text(host, inventory_path: Optional[str], ledger_path: str, port: int, pf_names,
                vdsm_port: int = 54321, bridge: Optional[str] = None) -> str:
    """The host's INI config: its VFs, its own libvirtd and address, short timeouts.

    With an *inventory_path* the VFs are emulated ones from that file;
    without, they are real VFs from libvirt's nodedev tree, rendered as
    ``hostdev`` (the real-VF lab). ``[networks]`` names the host's own PFs.
    ``[vdsm]`` points ``SRIOV.migrate`` at the host's VDSM stand-in
    (:mod:`sriov_lab.vdsm.api`) on the host's own address. *bridge*
    is the host's side of the lab's wire (:mod:`sriov_lab.datapath`).
    ``[libvirt]`` carries the host's SASL credentials (:mod:`sriov_lab.sasl`),
    as VDSM's would be on an oVirt host.
    """
    if inventory_path:
        vfs = "[inventory]\nsource = nodedev-xml:%s\n\n[vf]\ndevice = emulated\nmodel = virtio\n%s\n" % (
            inventory_path, "bridge = %s\n" % bridge if bridge else "")
    else:
        vfs = "[inventory]\nsource = libvirt\n\n[vf]\ndevice = hostdev\n\n"
    return (
        "[libvirt]\nuri = {uri}\nusername = {user}\npassword_file = {password_file}\n\n"
        "[ledger]\npath = {ledger}\n\n"
        "{vfs}"
        "[policy]\nmigratable_by_default = false\n\n"
        "[timeouts]\nunplug = 5\nplug = 5\nreservation_ttl = 60\n"
        "rollback_grace = 6\nreconcile_interval = 0.5\n\n"
        "[networks]\n{net} = {pfs}\n\n"
        "[server]\nlisten = {address}\nport = {port}\ntls = false\n\n"
        "[vdsm]\nclient = lab\naddress = {address}\nport = {vdsm_port}\n"
    ).format(uri=host.uri, user=sasl.USERNAME, password_file=sasl.password_path(host.root),
             ledger=ledger_path, vfs=vfs, net=NETWORK,
             pfs=", ".join(pf_names), port=port, address=host.address,
             vdsm_port=vdsm_port)


def free_port(addresses=("127.0.0.1",), attempts: int = 50) -> int:
    """A TCP port free right now on every one of *addresses* (bound soon after)."""
    for _ in range(attempts):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
            if all(_bindable(a, port) for a in addresses[1:]):
                return port
    raise OSError("no TCP port free on all of %s" % ", ".join(addresses))


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def write_host_files(host, index: int, pfs: int = 2, vfs: int = 8, vdsm_port: int = 54321,
                     real_pf: Optional[str] = None, bridge: Optional[str] = None,
                     port: Optional[int] = None) -> None:
    """Write the inventory and config of *host*; remember their paths on it.

    With *real_pf* (the real-VF lab) the host owns that real PF and its
    VFs come from libvirt; no inventory file is written.
    """
    conf = os.path.join(host.root, CONFIG_NAME)
    port = port or free_port((host.address,))  # a free one, unless the host has its own namespace
    # The host's /var/lib/vdsm/sriov-migration (the unit's StateDirectory)
    ledger = os.path.join(host.root, STATE_DIR, "ledger.sqlite")
    if real_pf:
        text = config_text(host, None, ledger, port, (real_pf,), vdsm_port)
        host.extra.update(real_pf=real_pf, bridge=bridge)  # the standbys' bridge, not [vf]'s
    else:
        inv = os.path.join(host.root, INVENTORY_NAME)
        with open(inv, "w", encoding="utf-8") as f:
            f.write(nodedev_xml(index, pfs, vfs))
        text = config_text(host, inv, ledger, port, [pf.name for pf in layout(index, pfs, vfs)],
                           vdsm_port, bridge)
        host.extra.update(inventory=inv, layout=layout(index, pfs, vfs), bridge=bridge)
    with open(conf, "w", encoding="utf-8") as f:
        f.write(text)
    host.extra.update(config=conf, service_port=port, vdsm_port=vdsm_port, index=index)
