"""``SRIOV.migrate`` over the wire, up to the point where VDSM takes over.

The source is a real service over mutual TLS whose libvirt domain is a
small fake (no machine here can hot-unplug a VF, and libvirt's test driver
has no detach), and whose VDSM is a scripted fake (VDSM does not run
here). The destination is a second real service on a test-driver host:
the reservation, its release and mutual TLS between the hosts are real.
The whole flow with real libvirtd and the lab's VDSM stand-in is in
tests/lab/test_sriov_migrate.py.
"""

from __future__ import annotations

import json
import time

import pytest
from helpers import nodedev
from helpers.corpus import read_domain
from helpers.livedomain import VM, FakeConn, FakeDevices, FakeDomain
from lxml import etree

from jsonrpc_plugin import vdsm_api
from jsonrpc_plugin.client import RpcClient, RpcError, follow_migration, vnic_lines
from jsonrpc_plugin.service import Service
from sriov_host import config, metadata
from sriov_host.ledger import Ledger

from .conftest import client_for

MACS = ["56:6f:1a:2b:01:01", "56:6f:1a:2b:01:02", "56:6f:1a:2b:01:03"]


class FakeVdsm:
    """VDSM's VM.migrate and getMigrationStatus, scripted: *outcome* after *polls*.

    With *duration*, the migration instead runs that many seconds (its libvirt
    job, see :meth:`job_running`, with it) and then ends with *outcome*.
    *progress* steps VDSM's progress by that much on each answer (0: stuck).
    """

    def __init__(self, dom, outcome="done", polls=2, refuse=None, duration=None, progress=0):
        self.dom, self.outcome, self.polls, self.refuse = dom, outcome, polls, refuse
        self.duration, self.step, self.progress = duration, progress, 40
        self.calls, self.xml_at_migrate, self.params = [], None, None
        self.started, self.asked = None, []  # monotonic times of each getMigrationStatus
        self.closed, self.engine = 0, False

    def migrate(self, vm_id, params):
        if not self.refuse:  # captured before the call is seen: tests wait on calls, then read it
            self.xml_at_migrate = self.dom.XMLDesc()  # what VDSM would capture now
            self.params, self.started = params, time.monotonic()
        self.calls.append(("migrate", vm_id, params["dst"]))
        if self.refuse:
            raise vdsm_api.VdsmUnavailable(self.refuse)

    def job_running(self) -> bool:
        """The libvirt job of a *duration* migration, as the source's libvirt shows it."""
        return self.duration is not None and self.started is not None \
            and time.monotonic() - self.started < self.duration

    def close(self):
        self.closed += 1

    def vm_status(self, vm_id):
        """VM.getStats status: Down once the migration succeeded (migration.py _finishSuccessfully)."""
        return "Down" if not self.dom.active else "Up"

    def engine_manages(self):
        return self.engine

    def destroy(self, vm_id):
        self.calls.append(("destroy", vm_id))

    def migration_status(self, vm_id):
        self.asked.append(time.monotonic())
        if self.outcome == "silent":
            raise vdsm_api.VdsmUnavailable("VDSM VM.getMigrationStatus failed: timeout")
        self.polls -= 1
        self.progress = min(99, self.progress + self.step)
        if self.job_running() if self.duration is not None else self.polls > 0:
            return vdsm_api.MigrationProgress(vdsm_api.IN_PROGRESS, self.progress, "Migration in progress")
        if self.outcome == "done":
            self.dom.active = False
            return vdsm_api.MigrationProgress(vdsm_api.DONE, 100, "Migration done")
        if self.outcome == "cancelled":
            return vdsm_api.MigrationProgress(vdsm_api.FAILED, self.progress, "Migration canceled (code 47)")
        return vdsm_api.MigrationProgress(vdsm_api.FAILED, 40, "Fatal error during migration (code 12)")

    def cancel(self, vm_id):
        self.calls.append(("cancel", vm_id))
        self.outcome, self.polls, self.duration = "cancelled", 0, None


def source_xml() -> bytes:
    """several_vfs.xml with its VFs on the source inventory's addresses (bus 0x04)."""
    return read_domain("several_vfs").replace(b'slot="0x10"', b'slot="0x00"')


def _conf(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return config.load(str(path), required=True)


@pytest.fixture
def dst(tmp_path, pki):
    """The destination: a real service over mutual TLS on a test-driver host with free VFs."""
    d = tmp_path / "dst"
    d.mkdir()
    uri = nodedev.write_node(d / "node.xml", pfs=2, vfs=4)
    cfg = _conf(d / "dst.conf", [
        "[libvirt]", "uri = %s" % uri, "[ledger]", "path = %s" % (d / "ledger.sqlite"),
        "[server]", "tls = true", "listen = 127.0.0.1", "cert = %s" % pki["cert"],
        "key = %s" % pki["key"], "ca = %s" % pki["ca"]])
    svc = Service(cfg, port=0, reconcile=False).start()
    yield svc
    svc.stop()


class Source:
    def __init__(self, tmp_path, pki, dst, outcome="done", stuck=(), refuse=None, polls=2,
                 taken_slots=(), ttl=60, duration=None, progress=0, conf=()):
        d = tmp_path / "src"
        d.mkdir()
        inv = d / "nodedev.xml"
        inv.write_text(nodedev.devices_xml(pfs=2, vfs=8, base_bus=0x04))
        self.ledger_path = d / "ledger.sqlite"
        self.cfg = _conf(d / "src.conf", [
            "[ledger]", "path = %s" % self.ledger_path, "[inventory]", "source = nodedev-xml:%s" % inv,
            "[timeouts]", "unplug = 2", "plug = 2", "reservation_ttl = %d" % ttl,
            "[server]", "tls = true", "listen = 127.0.0.1", "cert = %s" % pki["cert"],
            "key = %s" % pki["key"], "ca = %s" % pki["ca"], *conf])
        self.dom = FakeDomain(source_xml())
        self.devices = FakeDevices(stuck, taken_slots)
        self.vdsm = FakeVdsm(self.dom, outcome, polls, refuse, duration, progress)
        self.vdsm_opened = 0
        self.svc = Service(self.cfg, conn_factory=lambda: FakeConn(self.dom), devices=self.devices,
                           port=0, reconcile=False, vdsm_factory=self._open_vdsm,
                           job_active=lambda dom: self.vdsm.job_running()).start()
        self.client = client_for(self.svc, pki)
        self.dst = dst

    def _open_vdsm(self, cfg):
        self.vdsm_opened += 1
        return self.vdsm

    def migrate(self, **extra):
        params = {"vmID": VM, "dst": "localhost", "port": self.dst.port}
        params.update(extra)
        return self.client.call("SRIOV.migrate", params)

    def wait(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.call("SRIOV.migrationStatus", {"vmID": VM})["migration"]
            if job["done"]:
                return job
            time.sleep(0.05)
        raise AssertionError("SRIOV.migrate did not end: %s" % job)

    def claims(self):
        with Ledger(str(self.ledger_path)) as ledger:
            return ledger.claims(vm_id=VM)


@pytest.fixture
def make_source(tmp_path, pki, dst):
    made = []

    def make(**kw):
        src = Source(tmp_path, pki, dst, **kw)
        made.append(src)
        return src

    yield make
    for src in made:
        src.svc.stop()


def dst_claims(dst):
    return dst.ledger.claims(vm_id=VM)


def steps(job):
    return [(s["step"], s["ok"]) for s in job["steps"]]


def test_migrate_should_reserve_then_unplug_before_vdsm_captures_the_xml(make_source, dst):
    src = make_source(outcome="done", polls=20)
    started = src.migrate()
    assert started["phase"] in ("checking", "reserving", "unplugging", "migrating")
    deadline = time.monotonic() + 5
    while not src.vdsm.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert src.vdsm.calls == [("migrate", VM, "localhost:54321")]
    captured = etree.fromstring(src.vdsm.xml_at_migrate.encode())
    assert captured.find("devices/interface[@type='hostdev']") is None
    record = metadata.read_record(captured)
    assert sorted(r.mac for r in record.vnics) == MACS
    assert {r.state for r in record.vnics} == {metadata.UNPLUGGED}
    assert sorted(c.mac for c in dst_claims(dst)) == MACS
    assert {c.state for c in src.claims()} == {"unplugged-for-migration"}
    job = src.client.call("SRIOV.migrationStatus", {"vmID": VM})["migration"]
    assert steps(job)[:3] == [("check", True), ("reserve", True), ("unplug", True)]
    assert job["phase"] == "migrating" and not job["done"]


def test_migrate_should_keep_the_dst_reservation_alive_past_its_ttl(make_source, dst):
    src = make_source(outcome="done", polls=10, ttl=2)  # VDSM asked once a second: about 9 s
    src.migrate()
    deadline = time.monotonic() + 5
    while not src.vdsm.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    first = {c.mac: c.expires for c in dst_claims(dst)}
    time.sleep(3.5)  # past the 2 s TTL of the first reservation
    now = time.time()
    later = {c.mac: c.expires for c in dst_claims(dst)}
    assert sorted(later) == MACS and min(first.values()) < now
    assert min(later.values()) > now, "the reservation on the destination lapsed mid-migration"
    job = src.client.call("SRIOV.migrationStatus", {"vmID": VM})["migration"]
    assert job["phase"] == "migrating"


def test_migrate_should_replug_at_once_and_release_dst_when_vdsm_fails(make_source, dst):
    src = make_source(outcome="failed")
    src.migrate()
    job = src.wait()
    assert job["phase"] == "rolled-back", json.dumps(job)
    assert "Fatal error during migration" in job["error"]
    assert [s for s, _ in steps(job)] == ["check", "reserve", "unplug", "migrate", "rollback"]
    assert src.dom.vf_macs() == MACS
    assert {r.state for r in src.dom.record().vnics} == {metadata.PLUGGED}
    assert dst_claims(dst) == []
    assert {c.state for c in src.claims()} == {"in_use"}
    assert {v["state"] for v in job["vnics"]} == {"plugged"}


def test_migrate_should_unplug_nothing_when_dst_has_no_free_vf(make_source, dst):
    for i in range(8):
        dst.ledger.reserve("dddddddd-0000-4000-8000-%012d" % i, [{"mac": "02:00:00:00:00:%02x" % i}],
                           dst.host.inventory(), frozenset(dst.host.domain_refs()), {}, 60)
    src = make_source()
    src.migrate()
    job = src.wait()
    assert job["phase"] == "failed" and "2001" in job["error"] or "no free VF" in job["error"]
    assert steps(job) == [("check", True), ("reserve", False)]
    assert src.devices.calls == [] and src.vdsm.calls == []
    assert src.dom.vf_macs() == MACS and src.claims() == []


def test_migrate_should_put_back_and_release_dst_when_an_unplug_times_out(make_source, dst):
    stuck = etree.fromstring(source_xml()).findall("devices/interface[@type='hostdev']/alias")[1]
    src = make_source(stuck=(stuck.get("name"),))
    src.migrate()
    job = src.wait()
    assert job["phase"] == "failed" and "still present" in job["error"]
    assert src.vdsm.calls == []
    assert src.dom.vf_macs() == MACS
    assert dst_claims(dst) == []


def test_migrate_should_roll_back_when_vdsm_cannot_be_asked(make_source, dst):
    src = make_source(refuse="VDSM's client (vdsm.client) is not importable on this host")
    src.migrate()
    job = src.wait()
    assert job["phase"] == "rolled-back" and "not importable" in job["error"]
    assert src.dom.vf_macs() == MACS


@pytest.mark.parametrize("params, code, fragment", [
    pytest.param({"vmID": "00000000-0000-4000-8000-000000000000", "dst": "localhost"}, 2002,
                 "not running", id="unknown-vm"),
    pytest.param({"vmID": VM, "dst": "bad host!"}, -32602, "dst", id="bad-dst"),
    pytest.param({"vmID": VM, "dst": "localhost", "port": 0}, -32602, "port", id="bad-port"),
    pytest.param({"vmID": VM, "dst": "localhost", "speed": 1}, -32602, "speed", id="unknown-key"),
    pytest.param({"vmID": VM, "dst": "localhost", "params": {"speed": 1}}, -32602, "params.speed",
                 id="unknown-policy-key"),
    pytest.param({"vmID": VM, "dst": "localhost", "params": {"maxBandwidth": "fast"}}, -32602,
                 "params.maxBandwidth", id="bad-policy-type"),
    pytest.param({"vmID": VM, "dst": "localhost", "params": {"convergenceSchedule": "fastest"}},
                 -32602, "params.convergenceSchedule", id="bad-schedule"),
])
def test_migrate_should_refuse_bad_calls_and_touch_nothing(make_source, params, code, fragment):
    src = make_source()
    with pytest.raises(RpcError) as e:
        src.client.call("SRIOV.migrate", params)
    assert e.value.code == code and fragment in e.value.message
    assert src.devices.calls == [] and src.vdsm.calls == [] and src.claims() == []


def test_migrate_should_send_the_policy_with_the_calls_params_to_vdsm(make_source):
    from sriov_host import migration_policy

    src = make_source(outcome="failed", conf=("[migration]", "max_bandwidth = 200",
                                              "[migration_networks]", "LocalHost = 10.10.0.12"))
    src.migrate(params={"autoConverge": False, "incomingLimit": 1})
    src.wait()
    sent = src.vdsm.params
    assert (sent["dst"], sent["maxBandwidth"], sent["dstqemu"], sent["autoConverge"],
            sent["incomingLimit"], sent["outgoingLimit"], sent["abortOnError"], sent["encrypted"]) == \
        ("localhost:54321", 200, "10.10.0.12", "false", 1, 2, "true", False)
    assert sent["convergenceSchedule"] == migration_policy.schedule("minimal-downtime")


def _pin_dedicated(dom, vcpus=(0, 1)):
    """VDSM's metadata says the VM's CPU policy is dedicated, and its vCPUs are pinned."""
    ns = "{http://ovirt.org/vm/1.0}"
    etree.SubElement(dom.root.find("metadata/%svm" % ns), ns + "cpuPolicy").text = "dedicated"
    for v in vcpus:
        dom.root.find("cputune").append(etree.fromstring("<vcpupin vcpu='%d' cpuset='%d'/>" % (v, v + 4)))


def test_migrate_should_refuse_a_dedicated_vm_without_cpusets_before_touching_anything(make_source):
    src = make_source(outcome="failed")
    _pin_dedicated(src.dom)
    with pytest.raises(RpcError) as e:
        src.migrate()
    assert e.value.code == 2006 and "dedicated" in e.value.message and "cpusets" in e.value.message
    assert "\n" not in e.value.message and e.value.data["missing"] == ["cpusets"]
    with pytest.raises(RpcError) as e:  # VDSM checks the length only after the unplug
        src.migrate(params={"cpusets": ["4", "5", "6"]})
    assert e.value.code == -32602 and e.value.data["field"] == "params.cpusets"
    assert src.devices.calls == [] and src.vdsm.calls == [] and src.claims() == []
    src.migrate(params={"cpusets": ["8", "9"]})
    src.wait()
    assert src.vdsm.params["cpusets"] == ["8", "9"]


def test_migrate_should_cancel_a_migration_whose_progress_stalls(make_source, dst):
    src = make_source(outcome="done", polls=10**6, progress=0)  # VDSM at 40 % for ever
    src.migrate(timeout=2)
    job = src.wait(timeout=15)
    assert ("cancel", VM) in src.vdsm.calls
    assert job["phase"] == "rolled-back" and "stalled: no progress for 2 s" in job["error"], job
    assert job["stall_timeout"] == 2 and job["progress"] == 40
    migrate = next(s for s in job["steps"] if s["step"] == "migrate")
    assert 2000 <= migrate["ms"] < 6000
    assert src.dom.vf_macs() == MACS and dst_claims(dst) == []


def test_migrate_should_not_cancel_while_progress_moves(make_source):
    src = make_source(outcome="failed", polls=5, progress=10)  # about 4 s, 10 % a second
    src.migrate(timeout=2)
    job = src.wait(timeout=15)
    assert ("cancel", VM) not in src.vdsm.calls
    assert job["phase"] == "rolled-back" and "Fatal error during migration" in job["error"]


def test_migrate_should_ask_vdsm_once_a_second_and_at_once_when_libvirts_job_ends(make_source):
    src = make_source(outcome="failed", duration=3.0)  # libvirt's job runs 3 s, then fails
    src.migrate()
    job = src.wait(timeout=15)
    assert job["phase"] == "rolled-back"
    ended = src.vdsm.started + 3.0
    asks = src.vdsm.asked
    assert len(asks) <= 3 + 2, ["%.2f" % (a - src.vdsm.started) for a in asks]
    assert all(b - a >= 0.99 for a, b in zip(asks, asks[1:]) if b < ended)
    assert 0 <= asks[-1] - ended < 0.3, "VDSM asked %.2f s after the job ended" % (asks[-1] - ended)
    rollback = next(s for s in job["steps"] if s["step"] == "rollback")
    migrate = next(s for s in job["steps"] if s["step"] == "migrate")
    assert rollback["start"] - (migrate["start"] + 3.0) < 0.5


def test_migrate_should_refuse_a_second_migration_while_one_runs(make_source):
    src = make_source(polls=10**6)
    src.migrate()
    with pytest.raises(RpcError) as e:
        src.migrate()
    assert e.value.code == 2007
    with pytest.raises(RpcError) as e:
        src.client.call("SRIOV.restoreNics", {"vmID": VM})
    assert e.value.code == 2007
    src.vdsm.polls, src.vdsm.outcome = 1, "failed"
    assert src.wait()["phase"] == "rolled-back"


def test_migrate_should_refuse_a_vm_that_is_not_migratable(make_source):
    src = make_source()
    custom = src.dom.root.find(".//{http://ovirt.org/vm/1.0}sriov_migratable")
    custom.text = "false"
    with pytest.raises(RpcError) as e:
        src.migrate()
    assert e.value.code == 2006 and MACS[0] in e.value.message
    assert src.devices.calls == [] and src.dom.vf_macs() == MACS


def test_client_should_show_each_step_and_fail_when_rolled_back(make_source, capsys):
    src = make_source(outcome="failed")
    client = src.client
    started = src.migrate()
    rc = follow_migration(client, {"vmID": VM}, started)
    out, err = capsys.readouterr()
    assert rc == 1
    assert json.loads(out)["phase"] == "rolled-back"
    for name in ("reserve", "unplug", "migrate", "rollback"):
        assert " %s " % name in err
    assert sum(1 for line in err.splitlines() if line.startswith("vnic ")) == 3
    assert "plugged on the source" in err


def test_vnic_lines_should_say_where_each_vnic_is():
    job = {"dst": "host-b", "phase": "plug-failed", "error": "not every vNIC was plugged",
           "vnics": [{"mac": MACS[0], "alias": "ua-1", "state": "plugged", "vf_address": "0000:06:10.0",
                      "host": "host-b"},
                     {"mac": MACS[1], "alias": "ua-2", "state": "failed", "vf_address": None,
                      "error": "VF busy", "host": "host-b"}]}
    lines = vnic_lines(job)
    assert lines[0] == "vnic %s (ua-1): plugged on host-b (VF 0000:06:10.0)" % MACS[0]
    assert lines[1] == "vnic %s (ua-2): failed on host-b: VF busy" % MACS[1]
    assert lines[2].startswith("sriov-client: plug-failed")


def test_client_cli_should_refuse_unknown_vm_with_the_code(make_source, pki, capsys):
    from jsonrpc_plugin.client import main

    src = make_source()
    rc = main(["-a", "localhost", "-p", str(src.svc.port), "--cert", pki["client_cert"],
               "--key", pki["client_key"], "--ca", pki["ca"], "SRIOV", "migrate",
               "vmID=00000000-0000-4000-8000-000000000000", "dst=localhost"])
    assert rc == 1 and "code=2002" in capsys.readouterr().err


def test_client_cli_should_pass_migrate_params_from_a_file(make_source, pki, tmp_path, capsys):
    from jsonrpc_plugin.client import main

    src = make_source()
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"params": {"maxBandwidth": 100, "speed": 1}}))
    rc = main(["-a", "localhost", "-p", str(src.svc.port), "--cert", pki["client_cert"],
               "--key", pki["client_key"], "--ca", pki["ca"], "SRIOV", "migrate",
               "vmID=%s" % VM, "dst=localhost", "-f", str(path)])
    err = capsys.readouterr().err
    assert rc == 1 and "code=-32602" in err and "params.speed" in err
    assert src.vdsm.calls == []


def test_peer_should_use_mutual_tls_with_the_host_certificate(make_source, dst, pki):
    src = make_source()
    peer = src.svc._peer("localhost", dst.port)
    assert isinstance(peer, RpcClient) and not peer.insecure
    assert peer.call("SRIOV.ping")["version"]


def _guest_slots(xml):
    root = etree.fromstring(xml)
    return {i.find("mac").get("address"): i.find("address").get("slot")
            for i in root.iterfind("devices/interface[@type='hostdev']")}


def test_rollback_should_replug_at_the_same_guest_pci_address(make_source):
    src = make_source(outcome="failed")
    before = _guest_slots(src.dom.XMLDesc().encode())
    src.migrate()
    assert src.wait()["phase"] == "rolled-back"
    assert _guest_slots(src.dom.XMLDesc().encode()) == before
    assert all(r.guest_address for r in src.dom.record().vnics)


def test_rollback_should_fall_back_to_another_slot_with_a_warning_when_taken(make_source):
    src = make_source(outcome="failed")
    before = _guest_slots(src.dom.XMLDesc().encode())
    src.devices.taken_slots = {before[MACS[0]]}
    src.migrate()
    job = src.wait()
    assert job["phase"] == "rolled-back"
    first = next(v for v in job["vnics"] if v["mac"] == MACS[0])
    assert first["state"] == "plugged" and "could not be kept" in first["error"]
    assert etree.fromstring(src.devices.attached_xml[0]).find("address") is None
    others = [v for v in job["vnics"] if v["mac"] != MACS[0]]
    assert all(v["error"] is None for v in others)


def _no_domain():
    import libvirt

    e = libvirt.libvirtError("Domain not found")
    e.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 0, "", None, None, 0, 0)
    return e


def test_migration_status_should_say_not_here_when_the_vm_leaves_during_the_call(make_source):
    src = make_source(outcome="done")
    src.migrate()
    deadline = time.monotonic() + 5
    while src.dom.active and time.monotonic() < deadline:  # VDSM says done: the VM left
        time.sleep(0.02)
    conn_lookup = FakeConn.lookupByUUIDString
    looked = []

    def leaving_lookup(self, uuid):
        looked.append(uuid)
        if len(looked) > 1:  # gone by the second look
            raise _no_domain()
        return conn_lookup(self, uuid)

    def vanished_xml(flags=0):
        raise _no_domain()

    src.dom.XMLDesc = vanished_xml
    FakeConn.lookupByUUIDString = leaving_lookup
    try:
        view = src.client.call("SRIOV.migrationStatus", {"vmID": VM})
    finally:
        FakeConn.lookupByUUIDString = conn_lookup
    assert view["running_here"] is False and view["migration"]["phase"] == "plugging"


def test_client_should_keep_following_through_a_few_failed_answers(capsys):
    from jsonrpc_plugin.client import RpcUnavailable

    job = {"vmID": VM, "dst": "host-b", "phase": "migrated", "done": True, "error": None,
           "steps": [], "vnics": []}
    answers = [RpcUnavailable("refused"), RpcError(2003, "Domain not found"), {"migration": job}]

    class Flaky:
        def call(self, method, params):
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    rc = follow_migration(Flaky(), {"vmID": VM}, {"vmID": VM}, sleep=lambda s: None)
    assert rc == 0 and answers == []
    assert json.loads(capsys.readouterr().out)["phase"] == "migrated"


def test_migrate_should_judge_by_libvirt_when_vdsm_stops_answering(make_source, dst):
    src = make_source(outcome="silent")
    src.migrate()
    job = src.wait(timeout=15)
    assert job["phase"] == "rolled-back"
    assert "VDSM does not answer" in job["error"] and "no migration job" in job["error"]
    assert src.dom.vf_macs() == MACS and dst_claims(dst) == []


# -- NUMA: the source sends what the XML says, the destination maps and prefers ---------

class RecordingPeer:
    """The destination's client, recording reserveVfs calls and answers; *refuse_numa*
    answers as a destination that predates numa_nodes/cpus."""

    def __init__(self, refuse_numa=False):
        self.refuse_numa, self.reserves, self.answers = refuse_numa, [], []

    def wrap(self, factory):
        def make(host, port):
            peer = factory(host, port)
            outer = self

            class Peer:
                def call(self, method, params=None):
                    if method != "SRIOV.reserveVfs":
                        return peer.call(method, params)
                    outer.reserves.append(dict(params))
                    numa = [k for k in params if k in ("numa_nodes", "cpus")]
                    if outer.refuse_numa and numa:
                        raise RpcError(-32602, "invalid params: %s: unknown param (known: vmID, "
                                       "nics, ttl)" % numa[0], {"field": numa[0]})
                    outer.answers.append(peer.call(method, params))
                    return outer.answers[-1]

            return Peer()
        return make


class Topology:
    """dst's CPUs 0-3 on node 0, 4-7 on node 1."""

    def cpu_nodes(self):
        return {cpu: cpu // 4 for cpu in range(8)}


def pinned_source(make_source, numatune="", vcpupins=(), refuse_numa=False):
    src = make_source(outcome="failed")
    cputune = src.dom.root.find("cputune")
    if numatune:
        cputune.addnext(etree.fromstring(numatune))
    for pin in vcpupins:
        cputune.append(etree.fromstring(pin))
    src.peer = RecordingPeer(refuse_numa)
    src.svc.migrations.peer_factory = src.peer.wrap(src.svc.migrations.peer_factory)
    return src


def reserve_step(job):
    return next(s for s in job["steps"] if s["step"] == "reserve")


def answer_pfs(answer):
    return [n["vf"]["pf"] for n in answer["nics"]]


def test_migrate_should_send_numatune_nodes_and_get_vfs_on_that_node(make_source, dst):
    src = pinned_source(make_source, "<numatune><memory mode='strict' nodeset='1'/>"
                                     "<memnode cellid='0' mode='strict' nodeset='1'/></numatune>")
    src.migrate()
    job = src.wait()
    assert src.peer.reserves[0]["numa_nodes"] == [1] and "cpus" not in src.peer.reserves[0]
    answer = src.peer.answers[0]
    assert answer_pfs(answer) == ["ens1f1"] * 3 and answer["numa"]["honoured"] is True
    assert "NUMA node(s) 1 (from numa_nodes): every VF local" in reserve_step(job)["detail"]


def test_migrate_should_send_pinned_cpus_for_dst_to_map(make_source, dst):
    dst.host.cpu_topology = Topology()
    src = pinned_source(make_source, vcpupins=["<vcpupin vcpu='0' cpuset='4-5'/>",
                                               "<vcpupin vcpu='1' cpuset='5,7,^7'/>"])
    src.migrate()
    job = src.wait()
    assert src.peer.reserves[0]["cpus"] == [4, 5] and "numa_nodes" not in src.peer.reserves[0]
    assert answer_pfs(src.peer.answers[0]) == ["ens1f1"] * 3
    assert "NUMA node(s) 1 (from cpus): every VF local" in reserve_step(job)["detail"]


def test_migrate_should_say_which_vfs_landed_off_node(make_source, dst):
    for i in range(2):  # two of node 1's four VFs are taken
        dst.ledger.reserve("dddddddd-0000-4000-8000-%012d" % i, [{"mac": "02:00:00:00:00:%02x" % i}],
                           dst.host.inventory(), frozenset(), {}, 60, prefer_nodes=(1,))
    src = pinned_source(make_source, "<numatune><memory nodeset='1'/></numatune>")
    src.migrate()
    job = src.wait()
    answer = src.peer.answers[0]
    assert answer_pfs(answer) == ["ens1f1", "ens1f1", "ens1f0"]
    off = answer["numa"]["vfs_off_node"]
    assert [v["mac"] for v in off] == [MACS[2]] and off[0]["numa_node"] == 0
    assert "off node %s (node 0)" % MACS[2] in reserve_step(job)["detail"]


def test_migrate_should_send_no_numa_params_without_pinning(make_source, dst):
    src = pinned_source(make_source)
    src.migrate()
    job = src.wait()
    assert set(src.peer.reserves[0]) == {"vmID", "nics", "ttl"}
    assert src.peer.answers[0]["numa"] is None and "NUMA" not in reserve_step(job)["detail"]


def test_migrate_should_reserve_without_numa_on_a_destination_that_predates_it(make_source, dst):
    src = pinned_source(make_source, "<numatune><memory nodeset='1'/></numatune>", refuse_numa=True)
    src.migrate()
    job = src.wait()
    assert steps(job)[:3] == [("check", True), ("reserve", True), ("unplug", True)]
    assert [sorted(p) for p in src.peer.reserves] == [["nics", "numa_nodes", "ttl", "vmID"],
                                                      ["nics", "ttl", "vmID"]]
    assert "NUMA preference not taken by the destination" in reserve_step(job)["detail"]


def test_migrate_should_go_on_without_numa_when_a_nodeset_does_not_parse(make_source, dst):
    src = pinned_source(make_source, "<numatune><memory nodeset='x'/></numatune>")
    src.migrate()
    src.wait()
    assert set(src.peer.reserves[0]) == {"vmID", "nics", "ttl"}


def test_migrate_should_close_every_vdsm_client_it_opens(make_source):
    """vdsm.client starts a reactor thread per client: each one opened is closed (issue 20 item 9)."""
    src = make_source(outcome="done", polls=3)
    src.migrate()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = src.client.call("SRIOV.migrationStatus", {"vmID": VM})["migration"]
        if job["phase"] not in ("checking", "reserving", "unplugging", "migrating"):
            break
        time.sleep(0.05)
    assert job["phase"] not in ("checking", "reserving", "unplugging", "migrating"), job
    assert src.vdsm_opened >= 1 and src.vdsm.closed == src.vdsm_opened


def test_recent_migrations_should_list_the_ended_ones_newest_first(make_source, dst):
    src = make_source(outcome="failed")
    assert src.client.call("SRIOV.recentMigrations") == {"kept": 50, "migrations": []}
    src.migrate()
    first = src.wait()
    src.vdsm.refuse = "VM.migrate refused: the second one"
    src.migrate()
    second = src.wait()

    recent = src.client.call("SRIOV.recentMigrations")

    assert recent["migrations"] == [second, first]
    assert "the second one" in second["error"] and "Fatal error" in first["error"]
    assert all(m["done"] and m["phase"] == "rolled-back" for m in recent["migrations"])


def test_recent_migrations_should_refuse_params(make_source):
    src = make_source()
    with pytest.raises(RpcError) as e:
        src.client.call("SRIOV.recentMigrations", {"vmID": VM})
    assert e.value.code == -32602 and "vmID" in e.value.message
