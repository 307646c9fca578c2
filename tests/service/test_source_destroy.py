"""A VM that left while its SRIOV.migrate driver was dead leaves no Down copy in the source's VDSM.

Found by the fault matrix (``sriov-lab faults``: the source's
sriov-migrationd killed after the libvirt migration): VDSM keeps the
migrated VM Down until VM.destroy and refuses it coming back; the driver
that would have destroyed it was gone, and nothing else did.
"""

from __future__ import annotations

import pytest

from jsonrpc_plugin import source_destroy, vdsm_api
from jsonrpc_plugin.host import LockedLedger
from jsonrpc_plugin.reconciler import MIGRATED_AWAY, Reconciler
from jsonrpc_plugin.verbs import _job_active
from sriov_host.config import Config
from sriov_host.ledger import Ledger

from .fakes import VM, FakeDevices
from .test_reconciler import Clock, FakeHost


class Vdsm:
    def __init__(self, status="Down", engine=False):
        self.status, self.engine, self.destroyed = status, engine, []

    def vm_status(self, vm_id):
        if self.status is None:
            raise vdsm_api.VdsmUnavailable("VDSM stand-in VM.getStats failed", vdsm_code=vdsm_api.NO_VM)
        return self.status

    def engine_manages(self):
        return self.engine

    def destroy(self, vm_id):
        self.destroyed.append(vm_id)

    def close(self):
        pass


def _reconciler(clock, ledger, destroy_left, running=()):
    cfg = Config(rollback_grace=5.0, reconcile_interval=1.0)
    return Reconciler(FakeHost(cfg, list(running), ledger), FakeDevices(), _job_active, clock=clock,
                      wall=clock, destroy_left=destroy_left)


def test_reconciler_should_hand_a_vm_that_migrated_away_to_destroy_left_once_quiet():
    clock = Clock()
    ledger = LockedLedger(Ledger(":memory:", clock=clock))
    ledger.set_status(VM, MIGRATED_AWAY)
    asked = []
    rec = _reconciler(clock, ledger, asked.append)
    rec.run_once()
    assert asked == []  # within the grace: the driver may still be finishing
    clock.now += 6
    rec.run_once()
    rec.run_once()
    assert asked == [VM]  # once, not every pass


@pytest.mark.parametrize("status, engine, mode, destroyed, ok", [
    pytest.param("Down", False, "auto", [VM], True, id="no-engine-destroys"),
    pytest.param("Down", True, "auto", [], True, id="engine-destroys-it-itself"),
    pytest.param("Down", True, "always", [VM], True, id="always"),
    pytest.param("Up", False, "auto", [], False, id="not-down"),
])
def test_destroy_migrated_should_follow_the_destroy_source_policy(status, engine, mode, destroyed, ok):
    vdsm = Vdsm(status, engine)
    got, _detail = source_destroy.destroy_migrated(Config(destroy_source=mode), lambda cfg: vdsm, VM)
    assert (got, vdsm.destroyed) == (ok, destroyed)


def test_destroy_migrated_should_do_nothing_when_the_policy_is_never():
    vdsm = Vdsm()
    got, _detail = source_destroy.destroy_migrated(Config(destroy_source="never"), lambda cfg: vdsm, VM)
    assert got is None and vdsm.destroyed == []


def test_destroy_migrated_should_say_gone_when_vdsm_holds_no_such_vm():
    got, detail = source_destroy.destroy_migrated(Config(), lambda cfg: Vdsm(status=None), VM)
    assert got is True and detail == source_destroy.GONE
