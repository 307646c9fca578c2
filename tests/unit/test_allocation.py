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
