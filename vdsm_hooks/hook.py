"""``sriov-migration-hook``: the one entry point behind every hook executable.

VDSM's contract is kept exactly: the domain XML file is named by
``$_hook_domxml``, the VM by ``$vmId``; rc 0 is ok. At a ``before_*``
point *any* non-zero rc stops the action (lib/vdsm/common/hooks.py
``_runHooksDir`` raises HookError for every failed script), and rc 2 also
skips the scripts after ours; so this hook fails a ``before_*`` point
with 2 and reports an ``after_*`` error, which VDSM only logs, with 1.
Every message is one stderr line starting ``sriov-migration:``.

A VM without SR-IOV vNICs is the common case, so this module imports
nothing heavy at the top and answers such a VM from the raw bytes.
"""

import os
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

# Our metadata namespace (sriov_host.metadata.NS), spelled here so the
# fast path need not import the package that defines it.
_RECORD_MARK = b"http://ovirt.org/vdsm-sriov-migration/1.0"
_HOSTDEV_MARK = b"hostdev"

USAGE = ("usage: sriov-migration-hook [--point POINT] [--dry-run]\n"
         "  POINT is one of: %s\n"
         "  (default: the name of the directory the executable is installed in)" % ", ".join(POINTS))


class UsageError(Exception):
    pass


def failure_rc(point):
    """The rc that reports a failure at *point* the way VDSM expects."""
    return FAIL if point in BEFORE_POINTS else ERROR


def say(message, stream=None):
    """One stderr line, which VDSM logs."""
    line = " ".join(str(message).split())
    (stream or sys.stderr).write("sriov-migration: %s\n" % line)


def parse_args(argv, prog_path):
    point, dry_run = None, False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--dry-run":
            dry_run = True
        elif arg == "--point":
            if not args:
                raise UsageError("--point needs a value")
            point = args.pop(0)
        elif arg.startswith("--point="):
            point = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            raise UsageError(None)
        else:
            raise UsageError("unknown argument %r" % arg)
    if point is None:
        point = os.path.basename(os.path.dirname(os.path.abspath(prog_path)))
        if point not in POINTS:
            raise UsageError("cannot tell the hook point from %s; pass --point" % prog_path)
    if point not in POINTS:
        raise UsageError("unknown hook point %r (known: %s)" % (point, ", ".join(POINTS)))
    return point, dry_run


def read_domxml(env):
    path = env.get("_hook_domxml")
    if not path:
        raise UsageError("$_hook_domxml is not set; VDSM names the domain XML file there")
    try:
        with open(path, "rb") as f:
            return path, f.read()
    except OSError as e:
        raise UsageError("cannot read domain XML %s: %s" % (path, e.strerror)) from None


def may_hold_sriov(data):
    """False when the raw bytes cannot hold an SR-IOV vNIC or our record."""
    return _HOSTDEV_MARK in data or _RECORD_MARK in data


def _nothing_plan(vm_id):
    import json

    return json.dumps({"vm_id": vm_id, "verdict": "nothing", "reason": "no SR-IOV vNIC",
                       "vnics": []})


def main(argv=None, env=None, prog=None, **deps):
    """Run one hook point; returns VDSM's rc. *deps* are for tests."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    point = None
    try:
        point, dry_run = parse_args(argv, prog or sys.argv[0])
        path, data = read_domxml(env)
        vm_id = env.get("vmId", "")
        if not may_hold_sriov(data):
            if dry_run:
                sys.stdout.write(_nothing_plan(vm_id) + "\n")
            return OK
        from . import points

        return points.run(point, dry_run, path, data, env, **deps)
    except UsageError as e:
        if e.args[0] is None:
            sys.stdout.write(USAGE + "\n")
            return OK
        say("vm=%s: %s" % (env.get("vmId", "?"), e))
        return failure_rc(point)
    except Exception as e:  # noqa: BLE001 - the catch-all VDSM's contract asks for
        say("vm=%s point=%s: unexpected error: %s: %s"
            % (env.get("vmId", "?"), point, type(e).__name__, e))
        return failure_rc(point)


if __name__ == "__main__":
    sys.exit(main())
