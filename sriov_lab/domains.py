"""Lab VMs: domain XML that looks, to the hooks, like a VDSM-started VM.

A lab VM is ``type='qemu'`` (TCG; ``/dev/kvm`` is not usable here), on
``pc`` or ``q35`` (with spare ``pcie-root-port`` controllers). Its SR-IOV
vNICs are emulated NICs rendered by :func:`sriov_host.domxml.render_attach`
in ``emulated`` mode, and it carries both VDSM's ``ovirt-vm`` metadata
(network and the ``sriov_migratable`` custom property per MAC) and our
own :mod:`sriov_host.metadata` record, so the hooks see what they would
see on oVirt.
"""

from __future__ import annotations

import os
import time
import uuid as uuidmod
from dataclasses import dataclass, field
from typing import Callable, Optional

from lxml import etree

from sriov_host import domxml, libvirtconn, metadata
from sriov_host.pci import PciAddress

from .errors import LabError
from .guest import GUEST_IP_PARAM, GuestImage, parse_serial

OVIRT_VM_NS = domxml.OVIRT_VM_NS
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
_OV = "{%s}" % OVIRT_VM_NS
_QEMU = "{%s}" % QEMU_NS
SERIAL_DIR = "/var/log/libvirt/qemu"
NATIVE_PCIEHP_ARGS = ("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off")


@dataclass(frozen=True)
class VnicSpec:
    """One SR-IOV vNIC of a lab VM, and optionally its failover partner."""

    mac: str
    alias: str = field(default_factory=lambda: "ua-%s" % uuidmod.uuid4())
    vf_address: Optional[str] = None
    pf: Optional[str] = None
    network: str = "lab-net"
    model: str = "virtio"
    migratable: Optional[bool] = True  # None: no device custom property
    failover_alias: Optional[str] = None  # alias of a persistent virtio partner
    vlan: Optional[int] = None  # kept in our record; emulated NICs carry no tag


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str = field(default_factory=lambda: str(uuidmod.uuid4()))
    machine: str = "pc"
    memory_mib: int = 256
    guest: Optional[GuestImage] = None  # None: no OS, nothing ever releases a device
    vnics: tuple = ()
    native_pciehp: bool = False
    root_ports: int = 4
    vm_custom: dict = field(default_factory=dict)
    persistent_teaming: bool = False  # put <teaming type='persistent'/> on partners
    vf_mode: str = domxml.MODE_EMULATED  # MODE_HOSTDEV: real VFs (the real-VF lab)
    bridge: Optional[str] = None  # the start host's lab bridge: emulated VFs (or real VFs' standbys)
    guest_ip: Optional[tuple] = None  # (mac, "ip/prefix"): the guest sets it on that NIC


def serial_path(name: str) -> str:
    """The serial log path as every lab libvirtd sees it (its own log dir)."""
    return "%s/%s-serial.log" % (SERIAL_DIR, name)


def to_vnic(spec: VnicSpec) -> domxml.Vnic:
    return domxml.Vnic(alias=spec.alias, mac=spec.mac, vf_address=spec.vf_address,
                       teaming=spec.failover_alias, network=spec.network, pf=spec.pf,
                       vlan=spec.vlan)


def record_for(spec: DomainSpec, host_uuid: str) -> metadata.MigrationRecord:
    """Our record as the VM carries it while its vNICs are plugged."""
    vnics = tuple(
        metadata.VnicRecord(alias=v.alias, mac=v.mac, vf_address=v.vf_address, pf=v.pf,
                            teaming=v.failover_alias, network=v.network, vlan=v.vlan,
                            state=metadata.PLUGGED)
        for v in spec.vnics
    )
    return metadata.MigrationRecord(vnics=vnics, host=host_uuid, updated=time.time())


def _ovirt_metadata(meta, spec: DomainSpec):
    vm = etree.SubElement(meta, _OV + "vm", nsmap={"ovirt-vm": OVIRT_VM_NS})
    if spec.vm_custom:
        custom = etree.SubElement(vm, _OV + "custom")
        for key, value in spec.vm_custom.items():
            etree.SubElement(custom, _OV + key).text = str(value)
    for v in spec.vnics:
        dev = etree.SubElement(vm, _OV + "device", mac_address=v.mac)
        etree.SubElement(dev, _OV + "network").text = v.network
        if v.migratable is not None:
            custom = etree.SubElement(dev, _OV + "custom")
            etree.SubElement(custom, _OV + "sriov_migratable").text = str(v.migratable).lower()


def _os(root, spec: DomainSpec):
    os_el = etree.SubElement(root, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine=spec.machine).text = "hvm"
    if spec.guest is not None:
        etree.SubElement(os_el, "kernel").text = spec.guest.kernel
        etree.SubElement(os_el, "initrd").text = spec.guest.initrd
        cmdline = spec.guest.cmdline
        if spec.guest_ip:
            cmdline += " %s=%s,%s" % ((GUEST_IP_PARAM,) + tuple(spec.guest_ip))
        etree.SubElement(os_el, "cmdline").text = cmdline
    etree.SubElement(etree.SubElement(root, "features"), "acpi")


def _interfaces(devices, spec: DomainSpec):
    for v in spec.vnics:
        if v.failover_alias:
            # on the host's bridge with real VFs: with emulated ones it would share the MAC's wire
            wired = spec.bridge and spec.vf_mode == domxml.MODE_HOSTDEV
            partner = etree.SubElement(devices, "interface", type="bridge" if wired else "user")
            if wired:
                etree.SubElement(partner, "source", bridge=spec.bridge)
            etree.SubElement(partner, "mac", address=v.mac)
            etree.SubElement(partner, "model", type="virtio")
            if spec.persistent_teaming:
                etree.SubElement(partner, "teaming", type="persistent")
            etree.SubElement(partner, "alias", name=v.failover_alias)
        xml = domxml.render_attach(to_vnic(v), v.vf_address or "", mode=spec.vf_mode,
                                   model=v.model, bridge=spec.bridge)
        elem = etree.fromstring(xml)
        if spec.vf_mode == domxml.MODE_HOSTDEV:
            elem.set("managed", "no")  # VDSM's shape: it binds the VF to vfio-pci itself
        devices.append(elem)


def _devices(root, spec: DomainSpec):
    devices = etree.SubElement(root, "devices")
    if spec.machine.startswith("q35") or spec.machine.startswith("pc-q35"):
        etree.SubElement(devices, "controller", type="pci", index="0", model="pcie-root")
        for i in range(1, spec.root_ports + 1):
            etree.SubElement(devices, "controller", type="pci", index=str(i), model="pcie-root-port")
    _interfaces(devices, spec)
    serial = etree.SubElement(devices, "serial", type="file")
    etree.SubElement(serial, "source", path=serial_path(spec.name))
    etree.SubElement(serial, "target", port="0")
    etree.SubElement(devices, "memballoon", model="none")


def domain_xml(spec: DomainSpec, host_uuid: Optional[str] = None) -> str:
    """The full domain XML; with *host_uuid*, our record is included."""
    root = etree.Element("domain", type="qemu", nsmap={"qemu": QEMU_NS})
    etree.SubElement(root, "name").text = spec.name
    etree.SubElement(root, "uuid").text = spec.uuid
    meta = etree.SubElement(root, "metadata")
    _ovirt_metadata(meta, spec)
    if host_uuid and spec.vnics:
        meta.append(metadata.to_element(record_for(spec, host_uuid)))
    etree.SubElement(root, "memory", unit="MiB").text = str(spec.memory_mib)
    etree.SubElement(root, "vcpu").text = "1"
    _os(root, spec)
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        etree.SubElement(root, event).text = "destroy"
    _devices(root, spec)
    if spec.native_pciehp:
        cmd = etree.SubElement(root, _QEMU + "commandline")
        for arg in NATIVE_PCIEHP_ARGS:
            etree.SubElement(cmd, _QEMU + "arg", value=arg)
    return etree.tostring(root, encoding="unicode", pretty_print=True)


def start(conn, spec: DomainSpec):
    """Create (transient, like VDSM's VMs) and start the lab VM on *conn*.

    Real VFs are detached from their host driver first, as VDSM does for
    its ``managed='no'`` hostdev vNICs.
    """
    import libvirt

    try:
        if spec.vf_mode == domxml.MODE_HOSTDEV:
            for v in spec.vnics:
                conn.nodeDeviceLookupByName(PciAddress.parse(v.vf_address).nodedev_name).detachFlags(None, 0)
        return conn.createXML(domain_xml(spec, libvirtconn.host_uuid(conn)), 0)
    except libvirt.libvirtError as e:
        raise LabError("lab VM %s did not start: %s" % (spec.name, e)) from e


def read_serial(host, name: str) -> str:
    """The guest's serial output so far on *host* (empty before it exists)."""
    try:
        with open(host.outside_path(serial_path(name)), encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_serial(host, name: str, until: Callable, timeout: float = 60.0,
                what: str = "serial condition"):
    """Poll the serial log until ``until(ready, ticks)`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        text = read_serial(host, name)
        ready, ticks = parse_serial(text)
        result = until(ready, ticks)
        if result:
            return result
        if time.monotonic() >= deadline:
            tail = "\n".join(text.splitlines()[-15:])
            raise LabError("lab VM %s on %s: no %s within %.0f s; serial log ends:\n%s"
                           % (name, host.name, what, timeout, tail))
        time.sleep(0.1)


def wait_ready(host, name: str, timeout: float = 60.0):
    """Wait for the guest's ready line and a first tick; return that tick."""
    return wait_serial(host, name, lambda r, t: r and t and t[-1], timeout, "ready line")


def post_mortem(conn, host, name: str) -> str:
    """What libvirt says of a lab VM that stopped answering: its state, QEMU's log, the guest's."""
    import libvirt

    try:
        state, reason = conn.lookupByName(name).state()
        where = "libvirt state %d reason %d (virDomainState / its reason enum)" % (state, reason)
    except libvirt.libvirtError as e:
        where = "libvirt: %s" % e
    serial = "\n".join(read_serial(host, name).splitlines()[-40:]) or "(empty)"
    return "%s on %s: %s; QEMU log ends:\n%s\nthe guest's serial console ends:\n%s" % (
        name, host.name, where, qemu_log_tail(host, name), serial)


def qemu_log_tail(host, name: str, lines: int = 20) -> str:
    path = host.qemu_log(name)
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return "\n".join(f.read().splitlines()[-lines:])
