"""Hook contract tests at every point that needs no hot-plug.

They go through ``vdsm_hooks.hook.main`` with VDSM's env (the domain XML
file and ``vmId``) and check rc, the one-line stderr messages, the
rewritten ``_hook_domxml`` and the ``--dry-run`` JSON.
"""

from __future__ import annotations

import json

import pytest
from helpers.corpus import read_domain

from vdsm_hooks.hook import main

VM = "4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11"

RECORD = b"""<sriov:migration xmlns:sriov="http://ovirt.org/vdsm-sriov-migration/1.0"
 version="1" phase="unplugged" updated="1.0" host="11111111-2222-4333-8444-555555555555">
 <sriov:vnic alias="ua-a3f1e2d4-7b6c-4d5e-8f90-1a2b3c4d5e61" mac="56:6f:1a:2b:00:01"
  kind="interface" vf_address="0000:05:10.2" pf="ens9f0" vlan="100" network="sriov-red"
  state="unplugged-for-migration"/>
 %s
</sriov:migration>"""

SECOND = (b'<sriov:vnic alias="ua-a3f1e2d4-7b6c-4d5e-8f90-1a2b3c4d5e62" mac="56:6f:1a:2b:00:02"'
          b' kind="interface" vf_address="0000:05:10.3" state="unplugged-for-migration"/>')


# The profile of the SECOND vNIC, marked migratable as the source saw it.
SECOND_MARK = (b'<ovirt-vm:device mac_address="56:6f:1a:2b:00:02"><ovirt-vm:custom>'
               b'<ovirt-vm:sriov_migratable>true</ovirt-vm:sriov_migratable></ovirt-vm:custom>'
               b'</ovirt-vm:device></ovirt-vm:vm>')


def incoming_xml(extra=b"", marked=True) -> bytes:
    """The XML a destination sees: VFs stripped by the source, our record added."""
    xml = read_domain("one_vf_vlan")
    start = xml.index(b'<interface type="hostdev"')
    end = xml.index(b"</interface>", start) + len(b"</interface>")
    xml = xml[:start] + xml[end:]
    if extra and marked:
        xml = xml.replace(b"</ovirt-vm:vm>", SECOND_MARK)
    return xml.replace(b"</metadata>", RECORD % extra + b"</metadata>")


def run(env, point, *args, capsys=None):
    rc = main(["--point", point, *args], env=env)
    out, err = capsys.readouterr() if capsys else ("", "")
    return rc, out, err


@pytest.mark.parametrize("point", [
    "before_vm_migrate_source", "before_vm_migrate_destination", "after_vm_migrate_destination",
    "after_vm_migrate_source", "after_vm_destroy"])
def test_hook_should_do_nothing_for_vm_without_sriov(host, hook_env, capsys, point):
    xml = read_domain("no_sriov")
    env, path = hook_env(xml)
    rc, out, err = run(env, point, capsys=capsys)
    assert (rc, out, err) == (0, "", "")
    assert path.read_bytes() == xml
    assert host.claims() == []


def test_dry_run_should_print_the_migrate_plan(host, hook_env, capsys):
    env, path = hook_env(read_domain("one_vf_vlan"))
    rc, out, err = run(env, "before_vm_migrate_source", "--dry-run", capsys=capsys)
    assert rc == 0 and err == ""
    assert json.loads(out) == {
        "vm_id": VM, "verdict": "migrate", "reason": "1 SR-IOV vNIC(s) migratable",
        "vnics": [{"mac": "56:6f:1a:2b:00:01", "alias": "ua-a3f1e2d4-7b6c-4d5e-8f90-1a2b3c4d5e61",
                   "vf_address": "0000:05:10.2", "vlan": 100, "migratable": True,
                   "teaming": None}]}
    assert path.read_bytes() == read_domain("one_vf_vlan")


def test_dry_run_should_report_the_failover_peer(host, hook_env, capsys):
    env, _ = hook_env(read_domain("failover"))
    rc, out, _ = run(env, "before_vm_migrate_source", "--dry-run", capsys=capsys)
    plan = json.loads(out)
    assert rc == 0 and plan["verdict"] == "migrate"
    assert [v["teaming"] for v in plan["vnics"]] == ["ua-22222222-aaaa-4bbb-8ccc-00000000000b"]


def test_dry_run_for_no_sriov_should_say_nothing(host, hook_env, capsys):
    env, _ = hook_env(read_domain("no_sriov"))
    rc, out, _ = run(env, "before_vm_migrate_source", "--dry-run", capsys=capsys)
    assert rc == 0 and json.loads(out)["verdict"] == "nothing"


def test_source_should_refuse_when_a_vnic_is_not_migratable(host, hook_env, capsys):
    env, path = hook_env(read_domain("mixed_migratable"))
    rc, out, err = run(env, "before_vm_migrate_source", capsys=capsys)
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sriov-migration: vm=%s" % VM)
    assert "56:6f:1a:2b:04:02" in lines[0] and "set-migratable" in lines[0]
    assert "56:6f:1a:2b:04:01" not in lines[0]
    assert path.read_bytes() == read_domain("mixed_migratable")
    assert host.claims() == []


def test_dry_run_refuse_should_exit_2_with_per_vnic_flags(host, hook_env, capsys):
    env, _ = hook_env(read_domain("mixed_migratable"))
    rc, out, _ = run(env, "before_vm_migrate_source", "--dry-run", capsys=capsys)
    plan = json.loads(out)
    assert rc == 2 and plan["verdict"] == "refuse"
    flags = {v["mac"]: v["migratable"] for v in plan["vnics"]}
    assert flags["56:6f:1a:2b:04:01"] is True and flags["56:6f:1a:2b:04:02"] is False


@pytest.mark.parametrize("value,verdict", [("YES", "migrate"), ("0", "refuse")], ids=["yes", "zero"])
def test_vm_custom_property_in_env_should_cover_unmarked_vnics(host, hook_env, capsys, value, verdict):
    xml = read_domain("one_vf_vlan").replace(
        b"<ovirt-vm:sriov_migratable>true</ovirt-vm:sriov_migratable>", b"")
    env, _ = hook_env(xml, sriov_migratable=value)
    _, out, _ = run(env, "before_vm_migrate_source", "--dry-run", capsys=capsys)
    assert json.loads(out)["verdict"] == verdict


@pytest.mark.parametrize("name", ["malformed", "billion_laughs", "xxe"])
@pytest.mark.parametrize("point", ["before_vm_migrate_source", "before_vm_migrate_destination"])
def test_bad_xml_should_fail_before_points_with_one_line(host, hook_env, capsys, name, point):
    xml = read_domain(name)
    if b"hostdev" not in xml:
        xml = xml + b"<!-- hostdev -->"  # make sure it is not answered from the fast path
    env, path = hook_env(xml)
    rc, out, err = run(env, point, capsys=capsys)
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("sriov-migration: ")
    assert "Traceback" not in err and "domain XML" in err
    assert path.read_bytes() == xml


def test_bad_xml_should_be_error_1_at_after_points(host, hook_env, capsys):
    env, _ = hook_env(read_domain("malformed") + b"<hostdev")
    rc, _, err = run(env, "after_vm_migrate_destination", capsys=capsys)
    assert rc == 1 and err.count("\n") == 1


def test_missing_domxml_env_should_fail_clearly(host, capsys):
    rc = main(["--point", "before_vm_migrate_source"], env={"vmId": VM})
    err = capsys.readouterr().err
    assert rc == 2 and "_hook_domxml" in err


def test_unknown_point_should_fail_clearly(host, hook_env, capsys):
    env, _ = hook_env(read_domain("one_vf_vlan"))
    rc = main(["--point", "before_vm_start"], env=env)
    assert rc == 1 and "unknown hook point" in capsys.readouterr().err


def test_destination_should_reserve_a_vf_per_recorded_vnic(host, hook_env, capsys):
    env, path = hook_env(incoming_xml(SECOND))
    rc, _, err = run(env, "before_vm_migrate_destination", capsys=capsys)
    assert rc == 0, err
    claims = host.claims(VM)
    assert sorted(c.mac for c in claims) == ["56:6f:1a:2b:00:01", "56:6f:1a:2b:00:02"]
    assert {c.state for c in claims} == {"reserved"}
    assert len({c.vf_address for c in claims}) == 2
    assert b'type="hostdev"' not in path.read_bytes()


def test_destination_should_refuse_a_recorded_vnic_its_policy_refuses(host, hook_env, capsys):
    """The destination applies the source's policy again; a record is no way around it."""
    env, path = hook_env(incoming_xml(SECOND, marked=False))
    rc, _, err = run(env, "before_vm_migrate_destination", capsys=capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "migration refused: not migratable: 56:6f:1a:2b:00:02 (host default" in err
    assert host.claims(VM) == []


def test_destination_should_reuse_an_earlier_reservation(host, hook_env, capsys):
    from sriov_host import inventory
    from sriov_host.ledger import Ledger

    inv = inventory.load_nodedev_file(str(host.inventory))
    with Ledger(str(host.ledger)) as ledger:
        first = ledger.reserve(VM, [{"mac": "56:6f:1a:2b:00:01"}], inv, ttl=60)
    env, _ = hook_env(incoming_xml())
    rc, _, err = run(env, "before_vm_migrate_destination", capsys=capsys)
    assert rc == 0 and "reservation made earlier" in err
    assert [c.vf_address for c in host.claims(VM)] == [first.claims[0].vf_address]


def test_destination_should_refuse_when_no_vf_is_free(host, hook_env, capsys):
    from sriov_host import inventory
    from sriov_host.ledger import Ledger

    inv = inventory.load_nodedev_file(str(host.inventory))
    with Ledger(str(host.ledger)) as ledger:
        for i in range(len(inv.vfs)):
            ledger.reserve("other-%d" % i, [{"mac": "02:00:00:00:00:%02x" % i}], inv, ttl=60)
    before = host.claims()
    env, _ = hook_env(incoming_xml(SECOND))
    rc, _, err = run(env, "before_vm_migrate_destination", capsys=capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "no free VF" in err and "56:6f:1a:2b:00:01" in err and "0 free" in err
    assert host.claims() == before


def test_destination_should_not_take_vfs_held_by_running_domains(tmp_path, monkeypatch, hook_env,
                                                                  capsys):
    """A VF the engine gave to a VM we never saw is not free."""
    from helpers import nodedev
    from helpers.hookhost import HostFixture

    h = HostFixture(tmp_path, pfs=1, vfs=1)
    taken = read_domain("one_vf_vlan").replace(b"bus=\"0x05\" domain=\"0x0000\" function=\"0x2\""
                                               b" slot=\"0x10\"",
                                               b"bus=\"0x05\" domain=\"0x0000\" function=\"0x0\""
                                               b" slot=\"0x00\"")
    taken = taken.replace(b'type="kvm"', b'type="test"').replace(VM.encode(),
                                                                b"99999999-0000-4000-8000-000000000001")
    h.node.write_text(nodedev.node_xml(nodedev.devices(pfs=1, vfs=1, base_bus=0x04),
                                       domains=[taken.decode().split("?>", 1)[1]]))
    monkeypatch.setenv("SRIOV_MIGRATION_CONF", str(h.conf))
    env, _ = hook_env(incoming_xml())
    rc, _, err = run(env, "before_vm_migrate_destination", capsys=capsys)
    assert rc == 2 and "no free VF" in err
    assert h.claims() == []


def test_after_source_and_destroy_should_release_the_vms_vfs_in_use(host, hook_env, capsys):
    from sriov_host import inventory
    from sriov_host.ledger import IN_USE, Ledger

    inv = inventory.load_nodedev_file(str(host.inventory))
    with Ledger(str(host.ledger)) as ledger:
        ledger.hold(VM, [{"vf": inv.vfs[0], "mac": "56:6f:1a:2b:00:01"}], IN_USE)
        ledger.reserve("other", [{"mac": "56:6f:1a:2b:00:09"}], inv, ttl=60)
    env, _ = hook_env(incoming_xml())
    rc, _, err = run(env, "after_vm_migrate_source", capsys=capsys)
    assert rc == 0 and "released 1 source VF" in err
    assert [c.vm_id for c in host.claims()] == ["other"]
    with Ledger(str(host.ledger)) as ledger:
        ledger.hold(VM, [{"vf": inv.vfs[0], "mac": "56:6f:1a:2b:00:01"}], IN_USE)
    rc, _, err = run(env, "after_vm_destroy", capsys=capsys)
    assert rc == 0 and "released 1 VF" in err
    assert [c.vm_id for c in host.claims()] == ["other"]


# -- NUMA: the destination hook prefers VFs near the VM when it reserves itself ---------
# HostFixture's inventory: ens1f0 (4 VFs) on NUMA node 0, ens1f1 (4 VFs) on node 1.

class Topology:
    """CPUs 0-3 on node 0, 4-7 on node 1."""

    def cpu_nodes(self):
        return {cpu: cpu // 4 for cpu in range(8)}


def pinned_xml(numa=b"", extra=SECOND) -> bytes:
    return incoming_xml(extra).replace(b"<cputune />", numa, 1)


def test_destination_should_reserve_on_the_vms_numa_node(host, hook_env, capsys):
    env, _ = hook_env(pinned_xml(b"<numatune><memory mode='strict' nodeset='1'/></numatune>"))
    rc, _, err = run(env, "before_vm_migrate_destination", capsys=capsys)
    assert rc == 0, err
    assert {c.pf for c in host.claims(VM)} == {"ens1f1"}
    assert "reserved now; NUMA node(s) 1 (from numa_nodes): every VF local" in err


def test_destination_should_map_pinned_cpus_with_its_own_topology(host, hook_env, capsys):
    env, _ = hook_env(pinned_xml(b"<cputune><vcpupin vcpu='0' cpuset='4-7,^6'/></cputune>"))
    rc = main(["--point", "before_vm_migrate_destination"], env=env, cpu_topology=Topology())
    err = capsys.readouterr().err
    assert rc == 0, err
    assert {c.pf for c in host.claims(VM)} == {"ens1f1"}
    assert "NUMA node(s) 1 (from cpus): every VF local" in err


def test_destination_should_say_which_vf_is_off_node(host, hook_env, capsys):
    from sriov_host import inventory
    from sriov_host.ledger import Ledger

    inv = inventory.load_nodedev_file(str(host.inventory))
    with Ledger(str(host.ledger)) as ledger:
        ledger.reserve("other", [{"mac": "02:00:00:00:00:%02x" % i} for i in range(3)], inv, ttl=60,
                       prefer_nodes=(1,))
    env, _ = hook_env(pinned_xml(b"<numatune><memory nodeset='1'/></numatune>"))
    rc, _, err = run(env, "before_vm_migrate_destination", capsys=capsys)
    assert rc == 0, err
    assert {c.mac: c.pf for c in host.claims(VM)} == {"56:6f:1a:2b:00:01": "ens1f1",
                                                      "56:6f:1a:2b:00:02": "ens1f0"}
    assert "off node 56:6f:1a:2b:00:02 (node 0)" in err and err.count("\n") == 1


def test_destination_should_keep_the_plain_order_without_numa_ties(host, hook_env, capsys):
    env, _ = hook_env(pinned_xml())
    rc, _, err = run(env, "before_vm_migrate_destination", capsys=capsys)
    assert rc == 0 and "NUMA" not in err
    assert {c.pf for c in host.claims(VM)} == {"ens1f0"}


def test_destination_should_reserve_without_preference_when_a_nodeset_is_bad(host, hook_env, capsys):
    env, _ = hook_env(pinned_xml(b"<numatune><memory nodeset='1-x'/></numatune>"))
    rc, _, err = run(env, "before_vm_migrate_destination", capsys=capsys)
    assert rc == 0 and "no NUMA preference: numatune memory nodeset" in err
    assert len(host.claims(VM)) == 2


def test_after_migrate_destination_should_name_what_the_service_plugs_and_touch_nothing(
        host, hook_env, capsys):
    """VDSM reports the VM Up (and the service plugs) only after this point: it attaches nothing."""
    xml = read_domain("no_sriov").replace(b"</metadata>", RECORD % SECOND + b"</metadata>")
    env, path = hook_env(xml)
    rc, out, err = run(env, "after_vm_migrate_destination", capsys=capsys)
    assert rc == 0 and out == "" and len(err.splitlines()) == 1
    assert "56:6f:1a:2b:00:01, 56:6f:1a:2b:00:02" in err and "left to sriov-migrationd" in err
    assert path.read_bytes() == xml


def test_after_migrate_destination_should_say_nothing_without_vnics_to_plug(host, hook_env, capsys):
    env, _ = hook_env(read_domain("several_vfs"))
    assert run(env, "after_vm_migrate_destination", capsys=capsys) == (0, "", "")
