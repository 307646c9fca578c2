"""The Cockpit page's files: where they come from and where Cockpit looks for them.

``sriov-migration-install --cockpit`` and the ``-cockpit`` RPM lay out the
same files (tests/packaging compares them). The page is plain files, no
build step; uninstall removes only files still identical to ours.
"""

from __future__ import annotations

import os

PACKAGE = "sriov-migration"
COCKPIT_DIR = "/usr/share/cockpit/%s" % PACKAGE
SOURCE_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "jsonrpc_plugin",
                                           "data", "cockpit"))


def page_files() -> list:
    """(name, text) of every file of the page, sorted by name."""
    files = []
    for name in sorted(os.listdir(SOURCE_DIR)):
        path = os.path.join(SOURCE_DIR, name)
        if os.path.isfile(path) and not name.startswith("."):
            with open(path, encoding="utf-8") as f:
                files.append((name, f.read()))
    return files


def targets(cockpit_dir: str) -> list:
    """(path, text, mode) to write under *cockpit_dir*."""
    return [(os.path.join(cockpit_dir, name), text, 0o644) for name, text in page_files()]


def remove(cockpit_dir: str, report) -> None:
    """Remove our files (unchanged ones only), then the directory if nothing else is left."""
    for path, text, _mode in targets(cockpit_dir):
        try:
            with open(path, encoding="utf-8") as f:
                ours = f.read() == text
        except FileNotFoundError:
            continue
        if ours:
            os.unlink(path)
            report("removed %s" % path)
        else:
            report("kept %s: it was edited" % path)
    try:
        os.rmdir(cockpit_dir)
        report("removed %s" % cockpit_dir)
    except FileNotFoundError:
        pass
    except OSError:
        report("kept %s: not empty" % cockpit_dir)
