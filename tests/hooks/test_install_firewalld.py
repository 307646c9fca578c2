"""``sriov-migration-install`` and firewalld: the service file, and the
firewall-cmd calls it makes on a live host (recorded here, no daemon)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from vdsm_hooks import install

SERVICE = "/usr/lib/firewalld/services/sriov-migration.xml"
ADD = ("--permanent", "--add-service=sriov-migration")
LISTING = """\
block
  target: %%REJECT%%
  services:
  ports:

public (default)
  target: default
  services: dhcpv6-client ssh sriov-migration
  ports:

work
  target: default
  services: sriov-migration ssh
"""


class FirewallCmd:
    """A recording stand-in for ``run``: firewall-cmd answers from a script."""

    def __init__(self, running=True, enabled=False, fail=(), listing=LISTING):
        self.running, self.enabled, self.fail, self.listing = running, enabled, set(fail), listing
        self.calls = []

    def __call__(self, argv):
        args = tuple(argv[1:])
        self.calls.append(args)
        if not self.running:
            return (127, "firewall-cmd: not found") if self.running is None else (252, "not running")
        if args in self.fail:
            return 1, "Error: COMMAND_FAILED"
        if args == ("--permanent", "--query-service=sriov-migration"):
            return (0, "yes") if self.enabled else (1, "no")
        return 0, self.listing if args == ("--permanent", "--list-all-zones") else "success"

    def changes(self):
        """The calls that change firewalld, in order."""
        return [c for c in self.calls if c != ("--state",) and not any("query" in a for a in c)
                and c != ("--permanent", "--list-all-zones")]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vdsm_hooks.install", *args],
                          capture_output=True, text=True, check=False)


def _live_args(tmp_path, monkeypatch, hooks_only=False):
    """A live-host run (no --root) with every path it writes moved under tmp_path."""
    monkeypatch.setattr(install, "UNIT_PATH", str(tmp_path / "unit.service"))
    monkeypatch.setattr(install, "CONFIG_PATH", str(tmp_path / "sriov-migration.conf"))
    monkeypatch.setattr(install, "FIREWALLD_PATH", str(tmp_path / "sriov-migration.xml"))
    return SimpleNamespace(root="", hooks_dir=str(tmp_path / "hooks"), hooks_only=hooks_only)


def test_install_should_put_the_service_file_once_and_uninstall_should_remove_it(tmp_path):
    r = _cli("--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    path = tmp_path / SERVICE.lstrip("/")
    text = path.read_text()
    assert text == install.firewalld_service_text() and install.XML_MARKER in text
    assert '<port protocol="tcp" port="54325"/>' in text and text.count("<port ") == 1
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert "firewall" not in r.stdout.replace(str(path), ""), "no firewall-cmd under --root"

    again = _cli("--root", str(tmp_path))
    assert again.returncode == 0 and "unchanged %s" % path in again.stdout
    assert path.read_text() == text

    r = _cli("--root", str(tmp_path), "--uninstall")
    assert r.returncode == 0 and "removed %s" % path in r.stdout
    assert not path.exists()


def test_uninstall_should_keep_a_service_file_it_did_not_write(tmp_path):
    path = tmp_path / SERVICE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text(install._data("firewalld-sriov-migration.xml"))
    r = _cli("--root", str(tmp_path), "--uninstall")
    assert r.returncode == 0 and "kept %s: not ours" % path in r.stdout
    assert path.exists()


@pytest.mark.parametrize("state, expected", [
    pytest.param({}, [("--reload",), ADD, ("--reload",)], id="running"),
    pytest.param({"enabled": True}, [("--reload",)], id="enabled-by-hand-new-file"),
    pytest.param({"running": False}, [], id="not-running"),
    pytest.param({"running": None}, [], id="not-installed"),
])
def test_install_should_reload_add_reload_only_where_firewalld_runs(tmp_path, monkeypatch, state, expected):
    fw, lines = FirewallCmd(**state), []
    install.install(_live_args(tmp_path, monkeypatch), lines.append, run=fw)
    assert fw.changes() == expected
    hint = [line for line in lines if line.startswith("firewalld")]
    assert len(hint) == 1
    if not expected:
        assert hint == ["firewalld not running: open TCP 54325 yourself"]


def test_second_install_should_leave_an_enabled_service_alone(tmp_path, monkeypatch):
    args = _live_args(tmp_path, monkeypatch)
    install.install(args, lambda line: None, run=FirewallCmd())
    fw, lines = FirewallCmd(enabled=True), []
    install.install(args, lines.append, run=fw)
    assert fw.changes() == []
    assert "firewalld: service sriov-migration already enabled" in lines


def test_install_should_not_fail_when_firewall_cmd_does(tmp_path, monkeypatch):
    fw, lines = FirewallCmd(fail=[ADD]), []
    install.install(_live_args(tmp_path, monkeypatch), lines.append, run=fw)
    assert fw.changes() == [("--reload",), ADD]
    assert lines[-1] == "firewalld not changed: open TCP 54325 yourself"
    assert (tmp_path / "sriov-migration.xml").exists()


def test_hooks_only_should_leave_firewalld_alone(tmp_path, monkeypatch):
    fw = FirewallCmd()
    install.install(_live_args(tmp_path, monkeypatch, hooks_only=True), lambda line: None, run=fw)
    assert fw.calls == [] and not (tmp_path / "sriov-migration.xml").exists()


def test_uninstall_should_drop_the_service_from_its_zones_before_the_file(tmp_path, monkeypatch):
    args = _live_args(tmp_path, monkeypatch)
    install.install(args, lambda line: None, run=FirewallCmd())
    service = tmp_path / "sriov-migration.xml"
    fw, seen = FirewallCmd(), []

    def run(argv):
        seen.append((tuple(argv[1:]), service.exists()))
        return fw(argv)

    install.uninstall(args, lambda line: None, run=run)
    assert fw.changes() == [("--permanent", "--zone=public", "--remove-service=sriov-migration"),
                            ("--permanent", "--zone=work", "--remove-service=sriov-migration"),
                            ("--reload",)]
    assert all(present for args_, present in seen if "--remove-service" in " ".join(args_))
    assert seen[-1] == (("--reload",), False)
    assert not service.exists()


def test_uninstall_should_say_so_when_firewalld_is_not_running(tmp_path, monkeypatch):
    args = _live_args(tmp_path, monkeypatch)
    install.install(args, lambda line: None, run=FirewallCmd(running=False))
    fw, lines = FirewallCmd(running=False), []
    install.uninstall(args, lines.append, run=fw)
    assert fw.changes() == []
    assert [line for line in lines if line.startswith("firewalld")] == [
        "firewalld not running: remove service sriov-migration from any zone naming it yourself"]
    assert not (tmp_path / "sriov-migration.xml").exists()


@pytest.mark.parametrize("listing, zones", [
    pytest.param(LISTING, ["public", "work"], id="two-zones"),
    pytest.param(LISTING.replace(" sriov-migration", ""), [], id="none"),
    pytest.param("public\n  services: sriov-migration-x\n", [], id="prefix-is-not-a-match"),
    pytest.param("", [], id="empty"),
])
def test_zones_with_service_should_find_exact_names(listing, zones):
    assert install.zones_with_service(listing, "sriov-migration") == zones
