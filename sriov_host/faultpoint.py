"""Fault points: named steps where the lab can stop a migration to break something.

The lab's fault matrix (``sriov-lab faults``) needs a migration held at
an exact step while it kills a process. :func:`reached` is that hold.
It is a no-op unless ``$SRIOV_LAB_FAULT_FILE`` is set, and only the lab
sets it, so on a host it costs one ``os.environ`` lookup and can never
stop a migration. An environment variable, not a config key, because a
config file is something an administrator edits on a host and a
leftover key there would be live; the unit file, VDSM and the hooks'
runner never set this one. Even when it is set, the point holds only if
the file exists, is a regular file owned by root or by this process's
user, is not writable by others, and says ``"lab": true``: a VDSM custom
property of the same name (which VDSM puts in the hooks' environment)
cannot arm anything without such a file under the lab's runtime
directory.

The protocol, all in files beside the one named: the lab writes
``{"lab": true, "step": STEP}``; the process reaching STEP writes
``FILE.reached`` (``{"step", "pid"}``) and waits until the file no
longer names STEP (the lab removes it once its fault is applied) or
``HOLD_MAX`` seconds have passed, then goes on, if it is still alive.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time

log = logging.getLogger("sriov-migration.faultpoint")

ENV = "SRIOV_LAB_FAULT_FILE"
HOLD_MAX = 60.0  # s; a lab that never releases the hold must not hang a migration for ever
POLL = 0.05

AFTER_RESERVE = "after-reserve"  # migrator: the destination holds VFs, nothing unplugged
AFTER_RECORD = "after-record"  # unplug: the record says unplugged, no detach asked yet
BETWEEN_DETACHES = "between-detaches"  # devices: the first detach asked, not the second
AFTER_UNPLUG = "after-unplug"  # migrator: every vNIC unplugged, VM.migrate not called
DURING_MIGRATION = "during-migration"  # no check: the lab watches libvirt's migration job
BEFORE_DEST_PLUG = "before-dest-plug"  # reconciler: the VM is Up on the destination, not plugged
DURING_PLUG = "during-plug"  # plug: the first vNIC plugged on the destination, not the second
AFTER_PLUG = "after-plug"  # migrator: the destination plugged, the source not yet released
STEPS = (AFTER_RESERVE, AFTER_RECORD, BETWEEN_DETACHES, AFTER_UNPLUG, DURING_MIGRATION,
         BEFORE_DEST_PLUG, DURING_PLUG, AFTER_PLUG)


def reached(step: str) -> None:
    """Hold here if the lab armed *step*; otherwise return at once."""
    path = os.environ.get(ENV)
    if not path:
        return
    if _armed(path) != step:
        return
    log.warning("lab fault point %s reached (pid %d); holding", step, os.getpid())
    _write_reached(path, step)
    deadline = time.monotonic() + HOLD_MAX
    while _armed(path) == step and time.monotonic() < deadline:
        time.sleep(POLL)
    log.warning("lab fault point %s released", step)


def _armed(path: str):
    """The step the lab's file names, or None (no file, not the lab's, unreadable)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & stat.S_IWOTH \
                or st.st_uid not in (0, os.getuid()):
            return None
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("lab") is not True:
        return None
    return doc.get("step")


def _write_reached(path: str, step: str) -> None:
    tmp = "%s.reached.%d" % (path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"step": step, "pid": os.getpid()}, f)
        os.replace(tmp, path + ".reached")
    except OSError as e:
        log.warning("lab fault point %s: cannot tell the lab: %s", step, e)
