"""Fixtures for the engine adapter: a seeded engine simulator and a CLI runner."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pytest

from engine_adapter import cli
from engine_adapter.reserve import ServiceError
from sriov_host.errors import NO_FREE_VF
from sriov_lab.engine_sim import EngineSimulator

PASSWORD = "s3cr3t-Pa55"
USER = "admin@internal"

MAC1 = "56:6f:00:00:00:01"
MAC2 = "56:6f:00:00:00:02"
MAC3 = "56:6f:00:00:00:03"


@dataclass
class Seed:
    """Ids of what ``seeded`` put in the simulator."""

    ids: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.ids[name]
        except KeyError:
            raise AttributeError(name) from None


@pytest.fixture
def sim(tmp_path):
    with EngineSimulator(str(tmp_path / "pki"), users={USER: PASSWORD}) as s:
        yield s


@pytest.fixture
def seed(sim) -> Seed:
    """Two SR-IOV networks, profiles of every kind, two hosts and three VMs."""
    s = Seed()
    sim.allowed_device_properties = {"sriov_migratable", "qos_hint"}
    s.ids["net"] = sim.add_network("sriov-net", vlan=10)
    s.ids["net2"] = sim.add_network("sriov-other")
    s.ids["mgmt"] = sim.add_network("ovirtmgmt")
    s.ids["sriov"] = sim.add_profile("sriov", s.net, passthrough=True, custom={"qos_hint": "gold"})
    s.ids["ready"] = sim.add_profile("ready", s.net2, passthrough=True, migratable=True,
                                     custom={"sriov_migratable": "True"})
    s.ids["virtio"] = sim.add_profile("ovirtmgmt", s.mgmt, passthrough=False)
    s.ids["dup_a"] = sim.add_profile("dup", s.net, passthrough=True)
    s.ids["dup_b"] = sim.add_profile("dup", s.net2, passthrough=True)
    s.ids["failover"] = sim.add_profile("with-failover", s.net, passthrough=True, migratable=True,
                                        failover=s.virtio)
    s.ids["host1"] = sim.add_host("host1", "127.0.0.1")
    s.ids["host2"] = sim.add_host("host2", "127.0.0.1", service_port=54399)
    s.ids["vm_ready"] = sim.add_vm("vm-ready", s.host1, nics=[
        {"name": "nic0", "mac": MAC1, "profile": s.virtio},
        {"name": "nic1", "mac": MAC2, "profile": s.ready},
    ])
    s.ids["vm_blocked"] = sim.add_vm("vm-blocked", s.host1, nics=[
        {"name": "nic1", "mac": MAC3, "profile": s.ready},
        {"name": "nic2", "mac": "56:6f:00:00:00:04", "profile": s.sriov},
    ])
    s.ids["vm_plain"] = sim.add_vm("vm-plain", s.host1, nics=[
        {"name": "nic0", "mac": "56:6f:00:00:00:05", "profile": s.virtio},
    ])
    return s


@pytest.fixture
def engine_env(sim, monkeypatch):
    """The connection as an admin would give it: env vars, password included."""
    for name in ("OVIRT_INSECURE", "OVIRT_TIMEOUT", "OVIRT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OVIRT_URL", sim.url)
    monkeypatch.setenv("OVIRT_USERNAME", USER)
    monkeypatch.setenv("OVIRT_PASSWORD", PASSWORD)
    monkeypatch.setenv("OVIRT_CAFILE", sim.ca_file)


class FakeReserver:
    """The destination's service: records calls; flags make it fail."""

    def __init__(self, fail_reserve: bool = False, on_reserve=None):
        self.calls = []
        self.fail_reserve = fail_reserve
        self.on_reserve = on_reserve
        self.endpoint = None

    def reserve(self, vm_id, nics, ttl):
        self.calls.append(("reserve", vm_id, nics, ttl))
        if self.fail_reserve:
            raise ServiceError("sriov-migrationd refused SRIOV.reserveVfs: [2001] no free VF", NO_FREE_VF)
        if self.on_reserve:
            self.on_reserve()
        return {"vmID": vm_id, "expires": 0, "nics": [
            {"mac": n["mac"], "alias": n["alias"], "vf": {"address": "0000:05:10.%d" % i}}
            for i, n in enumerate(nics)]}

    def release(self, vm_id):
        self.calls.append(("release", vm_id))
        return {"released": 1}

    def factory(self, host, port):
        self.endpoint = (host, port)
        return self


@dataclass
class Result:
    rc: int
    out: str
    err: str


@pytest.fixture
def run(engine_env):
    """Run ``sriov-engine ARGV`` in process; returns rc, stdout, stderr."""
    def _run(*argv, reserver=None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        factory = reserver.factory if reserver is not None else None
        rc = cli.main(list(argv), reserver_factory=factory, out=out, err=err)
        return Result(rc, out.getvalue(), err.getvalue())
    return _run
