"""Choosing VFs for a reservation: pure, so it is tested without sqlite.

A request's ``pf`` narrows the choice; its ``network`` maps to PFs
through ``[networks]``. When that section is empty the host is taken to
carry one network and the name is not used; when it is set, a network
it does not name has no VF, since a VF on the wrong PF is a VM on the
wrong wire.

A NUMA preference (:func:`numa_preference`) only orders the choice: VFs
on the preferred nodes are offered first, every constraint above still
holds, and a request that a plain choice could serve never fails
because of it. :func:`numa_report` says how well it was met.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .errors import NoFreeVf


@dataclass(frozen=True)
class NumaPreference:
    """Host NUMA nodes to take VFs from, and what they came from.

    *source* is ``numa_nodes`` (the VM's memory, from ``<numatune>``) or
    ``cpus`` (its pinned vCPUs, mapped through this host's topology);
    *nodes* is empty when none of those CPUs is known here.
    """

    nodes: tuple
    source: str


def numa_preference(numa_nodes, cpus, cpu_nodes: Callable[[], dict]) -> Optional[NumaPreference]:
    """The nodes to prefer, or None for no preference.

    Memory wins: a VF DMAs into guest memory, so the nodes holding it
    are the ones to be near. Without them, the nodes of the CPUs the
    vCPUs are pinned to; *cpu_nodes* (``{cpu: node}``) is asked only then.
    """
    if numa_nodes:
        return NumaPreference(tuple(sorted(set(numa_nodes))), "numa_nodes")
    if cpus:
        by_cpu = cpu_nodes()
        return NumaPreference(tuple(sorted({by_cpu[c] for c in cpus if c in by_cpu})), "cpus")
    return None


def allowed_pfs(nic: dict, networks: dict) -> Optional[set]:
    """PF names a NIC may use, or None for any."""
    allowed = None
    if nic.get("pf"):
        allowed = {nic["pf"]}
    network = nic.get("network")
    if network and networks:
        by_net = set(networks.get(network, ()))
        allowed = by_net if allowed is None else allowed & by_net
    return allowed


def pick_vfs(nics: list, free_vfs: list, networks: dict, prefer_nodes=()) -> list:
    """Return one VF per NIC (same order), or raise NoFreeVf for the lot.

    The most constrained NICs choose first so a greedy pass does not
    spend a scarce PF on a NIC that could have gone anywhere. With
    *prefer_nodes*, each NIC takes a VF on those NUMA nodes where its
    PFs have one; should that greedy pass fail, the plain one decides.
    """
    if prefer_nodes:
        try:
            return _pick(nics, free_vfs, networks, frozenset(prefer_nodes))
        except NoFreeVf:
            pass
    return _pick(nics, free_vfs, networks, frozenset())


def _pick(nics: list, free_vfs: list, networks: dict, prefer: frozenset) -> list:
    pool = sorted(free_vfs, key=lambda v: (v.numa_node not in prefer, v.pf, v.index)
                  if prefer else (v.pf, v.index))
    constraints = [allowed_pfs(n, networks) for n in nics]
    order = sorted(range(len(nics)),
                   key=lambda i: len(constraints[i]) if constraints[i] is not None else 1 << 30)
    taken, chosen = set(), {}
    for i in order:
        allowed = constraints[i]
        vf = next((v for v in pool if v.address not in taken
                   and (allowed is None or v.pf in allowed)), None)
        if vf is None:
            raise _no_free_vf(nics, i, allowed, pool)
        taken.add(vf.address)
        chosen[i] = vf
    return [chosen[i] for i in range(len(nics))]


def numa_report(preference: Optional[NumaPreference], placed) -> Optional[dict]:
    """How a reservation stands against the preference; None when there was none.

    *placed* is ``(mac, vf)`` per vNIC, *vf* an inventory Vf (None if the
    inventory no longer lists it). A VF whose node the host does not
    report (``numa_node`` None) is off node: it cannot be shown local.
    """
    if preference is None:
        return None
    off = [{"mac": mac, "address": vf.address if vf else None,
            "numa_node": vf.numa_node if vf else None}
           for mac, vf in placed if vf is None or vf.numa_node not in preference.nodes]
    return {"requested": list(preference.nodes), "source": preference.source,
            "honoured": not off, "vfs_off_node": off}


def numa_summary(report: dict) -> str:
    """One phrase for a step detail or a hook message, from :func:`numa_report`'s dict."""
    where = "NUMA node(s) %s (from %s)" % (",".join(map(str, report["requested"])) or "none",
                                           report["source"])
    if report["honoured"]:
        return "%s: every VF local" % where
    return "%s: off node %s" % (where, ", ".join(
        "%s (node %s)" % (v["mac"], "?" if v["numa_node"] is None else v["numa_node"])
        for v in report["vfs_off_node"]))


def _no_free_vf(nics, i, allowed, pool) -> NoFreeVf:
    """The 2001 error, naming where the VF was looked for and the counts."""
    nic = nics[i]
    free = [v for v in pool if allowed is None or v.pf in allowed]
    data = {"requested": len(nics), "free": len(free)}
    where = "on this host"
    if nic.get("pf"):
        data["pf"] = nic["pf"]
        where = "on PF %s" % nic["pf"]
    if nic.get("network"):
        data["network"] = nic["network"]
        pfs = "any" if allowed is None else (", ".join(sorted(allowed)) or "none mapped")
        where = "for network %s (PFs: %s)" % (nic["network"], pfs)
    return NoFreeVf("no free VF %s for vNIC %s: %d requested, %d free"
                    % (where, nic.get("mac"), len(nics), len(free)), data)
