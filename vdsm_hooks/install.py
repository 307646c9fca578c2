"""``sriov-migration-install``: put the hooks, the unit, a default config and
the firewalld service in place; with ``--cockpit``, the Cockpit page too.

Idempotent: running it twice changes nothing the second time. With
``--uninstall`` it removes only what carries its marker, and a config
file only while it is still the untouched default, so an admin's edits
are never lost.

The engine's host deploy opens only its own firewalld services, so port
54325 would stay closed: where firewalld runs (and no ``--root`` is given)
the service ``sriov-migration`` is enabled in the default zone. A host
without firewalld gets one line saying so; the install never fails for it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from . import cockpit_page
from .hook import POINTS

HOOK_NAME = "50_sriov_migration"
MARKER = "# installed by sriov-migration-install (vdsm-sriov-migration)"
DEFAULT_HOOKS_DIR = "/usr/libexec/vdsm/hooks"
UNIT_PATH = "/etc/systemd/system/sriov-migrationd.service"
CONFIG_PATH = "/etc/vdsm/sriov-migration.conf"
FIREWALLD_SERVICE = "sriov-migration"
FIREWALLD_PATH = "/usr/lib/firewalld/services/%s.xml" % FIREWALLD_SERVICE
SERVICE_PORT = 54325
XML_MARKER = "<!-- %s -->" % MARKER.lstrip("# ")
FIREWALLD_HINT = "firewalld not running: open TCP %d yourself" % SERVICE_PORT
FIREWALLD_FAILED = "firewalld not changed: open TCP %d yourself" % SERVICE_PORT

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


def firewalld_service_text() -> str:
    """The firewalld service, with the marker as an XML comment after the declaration."""
    head, sep, body = _data("firewalld-sriov-migration.xml").partition("?>\n")
    return "%s%s%s\n%s" % (head, sep, XML_MARKER, body) if sep else "%s\n%s" % (XML_MARKER, head)


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if root else path


def _write(path: str, text: str, mode: int, report) -> bool:
    """Write *text* unless it is already there; True when the file changed."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                report("unchanged %s" % path)
                os.chmod(path, mode)
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    report("installed %s" % path)
    return True


def _targets(args):
    hooks_dir = _under(args.root, args.hooks_dir)
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    files = [(os.path.join(hooks_dir, p, HOOK_NAME), hook_script(p, sys.executable), 0o755)
             for p in POINTS]
    if not args.hooks_only:
        files.append((_under(args.root, UNIT_PATH), unit_text(bindir), 0o644))
    return files


def _live_host(args) -> bool:
    """Only the running host's firewall is ours to change, never one under --root."""
    return not args.hooks_only and args.root in ("", "/")


def _cockpit_dir(args) -> str:
    return _under(args.root, cockpit_page.COCKPIT_DIR)


def install(args, report, run=None) -> None:
    for path, text, mode in _targets(args):
        _write(path, text, mode, report)
    if getattr(args, "cockpit", False):
        for path, text, mode in cockpit_page.targets(_cockpit_dir(args)):
            _write(path, text, mode, report)
    if args.hooks_only:
        return
    conf = _under(args.root, CONFIG_PATH)
    if os.path.exists(conf):
        report("kept existing %s" % conf)
    else:
        _write(conf, _data("sriov-migration.conf"), 0o644, report)
    changed = _write(_under(args.root, FIREWALLD_PATH), firewalld_service_text(), 0o644, report)
    if _live_host(args):
        firewalld_enable(run or run_command, report, changed)


def uninstall(args, report, run=None) -> None:
    run = run or run_command
    firewalld = _live_host(args) and firewalld_disable(run, report)
    for path, _text, _mode in _targets(args):
        _remove_if(path, lambda t: MARKER in t, report)
    cockpit_page.remove(_cockpit_dir(args), report)
    if not args.hooks_only:
        default = _data("sriov-migration.conf")
        _remove_if(_under(args.root, CONFIG_PATH), lambda t: t == default, report,
                   kept="kept %s: it was edited")
        _remove_if(_under(args.root, FIREWALLD_PATH), lambda t: XML_MARKER in t, report)
    if firewalld:
        _firewall_cmd(run, report, "--reload")


def run_command(argv) -> tuple:
    """(rc, output) of *argv*; rc 127 when the program is not installed."""
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120, check=False)
    except FileNotFoundError:
        return 127, "%s: not found" % argv[0]
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    return r.returncode, r.stdout


def _firewall_cmd(run, report, *args) -> bool:
    rc, out = run(["firewall-cmd", *args])
    if rc != 0:
        last = (out or "").strip().splitlines()[-1:] or ["exit status %d" % rc]
        report("firewalld: firewall-cmd %s failed: %s" % (" ".join(args), last[0]))
    return rc == 0


def _firewalld_running(run) -> bool:
    return run(["firewall-cmd", "--state"])[0] == 0


def firewalld_enable(run, report, changed=True) -> None:
    """Open the service in the default zone; reload first so firewalld knows the new file."""
    if not _firewalld_running(run):
        report(FIREWALLD_HINT)
        return
    enabled = run(["firewall-cmd", "--permanent", "--query-service=%s" % FIREWALLD_SERVICE])[0] == 0
    if enabled and not changed:
        report("firewalld: service %s already enabled" % FIREWALLD_SERVICE)
        return
    steps = [("--reload",)]
    if not enabled:
        steps += [("--permanent", "--add-service=%s" % FIREWALLD_SERVICE), ("--reload",)]
    for step in steps:
        if not _firewall_cmd(run, report, *step):
            report(FIREWALLD_FAILED)
            return
    report("firewalld: service %s (TCP %d) enabled" % (FIREWALLD_SERVICE, SERVICE_PORT))


def zones_with_service(listing: str, service: str) -> list:
    """Zones whose ``services:`` line in ``firewall-cmd --list-all-zones`` names *service*."""
    zones, zone = [], None
    for line in listing.splitlines():
        if line[:1].strip():
            zone = line.split()[0]
        elif zone and line.strip().startswith("services:") and service in line.split()[1:]:
            zones.append(zone)
    return zones


def firewalld_disable(run, report) -> bool:
    """Drop the service from every permanent zone while its file still exists (a zone
    naming a service firewalld does not know fails to load); True if firewalld runs."""
    rc = run(["firewall-cmd", "--state"])[0]
    if rc != 0:
        if rc != 127:
            report("firewalld not running: remove service %s from any zone naming it yourself"
                   % FIREWALLD_SERVICE)
        return False
    rc, listing = run(["firewall-cmd", "--permanent", "--list-all-zones"])
    if rc != 0:
        report("firewalld: cannot list zones; remove service %s yourself" % FIREWALLD_SERVICE)
        return True
    for zone in zones_with_service(listing, FIREWALLD_SERVICE):
        if _firewall_cmd(run, report, "--permanent", "--zone=%s" % zone,
                         "--remove-service=%s" % FIREWALLD_SERVICE):
            report("firewalld: removed service %s from zone %s" % (FIREWALLD_SERVICE, zone))
    return True


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
        description="Install the SR-IOV migration VDSM hooks, systemd unit, default config "
                    "and firewalld service.",
        epilog="example: sriov-migration-install && systemctl daemon-reload && "
               "systemctl enable --now sriov-migrationd")
    parser.add_argument("--hooks-dir", default=DEFAULT_HOOKS_DIR,
                        help="VDSM hooks directory (default %(default)s)")
    parser.add_argument("--root", default="", help="install under this root (for packaging and tests)")
    parser.add_argument("--uninstall", action="store_true", help="remove what was installed")
    parser.add_argument("--cockpit", action="store_true",
                        help="also the Cockpit page, in %s" % cockpit_page.COCKPIT_DIR)
    parser.add_argument("--hooks-only", action="store_true",
                        help="only the hook executables (no unit, config or firewalld service)")
    args = parser.parse_args(argv)
    try:
        (uninstall if args.uninstall else install)(args, print)
    except OSError as e:
        print("sriov-migration-install: %s: %s" % (e.filename or "", e.strerror), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
