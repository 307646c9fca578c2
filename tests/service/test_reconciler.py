"""The reconciler's rollback decision with fakes and a hand-driven clock."""

from __future__ import annotations

import dataclasses
import threading

from jsonrpc_plugin.host import LockedLedger
from jsonrpc_plugin.reconciler import Reconciler
from jsonrpc_plugin.verbs import _job_active
from sriov_host import metadata
from sriov_host.config import Config
from sriov_host.inventory import Vf
from sriov_host.ledger import IN_USE, UNPLUGGED, Ledger

from .fakes import HOST, VM, FakeDevices, FakeDomain

VF = "0000:3c:00.1"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeConn:
    def __init__(self, doms):
        self.doms = doms

    def listAllDomains(self, flags=0):
        return list(self.doms)

    def domainEventRegisterAny(self, *args):
        raise RuntimeError("no event loop")


class FakeHost:
    def __init__(self, cfg, doms, ledger):
        self.cfg, self._conn, self.ledger, self.host_id = cfg, FakeConn(doms), ledger, HOST
        self.locks = {}

    def conn(self):
        return self._conn

    def vm_lock(self, uuid):
        return self.locks.setdefault(uuid, threading.Lock())

    def domain_refs(self):
        return {}


def setup(job=0, updated=None):
    cfg = Config(rollback_grace=5.0, reconcile_interval=1.0)
    clock = Clock()
    rec = metadata.MigrationRecord(vnics=(metadata.VnicRecord(
        alias="ua-n1", mac="00:1a:4a:16:01:01", vf_address=VF, state=metadata.UNPLUGGED),),
        host=HOST, phase="unplugged", updated=updated or 0.0)
    dom = FakeDomain(rec, job=job)
    ledger = LockedLedger(Ledger(":memory:", clock=lambda: clock.now))
    ledger.hold(VM, [{"vf": Vf("pci_0000_3c_00_1", VF, "ens1f0", "0000:3b:00.0", 1),
                      "mac": "00:1a:4a:16:01:01", "alias": "ua-n1"}], UNPLUGGED)
    devices = FakeDevices()
    rec = Reconciler(FakeHost(cfg, [dom], ledger), devices, _job_active, clock=clock,
                     wall=lambda: clock.now)
    return rec, dom, devices, ledger, clock


def test_reconciler_should_wait_for_the_grace_then_replug():
    rec, dom, devices, ledger, clock = setup()
    due = rec.run_once()
    assert devices.calls == [] and due == clock.now + 5.0
    clock.now += 4.9
    rec.run_once()
    assert devices.calls == []
    clock.now += 0.2
    assert rec.run_once() is None
    assert [a for a, _ in devices.calls] == ["ua-n1"]
    assert dom.record.phase == "rolled-back" and dom.record.vnics[0].state == metadata.PLUGGED
    assert ledger.claims(vm_id=VM)[0].state == IN_USE
    assert ledger.status(VM)["phase"] == "rolled-back"
    rec.run_once()
    assert len(devices.calls) == 1


def test_reconciler_should_not_replug_while_a_job_runs():
    rec, dom, devices, _ledger, clock = setup(job=2)
    for _ in range(5):
        clock.now += 10
        rec.run_once()
    assert devices.calls == []
    dom.job = 0
    clock.now += 4
    rec.run_once()
    assert devices.calls == []  # grace counts from the last job seen
    clock.now += 2
    rec.run_once()
    assert len(devices.calls) == 1


def test_reconciler_should_count_the_grace_from_the_record_stamp():
    rec, _dom, devices, _ledger, clock = setup(updated=1000.0 - 60)
    rec.run_once()
    assert len(devices.calls) == 1


def test_event_should_restart_the_grace():
    rec, _dom, devices, _ledger, clock = setup(updated=1000.0 - 4)
    rec.note_job(VM)
    clock.now += 2
    rec.run_once()
    assert devices.calls == []
    clock.now += 3.1
    rec.run_once()
    assert len(devices.calls) == 1


def test_reconciler_should_skip_a_vm_locked_by_restorenics():
    rec, _dom, devices, _ledger, clock = setup(updated=1.0)
    lock = rec.host.vm_lock(VM)
    with lock:
        rec.run_once()
    assert devices.calls == []
    rec.run_once()
    assert len(devices.calls) == 1


def test_reconciler_should_expire_and_release_orphans():
    rec, _dom, _devices, ledger, clock = setup(updated=1.0)
    rec.host._conn.doms = []  # the VM left this host
    clock.now += 60
    rec.run_once()
    assert ledger.claims(vm_id=VM) == []


def test_thread_should_start_and_stop_quickly():
    rec, *_ = setup()
    rec.start()
    rec.wake()
    rec.stop(timeout=3)
    assert not rec._thread.is_alive()


def test_reconciler_should_count_the_grace_from_a_record_write_after_the_last_job():
    """A source hook still unplugging (it rewrites the record) is not abandoned."""
    rec, dom, devices, _ledger, clock = setup(job=1)
    rec.run_once()                     # a migration job is seen now
    dom.job = 0
    clock.now += 4.0
    dom.record = dataclasses.replace(dom.record, updated=clock.now)  # the hook wrote again
    clock.now += 4.0                   # 8 s after the job, 4 s after the write
    rec.run_once()
    assert devices.calls == []
    clock.now += 1.1
    rec.run_once()
    assert [a for a, _ in devices.calls] == ["ua-n1"]


def test_reconciler_should_leave_alone_a_vm_that_sriov_migrate_drives():
    rec, dom, devices, _ledger, clock = setup()
    driving = {VM}
    rec.busy = lambda uuid: uuid in driving
    rec.run_once()
    clock.now += 60
    rec.run_once()
    assert devices.calls == [] and dom.record.phase == "unplugged"
    driving.clear()
    clock.now += 6
    rec.run_once()
    assert [alias for alias, _ in devices.calls] == ["ua-n1"]


def test_reconciler_should_leave_alone_a_vm_that_vdsm_reports_migrating():
    rec, dom, devices, _ledger, clock = setup()
    rec.vdsm_migrating = lambda uuid: True
    rec.run_once()
    clock.now += 60
    rec.run_once()
    assert devices.calls == [] and dom.record.phase == "unplugged"


SOURCE_HOST = "5b0a0a0a-0000-4000-8000-0000000000bb"
LOCAL_VF = Vf("pci_0000_3c_00_4", "0000:3c:00.4", "ens1f0", "0000:3b:00.0", 4)


class ArrivalHost(FakeHost):
    """A destination host: its inventory has the VF the VM's reservation holds."""

    def inventory(self):
        from sriov_host.inventory import Inventory

        return Inventory((LOCAL_VF,))

    def domain_refs(self):
        return {}


def setup_arrival(ttl=30.0):
    """A VM that arrived here; the record still names the source (the hook died early)."""
    cfg = Config(rollback_grace=5.0, reconcile_interval=1.0, reservation_ttl=30)
    clock = Clock()
    rec = metadata.MigrationRecord(vnics=(metadata.VnicRecord(
        alias="ua-n1", mac="00:1a:4a:16:01:01", vf_address="0000:05:10.2", state=metadata.UNPLUGGED),),
        host=SOURCE_HOST, phase="unplugged", updated=clock.now)
    dom = FakeDomain(rec)
    ledger = LockedLedger(Ledger(":memory:", clock=lambda: clock.now))
    ledger.reserve(VM, [{"mac": "00:1a:4a:16:01:01", "alias": "ua-n1"}],
                   ArrivalHost(cfg, [], ledger).inventory(), ttl=ttl)
    devices = FakeDevices()
    rec = Reconciler(ArrivalHost(cfg, [dom], ledger), devices, _job_active, clock=clock,
                     wall=lambda: clock.now)
    return rec, dom, devices, ledger, clock


def test_reconciler_should_keep_the_reservation_of_an_arriving_vm_past_its_ttl():
    rec, dom, devices, ledger, clock = setup_arrival(ttl=30.0)
    dom.job = 1  # the incoming migration runs for longer than the TTL
    for _ in range(5):
        clock.now += 20
        rec.run_once()
    assert [(c.vf_address, c.state) for c in ledger.claims(VM)] == [(LOCAL_VF.address, "reserved")]
    assert devices.calls == []


def test_reconciler_should_plug_an_arrived_vm_whose_destination_hook_died():
    rec, dom, devices, ledger, clock = setup_arrival()
    rec.run_once()
    assert devices.calls == []  # within the grace the hook may still be at it
    clock.now += 6
    rec.run_once()
    assert [alias for alias, _ in devices.calls] == ["ua-n1"]
    assert 'bus="0x3c" slot="0x00" function="0x4"' in devices.calls[0][1]
    assert dom.record.host == HOST and dom.record.phase == "migrated"
    assert [(r.state, r.vf_address) for r in dom.record.vnics] == [("plugged", LOCAL_VF.address)]
    assert [(c.vf_address, c.state) for c in ledger.claims(VM)] == [(LOCAL_VF.address, "in_use")]


class IdleVdsm:
    """What VDSM answers about a VM it is not migrating (virt/migration.py, API.py).

    ``getMigrationStatus``: code 0 "Migration in progress" (every Vm has a
    SourceThread); ``getStats``: status Up. *status* can say otherwise.
    """

    def __init__(self, status="Up"):
        self.status = status

    def migration_status(self, vm_id):
        from jsonrpc_plugin import vdsm_api

        return vdsm_api.progress_from_stats({"status": {"code": 0, "message": "Migration in progress"},
                                             "progress": 0})

    def vm_status(self, vm_id):
        return self.status

    def close(self):
        pass


def _with_vdsm(rec, vdsm):
    from jsonrpc_plugin.migrator import Migrations

    migrations = Migrations(rec.host, rec.devices, peer_factory=None, vdsm_factory=lambda cfg: vdsm)
    rec.vdsm_migrating = migrations.vdsm_migrating
    return rec


def test_reconciler_should_replug_when_vdsm_answers_as_for_a_vm_it_does_not_migrate():
    """Real VDSM's idle answer must not read as "migrating", or the safety net never fires."""
    rec, dom, devices, _ledger, clock = setup()
    _with_vdsm(rec, IdleVdsm("Up"))
    rec.run_once()
    clock.now += 6
    rec.run_once()
    assert [a for a, _ in devices.calls] == ["ua-n1"] and dom.record.phase == "rolled-back"


def test_reconciler_should_wait_while_vdsm_reports_the_vm_migration_source():
    rec, dom, devices, _ledger, clock = setup()
    _with_vdsm(rec, IdleVdsm("Migration Source"))
    rec.run_once()
    clock.now += 60
    rec.run_once()
    assert devices.calls == [] and dom.record.phase == "unplugged"


def test_reconciler_should_plug_an_arrived_vm_as_soon_as_vdsm_reports_it_up():
    """The plug goes through VDSM's hotplugNic, safe only once VDSM reports the VM Up."""
    rec, dom, devices, ledger, clock = setup_arrival()
    status = {"now": "Migration Destination"}
    rec.vdsm_status = lambda uuid: status["now"]
    due = rec.run_once()
    clock.now += 60  # far past the grace: still not Up, still not plugged
    rec.run_once()
    assert devices.calls == [] and due is not None and due - (clock.now - 60) < 0.1
    status["now"] = "Up"
    rec.run_once()
    assert [alias for alias, _ in devices.calls] == ["ua-n1"]
    assert dom.record.phase == "migrated"
    assert [(c.vf_address, c.state) for c in ledger.claims(VM)] == [(LOCAL_VF.address, "in_use")]


def test_reconciler_should_plug_an_arrived_vm_at_once_when_vdsm_says_up():
    rec, dom, devices, _ledger, _clock = setup_arrival()
    rec.vdsm_status = lambda uuid: "Up"
    rec.run_once()  # no grace: nothing else will plug it
    assert [alias for alias, _ in devices.calls] == ["ua-n1"] and dom.record.phase == "migrated"


def test_reconciler_should_not_poll_fast_an_arrived_vm_vdsm_reports_paused():
    rec, _dom, devices, _ledger, clock = setup_arrival()
    rec.vdsm_status = lambda uuid: "Paused"
    due = rec.run_once()
    assert devices.calls == [] and due - clock.now >= rec.cfg.reconcile_interval
