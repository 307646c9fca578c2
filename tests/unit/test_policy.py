"""policy: migratability precedence and the dry-run plan."""

from __future__ import annotations

import json

import pytest
from helpers.corpus import read_domain

from sriov_host import domxml, policy

MAC = "56:6f:1a:2b:00:01"
VNIC = domxml.Vnic(alias="ua-vf1", mac=MAC, vf_address="0000:05:10.2", vlan=100)


@pytest.mark.parametrize("text, expected", [
    pytest.param(v, True, id="true-%s" % v) for v in ("true", "TRUE", "True", "yes", "YeS", "1", " yes ")
] + [
    pytest.param(v, False, id="false-%s" % v) for v in ("false", "False", "NO", "no", "0")
] + [
    pytest.param(v, None, id="bad-%r" % v) for v in ("", "maybe", "2", "on", "y", "tru")
])
def test_parse_bool_should_accept_only_true_false_yes_no_1_0(text, expected):
    assert policy.parse_bool(text) is expected


@pytest.mark.parametrize("device, vm, default, expected, where", [
    pytest.param("true", "false", False, True, "profile", id="device-true-beats-vm-false"),
    pytest.param("no", "yes", True, False, "profile", id="device-no-beats-vm-and-default"),
    pytest.param(None, "YES", False, True, "VM", id="vm-beats-default"),
    pytest.param(None, "0", True, False, "VM", id="vm-false-beats-default-true"),
    pytest.param(None, None, True, True, "host default", id="default-true"),
    pytest.param(None, None, False, False, "host default", id="default-false"),
    pytest.param("sure", "true", True, False, "not a boolean", id="bad-device-value-refuses"),
    pytest.param(None, "enabled", True, False, "not a boolean", id="bad-vm-value-refuses"),
])
def test_decide_should_apply_device_vm_default_precedence(device, vm, default, expected, where):
    device_custom = {MAC: {policy.PROPERTY: device}} if device is not None else {}
    decision = policy.decide(VNIC, device_custom, vm, default)
    assert decision.migratable is expected
    assert where in decision.why


def test_decide_should_ignore_other_device_properties():
    device_custom = {MAC: {"mtu": "9000"}, "56:6f:1a:2b:00:99": {policy.PROPERTY: "false"}}
    assert policy.decide(VNIC, device_custom, None, True).migratable is True


def _plan(name, vm_custom=None, default=False, vf_addresses=()):
    root = domxml.parse_domain(read_domain(name))
    vnics = domxml.find_vnics(root, vf_addresses=vf_addresses)
    if vm_custom is None:
        vm_custom = domxml.vdsm_vm_custom(root).get(policy.PROPERTY)
    return policy.make_plan(domxml.domain_uuid(root), vnics, domxml.vdsm_device_custom(root),
                            vm_custom, default)


@pytest.mark.parametrize("name, default, verdict, migratable", [
    pytest.param("no_sriov", True, policy.NOTHING, [], id="no-sriov"),
    pytest.param("failover", False, policy.MIGRATE, [True], id="failover-transient-vf"),
    pytest.param("one_vf_vlan", False, policy.MIGRATE, [True], id="one-vf"),
    pytest.param("several_vfs", False, policy.MIGRATE, [True, True, True], id="several-vfs"),
    pytest.param("mixed_migratable", False, policy.REFUSE, [True, False, True],
                 id="one-false-refuses-all"),
])
def test_make_plan_should_decide_on_corpus(name, default, verdict, migratable):
    plan = _plan(name, default=default)
    assert plan.verdict == verdict
    assert [v["migratable"] for v in plan.to_json()["vnics"]] == migratable


@pytest.mark.parametrize("vm_custom", ["no", None, "true"])
def test_make_plan_should_refuse_a_plain_hostdev_vf_whatever_its_marker(vm_custom):
    """A VF without a MAC cannot be re-created on the destination: migratable or not."""
    plan = _plan("plain_hostdev", vm_custom=vm_custom, vf_addresses=["0000:05:10.3"])
    assert plan.verdict == policy.REFUSE
    assert "VF 0000:05:10.3 (ua-33333333-aaaa-4bbb-8ccc-000000000001) has no MAC" in plan.reason
    assert "\n" not in plan.reason


def test_make_plan_should_name_blocked_vnic_and_the_fix():
    plan = _plan("mixed_migratable")
    assert "56:6f:1a:2b:04:02" in plan.reason
    assert "56:6f:1a:2b:04:01" not in plan.reason
    assert "sriov_migratable=true" in plan.reason
    assert "\n" not in plan.reason


def test_plan_to_json_should_have_contract_shape():
    doc = json.loads(json.dumps(_plan("failover").to_json()))
    assert doc == {
        "vm_id": "8b0d1f23-4c5e-4f60-9b7c-8d9e0f1a2b33",
        "verdict": "migrate",
        "reason": "1 SR-IOV vNIC(s) migratable",
        "vnics": [{
            "mac": "56:6f:1a:2b:02:01",
            "alias": "ua-22222222-aaaa-4bbb-8ccc-00000000000a",
            "vf_address": "0000:05:10.6",
            "vlan": 100,
            "migratable": True,
            "teaming": "ua-22222222-aaaa-4bbb-8ccc-00000000000b",
        }],
    }


def test_plan_to_json_should_be_empty_for_nothing():
    assert _plan("no_sriov").to_json() == {
        "vm_id": "0d6b7c1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e", "verdict": "nothing",
        "reason": "no SR-IOV vNIC", "vnics": []}


def test_make_plan_should_refuse_two_vnics_with_one_mac():
    twin = domxml.Vnic(alias="ua-vf2", mac=MAC, vf_address="0000:05:10.3")
    plan = policy.make_plan("vm", [VNIC, twin], {}, "true", False)
    assert plan.verdict == policy.REFUSE
    assert "ua-vf1, ua-vf2 share MAC %s" % MAC in plan.reason


def test_plan_should_refuse_a_vm_with_a_device_no_migration_can_carry():
    xml = read_domain("one_vf_vlan").replace(b"</devices>", (
        b"<hostdev mode='subsystem' type='pci' managed='yes'><source>"
        b"<address domain='0x0000' bus='0x65' slot='0x00' function='0x0'/></source>"
        b"<alias name='ua-gpu'/></hostdev>"
        b"<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source>"
        b"<address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source></hostdev></devices>"))
    root = domxml.parse_domain(xml)
    vnics = domxml.find_vnics(root)
    assert len(vnics) == 1
    foreign = domxml.foreign_hostdevs(root, vnics)
    assert foreign == ["PCI host device 0000:65:00.0 (ua-gpu)",
                       "mdev c2177883-f1bb-47f0-914d-32a22e3a8804"]
    plan = policy.make_plan("vm", vnics, {}, "true", False, foreign)
    assert plan.verdict == policy.REFUSE and "ua-gpu" in plan.reason and "no live migration" in plan.reason
    assert policy.with_foreign_devices(policy.make_plan("vm", vnics, {}, "true", False),
                                       foreign) == plan


def test_foreign_hostdevs_should_name_the_non_vf_hostdev_and_not_the_vf():
    root = domxml.parse_domain(read_domain("plain_hostdev"))
    vnics = domxml.find_vnics(root, domxml.MODE_HOSTDEV, ["0000:05:10.3"])
    assert [v.vf_address for v in vnics] == ["0000:05:10.3"]
    assert domxml.foreign_hostdevs(root, vnics) == [
        "PCI host device 0000:3b:00.0 (ua-33333333-aaaa-4bbb-8ccc-000000000002)"]


def test_foreign_hostdevs_should_never_call_a_pci_device_a_vf():
    """A GPU without an alias is named by its address, as a PCI device, not as ``vf:``."""
    root = domxml.parse_domain(read_domain("libvirt_hostdev_pci_address"))
    assert domxml.foreign_hostdevs(root, ()) == ["PCI host device 0000:06:12.5"]
