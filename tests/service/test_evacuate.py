"""``SRIOV.evacuate`` over the wire: the plan, its refusals, bad input, reserve-all, bounded moves.

The source is a real service over mutual TLS whose libvirt holds several
fake live domains (no machine here can hot-unplug a VF) and whose VDSM
is a scripted fake; the two destinations are real services on
test-driver hosts, so their free VFs, reservations and releases are real.
A whole drain with real libvirtd and QEMU is in tests/lab/test_lab_drain.py.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from helpers import nodedev
from helpers.livedomain import HOST, FakeDevices, FakeDomain

from jsonrpc_plugin import vdsm_api
from jsonrpc_plugin.client import RpcClient, RpcError
from jsonrpc_plugin.service import Service
from sriov_host import config

from .conftest import client_for

OV = "http://ovirt.org/vm/1.0"


def vm_uuid(n: int) -> str:
    return "7a9c0e12-3b4d-4e5f-8a6b-%012d" % n


def domain_xml(n: int, nets, migratable=True, numa_node=None) -> bytes:
    """A live VM with one SR-IOV vNIC per network in *nets*, on the source's VFs (bus 0x05/0x07)."""
    ifaces, devices = [], []
    for i, net in enumerate(nets):
        mac = "56:6f:1a:2b:%02x:%02x" % (n, i)
        bus = 0x05 if net == "blue" else 0x07
        ifaces.append("<interface type='hostdev' managed='no'><mac address='%s'/><source><address "
                      "type='pci' domain='0x0000' bus='0x%02x' slot='0x00' function='0x%x'/></source>"
                      "<driver name='vfio'/><alias name='ua-%d-%d'/></interface>" % (mac, bus, n, n, i))
        devices.append("<ovirt-vm:device mac_address='%s'><ovirt-vm:network>%s</ovirt-vm:network>"
                       "<ovirt-vm:custom><ovirt-vm:sriov_migratable>%s</ovirt-vm:sriov_migratable>"
                       "</ovirt-vm:custom></ovirt-vm:device>" % (mac, net, str(migratable).lower()))
    numa = ("<numatune><memory mode='strict' nodeset='%d'/></numatune>" % numa_node
            if numa_node is not None else "")
    return ("<domain type='kvm' xmlns:ovirt-vm='%s'><name>vm%d</name><uuid>%s</uuid>"
            "<memory>1048576</memory><vcpu>1</vcpu>%s<metadata><ovirt-vm:vm>%s</ovirt-vm:vm></metadata>"
            "<devices>%s</devices></domain>"
            % (OV, n, vm_uuid(n), numa, "".join(devices), "".join(ifaces))).encode()


class MultiConn:
    """The source's libvirt connection, holding several fake domains."""

    def __init__(self, doms):
        self.doms = {d.uuid: d for d in doms}

    def lookupByUUIDString(self, uuid):
        import libvirt

        if uuid not in self.doms:
            e = libvirt.libvirtError("Domain not found")
            e.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 0, "", None, None, 0, 0)
            raise e
        return self.doms[uuid]

    def getCapabilities(self):
        return "<capabilities><host><uuid>%s</uuid></host></capabilities>" % HOST

    def listAllDomains(self, flags=0):
        return [d for d in self.doms.values() if d.active]

    def isAlive(self):
        return True

    def close(self):
        pass


class FakeVdsm:
    """VDSM with several VMs: each VM.migrate runs *duration* s, then fails (code 12).

    It records how many migrations ran at once, at most.
    """

    def __init__(self, duration=1.2):
        self.duration, self.lock = duration, threading.Lock()
        self.started, self.calls, self.peak = {}, [], 0

    def migrate(self, vm_id, params):
        with self.lock:
            self.started[vm_id] = time.monotonic()
            self.calls.append(("migrate", vm_id, params["dst"]))
            self.peak = max(self.peak, sum(1 for v in self.started if self.running(v)))

    def running(self, vm_id) -> bool:
        t = self.started.get(vm_id)
        return t is not None and time.monotonic() - t < self.duration

    def migration_status(self, vm_id):
        if self.running(vm_id):
            return vdsm_api.MigrationProgress(vdsm_api.IN_PROGRESS, 50, "Migration in progress")
        return vdsm_api.MigrationProgress(vdsm_api.FAILED, 40, "Fatal error during migration (code 12)")

    def vm_status(self, vm_id):
        return "Up"

    def engine_manages(self):
        return True

    def cancel(self, vm_id):
        pass

    def close(self):
        pass


def _conf(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return config.load(str(path), required=True)


def _tls(pki):
    return ["[server]", "tls = true", "listen = 127.0.0.1", "cert = %s" % pki["cert"],
            "key = %s" % pki["key"], "ca = %s" % pki["ca"]]


def make_dst(tmp_path, pki, name, vfs):
    d = tmp_path / name
    d.mkdir()
    uri = nodedev.write_node(d / "node.xml", pfs=2, vfs=vfs)
    cfg = _conf(d / "dst.conf", ["[libvirt]", "uri = %s" % uri, "[ledger]",
                                 "path = %s" % (d / "ledger.sqlite"), "[networks]",
                                 "blue = ens1f0", "red = ens1f1", *_tls(pki)])
    return Service(cfg, port=0, reconcile=False).start()


class Source:
    def __init__(self, tmp_path, pki, doms, peer_factory=None):
        d = tmp_path / "src"
        d.mkdir()
        inv = d / "nodedev.xml"
        inv.write_text(nodedev.devices_xml(pfs=2, vfs=8, base_bus=0x04))
        cfg = _conf(d / "src.conf", ["[ledger]", "path = %s" % (d / "ledger.sqlite"), "[inventory]",
                                     "source = nodedev-xml:%s" % inv, "[timeouts]", "unplug = 2",
                                     "plug = 2", "reservation_ttl = 60", *_tls(pki)])
        self.doms = [FakeDomain(x, uuid) for uuid, x in doms]
        self.vdsm = FakeVdsm()
        self.devices = FakeDevices()
        self.svc = Service(cfg, conn_factory=lambda: MultiConn(self.doms), devices=self.devices,
                           port=0, reconcile=False, vdsm_factory=lambda cfg: self.vdsm,
                           job_active=lambda dom: self.vdsm.running(dom.uuid),
                           peer_factory=peer_factory).start()
        self.client = client_for(self.svc, pki)

    def evacuate(self, dsts, **kw):
        return self.client.call("SRIOV.evacuate", dict(kw, dsts=dsts))

    def wait(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            drain = self.client.call("SRIOV.evacuateStatus")
            if drain["ended"] is not None:
                return drain
            time.sleep(0.05)
        raise AssertionError("the drain did not end: %s" % drain)


@pytest.fixture
def hosts(tmp_path, pki):
    made = []

    def make(doms, b_vfs=4, c_vfs=4, peer_factory=None):
        b, c = make_dst(tmp_path, pki, "b", b_vfs), make_dst(tmp_path, pki, "c", c_vfs)
        made.extend([b, c])
        src = Source(tmp_path, pki, doms, peer_factory)
        made.append(src.svc)
        return src, b, c

    yield make
    for svc in made:
        svc.stop()


def dsts(*svcs):
    return ",".join("127.0.0.1:%d" % s.port for s in svcs)


def held(svc):
    return sorted(c.vm_id for c in svc.ledger.claims())


FOUR = [(vm_uuid(1), domain_xml(1, ["blue", "red"])), (vm_uuid(2), domain_xml(2, ["red"], numa_node=1)),
        (vm_uuid(3), domain_xml(3, ["blue"])), (vm_uuid(4), domain_xml(4, ["blue", "blue"]))]


def test_dry_run_should_plan_every_vm_numa_local_and_touch_nothing(hosts):
    src, b, c = hosts(FOUR)
    answer = src.evacuate(dsts(b, c), dry_run="true")
    plan = answer["plan"]
    assert answer["dry_run"] is True and plan["feasible"] and plan["unplaced"] == []
    assert sorted(v["vmID"] for v in plan["vms"]) == [vm_uuid(n) for n in (1, 2, 3, 4)]
    by_vm = {v["vmID"]: v for v in plan["vms"]}
    assert by_vm[vm_uuid(2)]["numa"] == "local"
    assert [n["pf"] for n in by_vm[vm_uuid(1)]["nics"]] == ["ens1f0", "ens1f1"]  # networks kept
    assert sorted(d["vms"] for d in plan["destinations"]) == [2, 2]  # spread
    assert held(b) == held(c) == [] and src.vdsm.calls == [] and src.devices.calls == []


def test_dry_run_should_refuse_a_plan_that_cannot_fit_naming_each_vm(hosts):
    doms = FOUR + [(vm_uuid(5), domain_xml(5, ["red"], migratable=False)),
                   (vm_uuid(6), domain_xml(6, ["blue"] * 5))]
    src, b, c = hosts(doms)
    plan = src.evacuate(dsts(b, c), dry_run=True)["plan"]
    why = {u["vmID"]: u["why"] for u in plan["unplaced"]}
    assert plan["feasible"] is False and sorted(why) == [vm_uuid(5), vm_uuid(6)]
    assert "not migratable" in why[vm_uuid(5)]
    assert "no destination has enough free VFs: it needs 5 on blue" in why[vm_uuid(6)]
    assert held(b) == held(c) == []


def test_evacuate_should_refuse_an_unplaceable_plan_before_reserving_anything(hosts):
    src, b, c = hosts(FOUR, b_vfs=1, c_vfs=1)
    with pytest.raises(RpcError) as e:
        src.evacuate(dsts(b, c))
    assert e.value.code == 2006 and "nothing touched" in e.value.message
    assert vm_uuid(4) in e.value.message and e.value.data["plan"]["unplaced"]
    assert held(b) == held(c) == [] and src.vdsm.calls == [] and src.devices.calls == []


@pytest.mark.parametrize("params, field", [
    ({"dsts": "127.0.0.1:1"}, "dsts[0]"),
    ({"dsts": "B,B"}, "dsts[1]"),
    ({"dsts": "bad host!"}, "dsts[0]"),
    ({"max_parallel": 0}, "max_parallel"),
    ({"max_parallel": 17}, "max_parallel"),
    ({"vms": [vm_uuid(9)]}, "vms[0]"),
    ({"vms": "not-a-uuid"}, "vms[0]"),
    ({"dry_run": "maybe"}, "dry_run"),
    ({"force": True}, "force"),
], ids=["unknown-dst", "duplicate-dst", "bad-dst", "parallel-0", "parallel-17", "unknown-vm",
        "bad-vm", "bad-dry-run", "unknown-key"])
def test_evacuate_should_refuse_bad_input_naming_the_field(hosts, params, field):
    src, b, c = hosts(FOUR)
    with pytest.raises(RpcError) as e:
        src.evacuate(**dict({"dsts": dsts(b, c)}, **params))
    assert e.value.code == -32602 and e.value.data["field"] == field, e.value.message
    assert "\n" not in e.value.message
    assert held(b) == held(c) == [] and src.vdsm.calls == []


def test_evacuate_should_refuse_this_host_and_a_second_name_of_one_destination(hosts):
    src, b, c = hosts(FOUR)
    with pytest.raises(RpcError) as e:
        src.evacuate("127.0.0.1:%d" % src.svc.port)
    assert e.value.code == -32602 and e.value.data["field"] == "dsts[0]" and "this host" in e.value.message
    with pytest.raises(RpcError) as e:
        src.evacuate("127.0.0.1:%d,localhost:%d" % (b.port, b.port))
    assert e.value.code == -32602 and e.value.data["field"] == "dsts[1]", e.value.message


def test_evacuate_should_release_every_reservation_when_one_fails(hosts, pki):
    def peers(address, port):
        client = RpcClient(address, port, cert=pki["cert"], key=pki["key"], ca=pki["ca"], timeout=5)
        real = client.call

        def call(method, params=None):
            if method == "SRIOV.reserveVfs" and params["vmID"] == vm_uuid(4):
                raise RpcError(2001, "no free VF on PF ens1f0 (injected)")
            return real(method, params)

        client.call = call
        return client

    src, b, c = hosts(FOUR, peer_factory=peers)
    with pytest.raises(RpcError) as e:
        src.evacuate(dsts(b, c))
    assert e.value.code == 2006 and vm_uuid(4) in e.value.message and "released" in e.value.message
    assert held(b) == held(c) == [] and src.vdsm.calls == [] and src.devices.calls == []


def test_evacuate_should_move_at_most_max_parallel_and_roll_back_each_failure(hosts):
    src, b, c = hosts(FOUR)
    started = src.evacuate(dsts(b, c), max_parallel=2)
    assert started["dry_run"] is False and started["state"] == "running"
    with pytest.raises(RpcError) as e:  # a second drain
        src.evacuate(dsts(b, c))
    assert e.value.code == 2007
    status = src.client.call("SRIOV.migrationStatus", {"vmID": vm_uuid(4)})
    assert status["drain"]["drain"] == started["drain"]
    drain = src.wait()
    assert src.vdsm.peak == 2 and len(src.vdsm.calls) == 4
    assert drain["state"] == "failed"
    assert sorted(drain["left"]) == [vm_uuid(n) for n in (1, 2, 3, 4)]
    assert {v["outcome"] for v in drain["vms"]} == {"rolled-back"}
    assert all(d.vf_macs() and d.record().vnics for d in src.doms)  # every vNIC re-plugged here
    assert held(b) == held(c) == []  # each driver released its VM's reservation


def test_migrate_should_be_refused_for_a_vm_in_a_running_drain(hosts):
    src, b, c = hosts(FOUR)
    src.evacuate(dsts(b, c), max_parallel=1)
    with pytest.raises(RpcError) as e:
        src.client.call("SRIOV.migrate", {"vmID": vm_uuid(4), "dst": "127.0.0.1", "port": b.port})
    assert e.value.code == 2007 and "drain" in e.value.message
    src.wait()


def _cli(src, pki, *args):
    from jsonrpc_plugin.client import main

    return main(["-a", "localhost", "-p", str(src.svc.port), "--cert", pki["client_cert"],
                 "--key", pki["client_key"], "--ca", pki["ca"], "SRIOV", "evacuate", *args])


def test_client_dry_run_should_print_the_plan_and_fail_when_it_cannot_fit(hosts, pki, capsys):
    src, b, c = hosts(FOUR, b_vfs=1, c_vfs=1)
    rc = _cli(src, pki, "dsts=%s" % dsts(b, c), "dry_run=true")
    out, err = capsys.readouterr()
    assert rc == 1 and json.loads(out)["plan"]["feasible"] is False
    assert "plan: REFUSED" in err and "%s: does not fit: " % vm_uuid(4) in err
    assert held(b) == held(c) == []


def test_client_should_show_progress_and_a_summary_table_and_exit_non_zero(hosts, pki, capsys):
    src, b, c = hosts(FOUR)
    rc = _cli(src, pki, "dsts=%s" % dsts(b, c), "max_parallel=3")
    out, err = capsys.readouterr()
    assert rc == 1 and json.loads(out)["max_parallel"] == 3
    lines = err.splitlines()
    assert any(vm_uuid(1) in line and "(migrate)" in line for line in lines)  # live progress
    head = next(i for i, line in enumerate(lines) if line.startswith("VM "))
    assert lines[head].split() == ["VM", "DESTINATION", "OUTCOME", "NIC-ABSENT"]
    table = [line.split() for line in lines[head + 1:head + 5]]
    assert sorted(r[0] for r in table) == [vm_uuid(n) for n in (1, 2, 3, 4)]
    assert {r[2] for r in table} == {"rolled-back"} and {r[3] for r in table} == {"-"}
    assert lines[-1].startswith("sriov-client: drain failed; VM(s) left on this host: ")
    assert src.vdsm.peak <= 3


def test_evacuate_should_take_only_vms_with_sriov_vnics_unless_named(hosts):
    src, b, c = hosts(FOUR + [(vm_uuid(7), domain_xml(7, []))])
    plan = src.evacuate(dsts(b, c), dry_run=True)["plan"]
    assert vm_uuid(7) not in {v["vmID"] for v in plan["vms"]} and plan["feasible"]
    plan = src.evacuate(dsts(b, c), dry_run=True, vms="%s,%s" % (vm_uuid(7), vm_uuid(2)))["plan"]
    assert sorted((v["vmID"], len(v["nics"])) for v in plan["vms"]) == [(vm_uuid(2), 1), (vm_uuid(7), 0)]
