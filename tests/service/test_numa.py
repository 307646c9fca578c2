"""SRIOV.reserveVfs with a NUMA preference, over mutual TLS.

The host is the service tests' test-driver host: 2 PFs x 8 VFs from
tests/helpers/nodedev.py, ens1f0 on NUMA node 0 (its first VF held by a
running domain) and ens1f1 on node 1. Its CPU -> node map is a fake.
"""

from __future__ import annotations

import pytest

from jsonrpc_plugin.client import RpcError
from jsonrpc_plugin.service import Service
from sriov_host import config

from .conftest import client_for, write_config

VM = "aaaaaaaa-0000-4000-8000-000000000001"


class FakeTopology:
    """Node 0 has CPUs 0-3, node 1 CPUs 4-7; counts the reads."""

    def __init__(self):
        self.reads = 0

    def cpu_nodes(self):
        self.reads += 1
        return {cpu: cpu // 4 for cpu in range(8)}


@pytest.fixture
def host(tmp_path, pki):
    topology = FakeTopology()
    cfg = config.load(write_config(tmp_path, pki), required=True)
    svc = Service(cfg, port=0, reconcile=False, cpu_topology=topology).start()
    svc.topology = topology
    yield svc
    svc.stop()


@pytest.fixture
def client(host, pki):
    return client_for(host, pki)


def nics(n, first=0):
    return [{"mac": "00:1a:4a:16:03:%02x" % (first + i)} for i in range(n)]


def reserve(client, **params):
    return client.call("SRIOV.reserveVfs", dict({"vmID": VM, "ttl": 60}, **params))


def pfs(answer):
    return [n["vf"]["pf"] for n in answer["nics"]]


def test_reserve_should_take_vfs_on_the_requested_node(client):
    res = reserve(client, nics=nics(3), numa_nodes=[1])
    assert pfs(res) == ["ens1f1"] * 3
    assert res["numa"] == {"requested": [1], "source": "numa_nodes", "honoured": True,
                           "vfs_off_node": []}


def test_reserve_should_say_which_vfs_are_off_node_when_the_node_runs_out(client):
    res = reserve(client, nics=nics(10), numa_nodes=[1])
    assert pfs(res) == ["ens1f1"] * 8 + ["ens1f0"] * 2
    numa = res["numa"]
    assert numa["honoured"] is False and numa["requested"] == [1]
    assert numa["vfs_off_node"] == [
        {"mac": n["mac"], "address": n["vf"]["address"], "numa_node": 0} for n in res["nics"][8:]]
    assert "0000:3c:00.0" not in [n["vf"]["address"] for n in res["nics"]]  # the busy domain's VF


def test_reserve_should_have_no_preference_without_numa_params(client, host):
    for params in ({}, {"numa_nodes": None, "cpus": None}, {"numa_nodes": [], "cpus": []}):
        res = reserve(client, nics=nics(2), **params)
        assert res["numa"] is None and pfs(res) == ["ens1f0", "ens1f0"]
        client.call("SRIOV.releaseVfs", {"vmID": VM})
    assert host.topology.reads == 0


def test_reserve_should_map_pinned_cpus_to_this_hosts_nodes(client, host):
    res = reserve(client, nics=nics(2), cpus=[5, 6])
    assert pfs(res) == ["ens1f1", "ens1f1"]
    assert res["numa"]["requested"] == [1] and res["numa"]["source"] == "cpus"
    assert res["numa"]["honoured"] is True and host.topology.reads == 1


def test_reserve_should_let_memory_nodes_win_over_cpus(client, host):
    res = reserve(client, nics=nics(1), numa_nodes=[0], cpus=[5])
    assert pfs(res) == ["ens1f0"] and res["numa"]["source"] == "numa_nodes"
    assert host.topology.reads == 0


def test_reserve_should_say_not_honoured_for_cpus_this_host_does_not_know(client):
    res = reserve(client, nics=nics(1), cpus=[64])
    assert res["numa"]["requested"] == [] and res["numa"]["honoured"] is False
    assert [v["mac"] for v in res["numa"]["vfs_off_node"]] == [nics(1)[0]["mac"]]


def test_reserve_retry_should_keep_its_vfs_and_judge_them(client):
    first = reserve(client, nics=nics(2), numa_nodes=[1])
    again = reserve(client, nics=nics(2), numa_nodes=[0])
    assert again["nics"] == first["nics"]
    assert again["numa"]["honoured"] is False and len(again["numa"]["vfs_off_node"]) == 2
    assert "numa" not in client.call("SRIOV.getReservation", {"vmID": VM})


def test_reserve_should_take_numa_params_by_position(client):
    res = client.call("SRIOV.reserveVfs", [VM, nics(1), 60, [1]])
    assert pfs(res) == ["ens1f1"] and res["numa"]["honoured"] is True
    res = client.call("SRIOV.reserveVfs", [VM, nics(1, 5), 60, None, [0]])
    assert pfs(res) == ["ens1f0"] and res["numa"]["source"] == "cpus"


@pytest.mark.parametrize("params, field", [
    pytest.param({"numa_nodes": "0-1"}, "numa_nodes", id="nodeset-string"),
    pytest.param({"numa_nodes": 1}, "numa_nodes", id="bare-int"),
    pytest.param({"numa_nodes": {"0": 1}}, "numa_nodes", id="object"),
    pytest.param({"numa_nodes": [0, -1]}, "numa_nodes[1]", id="negative"),
    pytest.param({"numa_nodes": [1024]}, "numa_nodes[0]", id="above-max-node"),
    pytest.param({"numa_nodes": [True]}, "numa_nodes[0]", id="bool"),
    pytest.param({"numa_nodes": [0.5]}, "numa_nodes[0]", id="float"),
    pytest.param({"numa_nodes": ["1"]}, "numa_nodes[0]", id="string-item"),
    pytest.param({"numa_nodes": [None]}, "numa_nodes[0]", id="null-item"),
    pytest.param({"numa_nodes": [0] * 1025}, "numa_nodes", id="too-long"),
    pytest.param({"cpus": [8192]}, "cpus[0]", id="cpu-above-max"),
    pytest.param({"cpus": "4-7"}, "cpus", id="cpuset-string"),
    pytest.param({"cpus": [[4]]}, "cpus[0]", id="nested"),
])
def test_bad_numa_params_should_answer_32602_and_touch_nothing(client, host, params, field):
    with pytest.raises(RpcError) as e:
        reserve(client, nics=nics(1), **params)
    assert e.value.code == -32602
    assert e.value.data["field"] == field and field in e.value.message
    assert "Traceback" not in e.value.message and len(e.value.message) < 200
    assert host.ledger.claims() == [] and host.topology.reads == 0
