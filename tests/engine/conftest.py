"""Fixtures for the engine adapter: a seeded engine simulator and a CLI runner."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import pytest
from engine_fakes import MAC1, MAC2, MAC3, PASSWORD, USER, Seed

from engine_adapter import cli
from sriov_lab.engine_sim import EngineSimulator


@pytest.fixture(autouse=True)
def engine_logger_restored():
    """``sriov-engine``'s main() gives its logger its own handler and stops propagation;
    put it back after each test, or a later test's caplog sees none of its records."""
    logger = logging.getLogger(cli.PROG)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


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
