"""End to end: ``sriov-engine migrate`` -> engine simulator -> hooked lab migration A -> B.

The adapter runs as its console script. It logs in to the engine
simulator over TLS, reserves on host B's real ``sriov-migrationd`` over
mutual TLS (the address from the simulator's host record), and sends the
migrate action. Like an engine >= 4.1, the simulator unplugs the
migratable passthrough vNICs before it asks VDSM to migrate and plugs them
on the destination after; its migrate callback does each of those for
real in the lab (VDSM's hotunplugNic on A, a libvirt migration in VDSM's
order with the hooks installed by ``sriov-migration-install``, VDSM's
hotplugNic on B). The engine picks B's VF itself; the simulator takes
the one the adapter's pre-check reserved.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import libvirt
import pytest
from lxml import etree

from jsonrpc_plugin.client import RpcError
from sriov_host import config, devices, domxml, metadata
from sriov_lab import domains
from sriov_lab.engine_sim import EngineSimulator
from sriov_lab.services import LabServices, install_hooks
from sriov_lab.vdsm.api import migrate

pytestmark = pytest.mark.lab

USER, PASSWORD = "admin@internal", "e2e-Pa55"
PROFILE = "lab-sriov"
SRIOV_ENGINE = os.path.join(os.path.dirname(sys.executable), "sriov-engine")


@pytest.fixture(scope="module")
def services(lab, tmp_path_factory):
    """One real sriov-migrationd per lab host, over mutual TLS, for this module."""
    with LabServices(lab, str(tmp_path_factory.mktemp("e2e-services"))) as svc:
        yield svc


@pytest.fixture
def engine(lab_hosts, services, tmp_path):
    """The simulator with both lab hosts; their records point at their services."""
    with EngineSimulator(str(tmp_path / "engine-pki"), users={USER: PASSWORD}) as sim:
        net = sim.add_network("lab-net")
        sim.add_profile(PROFILE, net, passthrough=True, migratable=True,
                        custom={"sriov_migratable": "true"})
        for host, svc in zip(lab_hosts, services.services):
            sim.add_host(host.name, host.address, service_port=svc.port)
        yield sim


@pytest.fixture
def lab_vm_cleanup(lab_vms, services):
    """Destroy this test's VMs first, then free whatever the ledgers hold for them."""
    yield lab_vms
    lab_vms.cleanup()
    for index in range(len(services.services)):
        client = services.client(index)
        for vm in lab_vms.uuids:
            client.call("SRIOV.releaseVfs", {"vmID": vm})


def _add_lab_vm(sim, host, spec) -> None:
    """The engine's view of the lab VM: same UUID, MACs and ``ua-<nic id>`` aliases."""
    profile = next(p["id"] for p in sim.profiles.values() if p["name"] == PROFILE)
    nics = [{"name": "nic%d" % i, "mac": v.mac, "profile": profile, "id": v.alias[len("ua-"):]}
            for i, v in enumerate(spec.vnics)]
    sim.add_vm(spec.name, host, nics=nics, vm_id=spec.uuid)


def _sriov_engine(sim, services, vm, host, timeout=60):
    env = dict(os.environ, OVIRT_URL=sim.url, OVIRT_USERNAME=USER, OVIRT_PASSWORD=PASSWORD,
               OVIRT_CAFILE=sim.ca_file)
    argv = [SRIOV_ENGINE, "migrate", vm, "--host", host, "--poll-interval", "0.2",
            "--service-cert", services.admin.cert, "--service-key", services.admin.key,
            "--service-ca", services.ca.cert_path]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def _engine_unplug(host, conn, spec, nic_ids) -> list:
    """VDSM's hotunplugNic for each vNIC the engine unplugged (alias ``ua-<nic id>``)."""
    cfg = config.load(host.config_path)
    dom = conn.lookupByUUIDString(spec.uuid)
    gone = []
    for vnic in spec.vnics:
        if vnic.alias[len("ua-"):] in nic_ids:
            xml = domxml.render_attach(domains.to_vnic(vnic), vnic.vf_address, mode=cfg.vf_device,
                                       model=cfg.vf_model)
            devices.detach_and_wait(dom, xml, vnic.alias, cfg.unplug_timeout)
            gone.append(vnic.alias)
    return gone


def _engine_plug(host, conn, spec, reservation) -> None:
    """VDSM's hotplugNic on the destination, on the VF the engine chose."""
    cfg = config.load(host.config_path)
    dom = conn.lookupByUUIDString(spec.uuid)
    vf_of = {n["mac"]: n["vf"]["address"] for n in reservation["nics"]}
    for vnic in spec.vnics:
        xml = domxml.render_attach(domains.to_vnic(vnic), vf_of[vnic.mac], mode=cfg.vf_device,
                                   model=cfg.vf_model)
        devices.attach_and_wait(dom, xml, vnic.alias, cfg.plug_timeout)


def _vfs_of(client, vm_id) -> dict:
    return {r["address"]: r for r in client.call("SRIOV.listVfs") if r["vm_id"] == vm_id}


def test_sriov_engine_migrate_should_move_the_vm_and_its_vnics_from_a_to_b(
        lab_hosts, lab_conns, lab_vm_cleanup, services, engine, tmp_path):
    a, b = lab_hosts
    lab_vms = lab_vm_cleanup
    spec, _ = lab_vms.start(0, vnics=(lab_vms.vnic(0, 0, vlan=100), lab_vms.vnic(0, 1)))
    _add_lab_vm(engine, a.name, spec)
    hooks = install_hooks(services.lab, str(tmp_path / "hooks"))
    seen = {}

    def lab_migration(m):
        seen["reservation"] = services.client(1).call("SRIOV.getReservation", {"vmID": m.vm_id})
        seen["unplugged"] = _engine_unplug(a, lab_conns[0], spec, m.unplugged)
        seen["result"] = migrate(lab_conns[0], lab_conns[1], m.vm_id, *hooks)
        if seen["result"].ok:
            _engine_plug(b, lab_conns[1], spec, seen["reservation"])
        return seen["result"].ok

    engine.on_migrate(lab_migration)
    domains.wait_ready(a, spec.name)  # a guest that lets go of its NICs

    res = _sriov_engine(engine, services, spec.name, b.name)

    assert res.returncode == 0, res.stdout + res.stderr
    assert re.findall(r"step (\d)/5 (\S+)", res.stdout) == [
        ("1", "check-vm"), ("2", "host"), ("3", "reserve"), ("4", "migrate"), ("5", "wait")]
    assert "service at %s:%d" % (b.address, services.services[1].port) in res.stdout
    reserved = {n["mac"]: n["vf"]["address"] for n in seen["reservation"]["nics"]}
    assert set(reserved) == {v.mac for v in spec.vnics}
    for mac, vf in reserved.items():
        assert "%s->%s" % (mac, vf) in res.stdout
    assert sorted(seen["unplugged"]) == sorted(v.alias for v in spec.vnics)
    result = seen["result"]
    assert result.ok and [s.rc for s in result.steps] == [0, 0, 0, 0], result.error
    # The engine unplugged first: VDSM's guard and our destination hook have nothing to do.
    assert "released 2 unused reserved VF(s)" in res.stdout  # only a pre-check here
    assert "migrated %s to %s" % (spec.name, b.name) in res.stdout
    assert len(engine.find("POST", "/vms/%s/migrate$" % spec.uuid)) == 1

    live = etree.fromstring(lab_conns[1].lookupByUUIDString(spec.uuid).XMLDesc(0).encode())
    assert {v.alias for v in spec.vnics} <= {a_.get("name") for a_ in live.iterfind(
        "devices/interface/alias")}
    record = metadata.read_record(live)
    assert record is None or {r.state for r in record.vnics} == {metadata.PLUGGED}
    assert all(n["plugged"] for n in engine.vms[spec.uuid]["nics"])
    # The reservation was only the pre-check: nothing of it is left on B. (On a
    # real host B's domain scan sees the engine's VFs by their PCI source; an
    # emulated lab VF has none, so it is not asserted here.)
    with pytest.raises(RpcError) as none_left:
        services.client(1).call("SRIOV.getReservation", {"vmID": spec.uuid})
    assert none_left.value.code == 2002
    assert _vfs_of(services.client(0), spec.uuid) == {}
    with pytest.raises(libvirt.libvirtError):
        lab_conns[0].lookupByUUIDString(spec.uuid)


def test_sriov_engine_migrate_should_stop_at_the_reservation_when_b_is_full(
        lab_hosts, lab_conns, lab_vm_cleanup, services, engine):
    a, b = lab_hosts
    lab_vms = lab_vm_cleanup
    vnic = lab_vms.vnic(0, 2)
    spec, _ = lab_vms.start(0, with_os=False, vnics=(vnic,))  # nothing may be unplugged anyway
    _add_lab_vm(engine, a.name, spec)
    client_b = services.client(1)
    free = [r for r in client_b.call("SRIOV.listVfs") if r["state"] == "free"]
    fillers = [str(uuid.uuid4()) for _ in free]
    try:
        for i, vm in enumerate(fillers):
            client_b.call("SRIOV.reserveVfs", {"vmID": vm, "nics": [{"mac": "02:00:00:00:02:%02x" % i}]})
        res = _sriov_engine(engine, services, spec.name, b.name)
    finally:
        for vm in fillers:
            client_b.call("SRIOV.releaseVfs", {"vmID": vm})

    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("sriov-engine: ")
    assert "refused SRIOV.reserveVfs: [2001] no free VF" in res.stderr
    assert "sriov-migrationd at %s:%d" % (b.address, services.services[1].port) in res.stderr
    assert re.search(r"step 3/5 +reserve +FAILED", res.stdout)
    assert engine.find("POST", "/migrate$") == [] and engine.migrations == []
    live = etree.fromstring(lab_conns[0].lookupByUUIDString(spec.uuid).XMLDesc(0).encode())
    assert vnic.alias in {al.get("name") for al in live.iterfind("devices/interface/alias")}
    assert [r.state for r in metadata.read_record(live).vnics] == [metadata.PLUGGED]
    assert _vfs_of(client_b, spec.uuid) == {}
