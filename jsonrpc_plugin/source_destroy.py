"""Take a VM that migrated away out of this host's VDSM, unless an engine will.

VDSM keeps a migrated VM, Down, until ``VM.destroy`` (virt/migration.py
``_finishSuccessfully``), and refuses it coming back (clientIF
``createVm``: exist). An engine destroys every Down VM itself
(VmAnalyzer ``proceedDownVm``), and a VM that vanished before it saw it
Down can be marked failed, or restarted if HA (``proceedDisappearedVm``):
so with an engine (``[vdsm] destroy_source = auto``), never.

``SRIOV.migrate`` does this as its last step; the reconciler does it for
a VM whose driver died after the VM left (``after_vm_migrate_source``
marked it "migrated-away" in the ledger), or nobody would.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Tuple

from . import vdsm_api

GONE = "VDSM holds no such VM here"  # nothing to destroy


def destroy_migrated(cfg, vdsm_factory, vm_id: str) -> Tuple[Optional[bool], str]:
    """``(ok, detail)``; ok None: the policy says never; raises VdsmUnavailable if VDSM cannot be asked."""
    mode = cfg.destroy_source
    if mode == "never":
        return None, "left: [vdsm] destroy_source = never"
    with contextlib.closing(vdsm_factory(cfg)) as vdsm:
        try:
            status = vdsm.vm_status(vm_id)
        except vdsm_api.VdsmUnavailable as e:
            if e.vdsm_code == vdsm_api.NO_VM:
                return True, GONE
            raise
        if status != vdsm_api.STATUS_DOWN:
            return False, "left alone: VDSM reports it %s here, not Down" % status
        if mode == "auto" and vdsm.engine_manages():
            return True, "left Down for the engine, which destroys it"
        vdsm.destroy(vm_id)
        return True, "VM.destroy: VDSM no longer holds it here"
