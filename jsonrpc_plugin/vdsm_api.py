"""VDSM's ``VM.migrate`` behind a small interface.

``SRIOV.migrate`` unplugs first and then asks VDSM to migrate, so VDSM's
own order (capture XML, hooks, ``migrationCreate``, libvirt) runs on a
domain that no longer holds the source's VFs. Two implementations:

* :class:`VdsmClient`: ``vdsm.client`` over VDSM's TLS port, on oVirt hosts;
* :class:`LabVdsm`: the lab's VDSM stand-in (``sriov_lab.vdsm_standin``),
  which speaks the same verbs as plain JSON-RPC over HTTP on loopback.
  It exists only because VDSM cannot run on a lab machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sriov_host.errors import SriovError

VDSM_PORT = 54321
IN_PROGRESS = "in_progress"
DONE = "done"
FAILED = "failed"


class VdsmUnavailable(SriovError):
    """VDSM could not be asked, or refused the request."""

    code = 2003


@dataclass(frozen=True)
class MigrationProgress:
    """VDSM's ``VM.getMigrationStatus`` reduced to what we act on."""

    state: str  # IN_PROGRESS, DONE or FAILED
    progress: int = 0
    message: str = ""


class Vdsm(Protocol):
    def migrate(self, vm_id: str, dst: str) -> None: ...

    def migration_status(self, vm_id: str) -> MigrationProgress: ...

    def cancel(self, vm_id: str) -> None: ...


def progress_from_stats(stats) -> MigrationProgress:
    """VDSM's migration stats: ``{"status": {"code", "message"}, "progress"}``."""
    status = (stats or {}).get("status") or {}
    code, message = status.get("code", 0), str(status.get("message", ""))
    progress = int((stats or {}).get("progress") or 0)
    if code:
        return MigrationProgress(FAILED, progress, "%s (code %s)" % (message, code))
    if message.lower().startswith("migration done"):
        return MigrationProgress(DONE, 100, message)
    return MigrationProgress(IN_PROGRESS, progress, message)


def migrate_params(vm_id: str, dst: str) -> dict:
    """What the engine sends for a plain online migration (VDSM's MigrateParams)."""
    return {"vmId": vm_id, "dst": dst, "method": "online", "mode": "remote"}


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
            raise VdsmUnavailable("VDSM %s failed: %s" % (what, " ".join(str(e).split()))) from e

    def migrate(self, vm_id: str, dst: str) -> None:
        self._call("VM.migrate", self._cli.VM.migrate, vmID=vm_id,
                   params=migrate_params(vm_id, dst))

    def migration_status(self, vm_id: str) -> MigrationProgress:
        return progress_from_stats(self._call("VM.getMigrationStatus",
                                              self._cli.VM.getMigrationStatus, vmID=vm_id))

    def cancel(self, vm_id: str) -> None:
        self._call("VM.migrateCancel", self._cli.VM.migrateCancel, vmID=vm_id)


class LabVdsm:
    """The lab's VDSM stand-in: the same verbs as JSON-RPC over plain HTTP."""

    def __init__(self, address: str, port: int, timeout: float = 30.0):
        from .client import RpcClient

        self._rpc = RpcClient(address, port, insecure=True, timeout=timeout)

    def _call(self, method, params):
        from .client import RpcError, RpcUnavailable

        try:
            return self._rpc.call(method, params)
        except (RpcError, RpcUnavailable) as e:
            raise VdsmUnavailable("VDSM stand-in %s failed: %s" % (method, e)) from e

    def migrate(self, vm_id: str, dst: str) -> None:
        self._call("VM.migrate", {"vmID": vm_id, "params": migrate_params(vm_id, dst)})

    def migration_status(self, vm_id: str) -> MigrationProgress:
        return progress_from_stats(self._call("VM.getMigrationStatus", {"vmID": vm_id}))

    def cancel(self, vm_id: str) -> None:
        self._call("VM.migrateCancel", {"vmID": vm_id})


def connect(cfg) -> Vdsm:
    """The implementation ``[vdsm] client`` names, connected to this host's VDSM."""
    if cfg.vdsm_client == "lab":
        return LabVdsm(cfg.vdsm_address, cfg.vdsm_port)
    return VdsmClient(cfg.vdsm_address, cfg.vdsm_port)
