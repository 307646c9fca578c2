"""``sriov-client SRIOV evacuate`` in a three-host lab: real libvirtd + QEMU, the VDSM stand-in.

Host A is drained to B and C over mutual TLS, through each host's real
``sriov-migrationd`` and installed hooks. C is made nearly full first
(a long reservation of most of its VFs), so the plan must keep it to
what fits there. The tests run in order: the dry run refuses a plan
that cannot fit (nothing touched), a real drain of four VMs with mixed
vNICs, then C dies mid-drain (its VMs roll back on A, B's finish); that
last one kills C, so it comes last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from sriov_host import domxml, metadata
from sriov_lab import domains
from sriov_lab.fixtures import LabVms, lab_unavailable_reason
from sriov_lab.lab import Lab
from sriov_lab.services import LabServices, LabStandIns

pytestmark = pytest.mark.lab

TIMEOUTS = {"rollback_grace": 5, "reconcile_interval": 0.5, "unplug": 3, "plug": 3}
FILLER = "fff00000-0000-4000-8000-000000000001"  # holds most of C's VFs
C_FREE = 2


@pytest.fixture(scope="module")
def lab3(lab_guest):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with Lab(3) as lab:
        yield lab


@pytest.fixture(scope="module")
def conns3(lab3):
    from sriov_host import config, libvirtconn

    conns = [libvirtconn.open_connection(config.load(h.config_path), use_vdsm=False) for h in lab3.hosts]
    yield conns
    for c in conns:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - C's daemon is gone after the last test
            pass


@pytest.fixture(scope="module")
def services3(lab3):
    # Under the lab's own directory, not pytest's: a pytest session started meanwhile makes
    # /tmp/pytest-of-root 0700 again, and the services' user could no longer read its key.
    workdir = os.path.join(lab3.root, "drain-services")
    os.makedirs(workdir)
    with LabServices(lab3, workdir, **TIMEOUTS) as svc:
        c = svc.client(2)
        total = len(c.call("SRIOV.listVfs"))
        c.call("SRIOV.reserveVfs", {"vmID": FILLER, "ttl": 3600, "nics": [
            {"mac": "02:00:00:00:0c:%02x" % i} for i in range(total - C_FREE)]})
        yield svc


@pytest.fixture
def vdsm3(lab3, services3):
    with LabStandIns(lab3) as standins:  # hooks installed under the lab's directory
        yield standins


@pytest.fixture
def vms3(lab3, conns3, lab_guest, services3):
    vms = LabVms(lab3.hosts, conns3, lab_guest)
    yield vms
    vms.cleanup()
    for i in range(3):
        for vm in vms.uuids:
            try:
                services3.client(i, timeout=5).call("SRIOV.releaseVfs", {"vmID": vm})
            except Exception:  # noqa: BLE001 - C is dead after the last test
                pass


def evacuate(services, *args, timeout=300):
    """``sriov-client -a A SRIOV evacuate ...``: (rc, JSON answer, stderr text)."""
    argv = [sys.executable, "-m", "jsonrpc_plugin.client", *services.client_args(0), "SRIOV",
            "evacuate", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        answer = None
    return proc.returncode, answer, proc.stderr


def dsts(services, *indexes):
    return "dsts=" + ",".join("%s:%d" % (services.services[i].host.address, services.services[i].port)
                              for i in indexes)


def start_vms(vms, specs):
    """Start VMs on A with the given vNIC lists; wait until each guest has its NICs."""
    started = []
    n = 0
    for vnic_kw in specs:
        vnics = []
        for kw in vnic_kw:
            vnics.append(vms.vnic(0, n, **kw))
            n += 1
        spec, _ = vms.start(0, vnics=tuple(vnics), persistent_teaming=True)
        started.append((spec, vnics))
    for spec, vnics in started:
        macs = {v.mac for v in vnics}
        domains.wait_serial(vms.hosts[0], spec.name, _seen(macs), 90, "NICs in the guest on A")
    return started


def _seen(macs):
    def until(_ready, ticks):
        return ticks[-1] if ticks and macs <= set(ticks[-1].nics.values()) else None
    return until


def _record(conn, vm_id):
    dom = conn.lookupByUUIDString(vm_id)
    return dom.isActive(), metadata.read_record(domxml.parse_domain(dom.XMLDesc(0)))


def _running(conn, vm_id) -> bool:
    try:
        return bool(conn.lookupByUUIDString(vm_id).isActive())
    except Exception:  # noqa: BLE001 - libvirt: no such domain
        return False


def test_dry_run_should_refuse_a_plan_that_cannot_fit_and_touch_nothing(lab3, vms3, services3):
    too_big = [vms3.vnic(0, i) for i in range(C_FREE + 1)]  # B is excluded: only C's 2 VFs
    spec, _ = vms3.start(0, with_os=False, vnics=tuple(too_big))
    blocked = vms3.vnic(0, C_FREE + 1, migratable=False)
    other, _ = vms3.start(0, with_os=False, vnics=(blocked,))

    rc, answer, err = evacuate(services3, dsts(services3, 2), "dry_run=true")

    assert rc == 1 and answer, err
    why = {u["vmID"]: u["why"] for u in answer["plan"]["unplaced"]}
    assert "no destination has enough free VFs" in why[spec.uuid]
    assert "not migratable" in why[other.uuid]
    assert "plan: REFUSED" in err and "%s: does not fit" % spec.uuid in err
    held = {row["vm_id"] for row in services3.client(2).call("SRIOV.listVfs")}
    assert not held & {spec.uuid, other.uuid}  # nothing reserved on C
    record = _record(vms3.conns[0], spec.uuid)[1]  # the lab's emulated VFs carry one from the start
    assert record.phase == "idle" and {r.state for r in record.vnics} == {metadata.PLUGGED}


def test_drain_should_move_four_vms_with_mixed_vnics_to_b_and_a_nearly_full_c(
        lab3, conns3, vms3, services3, vdsm3):
    started = start_vms(vms3, [
        [{"vlan": 100}, {}],                                      # two vNICs, one with a VLAN
        [{"failover_alias": "ua-%s" % uuid.uuid4()}],             # a failover pair
        [{}],
        [{"vlan": 200}],
    ])
    rc, drain, err = evacuate(services3, dsts(services3, 1, 2), "max_parallel=2")

    assert rc == 0, err
    assert drain["state"] == "done" and drain["left"] == []
    on_c = [v for v in drain["plan"]["vms"] if v["dst"].startswith(lab3.hosts[2].address)]
    assert sum(len(v["nics"]) for v in on_c) <= C_FREE and on_c  # C used, never overfilled
    for spec, vnics in started:
        row = next(r for r in drain["vms"] if r["vmID"] == spec.uuid)
        dst = 1 if row["dst"].startswith(lab3.hosts[1].address) else 2
        assert row["outcome"] == "migrated" and row["nic_absent_ms"] > 0
        assert not _running(conns3[0], spec.uuid)
        active, record = _record(conns3[dst], spec.uuid)
        assert active and record.phase == "migrated"
        assert {r.state for r in record.vnics} == {metadata.PLUGGED}
        assert {r.mac for r in record.vnics} == {v.mac for v in vnics}
    assert "VM" in err and "NIC-ABSENT" in err and "drain done: 4 VM(s) migrated" in err
    _keep_output(err)


def test_drain_should_roll_back_the_vms_of_a_destination_that_dies_and_finish_the_others(
        lab3, conns3, vms3, services3, vdsm3):
    started = start_vms(vms3, [[{}], [{}], [{}]])
    c = lab3.hosts[2]
    killed = []

    def kill_c_when_its_vm_goes():
        """A's stand-in, just before migrate3: if the VM unplugged now is C's, C dies."""
        for spec, _ in started:
            try:
                _active, record = _record(conns3[0], spec.uuid)
            except Exception:  # noqa: BLE001 - already gone to B
                continue
            if record and record.by_state(metadata.UNPLUGGED) and spec.uuid in planned_on_c and not killed:
                os.kill(c.pid, signal.SIGKILL)
                c.proc.wait()
                services3.services[2].proc.kill()
                services3.services[2].proc.wait()
                killed.append(spec.uuid)

    vdsm3[0].before_migrate = kill_c_when_its_vm_goes
    plan = services3.client(0).call("SRIOV.evacuate", {"dsts": dsts(services3, 1, 2)[5:],
                                                       "dry_run": True})["plan"]
    planned_on_c = {v["vmID"] for v in plan["vms"] if v["dst"].startswith(c.address)}
    assert plan["feasible"] and planned_on_c

    rc, drain, err = evacuate(services3, dsts(services3, 1, 2), "max_parallel=1")

    assert rc == 1 and drain["state"] == "failed", err
    assert killed and sorted(drain["left"]) == sorted(
        r["vmID"] for r in drain["vms"] if r["dst"].startswith(c.address))
    for spec, _vnics in started:
        row = next(r for r in drain["vms"] if r["vmID"] == spec.uuid)
        if row["vmID"] in drain["left"]:
            assert row["outcome"] in ("rolled-back", "failed"), row
            active, record = _record(conns3[0], spec.uuid)  # on A, every vNIC plugged back
            assert active and (record is None or {r.state for r in record.vnics} == {metadata.PLUGGED})
        else:
            assert row["outcome"] == "migrated" and _running(conns3[1], spec.uuid)
    assert any(r["outcome"] == "rolled-back" for r in drain["vms"])
    assert "VM(s) left on this host" in err


def _keep_output(err: str) -> None:
    """Where SRIOV_DRAIN_OUTPUT names a file, keep the CLI's output for docs/drain.md."""
    path = os.environ.get("SRIOV_DRAIN_OUTPUT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(err)
