"""The engine's migration policy, for the ``VM.migrate`` that ``SRIOV.migrate`` sends.

The engine never calls VDSM's ``VM.migrate`` with only ``dst``: it sends
the cluster's whole migration policy (ovirt-engine
``vdsbroker/MigrateBrokerVDSCommand.createMigrationInfo``, values from
``bll/MigrateVmCommand.createMigrateVDSCommandParameters``). VDSM falls
back to its own defaults for each key left out (vdsm
``lib/vdsm/virt/migration.py SourceThread.__init__``): 52 MiB/s over the
management network, no TLS, a computed "legacy" convergence schedule,
CPU pinning dropped, and a plain failure at a busy destination.
``[migration]`` holds the engine's default cluster policy, "Minimal
downtime", so a VDSM-level migration behaves as an engine one. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .errors import ConfigError

# ovirt-engine packaging/dbscripts/upgrade/pre_upgrade/0000_config.sql, the
# MigrationPolicies config value: (initialItems downtime ms, [(stallingLimit,
# downtime ms)], lastItems). bll/migration/ConvergenceSchedule.from() turns
# it into VDSM's convergenceSchedule: lastItems become stalling steps of limit -1.
_POLICIES = {
    "minimal-downtime": (100, ((1, 150), (2, 200), (3, 300), (4, 400), (6, 500)), ("abort",)),
    "suspend-workload": (100, ((1, 150), (2, 200), (3, 300), (4, 400), (6, 500)),
                         ("setDowntime:5000", "abort")),
    "post-copy": (100, ((1, 150), (2, 200)), ("postcopy", "abort")),
}
LEGACY = "legacy"  # send no schedule: VDSM computes _legacy_convergence_schedule (migration.py)
SCHEDULES = tuple(_POLICIES) + (LEGACY,)
# The actions VDSM's MonitorThread._execute_action_with_params knows (migration.py)
ACTIONS = ("setDowntime", "abort", "postcopy")


def _action(spec) -> dict:
    """ConvergenceItem.asMap (common/migration/ConvergenceItem.java): {name, params}."""
    if isinstance(spec, int):
        return {"name": "setDowntime", "params": [str(spec)]}
    name, _, param = spec.partition(":")
    return {"name": name, "params": [param] if param else []}


def schedule(name: str) -> Optional[dict]:
    """VDSM's ``convergenceSchedule`` for a policy name; None for ``legacy`` (not sent)."""
    if name == LEGACY:
        return None
    init, steps, last = _POLICIES[name]
    stalling = [{"limit": limit, "action": _action(ms)} for limit, ms in steps]
    stalling += [{"limit": -1, "action": _action(a)} for a in last]
    return {"init": [_action(init)], "stalling": stalling}


@dataclass
class MigrationPolicy:
    """``[migration]`` and ``[migration_networks]``: what goes into each ``VM.migrate``.

    Each default names where the engine (or VDSM) has it.
    """

    # MigrateVmCommand.getMaxBandwidth, MigrationBandwidthLimitType.DEFAULT = AUTO: the
    # migration network's link speed (Mb/s) / 8 / maxMigrations; 625 = a 10 Gb/s
    # link shared by Minimal downtime's 2. 0: not sent (VDSM's migration_max_bandwidth, 52)
    max_bandwidth: int = 625
    # the cluster default: upgrade/04_02_0350_change_cluster_default_policy.sql
    convergence_schedule: str = "minimal-downtime"
    auto_converge: bool = True  # Minimal downtime: "autoConvergence": true
    compressed: bool = False  # Minimal downtime: "migrationCompression": false
    encrypted: bool = False  # 0000_config.sql DefaultMigrationEncryption = false
    abort_on_error: bool = True  # MigrateBrokerVDSCommand: always "abortOnError": "true"
    enable_guest_events: bool = True  # Minimal downtime: "enableGuestEvents": true
    incoming_limit: int = 2  # Minimal downtime: "maxMigrations": 2, both limits
    outgoing_limit: int = 2
    # no progress for this long: cancel. VDSM's own migration_progress_timeout
    # (lib/vdsm/common/config.py.in, 240 s until commit d8ff8959d removed it)
    stall_timeout: float = 240.0
    dstqemu: dict = field(default_factory=dict)  # [migration_networks] host -> address

    def dstqemu_for(self, host: str) -> Optional[str]:
        """The destination's migration-network address, if configured (else VDSM uses dst)."""
        return self.dstqemu.get(host.lower())


def parse(get, parser, path: str, old_timeout: Optional[float]) -> MigrationPolicy:
    """``[migration]`` through config's getter; *old_timeout* is ``[vdsm] migration_timeout``.

    That key predates the stall timeout (it was a fixed cap, 600 in the
    shipped file); old files keep it, so it is read as the stall timeout
    unless ``[migration] stall_timeout`` is set.
    """
    pol = MigrationPolicy()
    pol.max_bandwidth = get.number("migration", "max_bandwidth", pol.max_bandwidth, upper=10**6,
                                   integer=True, zero=True)
    pol.convergence_schedule = get.choice("migration", "convergence_schedule",
                                          pol.convergence_schedule, SCHEDULES)
    for key in ("auto_converge", "compressed", "encrypted", "abort_on_error", "enable_guest_events"):
        setattr(pol, key, get.bool("migration", key, getattr(pol, key)))
    pol.incoming_limit = get.number("migration", "incoming_limit", pol.incoming_limit, upper=100,
                                    integer=True)
    pol.outgoing_limit = get.number("migration", "outgoing_limit", pol.outgoing_limit, upper=100,
                                    integer=True)
    pol.stall_timeout = get.number("migration", "stall_timeout", old_timeout or pol.stall_timeout,
                                   upper=24 * 3600)
    pol.dstqemu = _networks(parser, path)
    return pol


def _networks(parser, path: str) -> dict:
    """``[migration_networks] HOST = ADDRESS``: each destination's migration-network address."""
    if not parser.has_section("migration_networks"):
        return {}
    out = {}
    for host, addr in parser["migration_networks"].items():
        addr = addr.strip().strip("[]")
        if not addr or any(c.isspace() or c in "/@" for c in addr):
            raise ConfigError("%s: [migration_networks] %s must be one host name or address, got %r"
                              % (path, host, addr))
        out[host.lower()] = addr  # host names are case-insensitive
    return out
