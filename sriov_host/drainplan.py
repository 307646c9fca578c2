"""Planning a drain: which destination takes which VM, decided before anything is touched.

Pure: the inputs are each VM's needs (its SR-IOV vNICs, their networks,
its NUMA nodes, or why the policy refuses it) and each destination's
free VFs per PF as its ``listVfs`` shows them. A plan either places every
VM or is refused, naming each VM that does not fit and why.

A NIC may use a destination PF that carries its network (a destination
without ``[networks]`` carries any, as :mod:`sriov_host.allocation`
says). Among the destinations where a VM fits, the one where all its
VFs are NUMA-local wins, then the least loaded: the greedy pass takes
the most constrained VMs first; should it leave any out, a bounded
search tries the other choices before the plan is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

SEARCH_BUDGET = 5000  # placements tried by the search after a failed greedy pass


@dataclass(frozen=True)
class NicNeed:
    mac: str
    alias: Optional[str] = None
    vlan: Optional[int] = None
    network: Optional[str] = None


@dataclass(frozen=True)
class VmNeed:
    """One VM to move; *refusal* set when it cannot move at all (the policy's word)."""

    vm_id: str
    nics: tuple = ()
    prefer_nodes: tuple = ()  # host NUMA nodes its memory is on (numatune); () no preference
    refusal: Optional[str] = None


@dataclass(frozen=True)
class PfPool:
    name: str
    free: int
    numa_node: Optional[int] = None
    networks: Optional[tuple] = None  # None: the destination maps no networks, any goes


@dataclass(frozen=True)
class Destination:
    name: str
    pfs: tuple  # of PfPool


@dataclass
class Placement:
    vm_id: str
    dst: str
    nics: list  # [(NicNeed, pf name, numa node)]
    local: Optional[bool]  # every VF NUMA-local; None: no preference

    def to_json(self) -> dict:
        return {"vmID": self.vm_id, "dst": self.dst,
                "numa": "no preference" if self.local is None else ("local" if self.local
                                                                   else "off node"),
                "nics": [{"mac": n.mac, "alias": n.alias, "network": n.network, "pf": pf,
                          "numa_node": node} for n, pf, node in self.nics]}

    def reserve_nics(self) -> list:
        """``reserveVfs``'s ``nics``: the planned PF pinned, so the plan is what is reserved."""
        return [{k: v for k, v in (("mac", n.mac), ("alias", n.alias), ("vlan", n.vlan),
                                   ("network", n.network), ("pf", pf)) if v is not None}
                for n, pf, _node in self.nics]


@dataclass
class DrainPlan:
    placements: list = field(default_factory=list)
    unplaced: list = field(default_factory=list)  # [{"vmID", "why"}]
    destinations: list = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return not self.unplaced

    def to_json(self) -> dict:
        return {"feasible": self.feasible, "vms": [p.to_json() for p in self.placements],
                "unplaced": list(self.unplaced), "destinations": list(self.destinations)}


def pools_from_vfs(rows, networks_known: bool = True) -> tuple:
    """A destination's PFs and free VF counts from its ``listVfs`` rows.

    A row's ``networks`` (the destination's ``[networks]`` names for its
    PF) is None when that host maps none.
    """
    by_pf = {}
    for r in rows:
        pool = by_pf.setdefault(r["pf"], {"free": 0, "node": r.get("numa_node"),
                                          "nets": r.get("networks")})
        if r.get("state") == "free":
            pool["free"] += 1
    return tuple(PfPool(pf, p["free"], p["node"], None if p["nets"] is None else tuple(p["nets"]))
                 for pf, p in sorted(by_pf.items()))


def _allowed(nic: NicNeed, pool: PfPool) -> bool:
    return nic.network is None or pool.networks is None or nic.network in pool.networks


class _State:
    """Free VFs left per destination and PF, and the load placed on each."""

    def __init__(self, dests):
        self.dests = {d.name: d for d in dests}
        self.free = {(d.name, p.name): p.free for d in dests for p in d.pfs}
        self.load = {d.name: 0 for d in dests}

    def fit(self, vm: VmNeed, dest: Destination) -> Optional[list]:
        """``[(nic, pool)]`` if *vm* fits on *dest* now, NUMA-local PFs first; else None."""
        prefer = set(vm.prefer_nodes)
        options = [[p for p in dest.pfs if _allowed(n, p)] for n in vm.nics]
        order = sorted(range(len(vm.nics)), key=lambda i: len(options[i]))
        used, chosen = {}, {}
        for i in order:
            left = [p for p in options[i] if self.free[(dest.name, p.name)] - used.get(p.name, 0) > 0]
            if not left:
                return None
            pool = min(left, key=lambda p: (bool(prefer) and p.numa_node not in prefer,
                                            used.get(p.name, 0) - self.free[(dest.name, p.name)],
                                            p.name))
            used[pool.name] = used.get(pool.name, 0) + 1
            chosen[i] = pool
        return [(vm.nics[i], chosen[i]) for i in range(len(vm.nics))]

    def take(self, dst: str, fitted, sign: int = 1) -> None:
        for _nic, pool in fitted:
            self.free[(dst, pool.name)] -= sign
        self.load[dst] += sign

    def options(self, vm: VmNeed) -> list:
        """``(score, dst, fitted)`` for each destination *vm* fits on now, best first."""
        out = []
        for name, dest in self.dests.items():
            fitted = self.fit(vm, dest)
            if fitted is None:
                continue
            off = sum(1 for _n, p in fitted if vm.prefer_nodes and p.numa_node not in vm.prefer_nodes)
            left = sum(self.free[(name, p.name)] for p in dest.pfs) - len(fitted)
            out.append(((off, self.load[name], -left, name), name, fitted))
        out.sort(key=lambda o: o[0])
        return out


def plan(vms, dests) -> DrainPlan:
    """Place every VM of *vms* on one of *dests*, or say which do not fit and why."""
    dests = tuple(dests)
    movable = [v for v in vms if v.refusal is None]
    unplaced = [{"vmID": v.vm_id, "why": v.refusal} for v in vms if v.refusal is not None]
    alone = _State(dests)
    fits_alone = {v.vm_id: [o[1] for o in alone.options(v)] for v in movable}
    order = sorted(movable, key=lambda v: (len(fits_alone[v.vm_id]), -len(v.nics), v.vm_id))
    state = _State(dests)
    chosen = _greedy(state, order)
    free = sum(p.free for d in dests for p in d.pfs)
    if len(chosen) < len(order) and sum(len(v.nics) for v in order) <= free:  # else no search helps
        found = _search(_State(dests), order, [SEARCH_BUDGET])
        if found is not None:
            state, chosen = found
    placed = []
    for v in order:
        if v.vm_id in chosen:
            placed.append(_placement(v, *chosen[v.vm_id]))
        else:
            unplaced.append({"vmID": v.vm_id, "why": _why(v, dests, fits_alone[v.vm_id])})
    order_of = {v.vm_id: i for i, v in enumerate(vms)}
    placed.sort(key=lambda p: order_of[p.vm_id])
    unplaced.sort(key=lambda u: order_of[u["vmID"]])
    return DrainPlan(placed, unplaced, _dest_rows(dests, state, placed))


def _greedy(state: _State, order) -> dict:
    chosen = {}
    for v in order:
        options = state.options(v)
        if options:
            _score, dst, fitted = options[0]
            state.take(dst, fitted)
            chosen[v.vm_id] = (dst, fitted)
    return chosen


def _search(state: _State, order, budget, i: int = 0, chosen=None):
    """Depth-first over each VM's options, best first, within *budget* placements."""
    chosen = {} if chosen is None else chosen
    if i == len(order):
        return state, dict(chosen)
    for _score, dst, fitted in state.options(order[i]):
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        state.take(dst, fitted)
        chosen[order[i].vm_id] = (dst, fitted)
        found = _search(state, order, budget, i + 1, chosen)
        if found is not None:
            return found
        state.take(dst, fitted, -1)
        del chosen[order[i].vm_id]
    return None


def _placement(vm: VmNeed, dst: str, fitted) -> Placement:
    local = None
    if vm.prefer_nodes and fitted:
        local = all(p.numa_node in vm.prefer_nodes for _n, p in fitted)
    return Placement(vm.vm_id, dst, [(n, p.name, p.numa_node) for n, p in fitted], local)


def _why(vm: VmNeed, dests, fits_alone) -> str:
    """Why *vm* has no place: no PF for a network anywhere, too few VFs, or taken by others."""
    for net in sorted({n.network for n in vm.nics if n.network}):
        if not any(_allowed(NicNeed("-", network=net), p) for d in dests for p in d.pfs):
            return "no destination has a VF on network %s (%s)" % (net, ", ".join(d.name for d in dests))
    if fits_alone:
        return ("fits on %s alone, but the free VFs there go to other VMs of this drain (it needs %d)"
                % (", ".join(fits_alone), len(vm.nics)))
    parts = []
    for d in dests:
        free = {}
        for n in vm.nics:
            key = n.network or "any network"
            free.setdefault(key, [0, sum(p.free for p in d.pfs if _allowed(n, p))])[0] += 1
        parts.append("%s %s" % (d.name, ", ".join("%s: %d free" % (k, f) for k, (_w, f) in
                                                  sorted(free.items()))))
    wants = {}
    for n in vm.nics:
        wants[n.network or "any network"] = wants.get(n.network or "any network", 0) + 1
    return "no destination has enough free VFs: it needs %s; %s" % (
        ", ".join("%d on %s" % (c, k) for k, c in sorted(wants.items())), "; ".join(parts))


def _dest_rows(dests, state: _State, placed) -> list:
    return [{"dst": d.name, "free_before": sum(p.free for p in d.pfs),
             "free_after": sum(state.free[(d.name, p.name)] for p in d.pfs),
             "vms": sum(1 for p in placed if p.dst == d.name)} for d in dests]
