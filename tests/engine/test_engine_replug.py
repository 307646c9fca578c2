"""Behind an engine >= 4.1: a failed migration gets its passthrough vNICs plugged again via REST.

The simulator unplugs migratable passthrough vNICs on a migrate action,
plugs them on the destination after a success and leaves them unplugged
after a failure, as the real engine does; ``sriov-engine migrate`` then
sets ``plugged=true`` on those it saw plugged before.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import time
from urllib.parse import urlencode, urlparse

import pytest
from engine_fakes import MAC1, MAC2, PASSWORD, USER, FakeReserver

from engine_adapter.model import Vnic, nics_to_replug, replug_state
from sriov_lab.engine_sim import API, SSO_TOKEN

FAST = ("--poll-interval", "0.05", "--settle", "1")
MAC7, MAC8 = "56:6f:00:00:00:07", "56:6f:00:00:00:08"
PLUGGED_BODY = re.compile(r"<nic>\s*<plugged>true</plugged>\s*</nic>")


def migrate(run, vm, *extra, reserver=None):
    return run("migrate", vm, "--host", "host2", *FAST, *extra, reserver=reserver or FakeReserver())


def nic_of(sim, vm_id, mac) -> dict:
    return next(n for n in sim.vms[vm_id]["nics"] if n["mac"] == mac)


def nic_puts(sim, vm_id) -> list:
    return sim.find("PUT", "^%s/vms/%s/nics/" % (API, vm_id))


def fail_migration(sim, seen=None):
    """A migration that fails on the host, noting each vNIC's plugged state meanwhile."""
    def lab_migration(m):
        if seen is not None:
            seen.update({n["mac"]: n["plugged"] for n in sim.vms[m.vm_id]["nics"]})
        raise RuntimeError("libvirt: migration failed")
    sim.on_migrate(lab_migration)


def add_two_vf_vm(sim, seed, second_plugged=True) -> str:
    return sim.add_vm("vm-two", seed.host1, nics=[
        {"name": "vf-a", "mac": MAC7, "profile": seed.ready},
        {"name": "vf-b", "mac": MAC8, "profile": seed.ready, "plugged": second_plugged},
    ])


def test_failed_migration_should_plug_the_passthrough_vnic_again_through_rest(sim, seed, run):
    seen = {}
    fail_migration(sim, seen)
    res = migrate(run, "vm-ready")
    assert res.rc == 2, res.out + res.err
    assert seen == {MAC1: True, MAC2: False}, "the engine unplugs the VF before migrating"
    nic = nic_of(sim, seed.vm_ready, MAC2)
    assert nic["plugged"] is True
    puts = nic_puts(sim, seed.vm_ready)
    assert [p.path for p in puts] == ["%s/vms/%s/nics/%s" % (API, seed.vm_ready, nic["id"])]
    assert PLUGGED_BODY.search(puts[0].body)
    assert re.search(r"cleanup  re-plug +nic1 \(%s\) plugged again on the source through the engine "
                     r"\(plugged=true\) \(\d+\.\d\ds\)" % MAC2, res.out)
    assert res.out.index("cleanup  release") < res.out.index("cleanup  re-plug")
    assert "migration of vm-ready to host2 failed" in res.err


def test_failed_migration_should_leave_a_vnic_unplugged_before_it_unplugged(sim, seed, run):
    vm_id = add_two_vf_vm(sim, seed, second_plugged=False)
    fail_migration(sim)
    fake = FakeReserver()
    res = migrate(run, "vm-two", reserver=fake)
    assert res.rc == 2, res.out + res.err
    assert nic_of(sim, vm_id, MAC7)["plugged"] is True
    assert nic_of(sim, vm_id, MAC8)["plugged"] is False
    puts = nic_puts(sim, vm_id)
    assert [p.path.rsplit("/", 1)[1] for p in puts] == [nic_of(sim, vm_id, MAC7)["id"]]
    assert "vf-a (%s) plugged again" % MAC7 in res.out and MAC8 not in res.out
    assert [n["mac"] for n in fake.calls[0][2]] == [MAC7], "an unplugged vNIC needs no VF"


def test_successful_migration_should_plug_nothing_itself(sim, seed, run):
    seen = {}
    sim.on_migrate(lambda m: seen.update({n["mac"]: n["plugged"] for n in sim.vms[m.vm_id]["nics"]}))
    res = migrate(run, "vm-ready")
    assert res.rc == 0, res.out + res.err
    assert seen == {MAC1: True, MAC2: False}
    assert nic_of(sim, seed.vm_ready, MAC2)["plugged"] is True  # the engine plugged it on host2
    assert sim.vms[seed.vm_ready]["host"] == seed.host2
    assert nic_puts(sim, seed.vm_ready) == [] and "re-plug" not in res.out


def test_a_refused_plug_should_be_reported_with_the_engine_reason(sim, seed, run):
    fail_migration(sim)
    sim.inject_fault("PUT", "/nics/", "Operation Failed",
                     "[Cannot hot plug Network Interface. There is no free VF on host host1.]",
                     status=409)
    res = migrate(run, "vm-ready")
    assert res.rc == 2
    assert nic_of(sim, seed.vm_ready, MAC2)["plugged"] is False
    assert len(nic_puts(sim, seed.vm_ready)) == 1
    line = next(ln for ln in res.out.splitlines() if "re-plug" in ln)
    assert "cleanup  re-plug  FAILED: nic1 (%s) still unplugged: engine refused to plug vNIC nic1 of " \
           "VM vm-ready: Operation Failed: [Cannot hot plug Network Interface. There is no free VF " \
           "on host host1.] (HTTP 409)" % MAC2 in line
    assert "migration of vm-ready to host2 failed" in res.err


def test_every_vnic_should_be_tried_when_one_plug_fails(sim, seed, run):
    vm_id = add_two_vf_vm(sim, seed)
    first = nic_of(sim, vm_id, MAC7)["id"]
    fail_migration(sim)
    sim.inject_fault("PUT", "/nics/%s$" % first, "Operation Failed", "[no free VF]", status=409)
    res = migrate(run, "vm-two")
    assert res.rc == 2
    assert (nic_of(sim, vm_id, MAC7)["plugged"], nic_of(sim, vm_id, MAC8)["plugged"]) == (False, True)
    assert "FAILED: vf-a (%s) still unplugged" % MAC7 in res.out
    assert "vf-b (%s) plugged again" % MAC8 in res.out


def test_a_refused_migrate_action_should_unplug_and_replug_nothing(sim, seed, run):
    sim.inject_fault("POST", "/migrate$", "Operation Failed", "[Cannot migrate VM.]", status=409)
    res = migrate(run, "vm-ready")
    assert res.rc == 2
    assert nic_of(sim, seed.vm_ready, MAC2)["plugged"] is True and nic_puts(sim, seed.vm_ready) == []
    assert "nothing to re-plug: the engine did not unplug nic1 (%s)" % MAC2 in res.out


def test_a_timed_out_migration_should_be_cancelled_then_replugged_once_the_vm_settles(sim, seed, run):
    sim.on_migrate(lambda m: not m.cancelled.wait(10))
    res = migrate(run, "vm-ready", "--wait-timeout", "0.5")
    assert res.rc == 2 and "did not finish within 0.5s" in res.err
    assert sim.vms[seed.vm_ready]["host"] == seed.host1
    assert nic_of(sim, seed.vm_ready, MAC2)["plugged"] is True
    assert len(nic_puts(sim, seed.vm_ready)) == 1, "one PUT, after the VM stopped migrating"
    assert res.out.index("cleanup  cancel") < res.out.index("plugged again")


def test_a_vm_that_reached_the_destination_after_all_should_not_be_replugged(sim, seed, run):
    sim.on_migrate(lambda m: time.sleep(1.0))  # ignores the cancel and succeeds
    res = migrate(run, "vm-ready", "--wait-timeout", "0.3")
    assert res.rc == 2
    assert sim.vms[seed.vm_ready]["host"] == seed.host2
    assert nic_puts(sim, seed.vm_ready) == []
    assert "nothing re-plugged: the VM reached the destination after all" in res.out


def test_a_vm_still_migrating_after_replug_wait_should_be_named(sim, seed, run):
    sim.on_migrate(lambda m: time.sleep(2.0) and False)
    res = migrate(run, "vm-ready", "--wait-timeout", "0.2", "--replug-wait", "0.3")
    assert res.rc == 2
    assert nic_puts(sim, seed.vm_ready) == []
    assert re.search(r"re-plug +FAILED: VM vm-ready still migrating after 0.3s; not re-plugged: "
                     r"nic1 \(%s\)" % MAC2, res.out)
    assert sim.wait_migrations(5)


def test_ctrl_c_should_replug_after_the_cancel(sim, seed, run):
    def lab_migration(m):
        deadline = time.monotonic() + 5
        while not sim.find("GET", "/vms/%s$" % m.vm_id) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        return not m.cancelled.wait(10)
    sim.on_migrate(lab_migration)
    res = migrate(run, "vm-ready")
    assert res.rc == 130
    assert nic_of(sim, seed.vm_ready, MAC2)["plugged"] is True
    assert "nic1 (%s) plugged again" % MAC2 in res.out
    assert sim.wait_migrations(5)


# ---- the pure decisions -------------------------------------------------

def vnic(nid, plugged, interface="pci_passthrough"):
    return Vnic(nid, "nic-" + nid, None, interface, None, plugged)


def test_nics_to_replug_should_pick_by_id_only_those_now_unplugged():
    before = (vnic("a", True), vnic("b", True), vnic("gone", True))
    now = (vnic("a", False), vnic("b", True), vnic("c", False), vnic("x", None))
    assert [v.id for v in nics_to_replug(before, now)] == ["a"]


@pytest.mark.parametrize("status,host,want", [
    pytest.param("migrating", "src", "wait", id="migrating"),
    pytest.param("up", "dst", "skip", id="reached-destination"),
    pytest.param("up", "src", "replug", id="up-on-source"),
    pytest.param("down", None, "replug", id="down"),
    pytest.param("up", "other", "skip", id="elsewhere"),
])
def test_replug_state_should_replug_only_on_the_source(status, host, want):
    assert replug_state(status, host, "src", "dst")[0] == want


# ---- the simulator's vNIC endpoint, on the wire -------------------------

def rest(sim, method, path, body=""):
    """One request to the simulator with a fresh SSO token: (status, body)."""
    url = urlparse(sim.url)
    ctx = ssl.create_default_context(cafile=sim.ca_file)

    def send(m, p, data, headers):
        conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=10)
        try:
            conn.request(m, p, body=data, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.read().decode("utf-8")
        finally:
            conn.close()

    form = urlencode({"grant_type": "password", "scope": "ovirt-app-api", "username": USER,
                      "password": PASSWORD})
    _, token = send("POST", SSO_TOKEN, form, {"Content-Type": "application/x-www-form-urlencoded"})
    headers = {"Authorization": "Bearer " + json.loads(token)["access_token"],
               "Content-Type": "application/xml", "Version": "4"}
    return send(method, API + path, body, headers)


def test_simulator_put_nic_should_merge_plugged_and_answer_the_nic(sim, seed):
    nic = nic_of(sim, seed.vm_ready, MAC2)
    path = "/vms/%s/nics/%s" % (seed.vm_ready, nic["id"])
    status, text = rest(sim, "PUT", path, "<nic><plugged>false</plugged></nic>")
    assert status == 200 and "<plugged>false</plugged>" in text and 'id="%s"' % nic["id"] in text
    assert nic["plugged"] is False and nic["mac"] == MAC2
    status, text = rest(sim, "PUT", path, "<nic><name>ignored</name></nic>")
    assert status == 200 and nic["plugged"] is False and nic["name"] == "nic1"
    status, text = rest(sim, "GET", path)
    assert status == 200 and "<plugged>false</plugged>" in text and "<vnic_profile " in text


@pytest.mark.parametrize("body,status,words", [
    pytest.param("<nic><plugged>true", 400, "malformed", id="malformed"),
    pytest.param("", 400, "empty", id="empty"),
    pytest.param("<vm><plugged>true</plugged></vm>", 400, "expected a &lt;nic&gt;", id="wrong-root"),
    pytest.param("<nic><plugged>maybe</plugged></nic>", 400, "plugged must be a boolean", id="not-bool"),
])
def test_simulator_put_nic_should_refuse_a_bad_body(sim, seed, body, status, words):
    nic = nic_of(sim, seed.vm_ready, MAC2)
    got, text = rest(sim, "PUT", "/vms/%s/nics/%s" % (seed.vm_ready, nic["id"]), body)
    assert got == status and "<fault>" in text and words in text
    assert nic["plugged"] is True


def test_simulator_put_nic_should_404_an_unknown_nic_or_vm(sim, seed):
    status, text = rest(sim, "PUT", "/vms/%s/nics/nope" % seed.vm_ready, "<nic><plugged>true</plugged></nic>")
    assert status == 404 and "Entity not found: nope" in text
    status, _ = rest(sim, "PUT", "/vms/nope/nics/nope", "<nic><plugged>true</plugged></nic>")
    assert status == 404


def test_simulator_should_refuse_a_plug_while_the_vm_migrates(sim, seed):
    nic = nic_of(sim, seed.vm_ready, MAC2)
    sim.vms[seed.vm_ready]["status"] = "migrating"
    nic["plugged"] = False
    status, text = rest(sim, "PUT", "/vms/%s/nics/%s" % (seed.vm_ready, nic["id"]),
                        "<nic><plugged>true</plugged></nic>")
    assert status == 409 and "migrating" in text and nic["plugged"] is False


def test_simulator_should_unplug_only_migratable_passthrough_vnics(sim, seed):
    """A non-migratable passthrough profile is the engine's refusal, not an unplug."""
    blocked = sim.vms[seed.vm_blocked]
    gate = []
    sim.on_migrate(lambda m: gate.append(list(m.unplugged)) or False)
    sim._migrate(seed.vm_blocked, '<action><host id="%s"/></action>' % seed.host2)
    assert sim.wait_migrations(5)
    ready, sriov = blocked["nics"]
    assert gate == [[ready["id"]]]
    assert (ready["plugged"], sriov["plugged"]) == (False, True)  # failed: left unplugged
