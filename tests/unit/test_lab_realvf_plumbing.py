"""The lab's real-VF plumbing: a host owning a real PF, VDSM-shaped hostdev VMs, guest ticks."""

from __future__ import annotations

from types import SimpleNamespace

from sriov_host import config, domxml
from sriov_lab import domains, inventory
from sriov_lab.guest import parse_serial


def _host(tmp_path):
    return SimpleNamespace(uri="qemu+unix:///system?socket=/x", address="127.0.0.12",
                           root=str(tmp_path), extra={})


def test_a_host_owning_a_real_pf_should_read_libvirt_and_render_hostdev(tmp_path):
    host = _host(tmp_path)

    inventory.write_host_files(host, index=1, vdsm_port=5555, real_pf="enp2s0")

    cfg = config.load(host.extra["config"])
    assert (cfg.inventory_source, cfg.vf_device) == ("libvirt", "hostdev")
    assert cfg.networks == {inventory.NETWORK: ["enp2s0"]}
    assert host.extra["real_pf"] == "enp2s0" and "inventory" not in host.extra
    assert not (tmp_path / inventory.INVENTORY_NAME).exists()


def test_an_emulated_host_should_keep_its_nodedev_file_and_emulated_vfs(tmp_path):
    host = _host(tmp_path)

    inventory.write_host_files(host, index=0)

    cfg = config.load(host.extra["config"])
    assert cfg.vf_device == "emulated"
    assert cfg.inventory_source == "nodedev-xml:" + host.extra["inventory"]
    assert cfg.networks == {inventory.NETWORK: ["ens1f0", "ens1f1"]}


def test_a_hostdev_lab_vm_should_have_vdsms_shape():
    vnics = (domains.VnicSpec(mac="52:54:00:5a:00:01", vf_address="0000:01:10.0", pf="enp1s0", vlan=100),
             domains.VnicSpec(mac="52:54:00:5a:00:02", vf_address="0000:01:10.2", pf="enp1s0",
                              failover_alias="ua-standby"))
    spec = domains.DomainSpec(name="vm", vnics=vnics, vf_mode=domxml.MODE_HOSTDEV, machine="q35",
                              persistent_teaming=True)

    root = domxml.parse_domain(domains.domain_xml(spec))

    hostdevs = root.xpath("devices/interface[@type='hostdev']")
    assert [h.get("managed") for h in hostdevs] == ["no", "no"]  # VDSM binds the VF itself
    assert hostdevs[0].find("vlan/tag").get("id") == "100"
    assert hostdevs[1].find("teaming").attrib == {"type": "transient", "persistent": "ua-standby"}
    found = domxml.find_vnics(root, mode=domxml.MODE_HOSTDEV)
    assert [(v.mac, v.vf_address, v.vlan) for v in found] == [
        ("52:54:00:5a:00:01", "0000:01:10.0", 100), ("52:54:00:5a:00:02", "0000:01:10.2", None)]


def test_guest_ticks_should_carry_each_nics_driver_and_failover_master():
    text = ("LAB-GUEST READY kernel=6.1 nics=\n"
            "LAB-TICK 7 nics=eth0=52:54:00:5A:00:02,eth1=52:54:00:5a:00:02,eth2=52:54:00:5a:00:02 "
            "links=eth0:-:-,eth1:virtio_net:eth0,eth2:igbvf:eth0\n")

    _ready, ticks = parse_serial(text)

    assert ticks[-1].nics["eth0"] == "52:54:00:5a:00:02"
    assert ticks[-1].links == {"eth0": ("-", "-"), "eth1": ("virtio_net", "eth0"),
                               "eth2": ("igbvf", "eth0")}


def test_guest_ticks_without_links_should_still_parse():
    _ready, ticks = parse_serial("LAB-TICK 3 nics=eth0=52:54:00:5a:00:01\n")

    assert ticks[-1].nics == {"eth0": "52:54:00:5a:00:01"} and ticks[-1].links == {}
