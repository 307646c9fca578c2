"""ledger: reservations in sqlite, single process (clock injected)."""

from __future__ import annotations

import pytest

from sriov_host import ledger as ledger_mod
from sriov_host.errors import NO_SUCH_VM, RESERVATION_EXPIRED, NoFreeVf, NoSuchVm, ReservationExpired
from sriov_host.inventory import Inventory, Vf
from sriov_host.ledger import IN_USE, RESERVED, UNPLUGGED, Ledger, LedgerConflict

VM1 = "4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11"
VM2 = "7a9c0e12-3b4d-4e5f-8a6b-7c8d9e0f1a22"


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def make_inventory(per_pf=2, pfs=("ens1f0", "ens1f1")):
    return Inventory(tuple(
        Vf(name="pci_0000_%02x_10_%d" % (5 + p, i), address="0000:%02x:10.%d" % (5 + p, i), pf=pf,
           pf_address="0000:%02x:00.0" % (5 + p), index=i)
        for p, pf in enumerate(pfs) for i in range(per_pf)))


def nic(n, **kw):
    return dict(mac="56:6F:1A:2B:00:%02X" % n, alias="ua-%d" % n, **kw)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ledger(tmp_path, clock):
    with Ledger(str(tmp_path / "ledger.sqlite"), clock=clock) as led:
        yield led


INV = make_inventory()


def test_reserve_should_return_contract_shape(ledger, clock):
    res = ledger.reserve(VM1, [nic(1, vlan=100), nic(2, pf="ens1f1")], INV, ttl=60)
    assert res.to_json() == {"vmID": VM1, "expires": int(clock.now + 60), "nics": [
        {"mac": "56:6f:1a:2b:00:01", "alias": "ua-1",
         "vf": {"name": "pci_0000_05_10_0", "address": "0000:05:10.0", "pf": "ens1f0", "index": 0}},
        {"mac": "56:6f:1a:2b:00:02", "alias": "ua-2",
         "vf": {"name": "pci_0000_06_10_0", "address": "0000:06:10.0", "pf": "ens1f1", "index": 0}},
    ]}
    assert [c.vlan for c in ledger.claims(VM1)] == [100, None]


def test_reserve_should_skip_vfs_held_by_domains_and_other_vms(ledger):
    ledger.reserve(VM2, [nic(9)], INV)
    res = ledger.reserve(VM1, [nic(1)], INV, taken_by_domains={"0000:05:10.1"})
    assert [c.vf_address for c in res.claims] == ["0000:06:10.0"]


def test_reserve_should_be_idempotent_and_extend_ttl(ledger, clock):
    first = ledger.reserve(VM1, [nic(1), nic(2)], INV, ttl=60)
    clock.now += 50
    again = ledger.reserve(VM1, [nic(2), nic(1)], INV, ttl=60)
    assert {c.vf_address for c in again.claims} == {c.vf_address for c in first.claims}
    assert [c.mac for c in again.claims] == ["56:6f:1a:2b:00:02", "56:6f:1a:2b:00:01"]
    assert again.expires == first.expires + 50
    clock.now += 30  # past the first TTL, within the extended one
    assert ledger.get_reservation(VM1).expires == again.expires


def test_reserve_should_replace_a_different_nic_set(ledger):
    ledger.reserve(VM1, [nic(1), nic(2)], INV)
    res = ledger.reserve(VM1, [nic(3)], INV)
    assert [c.mac for c in ledger.claims(VM1)] == ["56:6f:1a:2b:00:03"]
    assert [c.mac for c in res.claims] == ["56:6f:1a:2b:00:03"]


def test_reserve_should_keep_old_reservation_when_replacement_fails(ledger):
    ledger.reserve(VM1, [nic(1)], INV)
    with pytest.raises(NoFreeVf) as ei:
        ledger.reserve(VM1, [nic(n) for n in range(2, 7)], INV)
    assert ei.value.data == {"requested": 5, "free": 4}
    assert [c.mac for c in ledger.claims(VM1)] == ["56:6f:1a:2b:00:01"]


def test_reserve_should_be_all_or_nothing(ledger):
    ledger.reserve(VM2, [nic(9, pf="ens1f1"), nic(8, pf="ens1f1")], INV)
    with pytest.raises(NoFreeVf) as ei:
        ledger.reserve(VM1, [nic(1), nic(2, pf="ens1f1")], INV)
    assert ei.value.data == {"requested": 2, "free": 0, "pf": "ens1f1"}
    assert ledger.claims(VM1) == []


def test_reserve_should_refuse_empty_nic_list(ledger):
    with pytest.raises(ledger_mod.InvalidParams, match="nics"):
        ledger.reserve(VM1, [], INV)


def test_reservation_should_expire_after_ttl(ledger, clock):
    ledger.reserve(VM1, [nic(1), nic(2), nic(3), nic(4)], INV, ttl=60)
    with pytest.raises(NoFreeVf):
        ledger.reserve(VM2, [nic(5)], INV)
    clock.now += 60
    res = ledger.reserve(VM2, [nic(5)], INV)
    assert res.claims[0].vf_address == "0000:05:10.0"
    with pytest.raises(ReservationExpired) as ei:
        ledger.get_reservation(VM1)
    assert ei.value.code == RESERVATION_EXPIRED == 2004
    assert ei.value.data == {"vmID": VM1}


def test_expire_should_return_dropped_claims(ledger, clock):
    ledger.reserve(VM1, [nic(1)], INV, ttl=10)
    ledger.reserve(VM2, [nic(2)], INV, ttl=100)
    clock.now += 10
    assert [c.vm_id for c in ledger.expire()] == [VM1]
    assert [c.vm_id for c in ledger.claims()] == [VM2]


def test_get_reservation_should_say_2002_for_unknown_vm(ledger, clock):
    with pytest.raises(NoSuchVm) as ei:
        ledger.get_reservation(VM1)
    assert ei.value.code == NO_SUCH_VM == 2002
    ledger.reserve(VM1, [nic(1)], INV, ttl=10)
    ledger.release(VM1)
    with pytest.raises(NoSuchVm):  # released, not expired
        ledger.get_reservation(VM1)
    clock.now += 2 * 24 * 3600
    ledger.reserve(VM2, [nic(2)], INV, ttl=10)
    clock.now += 10
    with pytest.raises(ReservationExpired):
        ledger.get_reservation(VM2)
    clock.now += 2 * 24 * 3600  # the tombstone is forgotten after a day
    with pytest.raises(NoSuchVm):
        ledger.get_reservation(VM2)


def test_set_state_should_stop_expiry(ledger, clock):
    res = ledger.reserve(VM1, [nic(1)], INV, ttl=10)
    vf = res.claims[0].vf_address
    ledger.set_state(VM1, vf, IN_USE)
    clock.now += 100
    [claim] = ledger.claims(VM1)
    assert (claim.state, claim.expires) == (IN_USE, None)
    ledger.set_state(VM1, vf, UNPLUGGED)
    assert ledger.claims(VM1)[0].state == UNPLUGGED
    with pytest.raises(NoSuchVm):
        ledger.set_state(VM2, vf, IN_USE)
    with pytest.raises(ValueError):
        ledger.set_state(VM1, vf, "lost")


def test_release_should_drop_by_state(ledger):
    res = ledger.reserve(VM1, [nic(1), nic(2)], INV)
    ledger.set_state(VM1, res.claims[0].vf_address, IN_USE)
    assert ledger.release(VM1, states=(RESERVED,)) == 1
    assert [c.state for c in ledger.claims(VM1)] == [IN_USE]
    assert ledger.release(VM1) == 1
    assert ledger.release(VM1) == 0
    assert ledger.claims() == []


def test_release_should_keep_the_claims_of_the_macs_asked_to_keep(ledger):
    ledger.reserve(VM1, [nic(1), nic(2), nic(3)], INV)
    keep = nic(2)["mac"].upper()
    assert ledger.release(VM1, states=(RESERVED,), keep_macs=[keep]) == 2
    assert [c.mac for c in ledger.claims(VM1)] == [keep.lower()]


def test_hold_should_record_engine_placed_vfs_and_refuse_conflicts(ledger):
    vf0, vf1 = INV.vfs[0], INV.vfs[1]
    ledger.hold(VM1, [{"vf": vf0, "mac": "56:6f:1a:2b:00:01", "alias": "ua-1"}], IN_USE)
    ledger.hold(VM1, [{"vf": vf0, "mac": "56:6f:1a:2b:00:01", "alias": "ua-1"}], IN_USE)
    with pytest.raises(LedgerConflict) as ei:
        ledger.hold(VM2, [{"vf": vf1}, {"vf": vf0}], IN_USE)
    assert ei.value.data == {"vf": vf0.address, "holder": VM1}
    assert [(c.vm_id, c.vf_address) for c in ledger.claims()] == [(VM1, vf0.address)]
    res = ledger.reserve(VM2, [nic(2)], INV)
    assert res.claims[0].vf_address == vf1.address


def test_status_should_merge_timings(ledger):
    from sriov_host.metadata import UNPLUGGED as REC_UNPLUGGED
    from sriov_host.metadata import VnicRecord

    v = VnicRecord(alias="ua-1", mac="56:6f:1a:2b:00:01", state=REC_UNPLUGGED, unplug_ms=120.0)
    ledger.set_status(VM1, "unplugged", [v])
    ledger.set_status(VM1, "migrated", [v.with_state("plugged", unplug_ms=None, plug_ms=9.0)])
    status = ledger.status(VM1)
    assert status["phase"] == "migrated"
    assert [(n["vnic"], n["state"], n["unplug_ms"], n["plug_ms"]) for n in status["vnics"]] == \
        [("ua-1", "plugged", 120.0, 9.0)]
    ledger.forget_status(VM1)
    assert ledger.status(VM1) is None


def test_ledger_should_refuse_other_schema_version(tmp_path):
    path = str(tmp_path / "l.sqlite")
    with Ledger(path) as led:
        led._db.execute("UPDATE meta SET value='9' WHERE key='schema_version'")
    with pytest.raises(ledger_mod.SriovError, match="schema version 9"):
        Ledger(path)


def test_reserve_should_refuse_two_nics_with_one_mac_and_write_nothing(ledger):
    from sriov_host.errors import InvalidParams

    with pytest.raises(InvalidParams, match="56:6f:1a:2b:00:01 appears twice"):
        ledger.reserve(VM1, [nic(1), dict(nic(1), alias="ua-other")], INV, ttl=60)
    assert ledger.claims() == []


@pytest.mark.parametrize("change", [{"vlan": 200}, {"network": "blue"}, {"pf": "ens1f1"}],
                         ids=["vlan", "network", "pf"])
def test_retry_with_changed_terms_should_not_return_the_old_claims(ledger, change):
    first = ledger.reserve(VM1, [nic(1, vlan=100, network="red", pf="ens1f0")], INV, ttl=60)
    terms = dict(vlan=100, network="red", pf="ens1f0")
    terms.update(change)
    second = ledger.reserve(VM1, [nic(1, **terms)], INV, ttl=60)
    got = second.claims[0]
    assert (got.vlan, got.network) == (terms["vlan"], terms["network"])
    assert got.pf == terms["pf"]
    if "pf" in change:
        assert got.vf_address != first.claims[0].vf_address
    assert len(ledger.claims(VM1)) == 1


def test_set_state_should_refuse_moving_back_to_reserved(ledger):
    res = ledger.reserve(VM1, [nic(1)], INV, ttl=60)
    addr = res.claims[0].vf_address
    ledger.set_state(VM1, addr, IN_USE)
    with pytest.raises(ValueError, match="reserved"):
        ledger.set_state(VM1, addr, RESERVED)
    assert [c.state for c in ledger.claims(VM1)] == [IN_USE]


@pytest.mark.parametrize("nic", [pytest.param({"alias": "ua-gpu"}, id="missing"),
                                 pytest.param({"mac": None}, id="null")])
def test_reserve_should_refuse_a_nic_without_mac_clearly_and_write_nothing(ledger, nic):
    from sriov_host.errors import InvalidParams

    with pytest.raises(InvalidParams, match=r"nics\[1\]\.mac: a MAC is required"):
        ledger.reserve(VM1, [{"mac": "00:1a:4a:16:01:51"}, nic], INV)
    assert ledger.claims() == []


def test_reserve_should_prefer_the_numa_node_on_a_nodedev_inventory(ledger):
    from helpers import nodedev

    from sriov_host import inventory

    inv = inventory.parse_devices_xml(nodedev.devices_xml(pfs=4, vfs=2))  # PF p on node p % 2
    assert {(v.pf, v.numa_node) for v in inv.vfs} == {
        ("ens1f0", 0), ("ens1f1", 1), ("ens2f0", 0), ("ens2f1", 1)}
    res = ledger.reserve(VM1, [nic(1), nic(2), nic(3)], inv, ttl=60, prefer_nodes=(1,))
    assert [c.pf for c in res.claims] == ["ens1f1", "ens1f1", "ens2f1"]
    busy = frozenset(v.address for v in inv.vfs if v.pf == "ens2f1")
    res = ledger.reserve(VM2, [nic(4), nic(5)], inv, busy, ttl=60, prefer_nodes=(1,))
    assert [c.pf for c in res.claims] == ["ens1f0", "ens1f0"]  # node 1 is full: plain order
    assert len({c.vf_address for c in ledger.claims()}) == 5
