"""numa and topology: a VM's NUMA ties from its domain XML, a host's CPU -> node map."""

from __future__ import annotations

import pytest
from helpers.corpus import read_domain

from sriov_host import domxml, numa, topology
from sriov_host.errors import BadDomainXml


@pytest.mark.parametrize("text, expected", [
    pytest.param("0", {0}, id="one"),
    pytest.param("0-1", {0, 1}, id="range"),
    pytest.param("0-1,3", {0, 1, 3}, id="range-and-one"),
    pytest.param("0-7,^2", {0, 1, 3, 4, 5, 6, 7}, id="exclusion"),
    pytest.param("0-3,^2,^3,8", {0, 1, 8}, id="two-exclusions"),
    pytest.param("^2,0-3", {0, 1, 2, 3}, id="exclusion-first-is-undone-left-to-right"),
    pytest.param("^2", set(), id="only-an-exclusion"),
    pytest.param(" 0 - 2 , 5 ", {0, 1, 2, 5}, id="spaces"),
    pytest.param("3,3,1-2", {1, 2, 3}, id="repeats"),
])
def test_parse_cpuset_should_read_libvirt_sets(text, expected):
    assert numa.parse_cpuset(text) == expected


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty"), pytest.param("  ", id="blank"), pytest.param(None, id="none"),
    pytest.param("a", id="word"), pytest.param("3-1", id="reversed"), pytest.param("1-", id="open"),
    pytest.param("^1-3", id="excluded-range"), pytest.param("0,,1", id="empty-item"),
    pytest.param("-1", id="negative"), pytest.param("0-99999999999", id="huge"),
    pytest.param("\u00b2", id="unicode-digit"), pytest.param("^", id="bare-caret"),
])
def test_parse_cpuset_should_refuse_bad_sets_with_one_line(text):
    with pytest.raises(BadDomainXml) as e:
        numa.parse_cpuset(text)
    assert "\n" not in e.value.message


def test_parse_cpuset_should_bound_ids():
    assert numa.parse_cpuset("1023", limit=numa.MAX_NODE) == {1023}
    with pytest.raises(BadDomainXml, match="above 1023"):
        numa.parse_cpuset("0-1024", "nodeset", limit=numa.MAX_NODE)


def domain(body: str):
    return domxml.parse_domain("<domain type='kvm'><name>vm</name>%s</domain>" % body)


@pytest.mark.parametrize("body, nodes, cpus", [
    pytest.param("", (), (), id="neither"),
    pytest.param("<numatune><memory mode='strict' nodeset='1'/></numatune>", (1,), (),
                 id="memory-nodeset"),
    pytest.param("<numatune><memory mode='interleave' nodeset='0-1,3'/></numatune>", (0, 1, 3), (),
                 id="memory-ranges"),
    pytest.param("<numatune><memory mode='strict' placement='auto'/></numatune>", (), (),
                 id="placement-auto-has-no-nodeset"),
    pytest.param("<numatune><memory mode='interleave' nodeset='0-3,^2'/>"
                 "<memnode cellid='0' mode='strict' nodeset='2'/>"
                 "<memnode cellid='1' mode='strict' nodeset='5'/></numatune>", (0, 1, 2, 3, 5), (),
                 id="memory-and-memnodes"),
    pytest.param("<vcpu placement='static'>2</vcpu><cputune><vcpupin vcpu='0' cpuset='4-5'/>"
                 "<vcpupin vcpu='1' cpuset='8,^9,10'/></cputune>", (), (4, 5, 8, 10), id="vcpupin"),
    pytest.param("<vcpu placement='static' cpuset='0-3'>2</vcpu><cputune>"
                 "<vcpupin vcpu='0' cpuset='6'/><vcpupin vcpu='1' cpuset='7'/></cputune>",
                 (), (6, 7), id="every-vcpu-pinned-overrides-vcpu-cpuset"),
    pytest.param("<vcpu placement='static' cpuset='0-3,^1'>4</vcpu><cputune>"
                 "<vcpupin vcpu='0' cpuset='6'/></cputune>", (), (0, 2, 3, 6),
                 id="vcpu-cpuset-covers-the-unpinned"),
    pytest.param("<vcpu placement='static' cpuset='12-13'>2</vcpu>", (), (12, 13), id="vcpu-cpuset"),
    pytest.param("<cputune><emulatorpin cpuset='0'/><vcpupin vcpu='0'/></cputune>", (), (),
                 id="emulatorpin-and-empty-vcpupin-ignored"),
    pytest.param("<vcpu>2</vcpu><numatune><memnode cellid='0' mode='strict' nodeset='1'/></numatune>"
                 "<cputune><vcpupin vcpu='0' cpuset='2'/></cputune>", (1,), (2,), id="both"),
])
def test_domain_hints_should_read_numatune_and_pinning(body, nodes, cpus):
    hints = numa.domain_hints(domain(body))
    assert (hints.nodes, hints.cpus) == (nodes, cpus)
    assert hints.empty == (not nodes and not cpus)


def test_domain_hints_should_refuse_a_bad_nodeset():
    root = domain("<numatune><memory nodeset='1-0'/></numatune>")
    with pytest.raises(BadDomainXml, match="numatune memory nodeset"):
        numa.domain_hints(root)


@pytest.mark.parametrize("name", ["several_vfs", "one_vf_vlan", "failover", "no_sriov"])
def test_domain_hints_should_find_none_in_the_corpus(name):
    """VDSM's XML for a VM without NUMA pinning (guest <numa> cells are not host nodes)."""
    assert numa.domain_hints(domxml.parse_domain(read_domain(name))).empty


def test_hints_should_become_reserve_params_only_where_given():
    assert numa.NumaHints().to_params() == {}
    assert numa.NumaHints((0, 1), ()).to_params() == {"numa_nodes": [0, 1]}
    assert numa.NumaHints((), (4,)).to_params() == {"cpus": [4]}


def test_from_cpulists_should_map_cpus_and_skip_bad_and_empty_lists():
    got = topology.from_cpulists({0: "0-1,4\n", 1: "2-3,^3,5", 2: "", 3: "garbage"})
    assert got == {0: 0, 1: 0, 4: 0, 2: 1, 5: 1}


def test_sysfs_topology_should_read_node_cpulists(tmp_path):
    for node, cpus in ((0, "0-3\n"), (1, "4-7\n"), (2, "\n")):
        (tmp_path / ("node%d" % node)).mkdir()
        (tmp_path / ("node%d" % node) / "cpulist").write_text(cpus)
    (tmp_path / "node3").mkdir()  # no cpulist: skipped
    (tmp_path / "possible").write_text("0-3\n")
    got = topology.SysfsTopology(str(tmp_path)).cpu_nodes()
    assert got == {c: 0 for c in range(4)} | {c: 1 for c in range(4, 8)}


def test_sysfs_topology_should_say_nothing_where_there_is_no_node_dir(tmp_path):
    assert topology.SysfsTopology(str(tmp_path / "missing")).cpu_nodes() == {}
