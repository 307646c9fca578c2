"""The adapter's pure decisions: no engine, no network."""

from __future__ import annotations

import pytest

from engine_adapter import report
from engine_adapter.model import (
    HostDevice,
    LookupFailed,
    Profile,
    Vnic,
    decide_vm,
    migration_state,
    pick_profile,
    refuse_reason,
    reservation_nics,
    service_endpoint,
    updated_custom,
)

SRIOV = Profile("p1", "sriov", True, False, "n1", "sriov-net", 10)
READY = Profile("p2", "ready", True, True, "n2", "other", None, custom={"sriov_migratable": "yes"})
VIRTIO = Profile("p3", "ovirtmgmt", False, None, "n3", "ovirtmgmt")


def vnic(nid, profile, mac="56:6f:00:00:00:01", interface=None):
    return Vnic(nid, "nic-" + nid, mac, interface, profile)


def test_decide_vm_should_allow_a_vm_without_passthrough_vnics():
    verdict = decide_vm([vnic("a", VIRTIO)])
    assert verdict.migratable and verdict.reason == "no passthrough vNICs"


def test_decide_vm_should_refuse_when_one_passthrough_vnic_is_not_migratable():
    verdict = decide_vm([vnic("a", READY), vnic("b", SRIOV), vnic("c", VIRTIO)])
    assert not verdict.migratable
    assert [v.id for v in verdict.blockers] == ["b"]
    assert "nic-b (profile sriov)" in verdict.reason


def test_decide_vm_should_count_a_pci_passthrough_nic_without_profile_as_blocking():
    verdict = decide_vm([vnic("a", None, interface="pci_passthrough")])
    assert not verdict.migratable and "profile <none>" in verdict.reason


def test_decide_vm_should_allow_when_every_passthrough_vnic_is_migratable():
    assert decide_vm([vnic("a", READY), vnic("b", VIRTIO)]).migratable


def test_decide_vm_should_refuse_what_the_hosts_refuse():
    """The hosts' policy on the engine's model: no MAC, one MAC twice, other host devices."""
    no_mac = decide_vm([vnic("a", READY, mac=None)])
    assert not no_mac.migratable and "nic-a (profile ready) has no MAC" in no_mac.reason
    twins = decide_vm([vnic("a", READY), vnic("b", READY)])
    assert not twins.migratable and "share MAC 56:6f:00:00:00:01" in twins.reason
    gpu = HostDevice("pci_0000_65_00_0", "pci")
    with_gpu = decide_vm([vnic("a", READY)], [gpu])
    assert not with_gpu.migratable and "pci host device pci_0000_65_00_0" in with_gpu.reason
    assert decide_vm([vnic("a", VIRTIO)], [gpu]).migratable  # no passthrough vNIC: nothing to do


def test_decide_vm_should_refuse_a_vf_attached_as_a_host_device():
    vf = HostDevice("pci_0000_05_10_2", "pci", vf=True)
    assert vf.pci_address == "0000:05:10.2"
    verdict = decide_vm([vnic("a", VIRTIO)], [vf])
    assert not verdict.migratable
    assert "host device pci_0000_05_10_2 has no MAC (a VF attached as a plain <hostdev>" in verdict.reason


def test_decide_vm_should_leave_an_unplugged_vnic_out():
    """Unplugged, it holds no VF: the hosts never see it in the domain XML."""
    unplugged = Vnic("b", "nic-b", "56:6f:00:00:00:02", None, SRIOV, plugged=False)
    verdict = decide_vm([vnic("a", READY), unplugged])
    assert verdict.migratable and [v.id for v in verdict.vnics] == ["a"]


def test_host_devices_should_map_the_sdk_view_and_tolerate_an_engine_without_them():
    from types import SimpleNamespace as NS

    from engine_adapter.engine import Engine
    from engine_adapter.errors import EngineFault

    found = [NS(name="pci_0000_05_10_2", id="x", capability="pci", physical_function=NS(id="pf")),
             NS(name="pci_0000_65_00_0", id="y", capability="pci", physical_function=None)]

    def conn(listing):
        hostdevs = NS(list=listing)
        vm = NS(host_devices_service=lambda: hostdevs)
        return NS(system_service=lambda: NS(vms_service=lambda: NS(vm_service=lambda vm_id: vm)))

    def missing():
        raise EngineFault("list host devices", "Not Found", "", 404)

    vm = NS(id="vm1", name="web01")
    assert Engine(None, conn(lambda: found)).host_devices(vm) == [
        HostDevice("pci_0000_05_10_2", "pci", vf=True), HostDevice("pci_0000_65_00_0", "pci")]
    assert Engine(None, conn(missing)).host_devices(vm) == []


def test_reservation_nics_should_carry_mac_alias_vlan_and_network_of_passthrough_vnics_only():
    nics = reservation_nics([vnic("x1", SRIOV, "56:6f:00:00:00:0a"), vnic("x2", VIRTIO),
                             vnic("x3", READY, "56:6f:00:00:00:0b")])
    assert nics == [
        {"mac": "56:6f:00:00:00:0a", "alias": "ua-x1", "vlan": 10, "network": "sriov-net"},
        {"mac": "56:6f:00:00:00:0b", "alias": "ua-x3", "vlan": None, "network": "other"},
    ]


def test_profile_property_value_should_accept_boolean_strings():
    assert READY.property_value is True
    assert Profile("i", "n", True, True, custom={"sriov_migratable": "FALSE"}).property_value is False
    assert SRIOV.property_value is None


DUP_A = Profile("d1", "dup", True, False, "n1", "sriov-net")
DUP_B = Profile("d2", "dup", True, False, "n2", "other")


@pytest.mark.parametrize("key,expected", [
    pytest.param("p1", "p1", id="by-id"),
    pytest.param("ready", "p2", id="by-name"),
    pytest.param("other/dup", "d2", id="by-network-and-name"),
])
def test_pick_profile_should_find_by_id_name_or_network_name(key, expected):
    assert pick_profile([SRIOV, READY, DUP_A, DUP_B], key).id == expected


def test_pick_profile_should_refuse_an_ambiguous_name_listing_the_candidates():
    with pytest.raises(LookupFailed) as e:
        pick_profile([SRIOV, DUP_A, DUP_B], "dup")
    assert "ambiguous" in str(e.value)
    assert "sriov-net/dup (id d1)" in str(e.value) and "other/dup (id d2)" in str(e.value)


def test_pick_profile_should_say_when_nothing_matches():
    with pytest.raises(LookupFailed, match="no vNIC profile named or with id 'nope'"):
        pick_profile([SRIOV], "nope")


def test_updated_custom_should_set_or_clear_only_our_property():
    assert updated_custom({"a": "1"}, True) == {"a": "1", "sriov_migratable": "true"}
    assert updated_custom({"a": "1", "sriov_migratable": "true"}, False) == {"a": "1"}


def test_refuse_reason_should_explain_non_passthrough_profiles():
    assert "not a passthrough profile" in refuse_reason(VIRTIO, True)
    assert refuse_reason(SRIOV, True) is None


@pytest.mark.parametrize("address,expected", [
    pytest.param("host2.example", ("host2.example", 54325), id="name"),
    pytest.param("127.0.0.1:54399", ("127.0.0.1", 54399), id="ip-port"),
    pytest.param("fd00::2", ("fd00::2", 54325), id="bare-v6"),
    pytest.param("[fd00::2]:1234", ("fd00::2", 1234), id="v6-port"),
])
def test_service_endpoint_should_split_the_host_address(address, expected):
    assert service_endpoint(address) == expected


@pytest.mark.parametrize("status,host,seen,settled,expected", [
    pytest.param("up", "dst", True, False, "done", id="arrived"),
    pytest.param("migrating", "src", True, False, "wait", id="migrating"),
    pytest.param("up", "src", False, False, "wait", id="not-started-yet"),
    pytest.param("up", "src", False, True, "failed", id="never-seen-migrating"),
    pytest.param("up", "src", True, False, "failed", id="back-on-source"),
    pytest.param("up", "other", True, False, "failed", id="elsewhere"),
    pytest.param("down", None, True, False, "failed", id="down"),
])
def test_migration_state_should_read_one_poll(status, host, seen, settled, expected):
    assert migration_state(status, host, "src", "dst", seen, settled)[0] == expected


def test_table_should_align_columns_and_show_missing_values():
    text = report.table(("A", "LONGER"), [("x", None), ("yyyy", True)])
    assert text.splitlines() == ["A     LONGER", "x     -", "yyyy  yes"]
