"""Each packaged command has a man page that names every option its --help shows.

The pages are written by hand (packaging/man), so this is what keeps them
from drifting from the parsers; ``groff -ww`` catches broken markup.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN = os.path.join(REPO, "packaging", "man")
BIN = os.path.dirname(sys.executable)
COMMANDS = {  # command -> the subcommands whose --help is read too
    "sriov-client": (),
    "sriov-migrationd": (),
    "sriov-migration-hook": (),
    "sriov-engine": ("profiles", "set-migratable", "check-vm", "migrate", "watch"),
}
LONG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _help(*argv):
    out = subprocess.run([os.path.join(BIN, argv[0])] + list(argv[1:]) + ["--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _page(command):
    with open(os.path.join(MAN, command + ".8")) as f:
        return f.read().replace("\\-", "-").replace("\\e", "\\")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_man_page_should_name_every_option_of_the_command(command):
    shown = set(LONG.findall(_help(command)))
    for sub in COMMANDS[command]:
        shown |= set(LONG.findall(_help(command, sub)))
    shown.discard("--help")
    assert shown, "no option read from %s --help" % command
    page = _page(command)
    missing = sorted(o for o in shown if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(o), page))
    assert not missing, "%s.8 does not name %s" % (command, ", ".join(missing))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_should_say_what_it_does_and_show_an_example(command):
    text = _help(command)
    assert re.search(r"^example: ", text, re.M), text
    assert ".TH %s 8 " % command.upper() in _page(command)


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_man_page_markup_should_be_clean(command):
    out = subprocess.run(["groff", "-man", "-ww", "-z", os.path.join(MAN, command + ".8")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr, out.stderr
