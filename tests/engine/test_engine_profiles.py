"""``profiles``, ``set-migratable`` and ``check-vm`` against the engine simulator."""

from __future__ import annotations

import json
import re

from engine_fakes import MAC2, MAC3


def test_profiles_should_list_mode_flag_and_property_per_profile(sim, seed, run):
    res = run("profiles")
    assert res.rc == 0, res.err
    lines = {line.split()[0] + "@" + line.split()[1]: line for line in res.out.splitlines()[1:]}
    assert re.search(r"sriov-net\s+10\s+enabled\s+no\s+-", lines["sriov@sriov-net"])
    assert re.search(r"enabled\s+yes\s+yes", lines["ready@sriov-other"])
    assert re.search(r"disabled\s+-\s+-", lines["ovirtmgmt@ovirtmgmt"])


def test_profiles_json_should_carry_ids_networks_and_booleans(sim, seed, run):
    res = run("profiles", "--json")
    assert res.rc == 0, res.err
    by_id = {p["id"]: p for p in json.loads(res.out)}
    assert by_id[seed.ready]["migratable"] is True
    assert by_id[seed.ready]["sriov_migratable"] is True  # the engine holds "True"
    assert by_id[seed.sriov] == dict(by_id[seed.sriov], network="sriov-net", vlan=10,
                                     pass_through="enabled", migratable=False, sriov_migratable=None)
    assert by_id[seed.virtio]["migratable"] is None
    assert by_id[seed.failover]["failover"] == seed.virtio


def test_set_migratable_should_put_the_flag_explicitly_and_the_custom_property(sim, seed, run):
    res = run("set-migratable", "sriov")
    assert res.rc == 0, res.err
    puts = sim.find("PUT", "/vnicprofiles/")
    assert [p.path for p in puts] == ["/ovirt-engine/api/vnicprofiles/%s" % seed.sriov]
    body = re.sub(r"\s+", "", puts[0].body)
    assert "<migratable>true</migratable>" in body
    assert "<custom_property><name>sriov_migratable</name><value>true</value></custom_property>" in body
    assert "<custom_property><name>qos_hint</name><value>gold</value></custom_property>" in body
    assert sim.profiles[seed.sriov]["migratable"] is True
    assert sim.profiles[seed.sriov]["custom"] == {"qos_hint": "gold", "sriov_migratable": "true"}
    assert "migratable=true" in res.out


def test_set_migratable_off_should_send_false_and_clear_the_property(sim, seed, run):
    res = run("set-migratable", seed.ready, "--off")
    assert res.rc == 0, res.err
    body = re.sub(r"\s+", "", sim.find("PUT", "/vnicprofiles/")[0].body)
    assert "<migratable>false</migratable>" in body
    assert "<custom_properties></custom_properties>" in body or "<custom_properties/>" in body
    assert sim.profiles[seed.ready]["migratable"] is False
    assert sim.profiles[seed.ready]["custom"] == {}


def test_set_migratable_should_refuse_an_ambiguous_name_and_list_candidates(sim, seed, run):
    res = run("set-migratable", "dup")
    assert res.rc == 2
    assert res.err.count("\n") == 1 and "ambiguous" in res.err
    assert seed.dup_a in res.err and seed.dup_b in res.err
    assert "sriov-net/dup" in res.err and "sriov-other/dup" in res.err
    assert sim.find("PUT", ".") == []


def test_set_migratable_should_accept_network_slash_name(sim, seed, run):
    assert run("set-migratable", "sriov-other/dup").rc == 0
    assert sim.profiles[seed.dup_b]["migratable"] is True
    assert sim.profiles[seed.dup_a]["migratable"] is False


def test_set_migratable_should_refuse_a_non_passthrough_profile(sim, seed, run):
    res = run("set-migratable", "ovirtmgmt")
    assert res.rc == 2
    assert "not a passthrough profile" in res.err and "silently ignore" in res.err
    assert sim.find("PUT", ".") == []


def test_set_migratable_should_report_the_engine_fault_verbatim(sim, seed, run):
    res = run("set-migratable", "with-failover", "--off")
    assert res.rc == 2
    assert ("Operation Failed: [Cannot edit VM network interface profile. Failover is supported "
            "only for migratable passthrough vNIC profiles.] (HTTP 409)") in res.err
    assert res.err.count("\n") == 1
    assert sim.profiles[seed.failover]["migratable"] is True


def test_set_migratable_should_report_an_undefined_custom_property_verbatim(sim, seed, run):
    sim.allowed_device_properties = set()
    res = run("set-migratable", "sriov")
    assert res.rc == 2
    assert "Invalid custom property: qos_hint, sriov_migratable" in res.err


def test_set_migratable_should_name_an_unknown_profile(sim, seed, run):
    res = run("set-migratable", "nope")
    assert res.rc == 2 and "no vNIC profile named or with id 'nope'" in res.err


def test_check_vm_should_exit_zero_for_a_migratable_vm(sim, seed, run):
    res = run("check-vm", "vm-ready")
    assert res.rc == 0, res.err
    assert MAC2 in res.out and "VM vm-ready: migratable" in res.out
    assert "ovirtmgmt" not in res.out  # only passthrough vNICs are listed


def test_check_vm_should_exit_one_and_name_the_blocking_vnic(sim, seed, run):
    res = run("check-vm", "vm-blocked", "--json")
    assert res.rc == 1
    data = json.loads(res.out)
    assert data["migratable"] is False and "nic2 (profile sriov)" in data["reason"]
    assert {n["mac"]: n["migratable"] for n in data["vnics"]} == {MAC3: True, "56:6f:00:00:00:04": False}
    assert [n["alias"] for n in data["vnics"]][0].startswith("ua-")


def test_check_vm_should_find_a_vm_by_id(sim, seed, run):
    res = run("check-vm", seed.vm_plain)
    assert res.rc == 0 and "no passthrough vNICs" in res.out
    assert sim.find("GET", "/vms/%s$" % seed.vm_plain)


def test_check_vm_should_warn_when_the_flag_lacks_the_property(sim, seed, run):
    sim.profiles[seed.ready]["custom"] = {}
    res = run("check-vm", "vm-ready")
    assert res.rc == 0
    assert "lacks sriov_migratable=true" in res.err


def test_check_vm_should_give_one_line_for_an_unknown_vm(sim, seed, run):
    res = run("check-vm", "ghost")
    assert res.rc == 2
    origin = sim.url.split("/ovirt")[0]
    assert res.err == "sriov-engine: no VM named or with id 'ghost' on engine %s\n" % origin
    assert sim.find("GET", "/vms$")[0].query == {"search": "name=ghost"}


def test_sdk_requests_should_carry_version_4_and_the_sso_bearer_token(sim, seed, run):
    assert run("profiles").rc == 0
    api = [r for r in sim.requests if r.path.startswith("/ovirt-engine/api")]
    assert api and all(r.headers.get("version") == "4" for r in api)
    assert all(re.match(r"Bearer [0-9a-f]{32}$", r.headers["authorization"]) for r in api)
    login = sim.find("POST", "/sso/oauth/token")[0]
    assert login.body == "grant_type=password&scope=ovirt-app-api&username=admin%40internal&password=***"
    assert sim.find("POST", "/services/sso-logout"), "the token is revoked at exit"


def test_check_vm_should_quote_a_name_with_spaces_in_the_engine_search(sim, seed, run):
    sim.add_vm('web "1" eu', seed.host1, nics=[{"name": "nic1", "mac": MAC2, "profile": seed.ready}])
    res = run("check-vm", 'web "1" eu')
    assert res.rc == 0, res.err
    assert sim.find("GET", "/vms$")[-1].query == {"search": 'name="web \\"1\\" eu"'}
