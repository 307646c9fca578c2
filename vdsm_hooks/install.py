"""``sriov-migration-install``: put the hooks, the unit and a default config in place.

Idempotent: running it twice changes nothing the second time. With
``--uninstall`` it removes only what carries its marker, and a config
file only while it is still the untouched default, so an admin's edits
are never lost.
"""

from __future__ import annotations

import argparse
import os
import sys

from .hook import POINTS

HOOK_NAME = "50_sriov_migration"
MARKER = "# installed by sriov-migration-install (vdsm-sriov-migration)"
DEFAULT_HOOKS_DIR = "/usr/libexec/vdsm/hooks"
UNIT_PATH = "/etc/systemd/system/sriov-migrationd.service"
CONFIG_PATH = "/etc/vdsm/sriov-migration.conf"

_HOOK_TEMPLATE = """#!{python}
{marker}
# VDSM hook point: {point}
import sys

from vdsm_hooks.hook import main

sys.exit(main(["--point", "{point}"] + sys.argv[1:]))
"""


def hook_script(point: str, python: str) -> str:
    return _HOOK_TEMPLATE.format(python=python, marker=MARKER, point=point)


def _data(name: str) -> str:
    path = os.path.join(os.path.dirname(__file__), "..", "jsonrpc_plugin", "data", name)
    with open(os.path.normpath(path), encoding="utf-8") as f:
        return f.read()


def unit_text(bindir: str) -> str:
    text = _data("sriov-migrationd.service").replace("@BINDIR@", bindir)
    return text if MARKER in text else "%s\n%s" % (MARKER, text)


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if root else path


def _write(path: str, text: str, mode: int, report) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                report("unchanged %s" % path)
                os.chmod(path, mode)
                return
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    report("installed %s" % path)


def _targets(args):
    hooks_dir = _under(args.root, args.hooks_dir)
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    files = [(os.path.join(hooks_dir, p, HOOK_NAME), hook_script(p, sys.executable), 0o755)
             for p in POINTS]
    if not args.hooks_only:
        files.append((_under(args.root, UNIT_PATH), unit_text(bindir), 0o644))
    return files


def install(args, report) -> None:
    for path, text, mode in _targets(args):
        _write(path, text, mode, report)
    if args.hooks_only:
        return
    conf = _under(args.root, CONFIG_PATH)
    if os.path.exists(conf):
        report("kept existing %s" % conf)
    else:
        _write(conf, _data("sriov-migration.conf"), 0o644, report)


def uninstall(args, report) -> None:
    for path, _text, _mode in _targets(args):
        _remove_if(path, lambda t: MARKER in t, report)
    if not args.hooks_only:
        default = _data("sriov-migration.conf")
        _remove_if(_under(args.root, CONFIG_PATH), lambda t: t == default, report,
                   kept="kept %s: it was edited")


def _remove_if(path, predicate, report, kept="kept %s: not ours") -> None:
    try:
        with open(path, encoding="utf-8") as f:
            ours = predicate(f.read())
    except FileNotFoundError:
        return
    if ours:
        os.unlink(path)
        report("removed %s" % path)
    else:
        report(kept % path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sriov-migration-install",
        description="Install the SR-IOV migration VDSM hooks, systemd unit and default config.")
    parser.add_argument("--hooks-dir", default=DEFAULT_HOOKS_DIR,
                        help="VDSM hooks directory (default %(default)s)")
    parser.add_argument("--root", default="", help="install under this root (for packaging and tests)")
    parser.add_argument("--uninstall", action="store_true", help="remove what was installed")
    parser.add_argument("--hooks-only", action="store_true",
                        help="only the hook executables (no unit, no config)")
    args = parser.parse_args(argv)
    try:
        (uninstall if args.uninstall else install)(args, print)
    except OSError as e:
        print("sriov-migration-install: %s: %s" % (e.filename or "", e.strerror), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
