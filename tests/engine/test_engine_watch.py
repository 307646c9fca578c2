"""``sriov-engine watch`` through the REST contract: the simulator migrates as MigrateVmCommand does.

The simulator unplugs the passthrough vNICs (1014, the migration's
correlation id), logs the start (62), and on a failure (65) leaves them
unplugged; on a success it plugs them on the destination, and logs 12003
for those the destination had no VF for. The watcher reads its events
over ovirtsdk4 and plugs back through ``PUT .../nics/{id}``.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from engine_fakes import PASSWORD, USER

from engine_adapter.engine import Engine
from engine_adapter.model import Vnic
from engine_adapter.session import EngineOptions
from engine_adapter.watch import Watcher, WatchOptions
from sriov_lab.engine_sim import API

MAC = "56:6f:00:00:00:%02x"


@pytest.fixture
def world(sim):
    """Three hosts and a VM on host1 with two migratable VFs and one unplugged before."""
    net = sim.add_network("sriov-net")
    prof = sim.add_profile("ready", net, passthrough=True, migratable=True)
    hosts = [sim.add_host("host%d" % i) for i in (1, 2, 3)]
    vm = sim.add_vm("vm-w", hosts[0], nics=[
        {"name": "vf-a", "mac": MAC % 1, "profile": prof},
        {"name": "vf-b", "mac": MAC % 2, "profile": prof},
        {"name": "vf-old", "mac": MAC % 3, "profile": prof, "plugged": False},
    ])
    return {"vm": vm, "hosts": hosts, "profile": prof}


@pytest.fixture
def opts(sim) -> EngineOptions:
    return EngineOptions(url=sim.url, username=USER, password=PASSWORD, ca_file=sim.ca_file, timeout=5)


@pytest.fixture
def watcher(opts, tmp_path, caplog):
    """A watcher already following (its first pass starts at the newest event)."""
    caplog.set_level(logging.INFO, logger="sriov-engine")
    made = []

    def make(**kw):
        w = Watcher(lambda: Engine(opts), WatchOptions(
            state_file=str(tmp_path / "state.json"), poll_interval=0.05, grace=0,
            retry_base=0.01, **kw))
        made.append(w)
        return w
    w = make()
    assert w.run_once()
    w.make = make
    yield w
    for m in made:
        m.close()


def migrate(sim, opts, vm_id, host, fail=False):
    if fail:
        sim.on_migrate(lambda m: False)
    with Engine(opts) as engine:
        engine.migrate(engine.vm(vm_id), engine.find_host(host))
    assert sim.wait_migrations()


def plugged(sim, vm_id) -> dict:
    return {n["name"]: n["plugged"] for n in sim.vms[vm_id]["nics"]}


def nic_puts(sim, vm_id) -> list:
    return [r.path.rsplit("/", 1)[1] for r in sim.find("PUT", "^%s/vms/%s/nics/" % (API, vm_id))]


def passes(w, n=3):
    for _ in range(n):
        assert w.run_once()


def test_watch_should_plug_back_on_the_source_what_a_failed_migration_unplugged(
        sim, world, opts, watcher, caplog):
    vm = world["vm"]
    migrate(sim, opts, vm, "host2", fail=True)
    assert plugged(sim, vm) == {"vf-a": False, "vf-b": False, "vf-old": False}
    passes(watcher)
    assert plugged(sim, vm) == {"vf-a": True, "vf-b": True, "vf-old": False}
    assert sim.vms[vm]["host"] == world["hosts"][0]
    ids = {n["name"]: n["id"] for n in sim.vms[vm]["nics"]}
    assert sorted(nic_puts(sim, vm)) == sorted([ids["vf-a"], ids["vf-b"]])  # once each
    line = next(r.getMessage() for r in caplog.records if "vNIC vf-a plugged again" in r.getMessage())
    assert re.search(r"VM vm-w \(%s\): vNIC vf-a plugged again on host host1 after event \d+ "
                     r"\(code 65\); \d+\.\ds from the failure to the NIC back" % vm, line)
    metrics = watcher.metrics.registry
    assert metrics.get_sample_value("sriov_watch_plugs_total", {"outcome": "plugged"}) == 2
    assert metrics.get_sample_value("sriov_watch_triggers_total", {"code": "65"}) == 1


def test_watch_should_wait_for_a_rerun_and_leave_a_successful_one_alone(sim, world, opts, watcher):
    vm = world["vm"]
    sim.rerun_hosts = ["host3"]
    tries = []
    sim.on_migrate(lambda m: tries.append(m.dst["name"]) or len(tries) > 1)
    with Engine(opts) as engine:
        engine.migrate(engine.vm(vm), engine.find_host("host2"))
    assert sim.wait_migrations() and tries == ["host2", "host3"]
    passes(watcher)
    assert [e["code"] for e in sim.event_log.events] == [1014, 1014, 62, 128, 62, 1012, 1012, 63]
    assert plugged(sim, vm) == {"vf-a": True, "vf-b": True, "vf-old": False}
    assert nic_puts(sim, vm) == [] and watcher.tracker.due() == []


def test_watch_should_plug_on_the_destination_after_12003_once_a_vf_frees_up(
        sim, world, opts, watcher, caplog):
    vm, host2 = world["vm"], world["hosts"][1]
    sim.set_vf_capacity(host2, 1)
    migrate(sim, opts, vm, "host2")
    assert 12003 in [e["code"] for e in sim.event_log.events]
    assert plugged(sim, vm) == {"vf-a": True, "vf-b": False, "vf-old": False}
    sim.set_vf_capacity(host2, 1)  # still full: the plug fails and is retried
    passes(watcher, 2)
    assert plugged(sim, vm)["vf-b"] is False
    assert any("plugging vNIC vf-b after event" in r.getMessage() and "no available Virtual "
               "Function" in r.getMessage() for r in caplog.records)
    sim.set_vf_capacity(host2, 2)
    passes(watcher)
    assert plugged(sim, vm) == {"vf-a": True, "vf-b": True, "vf-old": False}
    assert sim.vms[vm]["host"] == host2


@pytest.mark.parametrize("meanwhile", ["admin", "down", "deleted", "migrates-again"])
def test_watch_should_leave_what_changed_since_the_failure(sim, world, opts, watcher, meanwhile):
    vm = world["vm"]
    migrate(sim, opts, vm, "host2", fail=True)
    watcher.opts.grace = 3600  # reads the failure, waits
    passes(watcher, 1)
    if meanwhile == "admin":
        nic = next(n for n in sim.vms[vm]["nics"] if n["name"] == "vf-a")
        with Engine(opts) as engine:
            vm_view = engine.vm(vm)
            engine.plug_vnic(vm_view, Vnic(nic["id"], "vf-a", None, None, None))
        sim.vms[vm]["nics"][0]["plugged"] = False  # and unplugged again behind our back
        sim.event_log.log(1014, sim.vms[vm], None, "admin-corr", InterfaceName="vf-a")
    elif meanwhile == "down":
        sim.stop_vm(vm)
    elif meanwhile == "deleted":
        del sim.vms[vm]
    else:
        migrate(sim, opts, vm, "host3", fail=True)
    watcher.opts.grace = 0
    passes(watcher)
    if meanwhile == "admin":
        assert plugged(sim, vm) == {"vf-a": False, "vf-b": True, "vf-old": False}
    elif meanwhile != "deleted":
        assert not any(plugged(sim, vm).values())
    assert watcher.tracker.due() == []


def test_watch_should_page_through_a_burst_larger_than_a_page(sim, world, opts, watcher):
    vm = world["vm"]
    for i in range(250):
        sim.event_log.log(30, description="User admin logged in %d" % i)
    migrate(sim, opts, vm, "host2", fail=True)
    for i in range(120):
        sim.event_log.log(30, description="filler %d" % i)
    w = watcher.make(page_size=50)
    passes(w)
    assert plugged(sim, vm)["vf-a"] is True
    assert w.last_id == sim.event_log.events[-1]["id"]
    pages = sim.find("GET", "^%s/events$" % API)
    assert any(r.query.get("search") == "page 8" for r in pages)


def test_watch_should_resume_after_a_restart_from_the_saved_id_and_say_a_gap(
        sim, world, opts, watcher, tmp_path, caplog):
    vm = world["vm"]
    watcher.close()
    last = watcher.last_id
    sim.event_log.skip(5)
    migrate(sim, opts, vm, "host2", fail=True)  # while the watcher is down
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["last_id"] == last
    w = watcher.make()
    passes(w)
    assert plugged(sim, vm)["vf-a"] is True
    assert "events %d..%d were not seen" % (last + 1, last + 5) in caplog.text


def test_watch_should_start_from_the_newest_event_on_a_corrupt_state_file(
        sim, world, opts, tmp_path, watcher, caplog):
    migrate(sim, opts, world["vm"], "host2", fail=True)
    (tmp_path / "state.json").write_text("{not json")
    w = watcher.make()
    passes(w)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unreadable" in errors[0] and "\n" not in errors[0]
    assert not plugged(sim, world["vm"])["vf-a"]  # before its start: not recorded, not plugged


def test_watch_should_go_on_through_an_expired_token_an_engine_fault_and_bad_events(
        sim, world, opts, watcher, caplog):
    vm = world["vm"]
    sim.expire_tokens()  # an engine restart: the SDK logs in again, the watcher goes on
    assert watcher.run_once()
    migrate(sim, opts, vm, "host2", fail=True)
    sim.event_log.log(None, sim.vms[vm], description="no code")
    sim.event_log.log(1014, sim.vms[vm], None, "x", description="garbled")
    sim.inject_fault("GET", "/events$", "Internal Server Error", status=500)
    assert not watcher.run_once()
    passes(watcher)
    assert plugged(sim, vm)["vf-a"] is True
    text = caplog.text
    assert "engine pass failed: engine refused to list events" in text
    assert "skipping a malformed event" in text and "without a vNIC name" in text


def test_watch_should_say_an_unreachable_engine_in_one_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sriov-engine")
    gone = EngineOptions(url="https://127.0.0.1:1/ovirt-engine/api", username=USER,
                         password=PASSWORD, insecure=True, timeout=2)
    w = Watcher(lambda: Engine(gone), WatchOptions(state_file=str(tmp_path / "s.json")))
    assert not w.run_once() and not w.run_once()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 2 and "unreachable" in lines[0] and "\n" not in lines[0]


def test_watch_should_say_bad_credentials_in_one_line_and_plug_nothing(sim, world, opts, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sriov-engine")
    bad = EngineOptions(url=opts.url, username=USER, password="wrong", ca_file=opts.ca_file, timeout=5)
    w = Watcher(lambda: Engine(bad), WatchOptions(state_file=str(tmp_path / "s.json")))
    assert not w.run_once()
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "login to engine" in line and "incorrect" in line
    assert sim.find("PUT", "/nics/") == []


def test_watch_cli_once_should_follow_and_exit(sim, world, run, tmp_path):
    state = str(tmp_path / "cli-state.json")
    res = run("watch", "--once", "--state-file", state)
    assert res.rc == 0, res.err
    assert "no saved state: following events after" in res.err
    assert json.loads(open(state).read())["version"] == 1
    res = run("watch", "--once", "--state-file", state, "--page-size", "0")
    assert res.rc == 2 and res.err.count("\n") == 1


def test_watch_should_keep_a_pending_plug_across_a_restart(sim, world, opts, watcher, tmp_path):
    vm = world["vm"]
    migrate(sim, opts, vm, "host2", fail=True)
    watcher.opts.grace = 3600  # has read the failure, still waiting when it stops
    passes(watcher, 1)
    watcher.close()
    state = json.loads((tmp_path / "state.json").read_text())
    [mig] = state["migrations"].values()
    assert mig["state"] == "failed" and mig["unplugged"] == ["vf-a", "vf-b"]
    w = watcher.make()
    passes(w)
    assert plugged(sim, vm) == {"vf-a": True, "vf-b": True, "vf-old": False}
    assert len(nic_puts(sim, vm)) == 2


def test_watch_metrics_should_be_served_on_loopback(sim, world, opts, watcher):
    import urllib.request

    from engine_adapter.watch_io import start_metrics

    migrate(sim, opts, world["vm"], "host2", fail=True)
    passes(watcher)
    server = start_metrics(watcher.metrics, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % server.port, timeout=5) as r:
            text = r.read().decode()
    finally:
        server.stop()
    assert 'sriov_watch_plugs_total{outcome="plugged"} 2.0' in text
    assert "sriov_watch_nic_back_seconds_count 2.0" in text
