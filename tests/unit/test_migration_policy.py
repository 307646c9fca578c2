"""What SRIOV.migrate sends with VDSM's VM.migrate, and how it reads VDSM's answers.

The policy is the engine's (ovirt-engine MigrateBrokerVDSCommand, the
"Minimal downtime" MigrationPolicies value); the answers are VDSM's
(lib/vdsm/virt/migration.py SourceThread.status).
"""

from __future__ import annotations

import pytest
from lxml import etree

from jsonrpc_plugin import params as params_mod
from jsonrpc_plugin import vdsm_api
from sriov_host import config, migration_policy, numa
from sriov_host.errors import InvalidParams

VM = "7a9c0e12-3b4d-4e5f-8a6b-7c8d9e0f1a22"

# ovirt-engine packaging/dbscripts/upgrade/pre_upgrade/0000_config.sql, "Minimal downtime",
# as bll/migration/ConvergenceSchedule.asMap() sends it
MINIMAL_DOWNTIME = {
    "init": [{"name": "setDowntime", "params": ["100"]}],
    "stalling": [{"limit": limit, "action": {"name": "setDowntime", "params": [ms]}}
                 for limit, ms in ((1, "150"), (2, "200"), (3, "300"), (4, "400"), (6, "500"))]
    + [{"limit": -1, "action": {"name": "abort", "params": []}}],
}


def _stats(code, message, progress=40):
    return {"status": {"code": code, "message": message}, "progress": progress}


@pytest.mark.parametrize("stats, state, progress", [
    pytest.param(_stats(0, "Migration in progress"), vdsm_api.IN_PROGRESS, 40, id="running"),
    pytest.param(_stats(0, "Migration done"), vdsm_api.DONE, 100, id="done"),
    pytest.param(_stats(82, "Incoming migration limit exceeded", 0), vdsm_api.IN_PROGRESS, 0,
                 id="82-waits-at-the-limit"),
    pytest.param(_stats(82, "Migration done", 73), vdsm_api.DONE, 100, id="done-wins-over-82"),
    pytest.param(_stats(12, "Fatal error during migration"), vdsm_api.FAILED, 40, id="12-failed"),
    pytest.param(_stats(47, "Migration canceled"), vdsm_api.FAILED, 40, id="47-cancelled"),
    pytest.param(None, vdsm_api.IN_PROGRESS, 0, id="nothing"),
])
def test_progress_from_stats_should_read_vdsms_status(stats, state, progress):
    got = vdsm_api.progress_from_stats(stats)
    assert (got.state, got.progress) == (state, progress)
    assert got.code == ((stats or {}).get("status") or {}).get("code", 0)


def test_migrate_params_should_send_the_engines_default_policy_with_its_types():
    sent = vdsm_api.migrate_params(VM, "host2:54321", config.Config().migration)
    assert sent == {
        "vmId": VM, "dst": "host2:54321", "method": "online", "mode": "remote",
        "tunneled": "false", "abortOnError": "true", "autoConverge": "true", "compressed": "false",
        "encrypted": False, "enableGuestEvents": True, "maxBandwidth": 625, "incomingLimit": 2,
        "outgoingLimit": 2, "convergenceSchedule": MINIMAL_DOWNTIME}


def test_migrate_params_should_take_config_then_the_calls_overrides():
    pol = config.loads("[migration]\nmax_bandwidth = 0\nconvergence_schedule = legacy\n"
                       "encrypted = yes\n[migration_networks]\nhost2 = 10.10.0.12\n").migration
    sent = vdsm_api.migrate_params(VM, "host2:54321", pol, pol.dstqemu_for("host2"))
    assert "maxBandwidth" not in sent and "convergenceSchedule" not in sent  # VDSM's own then
    assert sent["encrypted"] is True and sent["dstqemu"] == "10.10.0.12"
    over = params_mod.migrate_params("params", {
        "maxBandwidth": 300, "convergenceSchedule": "post-copy", "autoConverge": "false",
        "dstqemu": "10.20.0.12", "cpusets": ["4", "5-6"], "numaNodesets": ["1"], "downtime": 400})
    sent = vdsm_api.migrate_params(VM, "host2:54321", pol, pol.dstqemu_for("host2"), over)
    assert (sent["maxBandwidth"], sent["autoConverge"], sent["dstqemu"], sent["downtime"]) == \
        (300, "false", "10.20.0.12", "400")
    assert sent["cpusets"] == ["4", "5-6"] and sent["numaNodesets"] == ["1"]
    assert sent["convergenceSchedule"]["stalling"][-2:] == [
        {"limit": -1, "action": {"name": "postcopy", "params": []}},
        {"limit": -1, "action": {"name": "abort", "params": []}}]


@pytest.mark.parametrize("given, field", [
    pytest.param({"speed": 1}, "params.speed", id="unknown-key"),
    pytest.param({"maxBandwidth": "fast"}, "params.maxBandwidth", id="bandwidth-word"),
    pytest.param({"maxBandwidth": True}, "params.maxBandwidth", id="bandwidth-bool"),
    pytest.param({"autoConverge": "yes please"}, "params.autoConverge", id="bool-word"),
    pytest.param({"incomingLimit": 0}, "params.incomingLimit", id="limit-zero"),
    pytest.param({"convergenceSchedule": "fastest"}, "params.convergenceSchedule", id="schedule-name"),
    pytest.param({"convergenceSchedule": {"init": [{"name": "reboot", "params": []}]}},
                 "params.convergenceSchedule.init[0].name", id="schedule-action"),
    pytest.param({"convergenceSchedule": {"stalling": [{"limit": 1, "action": {
        "name": "setDowntime", "params": ["soon"]}}]}},
        "params.convergenceSchedule.stalling[0].action.params", id="schedule-downtime"),
    pytest.param({"cpusets": "1-3"}, "params.cpusets", id="cpusets-not-a-list"),
    pytest.param({"cpusets": ["1", "x"]}, "params.cpusets[1]", id="cpusets-item"),
    pytest.param({"dstqemu": "bad host!"}, "params.dstqemu", id="dstqemu"),
    pytest.param([1], "params", id="not-an-object"),
])
def test_migrate_params_validation_should_name_the_bad_key(given, field):
    with pytest.raises(InvalidParams) as ei:
        params_mod.migrate_params("params", given)
    assert ei.value.code == -32602 and ei.value.data["field"] == field


def test_migrate_params_validation_should_take_engine_strings_and_bare_ipv6():
    got = params_mod.migrate_params("params", {"compressed": "TRUE", "dstqemu": "[fd00::12]"})
    assert got == {"compressed": True, "dstqemu": "fd00::12"}


def test_schedules_should_be_the_engines_policies():
    assert migration_policy.schedule("minimal-downtime") == MINIMAL_DOWNTIME
    assert migration_policy.schedule("suspend-workload")["stalling"][-2:] == [
        {"limit": -1, "action": {"name": "setDowntime", "params": ["5000"]}},
        {"limit": -1, "action": {"name": "abort", "params": []}}]
    assert migration_policy.schedule("legacy") is None


def _domain(policy=None, pins=(), vcpus="4", cells=0, memnode=False):
    md = ("<metadata><ovirt-vm:vm xmlns:ovirt-vm='http://ovirt.org/vm/1.0'><ovirt-vm:cpuPolicy>%s"
          "</ovirt-vm:cpuPolicy></ovirt-vm:vm></metadata>" % policy) if policy else ""
    numa_cells = "".join("<cell id='%d' cpus='%d' memory='1024'/>" % (i, i) for i in range(cells))
    return etree.fromstring(
        "<domain><vcpu current='%s'>16</vcpu><cpu><numa>%s</numa></cpu><cputune>%s</cputune>%s%s"
        "</domain>" % (vcpus, numa_cells, "".join("<vcpupin vcpu='%d' cpuset='%d'/>" % (v, v + 4)
                                                  for v in pins),
                       "<numatune><memnode cellid='0' mode='strict' nodeset='1'/></numatune>"
                       if memnode else "", md))


@pytest.mark.parametrize("root, policy, dropped", [
    pytest.param(_domain("dedicated", (0, 1, 2, 3)), "dedicated", (0, 1, 2, 3), id="dedicated"),
    pytest.param(_domain("isolate-threads", (0, 1)), "isolate-threads", (0, 1), id="isolate-threads"),
    pytest.param(_domain("manual", (0, 1)), "manual", (), id="manual-pins-are-kept"),
    pytest.param(_domain("none", (0, 1, 2, 3)), "none", (), id="shared-pool-pins-are-remade"),
    pytest.param(_domain(None, (0,)), "manual", (), id="implied-manual"),
    pytest.param(_domain(None), "none", (), id="implied-none"),
])
def test_cpu_pinning_should_say_what_vdsm_drops_for_good(root, policy, dropped):
    pin = numa.cpu_pinning(root)
    assert (pin.policy, pin.dropped, pin.vcpus) == (policy, dropped, 4)


def test_cpu_pinning_should_count_vnuma_cells_and_memnodes():
    pin = numa.cpu_pinning(_domain("siblings", (0,), vcpus="2", cells=2, memnode=True))
    assert (pin.vcpus, pin.vnuma_cells, pin.memnodes, pin.dropped) == (2, 2, True, (0,))
