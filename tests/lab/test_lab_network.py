"""The network between lab hosts: each host behind an oVirt host's firewall (issue 19 item 4).

Each lab host lives in its own network namespace, behind iptables rules
that let in what an engine-deployed host's firewalld lets in plus the
project's own firewalld service (:mod:`sriov_lab.firewall`). These tests
prove the firewall is real (a port nobody opened cannot be reached from
the other host, 54325 can) and that a destination whose firewall lacks the
project's service is a failed ``SRIOV.migrate`` that loses nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from lxml import etree

from sriov_host import config, metadata
from sriov_host.ledger import Ledger
from sriov_lab import firewall, netns
from sriov_lab.services import LabServices, LabStandIns

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def strict(lab):
    if lab.network is None:
        pytest.skip("the lab runs without host namespaces (SRIOV_LAB_NETNS=0)")
    return lab


@pytest.fixture(scope="module")
def services(strict, tmp_path_factory):
    with LabServices(strict, str(tmp_path_factory.mktemp("lab-network"))) as svc:
        yield svc


def _ns(host) -> str:
    return host.extra["netns"]


def test_firewall_should_refuse_a_port_nobody_opened_and_let_the_service_in(strict, services):
    a, b = strict.hosts
    with netns.call_in(_ns(b), netns.shut_port_listener, b.address, firewall.rules()) as listener:
        port = listener.getsockname()[1]
        assert not firewall.allows(firewall.rules(), "tcp", port)

        from_b = netns.call_in(_ns(b), netns.unreachable, b.address, port)
        from_a = netns.call_in(_ns(a), netns.unreachable, b.address, port)
        from_machine = netns.unreachable(b.address, port)
        to_service = netns.call_in(_ns(a), netns.unreachable, b.address, services.services[1].port)

    assert from_b is None  # the listener is real: B itself reaches it (loopback is allowed)
    assert from_a and "No route to host" in from_a  # firewalld's REJECT (icmp-host-prohibited)
    assert from_machine and "No route to host" in from_machine
    assert services.services[1].port == 54325 and to_service is None


def test_cut_off_host_should_answer_nothing_from_outside_until_its_firewall_is_set_again(
        strict, services):
    a, b = strict.hosts
    port = services.services[1].port
    strict.cut_off(1)
    try:
        from_a = netns.call_in(_ns(a), netns.unreachable, b.address, port, 1.0)
        from_b = netns.call_in(_ns(b), netns.unreachable, b.address, port)
    finally:
        strict.set_firewall(True, [1])
    again = netns.call_in(_ns(a), netns.unreachable, b.address, port)

    assert from_a and "no answer within 1 s" in from_a  # dropped, as behind a dropped route
    assert from_b is None  # B itself still runs and reaches its own service
    assert again is None


def test_firewall_should_follow_the_shipped_firewalld_service(strict):
    project = firewall.rules(True)
    engine_only = firewall.rules(False)
    shipped = firewall.service_rules("x", open(firewall.project_service_path()).read())
    assert [r for r in project if r not in engine_only] == [
        firewall.Rule(firewall.PROJECT_SERVICE, r.protocol, r.port) for r in shipped]
    assert firewall.allows(engine_only, "tcp", 54321)  # vdsm, as the engine's host deploy opens it
    assert firewall.allows(engine_only, "tcp", 49152)  # VDSM's migration range
    assert not firewall.allows(engine_only, "tcp", 54325)


def _ledger_claims(host, vm_id):
    with Ledger(config.load(host.config_path).ledger_path) as ledger:
        return ledger.claims(vm_id=vm_id)


def test_migrate_should_fail_naming_a_destination_whose_firewall_lacks_the_service(
        strict, services, lab_conns, lab_vms, tmp_path):
    a, b = strict.hosts
    vnic = lab_vms.vnic(0, 5)
    spec, _ = lab_vms.start(0, with_os=False, vnics=(vnic,))
    dst = services.services[1]
    argv = [sys.executable, "-m", "jsonrpc_plugin.client", *services.client_args(0), "SRIOV",
            "migrate", "vmID=%s" % spec.uuid, "dst=%s" % b.address, "port=%d" % dst.port,
            "timeout=60"]
    with LabStandIns(strict, hooks_root=str(tmp_path / "hooks")):
        strict.set_firewall(False, hosts=[1])  # B deployed by the engine, our service not opened
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        finally:
            strict.set_firewall(True, hosts=[1])

    job = json.loads(proc.stdout) if proc.stdout.strip() else None
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert job is not None and job["phase"] == "failed", (proc.stdout, proc.stderr)
    assert "%s:%d" % (b.address, dst.port) in job["error"], job["error"]
    assert "unplug" not in {s["step"] for s in job["steps"]}
    root = etree.fromstring(lab_conns[0].lookupByUUIDString(spec.uuid).XMLDesc(0).encode())
    assert vnic.alias in {x.get("name") for x in root.iterfind("devices/interface/alias")}
    record = metadata.read_record(root)
    assert record is None or record.phase == "idle"
    assert _ledger_claims(b, spec.uuid) == []
    assert _ledger_claims(a, spec.uuid) == []
