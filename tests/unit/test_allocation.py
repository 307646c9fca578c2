"""allocation: VF choice for a reservation (pure, no sqlite)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sriov_host import allocation
from sriov_host.errors import NO_FREE_VF, NoFreeVf
from sriov_host.inventory import Vf

PFS = ("ens1f0", "ens1f1", "ens2f0")


def vfs(per_pf=2, pfs=PFS):
    return [Vf(name="pci_0000_%02x_00_%d" % (5 + p, i), address="0000:%02x:00.%d" % (5 + p, i),
               pf=pf, pf_address="0000:%02x:00.0" % (4 + p), index=i)
            for p, pf in enumerate(pfs) for i in range(per_pf)]


def nic(n, **kw):
    return dict(mac="56:6f:1a:2b:00:%02x" % n, **kw)


NETWORKS = {"red": ["ens1f0", "ens1f1"], "blue": ["ens2f0"]}


@pytest.mark.parametrize("request_nic, networks, expected", [
    pytest.param({}, {}, None, id="any"),
    pytest.param({"pf": "ens2f0"}, {}, {"ens2f0"}, id="pf"),
    pytest.param({"network": "red"}, NETWORKS, {"ens1f0", "ens1f1"}, id="network"),
    pytest.param({"network": "red"}, {}, None, id="network-without-mapping-is-any"),
    pytest.param({"network": "green"}, NETWORKS, set(), id="unmapped-network-has-none"),
    pytest.param({"network": "red", "pf": "ens1f1"}, NETWORKS, {"ens1f1"}, id="pf-narrows-network"),
    pytest.param({"network": "red", "pf": "ens2f0"}, NETWORKS, set(), id="pf-outside-network"),
])
def test_allowed_pfs_should_combine_pf_and_network(request_nic, networks, expected):
    assert allocation.allowed_pfs(nic(1, **request_nic), networks) == expected


def test_pick_vfs_should_narrow_to_pf_and_keep_request_order():
    chosen = allocation.pick_vfs([nic(1), nic(2, pf="ens2f0"), nic(3, network="red")],
                                 vfs(), NETWORKS)
    assert [(v.pf, v.index) for v in chosen] == [("ens1f0", 1), ("ens2f0", 0), ("ens1f0", 0)]


def test_pick_vfs_should_serve_most_constrained_first():
    # The unconstrained NIC comes first in the request; served first it would
    # take ens1f0's only VF and starve the NIC pinned to ens1f0.
    pool = vfs(per_pf=1, pfs=("ens1f0", "ens1f1"))
    chosen = allocation.pick_vfs([nic(1), nic(2, pf="ens1f0")], pool, {})
    assert [v.pf for v in chosen] == ["ens1f1", "ens1f0"]


@pytest.mark.parametrize("nics, free, networks, data, fragment", [
    pytest.param([nic(1), nic(2), nic(3)], vfs(1, ("ens1f0", "ens1f1")), {},
                 {"requested": 3, "free": 2}, "on this host", id="host-full"),
    pytest.param([nic(1, pf="ens2f0"), nic(2, pf="ens2f0")], vfs(1), {},
                 {"requested": 2, "free": 1, "pf": "ens2f0"}, "on PF ens2f0", id="pf-full"),
    pytest.param([nic(1, network="blue")], vfs(1, ("ens1f0",)), NETWORKS,
                 {"requested": 1, "free": 0, "network": "blue"}, "for network blue (PFs: ens2f0)",
                 id="network-full"),
    pytest.param([nic(1, network="green")], vfs(), NETWORKS,
                 {"requested": 1, "free": 0, "network": "green"}, "none mapped",
                 id="network-unmapped"),
    pytest.param([nic(1), nic(2, network="red")], vfs(1, ("ens1f0",)), {},
                 {"requested": 2, "free": 1, "network": "red"}, "for network red (PFs: any)",
                 id="network-without-networks-section"),
])
def test_pick_vfs_should_raise_2001_with_data(nics, free, networks, data, fragment):
    with pytest.raises(NoFreeVf) as ei:
        allocation.pick_vfs(nics, free, networks)
    assert ei.value.code == NO_FREE_VF == 2001
    assert ei.value.data == data
    assert fragment in ei.value.message


@st.composite
def requests(draw):
    pool = vfs(per_pf=draw(st.integers(0, 4)))
    pool = draw(st.permutations(pool))
    nics = []
    for n in range(draw(st.integers(1, 8))):
        kw = draw(st.sampled_from([{}, {"pf": "ens1f0"}, {"pf": "ens2f0"}, {"network": "red"},
                                   {"network": "blue"}, {"network": "red", "pf": "ens1f1"}]))
        nics.append(nic(n, **kw))
    return nics, pool


@settings(max_examples=300, deadline=None)
@given(requests())
def test_pick_vfs_should_never_give_a_vf_twice_and_respect_constraints(req):
    nics, pool = req
    try:
        chosen = allocation.pick_vfs(nics, pool, NETWORKS)
    except NoFreeVf as e:
        assert e.data["requested"] == len(nics)
        assert 0 <= e.data["free"] <= len(pool)
        return
    assert len(chosen) == len(nics)
    assert len({v.address for v in chosen}) == len(chosen)
    assert {v.address for v in chosen} <= {v.address for v in pool}
    for n, vf in zip(nics, chosen):
        allowed = allocation.allowed_pfs(n, NETWORKS)
        assert allowed is None or vf.pf in allowed


# -- NUMA preference --------------------------------------------------------

def numa_vfs(layout):
    """VFs from ``{pf: (numa_node, count)}``, named as vfs() names them."""
    out = []
    for p, (pf, (node, count)) in enumerate(layout.items()):
        out += [Vf(name="pci_0000_%02x_00_%d" % (5 + p, i), address="0000:%02x:00.%d" % (5 + p, i),
                   pf=pf, pf_address="0000:%02x:00.0" % (4 + p), index=i, numa_node=node)
                for i in range(count)]
    return out


TWO_NODES = {"ens1f0": (0, 2), "ens1f1": (1, 2), "ens2f0": (1, 2)}


def test_pick_vfs_should_take_vfs_on_the_preferred_node():
    pool = numa_vfs(TWO_NODES)
    assert [v.numa_node for v in allocation.pick_vfs([nic(1), nic(2)], pool, {})] == [0, 0]
    chosen = allocation.pick_vfs([nic(1), nic(2), nic(3)], pool, {}, prefer_nodes=(1,))
    assert [(v.pf, v.numa_node) for v in chosen] == [("ens1f1", 1), ("ens1f1", 1), ("ens2f0", 1)]


def test_pick_vfs_should_fill_up_off_node_when_the_node_runs_out():
    pool = numa_vfs(TWO_NODES)
    chosen = allocation.pick_vfs([nic(i) for i in range(4)], pool, {}, prefer_nodes=(0,))
    assert [v.numa_node for v in chosen] == [0, 0, 1, 1]
    assert len({v.address for v in chosen}) == 4


def test_pick_vfs_should_keep_pf_and_network_constraints_over_the_preference():
    pool = numa_vfs(TWO_NODES)
    chosen = allocation.pick_vfs([nic(1, network="red"), nic(2, pf="ens1f0")], pool, NETWORKS,
                                 prefer_nodes=(1,))
    assert [(v.pf, v.numa_node) for v in chosen] == [("ens1f1", 1), ("ens1f0", 0)]
    chosen = allocation.pick_vfs([nic(1, network="blue")], pool, NETWORKS, prefer_nodes=(0,))
    assert [(v.pf, v.numa_node) for v in chosen] == [("ens2f0", 1)]


def test_pick_vfs_should_not_fail_where_a_plain_choice_succeeds():
    # Preferring node 1, the greedy pass gives nic 1 ens1f1's only VF and
    # leaves nic 2 (ens1f1 or ens2f0, which is full) nothing; the plain
    # choice serves both, so that is the answer.
    pool = numa_vfs({"ens1f0": (0, 1), "ens1f1": (1, 1), "ens2f0": (1, 0)})
    nets = {"a": ["ens1f0", "ens1f1"], "b": ["ens1f1", "ens2f0"]}
    chosen = allocation.pick_vfs([nic(1, network="a"), nic(2, network="b")], pool, nets,
                                 prefer_nodes=(1,))
    assert [v.pf for v in chosen] == ["ens1f0", "ens1f1"]


def test_pick_vfs_should_raise_the_plain_2001_when_nothing_fits():
    with pytest.raises(NoFreeVf) as e:
        allocation.pick_vfs([nic(1), nic(2)], numa_vfs({"ens1f0": (0, 1)}), {}, prefer_nodes=(0,))
    assert e.value.data == {"requested": 2, "free": 1}


@pytest.mark.parametrize("numa_nodes, cpus, expected", [
    pytest.param(None, None, None, id="none"),
    pytest.param([], [], None, id="empty-lists"),
    pytest.param([1, 0, 1], None, allocation.NumaPreference((0, 1), "numa_nodes"), id="nodes"),
    pytest.param([2], [0, 1], allocation.NumaPreference((2,), "numa_nodes"), id="memory-wins"),
    pytest.param(None, [0, 5, 6], allocation.NumaPreference((0, 1), "cpus"), id="cpus-mapped"),
    pytest.param(None, [99], allocation.NumaPreference((), "cpus"), id="cpus-unknown-here"),
])
def test_numa_preference_should_take_memory_first_then_pinned_cpus(numa_nodes, cpus, expected):
    asked = []

    def cpu_nodes():
        asked.append(1)
        return {0: 0, 1: 0, 5: 1, 6: 1}

    assert allocation.numa_preference(numa_nodes, cpus, cpu_nodes) == expected
    assert bool(asked) == (expected is not None and expected.source == "cpus")


def test_numa_report_should_name_each_vf_off_node():
    pool = numa_vfs({"ens1f0": (0, 1), "ens1f1": (1, 1)})
    unknown = Vf(name="x", address="0000:09:00.1", pf="ens3f0", pf_address="0000:08:00.0", index=0)
    pref = allocation.NumaPreference((0,), "numa_nodes")
    assert allocation.numa_report(None, [("m", pool[0])]) is None
    assert allocation.numa_report(pref, [("m1", pool[0])]) == {
        "requested": [0], "source": "numa_nodes", "honoured": True, "vfs_off_node": []}
    report = allocation.numa_report(pref, [("m1", pool[0]), ("m2", pool[1]), ("m3", unknown),
                                           ("m4", None)])
    assert report["honoured"] is False
    assert report["vfs_off_node"] == [
        {"mac": "m2", "address": pool[1].address, "numa_node": 1},
        {"mac": "m3", "address": "0000:09:00.1", "numa_node": None},
        {"mac": "m4", "address": None, "numa_node": None}]


@st.composite
def numa_requests(draw):
    nics, pool = draw(requests())
    nodes = draw(st.lists(st.sampled_from([0, 1, None]), min_size=len(pool), max_size=len(pool)))
    pool = [Vf(**dict(v.__dict__, numa_node=n)) for v, n in zip(pool, nodes)]
    return nics, pool, draw(st.sets(st.integers(0, 2), min_size=1))


@settings(max_examples=300, deadline=None)
@given(numa_requests())
def test_preference_should_change_which_vfs_never_whether(req):
    nics, pool, prefer = req
    try:
        plain = allocation.pick_vfs(nics, pool, NETWORKS)
    except NoFreeVf as e:
        with pytest.raises(NoFreeVf) as again:
            allocation.pick_vfs(nics, pool, NETWORKS, prefer_nodes=prefer)
        assert again.value.data == e.data
        return
    chosen = allocation.pick_vfs(nics, pool, NETWORKS, prefer_nodes=prefer)
    assert len({v.address for v in chosen}) == len(chosen) == len(plain)
    assert {v.address for v in chosen} <= {v.address for v in pool}
    for n, vf in zip(nics, chosen):
        allowed = allocation.allowed_pfs(n, NETWORKS)
        assert allowed is None or vf.pf in allowed


@pytest.mark.parametrize("report, text", [
    pytest.param({"requested": [0, 1], "source": "numa_nodes", "honoured": True, "vfs_off_node": []},
                 "NUMA node(s) 0,1 (from numa_nodes): every VF local", id="honoured"),
    pytest.param({"requested": [], "source": "cpus", "honoured": False, "vfs_off_node": [
        {"mac": "m1", "address": "a", "numa_node": 1}, {"mac": "m2", "address": "b", "numa_node": None}]},
        "NUMA node(s) none (from cpus): off node m1 (node 1), m2 (node ?)", id="off-node"),
])
def test_numa_summary_should_say_it_in_one_phrase(report, text):
    assert allocation.numa_summary(report) == text
