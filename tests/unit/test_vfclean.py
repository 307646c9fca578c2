"""A VF's own settings: recorded before our first change, put back once no VM holds it (issue 20 item 7)."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace

import pytest

from sriov_host import ledger as ledger_mod
from sriov_host import vfclean, vfrestore
from sriov_host.errors import LibvirtFailure, NoFreeVf
from sriov_host.inventory import Inventory, Vf
from sriov_host.ledger import Ledger
from sriov_host.vfrestore import VfState
from sriov_host.vfsettings import from_text

VM1 = "4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11"
VM2 = "7a9c0e12-3b4d-4e5f-8a6b-7c8d9e0f1a22"
OWN = "spoofchk=on,trust=off,link_state=auto,min_tx_rate=0,max_tx_rate=0,query_rss=off"
LEFT = "spoofchk=off,trust=on,link_state=enable,min_tx_rate=0,max_tx_rate=300,query_rss=off"
INV = Inventory(tuple(Vf(name="pci_0000_05_10_%d" % i, address="0000:05:10.%d" % i, pf="ens1f0",
                         pf_address="0000:05:00.0", index=i) for i in range(2)))
VF0, VF1 = (vf.address for vf in INV.vfs)


def nic(n, **kw):
    return dict(mac="56:6f:1a:2b:00:%02x" % n, alias="ua-%d" % n, **kw)


class FakePf:
    """One PF's VFs as netlink shows them; *refuse* names what the driver says no to."""

    def __init__(self, refuse=()):
        self.state = {vf.index: VfState(from_text(OWN), 0) for vf in INV.vfs}
        self.refuse = set(refuse)
        self.applied = []

    def index(self, pf, vf_address):
        return next((vf.index for vf in INV.vfs if vf.address == vf_address and vf.pf == pf), None)

    def read(self, pf, index):
        return self.state.get(index)

    def apply(self, pf, index, changes):
        self.applied.extend(changes)
        refused = {n: "Operation not supported" for n, _v in changes if n in self.refuse}
        for name, value in changes:
            if name not in refused:
                self.state[index] = _set(self.state[index], name, value)
        return refused


def _set(state, name, value):
    if name == "vlan":
        return replace(state, vlan=value)
    values = {"min_tx_rate": value[0], "max_tx_rate": value[1]} if name == "rate" else {name: value}
    return replace(state, settings=replace(state.settings, **values))


@pytest.fixture
def ledger(tmp_path):
    with Ledger(str(tmp_path / "ledger.sqlite")) as led:
        yield led


def dirty(pf, index, vlan=42):
    """What a VM leaves behind: trust on, spoofchk off, a rate limit, its VLAN."""
    pf.state[index] = VfState(from_text(LEFT), vlan)


# -- what to put back (pure) ------------------------------------------------------


def test_restore_changes_should_put_back_each_setting_and_the_vlan_that_differ():
    own, left = VfState(from_text(OWN), 0), VfState(from_text(LEFT), 42)

    assert vfrestore.restore_changes(own, left) == [
        ("spoofchk", True), ("trust", False), ("link_state", "auto"), ("rate", (0, 0)), ("vlan", 0)]
    assert vfrestore.restore_changes(own, own) == []
    assert len(vfrestore.restore_changes(own, None)) == 6  # unknown now: all of it, rates as one


def test_restore_changes_should_leave_an_unrecorded_vlan_alone():
    own = VfState(from_text("trust=off"), None)

    assert vfrestore.restore_changes(own, VfState(from_text("trust=on"), 42)) == [("trust", False)]
    assert vfrestore.still_different(own, VfState(from_text("trust=on"), 42)) == ["trust"]
    assert vfrestore.still_different(VfState(from_text(OWN), 0), None) == []


# -- the ledger's record ------------------------------------------------------------


def test_original_should_be_written_once_and_survive_a_reopen(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    with Ledger(path) as led:
        assert led.remember_original(VF0, "ens1f0", OWN, 0) is True
        assert led.remember_original(VF0, "ens1f0", LEFT, 42) is False  # a later change: kept
    with Ledger(path) as led:
        [row] = led.originals()
    assert (row.vf_address, row.pf, row.settings, row.vlan) == (VF0, "ens1f0", OWN, 0)


def test_schema_1_ledger_should_be_upgraded_keeping_its_claims(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    with Ledger(path) as led:
        led.reserve(VM1, [nic(1)], INV, ttl=600)
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE vf_originals; UPDATE meta SET value='1' WHERE key='schema_version';")
    db.close()

    with Ledger(path) as led:
        assert [c.vf_address for c in led.claims(VM1)] == [VF0]
        assert led.remember_original(VF1, "ens1f0", OWN, 0)
        version = led._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert version == str(ledger_mod.SCHEMA_VERSION) == "2"


def test_reserve_should_never_hand_out_a_vf_left_with_a_vms_settings(ledger):
    ledger.remember_original(VF0, "ens1f0", OWN, 0)

    assert [c.vf_address for c in ledger.reserve(VM1, [nic(1)], INV, ttl=60).claims] == [VF1]
    with pytest.raises(NoFreeVf, match="1 more wait for sriov-migrationd to put their own") as e:
        ledger.reserve(VM2, [nic(2)], INV, ttl=60)
    assert e.value.data == {"requested": 1, "free": 0, "awaiting_restore": 1}
    with pytest.raises(NoFreeVf) as e:  # one that could not serve the vNIC anyway is not counted
        ledger.reserve(VM2, [nic(2, pf="ens1f1")], INV, ttl=60)
    assert "awaiting_restore" not in e.value.data


def test_original_should_stay_while_a_vm_holds_the_vf(ledger):
    ledger.reserve(VM1, [nic(1)], INV, ttl=60)
    ledger.remember_original(VF0, "ens1f0", OWN, 0)

    assert ledger.originals() == []
    assert ledger.original_restored(VF0) is False
    ledger.release(VM1)
    assert [r.vf_address for r in ledger.originals()] == [VF0]


# -- putting them back --------------------------------------------------------------


def test_clean_should_put_back_the_own_settings_and_free_the_vf(ledger):
    pf = FakePf()
    ledger.reserve(VM1, [nic(1, vlan=42)], INV, ttl=60)
    assert vfclean.remember(ledger, "ens1f0", VF0, pf)
    dirty(pf, 0)
    ledger.release(VM1)

    assert vfclean.clean_released(ledger, frozenset, pf) == {VF0: None}
    assert pf.state[0] == VfState(from_text(OWN), 0)
    assert ledger.originals(unheld_only=False) == []
    assert [c.vf_address for c in ledger.reserve(VM2, [nic(2)], INV, ttl=60).claims] == [VF0]


def test_clean_should_keep_a_vf_whose_restore_was_refused_and_warn_once(ledger, caplog):
    pf = FakePf(refuse={"trust"})
    vfclean.remember(ledger, "ens1f0", VF0, pf)
    dirty(pf, 0)

    with caplog.at_level(logging.DEBUG, logger="sriov_host.vfclean"):
        first = vfclean.clean_released(ledger, frozenset, pf)
        vfclean.clean_released(ledger, frozenset, pf)
    assert "ens1f0 refused trust (Operation not supported)" in first[VF0]
    assert [r.levelno for r in caplog.records if "keeps its last VM" in r.message] == \
        [logging.WARNING, logging.DEBUG]
    [row] = ledger.originals()
    assert row.last_error == first[VF0]
    assert [c.vf_address for c in ledger.reserve(VM2, [nic(2)], INV, ttl=60).claims] == [VF1]


def test_clean_should_fail_when_the_pf_shows_other_values_after_the_restore(ledger):
    pf = FakePf()
    vfclean.remember(ledger, "ens1f0", VF0, pf)
    dirty(pf, 0)
    pf.apply = lambda p, index, changes: {}  # the driver says yes, and changes nothing

    error = vfclean.clean_released(ledger, frozenset, pf)[VF0]
    assert "shows other values for spoofchk, trust, link_state, max_tx_rate, vlan" in error
    assert len(ledger.originals()) == 1


def test_clean_should_skip_vfs_a_domain_holds_and_wait_while_libvirt_is_down(ledger):
    pf = FakePf()
    vfclean.remember(ledger, "ens1f0", VF0, pf)
    dirty(pf, 0)

    def down():
        raise LibvirtFailure("libvirt is unavailable")

    assert vfclean.clean_released(ledger, lambda: {VF0: VM2}, pf) == {}
    assert vfclean.clean_released(ledger, down, pf) == {}
    assert pf.applied == [] and len(ledger.originals()) == 1


def test_remember_should_refuse_a_vf_whose_settings_cannot_be_read(ledger):
    pf = FakePf()
    pf.read = lambda p, index: None

    assert vfclean.remember(ledger, "ens1f0", VF0, pf) is False
    assert vfclean.remember(ledger, "ens1f0", "0000:99:00.1", FakePf()) is False  # not a VF of it
    assert ledger.originals(unheld_only=False) == []
