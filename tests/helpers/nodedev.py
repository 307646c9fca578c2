"""Generate libvirt node device XML for a host with SR-IOV NICs.

Independent of ``sriov_host`` so the tests and benchmarks can check the
product against an expectation they did not derive from it. The XML is
what ``virsh nodedev-dumpxml`` prints for PFs, their VFs and the PFs'
``net`` devices, so one document serves two uses:

- :func:`node_xml` wraps it in ``<node>`` for libvirt's test driver
  (``test:///abs/path/node.xml``), optionally with ``<domain>``s;
- :func:`devices_xml` wraps it in ``<devices>`` for ``nodedev-xml:PATH``.

Addressing follows a card with ARI: PF *p* is ``0000:BB:00.0`` with
``BB = base_bus + 2p`` and its VFs fill the next bus, eight functions a
slot, so 128 VFs stay within PCI's 32 slots.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PfLayout:
    name: str           # netdev name of the PF, e.g. ens1f0
    address: str        # 0000:3b:00.0
    vfs: tuple          # VF addresses in virtfn order
    numa_node: int


def pci(domain: int, bus: int, slot: int, function: int) -> str:
    return "%04x:%02x:%02x.%x" % (domain, bus, slot, function)


def nodedev_name(address: str) -> str:
    return "pci_" + address.replace(":", "_").replace(".", "_")


def layout(pfs: int = 8, vfs: int = 128, base_bus: int = 0x3b, numa_nodes: int = 2) -> list:
    out = []
    for p in range(pfs):
        bus = base_bus + 2 * p
        vf_addrs = tuple(pci(0, bus + 1, k // 8, k % 8) for k in range(vfs))
        out.append(PfLayout("ens%df%d" % (1 + p // 2, p % 2), pci(0, bus, 0, 0), vf_addrs,
                            p % numa_nodes))
    return out


def _split(address: str):
    dom, bus, rest = address.split(":")
    slot, fn = rest.split(".")
    return int(dom, 16), int(bus, 16), int(slot, 16), int(fn, 16)


def _addr_elem(address: str) -> str:
    return ("<address domain='0x%04x' bus='0x%02x' slot='0x%02x' function='0x%x'/>"
            % _split(address))


NIC_CLASS = "0x020000"      # Ethernet controller
CRYPTO_CLASS = "0x0b4000"   # co-processor, as Intel QAT functions show


def _pci_device(address: str, parent: str, driver: str, product: str, inner: str,
                numa_node, pci_class=NIC_CLASS) -> str:
    """One PCI ``<device>``; *pci_class* None leaves ``<class>`` out (libvirt < 6.x)."""
    dom, bus, slot, fn = _split(address)
    numa = "" if numa_node is None else "\n    <numa node='%d'/>" % numa_node
    klass = "" if pci_class is None else "    <class>%s</class>\n" % pci_class
    return (
        "<device>\n"
        "  <name>%s</name>\n"
        "  <path>/sys/devices/pci0000:%02x/0000:%02x:00.0/%s</path>\n"
        "  <parent>%s</parent>\n"
        "  <driver>\n    <name>%s</name>\n  </driver>\n"
        "  <capability type='pci'>\n"
        "%s"
        "    <domain>%d</domain>\n    <bus>%d</bus>\n    <slot>%d</slot>\n"
        "    <function>%d</function>\n"
        "    %s\n"
        "    <vendor id='0x8086'>Intel Corporation</vendor>\n"
        "    %s%s\n"
        "  </capability>\n"
        "</device>\n"
        % (nodedev_name(address), bus & 0xf0, bus & 0xf0, address, parent, driver, klass,
           dom, bus, slot, fn, product, inner, numa))


_NIC_PF = ("ice", "<product id='0x1592'>Ethernet Controller E810-C for QSFP</product>")
_NIC_VF = ("iavf", "<product id='0x1889'>Ethernet Adaptive Virtual Function</product>")
_QAT_PF = ("c6xx", "<product id='0x37c8'>C62x Chipset QuickAssist Technology</product>")
_QAT_VF = ("c6xxvf", "<product id='0x37c9'>C62x Chipset QuickAssist Technology Virtual Function"
           "</product>")


def pf_device(pf: PfLayout, pci_class=NIC_CLASS, kind=_NIC_PF) -> str:
    vfs = "\n      ".join(_addr_elem(a) for a in pf.vfs)
    inner = ("<capability type='virt_functions' maxCount='%d'>\n      %s\n    </capability>"
             % (max(len(pf.vfs), 1), vfs))
    return _pci_device(pf.address, "computer", kind[0], kind[1], inner, pf.numa_node, pci_class)


def vf_device(pf: PfLayout, address: str, numa: bool = True, pci_class=NIC_CLASS,
              kind=_NIC_VF) -> str:
    inner = "<capability type='phys_function'>\n      %s\n    </capability>" % _addr_elem(pf.address)
    return _pci_device(address, nodedev_name(pf.address), kind[0], kind[1],
                       inner, pf.numa_node if numa else None, pci_class)


def crypto_layout(address: str = "0000:1a:00.0", vfs: int = 4, numa_node: int = 0) -> PfLayout:
    """A QAT-like PF: no netdev, so the product names it by its PCI address.

    Its VFs share its bus from slot 1 on, as a C62x's do. Bus 0x1a sorts
    before every NIC PF of :func:`layout`, and so does its name.
    """
    dom, bus, _slot, _fn = _split(address)
    return PfLayout(address, address, tuple(pci(dom, bus, 1 + k // 8, k % 8) for k in range(vfs)),
                    numa_node)


def crypto_devices(address: str = "0000:1a:00.0", vfs: int = 4, pci_class=CRYPTO_CLASS,
                   vf_class=None) -> list:
    """A crypto PF and its VFs (class *pci_class*, VFs *vf_class* or the same)."""
    pf = crypto_layout(address, vfs)
    vf_class = pci_class if vf_class is None else vf_class
    return [pf_device(pf, pci_class, _QAT_PF)] + [
        vf_device(pf, a, pci_class=vf_class, kind=_QAT_VF) for a in pf.vfs]


def net_device(pf: PfLayout, index: int) -> str:
    mac = "b4:96:91:%02x:%02x:%02x" % (index >> 8, index & 0xff, 0x10)
    return (
        "<device>\n"
        "  <name>net_%s_%s</name>\n"
        "  <path>/sys/devices/pci0000:00/%s/net/%s</path>\n"
        "  <parent>%s</parent>\n"
        "  <capability type='net'>\n"
        "    <interface>%s</interface>\n"
        "    <address>%s</address>\n"
        "    <link speed='25000' state='up'/>\n"
        "    <capability type='80203'/>\n"
        "  </capability>\n"
        "</device>\n"
        % (pf.name, mac.replace(":", "_"), pf.address, pf.name, nodedev_name(pf.address),
           pf.name, mac))


def devices(pfs: int = 8, vfs: int = 128, **kw) -> list:
    """Every device of the host, PF first, then its net device and VFs."""
    out = []
    for i, pf in enumerate(layout(pfs, vfs, **kw)):
        out.append(pf_device(pf))
        out.append(net_device(pf, i))
        out.extend(vf_device(pf, a) for a in pf.vfs)
    return out


def devices_xml(pfs: int = 8, vfs: int = 128, **kw) -> str:
    """The ``nodedev-xml:`` form: ``<device>`` elements under ``<devices>``."""
    return "<devices>\n%s</devices>\n" % "".join(devices(pfs, vfs, **kw))


_NODE_HEAD = (
    "<node>\n"
    "  <cpu>\n    <nodes>2</nodes>\n    <sockets>2</sockets>\n    <cores>8</cores>\n"
    "    <threads>2</threads>\n    <active>32</active>\n    <mhz>2400</mhz>\n"
    "    <model>x86_64</model>\n  </cpu>\n"
    "  <memory>134217728</memory>\n"
)


def node_xml(device_docs, domains=()) -> str:
    """A test-driver host: the given ``<device>`` docs plus ``<domain>`` docs."""
    return _NODE_HEAD + "".join(device_docs) + "".join(domains) + "</node>\n"


def write_node(path, pfs: int = 8, vfs: int = 128, domains=(), extra_devices=(), **kw) -> str:
    """Write a test-driver node file; return the ``test:///...`` URI.

    *extra_devices* (``<device>`` docs, such as :func:`crypto_devices`)
    come before the NIC devices.
    """
    with open(str(path), "w", encoding="utf-8") as f:
        f.write(node_xml(list(extra_devices) + devices(pfs, vfs, **kw), domains))
    return "test://" + str(path)
