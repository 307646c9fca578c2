"""Choosing VFs for a reservation: pure, so it is tested without sqlite.

A request's ``pf`` narrows the choice; its ``network`` maps to PFs
through ``[networks]``. When that section is empty the host is taken to
carry one network and the name is not used; when it is set, a network
it does not name has no VF, since a VF on the wrong PF is a VM on the
wrong wire.
"""

from __future__ import annotations

from typing import Optional

from .errors import NoFreeVf


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


def pick_vfs(nics: list, free_vfs: list, networks: dict) -> list:
    """Return one VF per NIC (same order), or raise NoFreeVf for the lot.

    The most constrained NICs choose first so a greedy pass does not
    spend a scarce PF on a NIC that could have gone anywhere.
    """
    pool = sorted(free_vfs, key=lambda v: (v.pf, v.index))
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
