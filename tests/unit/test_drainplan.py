"""The drain planner: every VM placed or the plan refused, NUMA-local first, load spread."""

from __future__ import annotations

import pytest

from sriov_host.drainplan import Destination, NicNeed, PfPool, VmNeed, plan, pools_from_vfs


def vm(n, nets=(None,), nodes=(), refusal=None):
    nics = tuple(NicNeed("52:54:00:00:%02x:%02x" % (n, i), "ua-%d-%d" % (n, i), None, net)
                 for i, net in enumerate(nets))
    return VmNeed("vm-%d" % n, nics, tuple(nodes), refusal)


def dest(name, *pfs):
    return Destination(name, tuple(PfPool(*p) for p in pfs))


def test_plan_should_place_every_vm_and_spread_them_over_destinations():
    b = dest("b", ("ens1f0", 8, 0, None))
    c = dest("c", ("ens1f0", 8, 0, None))
    p = plan([vm(i) for i in range(4)], [b, c])
    assert p.feasible
    assert sorted(x.dst for x in p.placements) == ["b", "b", "c", "c"]
    assert [d["vms"] for d in p.destinations] == [2, 2]


def test_plan_should_prefer_numa_local_vfs_over_a_less_loaded_destination():
    b = dest("b", ("p0", 4, 0, None), ("p1", 4, 1, None))
    c = dest("c", ("p0", 4, 0, None))
    p = plan([vm(0, nets=(None, None), nodes=(1,))], [b, c])
    (placed,) = p.placements
    assert placed.dst == "b" and placed.local is True
    assert [pf for _n, pf, _node in placed.nics] == ["p1", "p1"]


def test_plan_should_use_a_nearly_full_destination_only_for_what_fits_there():
    b = dest("b", ("ens1f0", 8, 0, None))
    c = dest("c", ("ens1f0", 1, 0, None))  # nearly full
    vms = [vm(0, nets=(None, None)), vm(1, nets=(None, None, None)), vm(2), vm(3)]
    p = plan(vms, [b, c])
    assert p.feasible
    on_c = [x for x in p.placements if x.dst == "c"]
    assert len(on_c) == 1 and len(on_c[0].nics) == 1


def test_plan_should_keep_networks_on_their_pfs():
    b = dest("b", ("ens1f0", 4, 0, ("blue",)), ("ens1f1", 4, 1, ("red",)))
    p = plan([vm(0, nets=("red", "blue"))], [b])
    assert [(n.network, pf) for n, pf, _node in p.placements[0].nics] == [
        ("red", "ens1f1"), ("blue", "ens1f0")]
    assert p.placements[0].reserve_nics()[0]["pf"] == "ens1f1"


def test_plan_should_search_past_a_greedy_dead_end():
    # Greedy spreads: vm0 (1 NIC) would go to the emptier b, leaving no room for vm1's 3.
    b = dest("b", ("p", 3, 0, None))
    c = dest("c", ("p", 1, 0, None))
    p = plan([vm(0), vm(1, nets=(None,) * 3)], [b, c])
    assert p.feasible
    assert {x.vm_id: x.dst for x in p.placements} == {"vm-0": "c", "vm-1": "b"}


@pytest.mark.parametrize("vms, dests, why", [
    ([vm(0, nets=("green",))], [dest("b", ("p", 8, 0, ("blue",)))],
     "no destination has a VF on network green (b)"),
    ([vm(0, nets=(None,) * 3)], [dest("b", ("p", 2, 0, None))],
     "no destination has enough free VFs: it needs 3 on any network; b any network: 2 free"),
    ([vm(0, refusal="not migratable: ua-1 (host default)")], [dest("b", ("p", 8, 0, None))],
     "not migratable: ua-1 (host default)"),
], ids=["network", "capacity", "policy"])
def test_plan_should_refuse_naming_each_vm_and_why(vms, dests, why):
    p = plan(vms, dests)
    assert not p.feasible
    assert p.unplaced == [{"vmID": "vm-0", "why": why}]


def test_plan_should_name_vms_that_fit_alone_but_not_together():
    b = dest("b", ("p", 2, 0, None))
    p = plan([vm(0, nets=(None, None)), vm(1, nets=(None, None))], [b])
    assert len(p.placements) == 1 and len(p.unplaced) == 1
    assert "fits on b alone, but the free VFs there go to other VMs" in p.unplaced[0]["why"]
    assert p.to_json()["feasible"] is False


def test_pools_should_count_only_free_vfs_per_pf():
    rows = [{"pf": "ens1f0", "state": "free", "numa_node": 0, "networks": ["blue"]},
            {"pf": "ens1f0", "state": "reserved", "numa_node": 0, "networks": ["blue"]},
            {"pf": "ens1f1", "state": "in_use", "numa_node": 1, "networks": None}]
    assert pools_from_vfs(rows) == (PfPool("ens1f0", 1, 0, ("blue",)), PfPool("ens1f1", 0, 1, None))
