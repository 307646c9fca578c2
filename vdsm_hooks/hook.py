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

from .rc import BEFORE_POINTS, ERROR, FAIL, OK, POINTS, failure_rc, say  # noqa: F401 - hook.OK etc.

# Our metadata namespace (sriov_host.metadata.NS), spelled here so the
# fast path need not import the package that defines it.
_RECORD_MARK = b"http://ovirt.org/vdsm-sriov-migration/1.0"
_HOSTDEV_MARK = b"hostdev"
_PLAIN_ENCODINGS = (b"utf-8", b"utf8", b"us-ascii", b"ascii")

USAGE = ("usage: sriov-migration-hook [--point POINT] [--dry-run]\n"
         "The SR-IOV migration VDSM hook: VDSM runs it at each migration point; --dry-run judges a VM.\n"
         "  POINT is one of: %s\n"
         "  (default: the name of the directory the executable is installed in)\n"
         "example: _hook_domxml=/tmp/vm.xml vmId=UUID sriov-migration-hook "
         "--point before_vm_migrate_source --dry-run" % ", ".join(POINTS))


class UsageError(Exception):
    pass


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
    """False only when the raw bytes cannot hold an SR-IOV vNIC or our record.

    Bytes say so only for a plain ASCII/UTF-8 document with no DTD (whose
    entities could spell ``hostdev``) and no character reference (``&#104;``
    is an ``h``); anything else goes to the full parser, which decodes it
    or refuses it.
    """
    if _HOSTDEV_MARK in data or _RECORD_MARK in data:
        return True
    return not _plain_utf8(data) or b"&#" in data or b"<!DOCTYPE" in data


def _plain_utf8(data):
    """True for a document in ASCII/UTF-8: no NUL, no BOM but UTF-8's, no other encoding declared."""
    if b"\x00" in data:
        return False  # UTF-16/32: XML never holds U+0000
    head = data[3:515] if data.startswith(b"\xef\xbb\xbf") else data[:512]
    head = head.lstrip(b" \t\r\n")
    if not head.startswith(b"<"):
        return False  # another BOM, EBCDIC, or no XML at all
    if not head.startswith(b"<?xml"):
        return True
    decl = head[:head.find(b"?>")]
    at = decl.find(b"encoding")
    if at < 0:
        return True
    value = decl[at + 8:].lstrip(b" \t\r\n=").strip(b" \t\r\n")
    return value[1:].split(value[:1] or b"'")[0].lower() in _PLAIN_ENCODINGS


def _uuid_of(data):
    """The domain's ``<uuid>`` read from the raw bytes: the VM id when VDSM gives no ``vmId``."""
    start = data.find(b"<uuid>")
    end = data.find(b"</uuid>", start)
    if start < 0 or end < 0 or end - start > 64:
        return ""
    return data[start + 6:end].strip().decode("ascii", "replace")


def _empty(data):
    return not data or data.isspace()


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
        if _empty(data):
            raise UsageError("domain XML %s is empty" % path)
        if not may_hold_sriov(data):
            if dry_run:
                sys.stdout.write(_nothing_plan(env.get("vmId") or _uuid_of(data)) + "\n")
            return OK
        if point == "after_vm_migrate_destination" and not dry_run and not deps:
            from . import arrival_point  # light: VDSM reports the VM Up only after it

            return arrival_point.run(data, env)
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
