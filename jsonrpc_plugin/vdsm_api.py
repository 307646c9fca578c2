"""VDSM's ``VM.migrate`` behind a small interface.

``SRIOV.migrate`` unplugs first and then asks VDSM to migrate, so VDSM's
own order (capture XML, hooks, ``migrationCreate``, libvirt) runs on a
domain that no longer holds the source's VFs. Two implementations:

* :class:`VdsmClient`: ``vdsm.client`` over VDSM's TLS port, on oVirt hosts;
* :class:`LabVdsm`: the lab's VDSM stand-in (``sriov_lab.vdsm.api``),
  which speaks the same verbs as plain JSON-RPC over HTTP on loopback.
  It exists only because VDSM cannot run on a lab machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Protocol

from sriov_host import migration_policy
from sriov_host.errors import SriovError

log = logging.getLogger(__name__)

VDSM_PORT = 54321
IN_PROGRESS = "in_progress"
DONE = "done"
FAILED = "failed"


class VdsmUnavailable(SriovError):
    """VDSM could not be asked, or refused the request; ``vdsm_code`` is VDSM's own, if any."""

    code = 2003

    def __init__(self, message: str, data=None, vdsm_code: Optional[int] = None):
        super().__init__(message, data)
        self.vdsm_code = vdsm_code


# VDSM's error codes we act on (lib/vdsm/common/exception.py)
NO_VM = 1  # NoSuchVM
HOTPLUG_NIC_FAILED = 49  # HotplugNicFailed
MIGRATION_IN_PROGRESS = 51  # MigrationInProgress: the _not_migrating guard (virt/vm.py)
# VDSM's VM statuses (lib/vdsm/virt/vmstatus.py)
STATUS_UP = "Up"
STATUS_MIGRATION_SOURCE = "Migration Source"
STATUS_MIGRATION_DESTINATION = "Migration Destination"
STATUS_DOWN = "Down"


@dataclass(frozen=True)
class MigrationProgress:
    """VDSM's ``VM.getMigrationStatus`` reduced to what we act on."""

    state: str  # IN_PROGRESS, DONE or FAILED
    progress: int = 0
    message: str = ""
    code: int = 0  # VDSM's status code (LIMIT_WAIT: waiting at the destination's limit)


class Vdsm(Protocol):
    def migrate(self, vm_id: str, params: dict) -> None:
        """VDSM's ``VM.migrate`` with a whole MigrateParams (see :func:`migrate_params`)."""

    def vm_status(self, vm_id: str) -> Optional[str]: ...

    def hotplug_nic(self, vm_id: str, xml: str) -> None: ...

    def destroy(self, vm_id: str) -> None: ...

    def engine_manages(self) -> bool:
        """An engine manages this host: VDSM is connected to a storage pool (only the engine does that)."""

    def close(self) -> None: ...

    def migration_status(self, vm_id: str) -> MigrationProgress: ...

    def cancel(self, vm_id: str) -> None: ...


# MigrationLimitExceeded (lib/vdsm/common/exception.py, "migrateLimit"): the destination
# is at its incoming limit and VDSM retries every migration_retry_timeout (migration.py
# SourceThread._regular_run). VDSM keeps that status: the code stays 82 through the
# retried migration, with "Migration done" at its end (_finishSuccessfully), and also
# after a failure that sets no other error (_recover keeps an error status).
LIMIT_WAIT = 82


def progress_from_stats(stats) -> MigrationProgress:
    """VDSM's migration stats: ``{"status": {"code", "message"}, "progress"}``.

    "Migration done" wins over the code (see LIMIT_WAIT); code 82 alone
    is still in progress; any other code is a failure.
    """
    status = (stats or {}).get("status") or {}
    code, message = status.get("code", 0), str(status.get("message", ""))
    progress = int((stats or {}).get("progress") or 0)
    if message.lower().startswith("migration done"):
        return MigrationProgress(DONE, 100, message, code)
    if code == LIMIT_WAIT:
        return MigrationProgress(IN_PROGRESS, progress, "%s (code %s)" % (message, code), code)
    if code:
        return MigrationProgress(FAILED, progress, "%s (code %s)" % (message, code), code)
    return MigrationProgress(IN_PROGRESS, progress, message)


# MigrateParams the engine sends as strings (Boolean/Integer.toString() in vdsbroker
# MigrateBrokerVDSCommand.createMigrationInfo); VDSM converts them (conv.tobool, int)
_AS_STRING = ("autoConverge", "compressed", "abortOnError", "tunneled", "downtime")


def migrate_params(vm_id: str, dst: str, policy=None, dstqemu: Optional[str] = None,
                   overrides: Optional[dict] = None) -> dict:
    """VDSM's MigrateParams as the engine sends them, from ``[migration]`` and the call's overrides.

    Booleans VDSM runs through ``conv.tobool`` go as "true"/"false", as the
    engine's ``Boolean.toString()``; ``encrypted`` stays a JSON boolean:
    VDSM takes it as it comes (migration.py SourceThread), so "false" would
    turn TLS on. ``maxBandwidth`` 0 and a ``legacy`` schedule are left out:
    VDSM then uses its own (migration_max_bandwidth, _legacy_convergence_schedule).
    """
    pol = policy or migration_policy.MigrationPolicy()
    out = {"vmId": vm_id, "dst": dst, "method": "online", "mode": "remote", "tunneled": False,
           "abortOnError": pol.abort_on_error, "autoConverge": pol.auto_converge,
           "compressed": pol.compressed, "encrypted": pol.encrypted,
           "enableGuestEvents": pol.enable_guest_events, "maxBandwidth": pol.max_bandwidth,
           "incomingLimit": pol.incoming_limit, "outgoingLimit": pol.outgoing_limit,
           "convergenceSchedule": pol.convergence_schedule, "dstqemu": dstqemu}
    out.update(overrides or {})
    if isinstance(out["convergenceSchedule"], str):
        out["convergenceSchedule"] = migration_policy.schedule(out["convergenceSchedule"])
    out = {k: v for k, v in out.items() if v not in (None, "") and not (k == "maxBandwidth" and not v)}
    for key in _AS_STRING:
        if key in out:
            value = out[key]
            out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


class VdsmClient:
    """VDSM through ``vdsm.client``, as vdsm-client does (STOMP over TLS on 54321)."""

    def __init__(self, address: str = "localhost", port: int = VDSM_PORT, timeout: float = 60.0):
        try:
            from vdsm import client
        except ImportError:
            raise VdsmUnavailable("VDSM's client (vdsm.client) is not importable on this host; "
                                  "SRIOV.migrate needs VDSM") from None
        self._client_mod = client
        try:
            self._cli = client.connect(address, port, use_tls=True, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - vdsm.client raises its own ConnectionError
            raise VdsmUnavailable("cannot connect to VDSM at %s:%d: %s" % (address, port, e)) from e

    def _call(self, what, fn, **kwargs):
        try:
            return fn(**kwargs)
        except self._client_mod.Error as e:
            raise VdsmUnavailable("VDSM %s failed: %s" % (what, " ".join(str(e).split())),
                                  vdsm_code=getattr(e, "code", None)) from e

    def migrate(self, vm_id: str, params: dict) -> None:
        self._call("VM.migrate", self._cli.VM.migrate, vmID=vm_id, params=params)

    def migration_status(self, vm_id: str) -> MigrationProgress:
        return progress_from_stats(self._call("VM.getMigrationStatus",
                                              self._cli.VM.getMigrationStatus, vmID=vm_id))

    def cancel(self, vm_id: str) -> None:
        self._call("VM.migrateCancel", self._cli.VM.migrateCancel, vmID=vm_id)

    def vm_status(self, vm_id: str) -> Optional[str]:
        return status_from_stats(self._call("VM.getStats", self._cli.VM.getStats, vmID=vm_id))

    def hotplug_nic(self, vm_id: str, xml: str) -> None:
        self._call("VM.hotplugNic", self._cli.VM.hotplugNic, vmID=vm_id,
                   params={"vmId": vm_id, "xml": xml})

    def destroy(self, vm_id: str) -> None:
        self._call("VM.destroy", self._cli.VM.destroy, vmID=vm_id)

    def engine_manages(self) -> bool:
        return bool(self._call("Host.getConnectedStoragePools",
                               self._cli.Host.getConnectedStoragePools))

    def close(self) -> None:
        """End the client's reactor thread and connection (vdsm.client starts one per client)."""
        try:
            self._cli.close()
        except Exception as e:  # noqa: BLE001 - closing a broken connection must not raise
            log.debug("closing the VDSM client: %s", e)

    def __enter__(self) -> VdsmClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LabVdsm:
    """The lab's VDSM stand-in: the same verbs as JSON-RPC over plain HTTP."""

    def __init__(self, address: str, port: int, timeout: float = 30.0):
        from .client import RpcClient

        self._rpc = RpcClient(address, port, insecure=True, timeout=timeout)

    def _call(self, method, params):
        from .client import RpcError, RpcUnavailable

        try:
            return self._rpc.call(method, params)
        except RpcError as e:
            raise VdsmUnavailable("VDSM stand-in %s failed: %s" % (method, e),
                                  vdsm_code=e.code) from e
        except RpcUnavailable as e:
            raise VdsmUnavailable("VDSM stand-in %s failed: %s" % (method, e)) from e

    def migrate(self, vm_id: str, params: dict) -> None:
        self._call("VM.migrate", {"vmID": vm_id, "params": params})

    def migration_status(self, vm_id: str) -> MigrationProgress:
        return progress_from_stats(self._call("VM.getMigrationStatus", {"vmID": vm_id}))

    def cancel(self, vm_id: str) -> None:
        self._call("VM.migrateCancel", {"vmID": vm_id})

    def vm_status(self, vm_id: str) -> Optional[str]:
        return status_from_stats(self._call("VM.getStats", {"vmID": vm_id}))

    def hotplug_nic(self, vm_id: str, xml: str) -> None:
        self._call("VM.hotplugNic", {"vmID": vm_id, "params": {"vmId": vm_id, "xml": xml}})

    def destroy(self, vm_id: str) -> None:
        self._call("VM.destroy", {"vmID": vm_id})

    def engine_manages(self) -> bool:
        return bool(self._call("Host.getConnectedStoragePools", {}))

    def close(self) -> None:
        return None

    def __enter__(self) -> LabVdsm:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def status_from_stats(stats) -> Optional[str]:
    """The VM's status from ``VM.getStats``'s answer (a list of one stats dict; API.py VM.getStats)."""
    if isinstance(stats, dict):
        stats = stats.get("statsList", [stats])
    if not isinstance(stats, list) or not stats or not isinstance(stats[0], dict):
        return None
    status = stats[0].get("status")
    return str(status) if status is not None else None


def connect(cfg) -> Vdsm:
    """The implementation ``[vdsm] client`` names, connected to this host's VDSM."""
    if cfg.vdsm_client == "lab":
        return LabVdsm(cfg.vdsm_address, cfg.vdsm_port)
    return VdsmClient(cfg.vdsm_address, cfg.vdsm_port)
