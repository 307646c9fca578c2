"""One live migration in VDSM's order, with hooks, timed step by step.

The step table is DESIGN.md's: the source's ``before_vm_migrate_source``
(unplug), the destination's ``before_vm_migrate_destination`` (reserve),
the libvirt live migration, the destination's
``after_vm_migrate_destination`` (plug), and on success only the
source's ``after_vm_migrate_source`` (release). A failed migration runs
no source hook, as in VDSM; re-plugging is the service's job then.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from sriov_host import domxml

from . import hookrunner as hr
from .inventory import free_port

log = logging.getLogger(__name__)

STEP_LABELS = {hr.BEFORE_SOURCE: "unplug", hr.BEFORE_DEST: "reserve",
               hr.AFTER_DEST: "plug", hr.AFTER_SOURCE: "release"}


@dataclass
class MigrationResult:
    vm_id: str
    source: str
    destination: str
    t0: float
    steps: list = field(default_factory=list)  # PointRun, in the order run
    migrate_start: Optional[float] = None
    migrate_end: Optional[float] = None
    ok: bool = False
    error: Optional[str] = None
    aborted_at: Optional[str] = None  # a hook point, or "migrate"

    def step(self, point: str):
        return next((s for s in self.steps if s.point == point), None)

    def timeline(self) -> list:
        """``[(label, host, start_s, end_s, rc)]`` relative to the start."""
        rows = []
        for s in self.steps:
            rows.append((STEP_LABELS.get(s.point, s.point), s.host, s.start - self.t0,
                         s.end - self.t0, s.rc))
            if s.point == hr.BEFORE_DEST and self.migrate_start is not None:
                end = self.migrate_end if self.migrate_end is not None else self.migrate_start
                rows.append(("migrate", "%s->%s" % (self.source, self.destination),
                             self.migrate_start - self.t0, end - self.t0,
                             0 if self.aborted_at != "migrate" else 1))
        return rows


def _migrate_params(port: int) -> dict:
    import libvirt

    return {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1:%d" % port,
            libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1"}


def _live_migrate(dom, dst_conn, port: int, flags: Optional[int]) -> None:
    import libvirt

    if flags is None:
        flags = libvirt.VIR_MIGRATE_LIVE
        if dom.isPersistent():
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    dom.migrate3(dst_conn, _migrate_params(port), flags)


def _domain_xml(dom, migratable: bool = False) -> str:
    import libvirt

    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE if migratable else 0)


def _custom(xml: str) -> dict:
    """VM custom properties, as VDSM puts them in the hook environment."""
    return domxml.vdsm_vm_custom(domxml.parse_domain(xml))


def migrate(src_conn, dst_conn, vm_id: str, src_hooks: hr.HookRunner,
            dst_hooks: hr.HookRunner, port: Optional[int] = None,
            flags: Optional[int] = None,
            before_migrate: Optional[Callable[[], None]] = None) -> MigrationResult:
    """Migrate VM *vm_id* from *src_conn* to *dst_conn* the way VDSM would.

    *before_migrate* runs between the destination hook and the libvirt
    migration: the demo uses it to make the migration fail after the
    unplug (it stops the destination's libvirtd there).
    """
    import libvirt

    result = MigrationResult(vm_id, src_hooks.host, dst_hooks.host, time.monotonic())
    dom = src_conn.lookupByUUIDString(vm_id)
    xml = _domain_xml(dom)
    custom = _custom(xml)
    if _hook_failed(result, src_hooks.run(hr.BEFORE_SOURCE, xml, vm_id, custom)):
        return result
    # VDSM sends migrationCreate the XML as it is after the source hook.
    xml = _domain_xml(dom, migratable=True)
    if _hook_failed(result, dst_hooks.run(hr.BEFORE_DEST, xml, vm_id, custom)):
        return result
    if before_migrate is not None:
        before_migrate()
    result.migrate_start = time.monotonic()
    try:
        _live_migrate(dom, dst_conn, port or free_port(), flags)
    except libvirt.libvirtError as e:
        result.migrate_end = time.monotonic()
        result.aborted_at, result.error = "migrate", str(e)
        log.warning("migration of %s failed: %s", vm_id, e)
        return result
    result.migrate_end = time.monotonic()
    dst_dom = dst_conn.lookupByUUIDString(vm_id)
    result.steps.append(dst_hooks.run(hr.AFTER_DEST, _domain_xml(dst_dom), vm_id, custom))
    result.steps.append(src_hooks.run(hr.AFTER_SOURCE, xml, vm_id, custom))
    result.ok = True
    return result


def _hook_failed(result: MigrationResult, run: hr.PointRun) -> bool:
    result.steps.append(run)
    if run.failed:
        result.aborted_at = run.point
        result.error = "%s on %s: rc %d: %s" % (run.point, run.host, run.rc,
                                                 " | ".join(run.stderr[-3:]))
        return True
    return False
