"""End to end: the engine simulator migrates a lab VM A -> B, it goes wrong, ``sriov-engine watch`` fixes it.

The simulator behaves as ``MigrateVmCommand``: it unplugs the passthrough
vNICs (1014), starts (62), and on a failure (65) leaves them unplugged;
after a success it plugs them on the destination and logs 12003 for those
the destination had no VF for. Its ``on_migrate`` callback does the hosts'
part for real (VDSM's hotunplugNic on A, the migration in VDSM's order
with the hooks installed), its ``on_plug`` callback VDSM's hotplugNic on
the VM's host. The watcher runs as its console script and plugs back
through the simulator's REST API only.

The lab here is this module's own: one test kills its destination's
libvirtd, which the session lab's other users must not see.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from engine_adapter.engine import Engine
from engine_adapter.session import EngineOptions
from sriov_host import config, devices, domxml, libvirtconn
from sriov_lab import domains
from sriov_lab import hosts as hostmod
from sriov_lab.engine_sim import EngineSimulator
from sriov_lab.fixtures import LabVms
from sriov_lab.lab import Lab
from sriov_lab.services import LabServices, install_hooks
from sriov_lab.vdsm.api import migrate

pytestmark = pytest.mark.lab

USER, PASSWORD = "admin@internal", "watch-Pa55"
PROFILE = "lab-sriov"
SRIOV_ENGINE = os.path.join(os.path.dirname(sys.executable), "sriov-engine")


@pytest.fixture(scope="module")
def wlab(lab_guest, tmp_path_factory):
    """Two lab hosts of this module's own, their services and one connection per host."""
    with Lab(2) as fresh, LabServices(fresh, str(tmp_path_factory.mktemp("watch-svc"))) as svc:
        conns = [libvirtconn.open_connection(config.load(h.config_path), use_vdsm=False)
                 for h in fresh.hosts]
        hooks = install_hooks(fresh, str(tmp_path_factory.mktemp("watch-hooks")))
        yield {"lab": fresh, "services": svc, "conns": conns, "hooks": hooks, "guest": lab_guest}
        for c in conns:
            try:
                c.close()
            except Exception:  # a killed daemon's connection: nothing to free
                pass


@pytest.fixture
def vms(wlab):
    lab_vms = LabVms(wlab["lab"].hosts, wlab["conns"], wlab["guest"])
    yield lab_vms
    lab_vms.cleanup()
    for index in range(2):
        for vm in lab_vms.uuids:
            wlab["services"].client(index).call("SRIOV.releaseVfs", {"vmID": vm})


@pytest.fixture
def engine(wlab, tmp_path):
    with EngineSimulator(str(tmp_path / "engine-pki"), users={USER: PASSWORD}) as sim:
        net = sim.add_network("lab-net")
        sim.add_profile(PROFILE, net, passthrough=True, migratable=True)
        for host in wlab["lab"].hosts:
            sim.add_host(host.name, host.address)
        yield sim


def _add_vm(sim, host, spec) -> None:
    profile = next(p["id"] for p in sim.profiles.values() if p["name"] == PROFILE)
    nics = [{"name": "nic%d" % i, "mac": v.mac, "profile": profile, "id": v.alias[len("ua-"):]}
            for i, v in enumerate(spec.vnics)]
    sim.add_vm(spec.name, host, nics=nics, vm_id=spec.uuid)


def _engine_unplug(host, conn, spec, nic_ids) -> None:
    """VDSM's hotunplugNic for each vNIC the engine unplugged."""
    cfg = config.load(host.config_path)
    dom = conn.lookupByUUIDString(spec.uuid)
    for vnic in spec.vnics:
        if vnic.alias[len("ua-"):] in nic_ids:
            xml = domxml.render_attach(domains.to_vnic(vnic), vnic.vf_address, mode=cfg.vf_device,
                                       model=cfg.vf_model)
            devices.detach_and_wait(dom, xml, vnic.alias, cfg.unplug_timeout)


def _host_plug(wlab, spec, vf_on):
    """The ``on_plug`` callback: VDSM's hotplugNic on the VM's host, on the VF the engine picked."""
    hosts = wlab["lab"].hosts

    def plug(vm, nic, host_rec):
        index = next(i for i, h in enumerate(hosts) if h.name == host_rec["name"])
        cfg = config.load(hosts[index].config_path)
        vnic = next(v for v in spec.vnics if v.alias == "ua-" + nic["id"])
        dom = wlab["conns"][index].lookupByUUIDString(spec.uuid)
        xml = domxml.render_attach(domains.to_vnic(vnic), vf_on[index][vnic.alias],
                                   mode=cfg.vf_device, model=cfg.vf_model)
        devices.attach_and_wait(dom, xml, vnic.alias, cfg.plug_timeout)
    return plug


def _aliases(conn, vm_id) -> set:
    return domxml.attached_keys(domxml.parse_domain(conn.lookupByUUIDString(vm_id).XMLDesc(0)))


class _Watch:
    """``sriov-engine watch`` as the unit runs it, its log in a file."""

    def __init__(self, sim, tmp_path):
        self.log = tmp_path / "watch.log"
        self.state = tmp_path / "watch-state.json"
        env = dict(os.environ, OVIRT_URL=sim.url, OVIRT_USERNAME=USER, OVIRT_PASSWORD=PASSWORD,
                   OVIRT_CAFILE=sim.ca_file)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [SRIOV_ENGINE, "watch", "--state-file", str(self.state), "--poll-interval", "0.2",
                 "--grace", "1"], env=env, stdout=out, stderr=subprocess.STDOUT)
        _until(lambda: self.state.exists(), 30, "the watcher's first pass\n" + self.text())

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


def _until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "no %s within %.0f s" % (what, timeout)
        time.sleep(0.1)


def _plugged(sim, vm_id) -> dict:
    return {n["name"]: n["plugged"] for n in sim.vms[vm_id]["nics"]}


def _rest_migrate(sim, vm_id, host) -> None:
    opts = EngineOptions(url=sim.url, username=USER, password=PASSWORD, ca_file=sim.ca_file)
    with Engine(opts) as e:
        e.migrate(e.vm(vm_id), e.find_host(host))
    assert sim.wait_migrations(180)


def _start_vm(wlab, vms, engine):
    a = wlab["lab"].hosts[0]
    spec, _ = vms.start(0, vnics=(vms.vnic(0, 0, vlan=100), vms.vnic(0, 1)))
    _add_vm(engine, a.name, spec)
    domains.wait_ready(a, spec.name)  # a guest that lets go of its NICs
    return spec


def test_watch_should_plug_on_b_once_a_vf_frees_up_after_12003(wlab, vms, engine, tmp_path):
    a, b = wlab["lab"].hosts
    conns, services = wlab["conns"], wlab["services"]
    spec = _start_vm(wlab, vms, engine)
    nics = [{"mac": v.mac, "alias": v.alias} for v in spec.vnics]
    held = services.client(1).call("SRIOV.reserveVfs", {"vmID": spec.uuid, "nics": nics})
    vf_on = {0: {v.alias: v.vf_address for v in spec.vnics},
             1: {n["alias"]: n["vf"]["address"] for n in held["nics"]}}
    engine.on_plug(_host_plug(wlab, spec, vf_on))
    engine.set_vf_capacity(b.name, 1)  # B has one VF for this VM's two vNICs

    def lab_migration(m):
        _engine_unplug(a, conns[0], spec, m.unplugged)
        return migrate(conns[0], conns[1], m.vm_id, *wlab["hooks"], timeout=180).ok

    engine.on_migrate(lab_migration)
    watch = _Watch(engine, tmp_path)
    try:
        _rest_migrate(engine, spec.uuid, b.name)
        assert engine.migrations[0].ok and engine.migrations[0].not_plugged == ["nic1"]
        assert 12003 in [e["code"] for e in engine.event_log.events]
        assert _aliases(conns[1], spec.uuid) >= {spec.vnics[0].alias}
        assert spec.vnics[1].alias not in _aliases(conns[1], spec.uuid)
        _until(lambda: "plugging vNIC nic1 after event" in watch.text(), 30, "a failed plug")
        assert _plugged(engine, spec.uuid) == {"nic0": True, "nic1": False}
        engine.set_vf_capacity(b.name, 2)  # a VF frees up
        _until(lambda: _plugged(engine, spec.uuid)["nic1"], 60, "nic1 plugged\n" + watch.text())
    finally:
        rc = watch.stop()
    assert rc == 0, watch.text()
    assert {v.alias for v in spec.vnics} <= _aliases(conns[1], spec.uuid)
    assert "vNIC nic1 plugged again on host %s after event" % b.name in watch.text()
    assert "nic0" not in "".join(line for line in watch.text().splitlines() if "plugged again" in line)


def test_watch_should_plug_back_on_a_when_b_libvirtd_dies_mid_migration(wlab, vms, engine, tmp_path):
    a, b = wlab["lab"].hosts
    conns = wlab["conns"]
    spec = _start_vm(wlab, vms, engine)
    engine.on_plug(_host_plug(wlab, spec, {0: {v.alias: v.vf_address for v in spec.vnics}}))
    seen = {}

    def kill_b():
        os.kill(b.pid, signal.SIGKILL)
        b.proc.wait()

    def lab_migration(m):
        _engine_unplug(a, conns[0], spec, m.unplugged)
        seen["absent"] = _aliases(conns[0], spec.uuid)
        return migrate(conns[0], conns[1], m.vm_id, *wlab["hooks"], before_migrate=kill_b,
                       timeout=180).ok

    engine.on_migrate(lab_migration)
    watch = _Watch(engine, tmp_path)
    try:
        _rest_migrate(engine, spec.uuid, b.name)
        assert engine.migrations[0].ok is False
        assert not {v.alias for v in spec.vnics} & seen["absent"]
        assert 65 in [e["code"] for e in engine.event_log.events]
        _until(lambda: all(_plugged(engine, spec.uuid).values()), 60,
               "the vNICs plugged back\n" + watch.text())
    finally:
        rc = watch.stop()
        if b.proc.poll() is not None:  # the lab's B back for the module's teardown
            hostmod.launch(b)
            hostmod.wait_ready(b)
    assert rc == 0, watch.text()
    assert {v.alias for v in spec.vnics} <= _aliases(conns[0], spec.uuid)
    for name in ("nic0", "nic1"):
        assert "vNIC %s plugged again on host %s after event" % (name, a.name) in watch.text()
    assert len(engine.find("PUT", "/nics/")) == 2  # once each
