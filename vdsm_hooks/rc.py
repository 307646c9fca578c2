"""The hook points and VDSM's return-code rules, shared by every hook module.

lib/vdsm/common/hooks.py ``_runHooksDir``: rc 0 is ok; at a ``before_*``
point any non-zero rc stops the action (2 also skips the scripts after
ours), so a failure there is 2; at an ``after_*`` point VDSM only logs a
failure, reported with 1. Kept apart from ``hook`` (the entry point) so
the point modules need not import the module that dispatches to them.
"""

import sys

POINTS = (
    "before_vm_migrate_source",
    "before_vm_migrate_destination",
    "after_vm_migrate_destination",
    "after_vm_migrate_source",
    "after_vm_destroy",
)
BEFORE_POINTS = ("before_vm_migrate_source", "before_vm_migrate_destination")

OK, ERROR, FAIL = 0, 1, 2


def failure_rc(point):
    """The rc that reports a failure at *point* the way VDSM expects."""
    return FAIL if point in BEFORE_POINTS else ERROR


def say(message, stream=None):
    """One stderr line, which VDSM logs, capped so an echoed 1 MB value cannot flood it."""
    from sriov_host.errors import one_line

    (stream or sys.stderr).write("sriov-migration: %s\n" % one_line(message))
