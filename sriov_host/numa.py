"""Where a VM lives on the host, as its domain XML says: pure, no I/O.

Two things in the domain XML tie a VM to NUMA nodes:

* ``<numatune>``: ``<memory nodeset='0-1'/>`` and ``<memnode cellid=..
  nodeset='..'/>`` name host NUMA nodes outright (``placement='auto'``
  has no nodeset: numad decides, and so no preference);
* vCPU pinning: ``<cputune><vcpupin vcpu='0' cpuset='4-7'/>``, and
  ``<vcpu cpuset='..'>`` for the vCPUs no ``vcpupin`` names, name host
  *CPUs*, which only the host they run on can map to its nodes.

So :func:`domain_hints` returns both as the XML says them; the host that
reserves the VFs turns CPUs into nodes with its own topology (see
:mod:`sriov_host.topology` and :func:`sriov_host.allocation.numa_preference`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BadDomainXml

MAX_NODE = 1023   # Linux's MAX_NUMNODES (CONFIG_NODES_SHIFT=10)
MAX_CPU = 8191    # Linux's largest NR_CPUS


@dataclass(frozen=True)
class NumaHints:
    """Host NUMA nodes and host CPUs a VM is tied to (sorted, unique; empty: none)."""

    nodes: tuple = ()
    cpus: tuple = ()

    @property
    def empty(self) -> bool:
        return not self.nodes and not self.cpus

    def to_params(self) -> dict:
        """``SRIOV.reserveVfs``'s ``numa_nodes``/``cpus``, only those the XML gave."""
        out = {}
        if self.nodes:
            out["numa_nodes"] = list(self.nodes)
        if self.cpus:
            out["cpus"] = list(self.cpus)
        return out


def parse_cpuset(text, what: str = "cpuset", limit: int = MAX_CPU) -> frozenset:
    """libvirt's set syntax: ``0-3,8``, ``0-7,^2``; ids above *limit* are refused.

    As libvirt reads it: items left to right, ``N``, ``N-M`` (M >= N) or
    ``^N`` (drop N from what is set so far), spaces around them allowed.
    """
    if text is None or not str(text).strip():
        raise BadDomainXml("%s is empty" % what)
    out = set()
    for item in str(text).split(","):
        item = item.strip()
        drop = item.startswith("^")
        first, sep, last = item[1 if drop else 0:].partition("-")
        low = _cpu_id(first, text, what, limit)
        high = _cpu_id(last, text, what, limit) if sep else low
        if (drop and sep) or high < low:
            raise BadDomainXml("%s %r: bad item %r" % (what, _short(text), item[:20]))
        if drop:
            out.discard(low)
        else:
            out.update(range(low, high + 1))
    return frozenset(out)


def _cpu_id(text: str, whole, what: str, limit: int) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise BadDomainXml("%s %r: %r is not a number" % (what, _short(whole), text[:20]))
    value = int(text)
    if value > limit:
        raise BadDomainXml("%s %r: %d is above %d" % (what, _short(whole), value, limit))
    return value


def _short(text) -> str:
    text = str(text)
    return text if len(text) <= 40 else text[:37] + "..."


def numatune_nodes(root) -> frozenset:
    """Host nodes ``<numatune>`` binds the VM's memory to (``<memory>`` and every ``<memnode>``)."""
    nodes = set()
    for elem in root.iterfind("numatune/*"):
        if elem.tag in ("memory", "memnode") and elem.get("nodeset") is not None:
            nodes |= parse_cpuset(elem.get("nodeset"), "numatune %s nodeset" % elem.tag, MAX_NODE)
    return frozenset(nodes)


def pinned_cpus(root) -> frozenset:
    """Host CPUs the vCPUs may run on: each ``vcpupin``'s cpuset, and ``<vcpu cpuset>``
    when some vCPU has no ``vcpupin``. Unpinned vCPUs float anywhere and add nothing."""
    cpus, pinned = set(), set()
    for pin in root.iterfind("cputune/vcpupin"):
        if pin.get("cpuset") is None:
            continue
        cpus |= parse_cpuset(pin.get("cpuset"), "vcpupin cpuset")
        pinned.add(pin.get("vcpu"))
    vcpu = root.find("vcpu")
    if vcpu is not None and vcpu.get("cpuset") is not None and len(pinned) < _vcpu_count(vcpu):
        cpus |= parse_cpuset(vcpu.get("cpuset"), "vcpu cpuset")
    return frozenset(cpus)


def _vcpu_count(vcpu) -> int:
    text = (vcpu.text or "").strip()
    return int(text) if text.isdigit() else 1 << 30  # unknown: assume some vCPU is unpinned


def domain_hints(root) -> NumaHints:
    """The VM's NUMA ties from a parsed ``<domain>``; raises BadDomainXml on a bad set."""
    return NumaHints(tuple(sorted(numatune_nodes(root))), tuple(sorted(pinned_cpus(root))))


# VDSM's CPU policies (lib/vdsm/virt/cpumanagement.py CPU_POLICY_*). For the exclusive
# ones the engine picks host CPUs per host and sends the destination's with VM.migrate
# (bll/MigrateVmCommand: getCpuPinningPolicy().isExclusive() -> cpuSets, numaNodeSets).
EXCLUSIVE_POLICIES = ("dedicated", "isolate-threads", "siblings")
_OVIRT_VM = "{http://ovirt.org/vm/1.0}"


@dataclass(frozen=True)
class CpuPinning:
    """The VM's vCPU pinning as VDSM's migration treats it (pure, from the domain XML)."""

    policy: str  # VDSM's cpuPolicy: the metadata's, or vm.py _implied_cpu_policy's
    pinned: tuple  # vCPUs with a <vcpupin>
    vcpus: int  # domain_descriptor.get_number_of_cpus: what cpusets must cover
    vnuma_cells: int  # domain_descriptor.vnuma_count: what numaNodesets must cover
    memnodes: bool  # <numatune><memnode>: pinned vNUMA memory

    @property
    def dropped(self) -> tuple:
        """vCPUs whose pinning a migration without ``cpusets`` loses for good.

        cpumanagement.replace_cpu_pinning drops every <vcpupin> but the
        manually pinned ones. Shared-pool pins (policy none, and manual's
        other vCPUs) are re-made by the destination's VDSM (on_vm_create);
        an exclusive policy's are not: the VM would float there.
        """
        return self.pinned if self.policy in EXCLUSIVE_POLICIES else ()


def cpu_pinning(root) -> CpuPinning:
    """The VM's :class:`CpuPinning` from a parsed ``<domain>``."""
    pinned = tuple(sorted(int(p.get("vcpu")) for p in root.iterfind("cputune/vcpupin")
                          if (p.get("vcpu") or "").isdigit()))
    policy = (root.findtext("metadata/%svm/%scpuPolicy" % (_OVIRT_VM, _OVIRT_VM)) or "").strip()
    vcpu = root.find("vcpu")
    count = (vcpu.get("current") or vcpu.text or "").strip() if vcpu is not None else ""
    return CpuPinning(policy=policy or ("manual" if pinned else "none"), pinned=pinned,
                      vcpus=int(count) if count.isdigit() else 0,
                      vnuma_cells=len(root.findall("cpu/numa/cell")),
                      memnodes=root.find("numatune/memnode") is not None)
