"""The real-VF probe's pure parts: its L1 command line, cache keys, and reading ``ip link``."""

from __future__ import annotations

import pytest

from sriov_lab import realvf, realvf_images

IP_LINK = (
    "2: enp1s0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP mode DEFAULT\n"
    "    link/ether 52:54:00:12:00:01 brd ff:ff:ff:ff:ff:ff\n"
    "    vf 0     link/ether 52:54:00:aa:00:01 brd ff:ff:ff:ff:ff:ff, vlan 42, spoof checking on, "
    "link-state auto, trust off\n"
    "    vf 1     link/ether 00:00:00:00:00:00 brd ff:ff:ff:ff:ff:ff, spoof checking on, "
    "link-state auto, trust off\n")


def test_parse_vf_lines_should_give_each_vf_its_mac_and_vlan():
    assert realvf.parse_vf_lines(IP_LINK) == {0: ("52:54:00:aa:00:01", 42),
                                              1: ("00:00:00:00:00:00", None)}
    assert realvf.parse_vf_lines("2: eth0: <UP>\n    link/ether 52:54:00:12:00:01\n") == {}


def test_recipe_key_should_change_with_the_recipe_only():
    assert realvf_images.recipe_key("l1", ("a", "b")) == realvf_images.recipe_key("l1", ("a", "b"))
    assert realvf_images.recipe_key("l1", ("a", "b")) != realvf_images.recipe_key("l1", ("a", "c"))
    assert realvf_images.l0_key() != realvf_images.l1_key()


def test_qemu_argv_should_put_each_igb_behind_its_own_root_port_with_an_iommu():
    argv = realvf_images.qemu_argv("/k", "/i", "/d.qcow2", "/lab", "/src", "/c.log")
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    igbs = [d for d in devices if d.startswith("igb,")]
    ports = {d.split(",")[1].split("=")[1] for d in devices if d.startswith("pcie-root-port")}
    assert len(igbs) == len(realvf_images.PFS) == len(ports)
    assert sorted(d.split("bus=")[1].split(",")[0] for d in igbs) == sorted(ports)
    assert any(d.startswith("intel-iommu,intremap=on") for d in devices)
    cmdline = argv[argv.index("-append") + 1]
    assert "intel_iommu=on" in cmdline and "init=/sbin/sriov-l1-init" in cmdline
    assert argv[argv.index("-nic") + 1] == "none"  # nothing leaves L1
    # QEMU 10.0 maps a VF BAR above 4 GiB at its low 32 bits: keep PCI memory low
    assert argv[argv.index("-m") + 1] == "2G"
    assert "q35-pcihost.pci-hole64-size=0" in argv
    assert any("mount_tag=src" in a and "readonly=on" in a for a in argv)


REPORT = {"inventory": ["0000:01:10.0", "0000:01:10.2", "0000:02:10.0", "0000:02:10.2"],
          "mac": "52:54:00:aa:00:01", "vlan": 42,
          "vf": {"address": "0000:01:10.0", "pf": "enp1s0", "index": 0},
          "driver_plugged": "vfio-pci", "ip_link_plugged": ["52:54:00:aa:00:01", 42],
          "netlink_plugged": ["52:54:00:aa:00:01", 42], "driver_released": "igbvf",
          "ip_link_released": ["26:1b:74:98:d7:aa", None],
          "igbvf_before": [["0000:01:10.0", "26:1b:74:98:d7:aa", "26:1b:74:98:d7:aa"]],
          "igbvf_released": ["26:1b:74:98:d7:aa", "26:1b:74:98:d7:aa"]}


def test_checks_should_all_hold_on_a_good_report():
    assert [ok for _name, ok, _detail in realvf._checks(REPORT)] == [True] * 8


@pytest.mark.parametrize("key, value", [
    ("ip_link_plugged", ["52:54:00:aa:00:01", None]),  # the VLAN did not reach the PF
    ("netlink_plugged", None),
    ("driver_plugged", "igbvf"),
    ("driver_released", "vfio-pci"),
    ("ip_link_released", ["52:54:00:aa:00:01", 42]),
    ("inventory", ["0000:01:10.0"]),
    # igbvf took a random MAC the PF does not know: its mailbox went unanswered
    ("igbvf_before", [["0000:01:10.0", "d2:a0:61:0c:fe:b8", "00:00:00:00:00:00"]]),
    ("igbvf_before", []),
    ("igbvf_released", ["d2:a0:61:0c:fe:b8", "26:1b:74:98:d7:aa"]),
])
def test_checks_should_fail_on_a_bad_report(key, value):
    report = dict(REPORT, **{key: value})
    assert not all(ok for _name, ok, _detail in realvf._checks(report))
