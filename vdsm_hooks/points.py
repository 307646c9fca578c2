"""Dispatch a hook point to its handler, with one place that maps errors to rc.

Handlers live in :mod:`source_points` and :mod:`destination_points`; each
takes a :class:`HookContext`, the parsed domain tree and the XML path,
and returns VDSM's rc.
"""

from __future__ import annotations

import json
import sys

from sriov_host import domxml
from sriov_host.errors import SriovError
from sriov_host.xmlsafe import to_bytes

from . import destination_points, source_points
from .context import HookContext
from .rc import failure_rc, say

HANDLERS = {
    "before_vm_migrate_source": source_points.before_migrate_source,
    "after_vm_migrate_source": source_points.after_migrate_source,
    "after_vm_destroy": source_points.after_destroy,
    "before_vm_migrate_destination": destination_points.before_migrate_destination,
    "after_vm_migrate_destination": destination_points.after_migrate_destination,
}


def run(point, dry_run, path, data, env, cfg=None, conn=None, ledger=None, devices=None,
        stdout=None, cpu_topology=None):
    """Parse once, run the handler, serialize at most once."""
    vm_id = env.get("vmId", "")
    ctx = None
    try:
        root = domxml.parse_domain(data)
        vm_id = vm_id or domxml.domain_uuid(root) or ""
        ctx = HookContext(point, vm_id, env, cfg=cfg, conn=conn, ledger=ledger, devices=devices,
                          cpu_topology=cpu_topology)
        handler = HANDLERS[point]
        result = handler(ctx, root, dry_run)
        if dry_run:
            (stdout or sys.stdout).write(json.dumps(result.plan.to_json()) + "\n")
            return result.rc
        if result.rewritten and path:
            write_domxml(path, root)
        for line in result.messages:
            say("vm=%s %s" % (vm_id, line))
        return result.rc
    except SriovError as e:
        say("vm=%s point=%s: %s" % (vm_id or "?", point, e.message))
        return failure_rc(point)
    finally:
        if ctx is not None:
            ctx.close()


def write_domxml(path, root) -> None:
    """Hand the rewritten XML back in the file VDSM gave us.

    VDSM ignores it for migration points; the live domain is changed
    through libvirt as well. Writing it keeps the contract honest.
    """
    with open(path, "wb") as f:
        f.write(to_bytes(root))
