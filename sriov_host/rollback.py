"""Re-plug the source's own VFs after a migration that did not happen.

VDSM runs no hook on the source when a migration fails, so the service's
reconciler (and ``SRIOV.restoreNics``, and the source hook when its own
unplug times out) call :func:`restore_vnics`. It works from desired
state: the vNICs our metadata record lists as unplugged-for-migration,
minus what the live domain has attached, matched by alias. Running it
twice plugs nothing twice, and every failure is reported, not only the
first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Optional, Protocol

from . import domxml, metadata, plug
from .errors import LibvirtFailure, NoSuchVm, SriovError
from .ledger import IN_USE

log = logging.getLogger(__name__)

# libvirt constants, spelled out so this module imports without libvirt
VIR_DOMAIN_METADATA_ELEMENT = 2
VIR_DOMAIN_AFFECT_LIVE = 1
METADATA_KEY = "sriov"

PHASE_ROLLED_BACK = "rolled-back"
PHASE_ROLLBACK_FAILED = "rollback-failed"


class Domain(Protocol):
    """The slice of ``libvirt.virDomain`` this module uses."""

    def UUIDString(self) -> str: ...

    def XMLDesc(self, flags: int = 0) -> str: ...

    def setMetadata(self, type: int, metadata: str, key: str, uri: str, flags: int = 0) -> int: ...


class DeviceOps(Protocol):
    """Live attach that returns once libvirt reports DEVICE_ADDED."""

    def attach_and_wait(self, dom, device_xml: str, alias: str, timeout: float): ...


class StatusLedger(Protocol):
    def set_state(self, vm_id: str, vf_address: str, state: str) -> None: ...

    def set_status(self, vm_id: str, phase: str, vnics=()) -> None: ...


@dataclass
class RestoreResult:
    vm_id: str
    restored: list = field(default_factory=list)
    already: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    rollback_ms: Optional[float] = None
    phase: Optional[str] = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict:
        return {"vmID": self.vm_id, "phase": self.phase, "restored": self.restored,
                "already": self.already, "failed": self.failed, "rollback_ms": self.rollback_ms}


def pending_vnics(record, host_id: Optional[str], retry_failed: bool = False,
                  attached=frozenset()) -> list:
    """The record's vNICs this host should re-plug (none if the VFs are another host's).

    The reconciler takes only unplugged-for-migration ones. On demand
    (``retry_failed``, i.e. ``SRIOV.restoreNics``) failed ones are retried,
    and so are ones the record calls plugged that are not attached (a
    guest that let go of a device after the source hook gave up waiting).
    """
    if record is None or (host_id and record.host and record.host != host_id):
        return []
    states = (metadata.UNPLUGGED, metadata.FAILED) if retry_failed else (metadata.UNPLUGGED,)
    return [v for v in record.vnics if v.vf_address and (
        v.state in states or (retry_failed and v.state == metadata.PLUGGED and v.key not in attached))]


def restore_vnics(dom: Domain, cfg, ledger: StatusLedger, host_id: Optional[str], reason: str,
                  devices: DeviceOps, retry_failed: bool = False,
                  clock=time.monotonic) -> RestoreResult:
    """Re-plug what the record says was unplugged and is not attached now."""
    vm_id = dom.UUIDString()
    root = _live_tree(dom)
    record = metadata.read_record(root)
    attached = domxml.attached_keys(root)
    todo = pending_vnics(record, host_id, retry_failed, attached)
    result = RestoreResult(vm_id)
    if not todo:
        return result
    log.info("restoring %d vNIC(s) of VM %s: %s", len(todo), vm_id, reason)
    start = clock()
    for rec in todo:
        record = record.replace_vnic(_restore_one(dom, cfg, devices, rec, attached, result, clock))
    result.rollback_ms = round((clock() - start) * 1000.0, 1)
    result.phase = PHASE_ROLLED_BACK if result.ok else PHASE_ROLLBACK_FAILED
    record = _finish_record(record, result.phase)
    save_record(dom, record)
    _update_ledger(ledger, vm_id, record, todo, result)
    return result


def _restore_one(dom, cfg, devices, rec, attached, result, clock):
    """Plug one vNIC (unless attached already); return its updated record entry."""
    if rec.key in attached:
        result.already.append(rec.key)
        return rec.with_state(metadata.PLUGGED, error=None)
    start = clock()
    try:
        _xml, _ms, warning = plug.attach_vnic(devices, dom, cfg, rec)
    except Exception as e:  # noqa: BLE001 - each vNIC's failure is reported, then the next is tried
        msg = _one_line(getattr(e, "message", None) or str(e) or type(e).__name__)
        log.warning("re-plug of vNIC %s (%s) of VM %s failed: %s",
                    rec.key, rec.mac, dom.UUIDString(), msg)
        result.failed.append({"alias": rec.alias, "mac": rec.mac, "error": msg})
        return rec.with_state(metadata.FAILED, error=msg)
    ms = round((clock() - start) * 1000.0, 1)
    plug.announce_vnic(cfg, dom, rec)  # the switches still send its traffic to the destination
    result.restored.append(rec.key)
    log.info("re-plugged vNIC %s (%s) of VM %s on VF %s in %.1f ms%s",
             rec.key, rec.mac, dom.UUIDString(), rec.vf_address, ms, "; " + warning if warning else "")
    return rec.with_state(metadata.PLUGGED, error=warning, rollback_ms=ms)


def _finish_record(record, phase: str):
    return replace(record, phase=phase, updated=time.time())


def _update_ledger(ledger, vm_id, record, todo, result) -> None:
    """The ledger follows the record: plugged VFs are in use again."""
    keys = {v.key for v in todo}
    for rec in record.vnics:
        if rec.key not in keys or rec.state != metadata.PLUGGED:
            continue
        try:
            ledger.set_state(vm_id, rec.vf_address, IN_USE)
        except NoSuchVm:
            log.debug("ledger holds no VF %s for VM %s (placed by the engine)", rec.vf_address, vm_id)
    ledger.set_status(vm_id, result.phase, [v for v in record.vnics if v.key in keys])


def _live_tree(dom):
    try:
        xml = dom.XMLDesc(0)
    except Exception as e:  # noqa: BLE001 - libvirt errors are translated here, at the edge
        raise LibvirtFailure("cannot read the live XML of VM %s: %s"
                             % (dom.UUIDString(), _one_line(str(e))), {"vmID": dom.UUIDString()}) from e
    return domxml.parse_domain(xml)


def read_live_record(dom):
    """Our record in the live domain, or None."""
    return metadata.read_record(_live_tree(dom))


def save_record(dom, record) -> None:
    """Write the record into the live domain metadata (key ``sriov``, our namespace)."""
    try:
        dom.setMetadata(VIR_DOMAIN_METADATA_ELEMENT, metadata.to_libvirt_xml(record), METADATA_KEY,
                        metadata.NS, VIR_DOMAIN_AFFECT_LIVE)
    except Exception as e:  # noqa: BLE001
        raise LibvirtFailure("cannot write the migration record of VM %s: %s"
                             % (dom.UUIDString(), _one_line(str(e))), {"vmID": dom.UUIDString()}) from e


class DomainBusy(SriovError):
    """A migration job is running; re-plugging now would fight it."""

    code = LibvirtFailure.code


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class RestoreFailed(SriovError):
    """Some vNICs could not be re-plugged; ``data`` holds the whole result."""

    code = LibvirtFailure.code
