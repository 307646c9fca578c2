"""The installed executables, the installer's idempotence, and the fast path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers.corpus import DOMAINS_DIR, read_domain

from vdsm_hooks import install
from vdsm_hooks.hook import POINTS

VM = "4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11"


def _install(*args):
    return subprocess.run([sys.executable, "-m", "vdsm_hooks.install", *args],
                          capture_output=True, text=True, check=False)


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


def test_install_should_put_one_executable_per_point_and_be_idempotent(tmp_path):
    r = _install("--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    files = _tree(tmp_path)
    for point in POINTS:
        path = "usr/libexec/vdsm/hooks/%s/50_sriov_migration" % point
        assert path in files
        assert os.access(tmp_path / path, os.X_OK)
    assert "etc/systemd/system/sriov-migrationd.service" in files
    assert "etc/vdsm/sriov-migration.conf" in files
    unit = (tmp_path / "etc/systemd/system/sriov-migrationd.service").read_text()
    assert "ExecStart=%s\n" % os.path.join(os.path.dirname(sys.executable), "sriov-migrationd") in unit
    assert "@BINDIR@" not in unit
    # Back after any exit (VDSM's libvirt connection SIGTERMs its process),
    # and not stopped for good by 'systemctl stop libvirtd'.
    assert "\nRestart=always\n" in unit and "Requires=libvirtd" not in unit
    assert "libvirtd.service" in unit.split("Wants=", 1)[1].splitlines()[0]
    snapshot = {f: (tmp_path / f).read_bytes() for f in files}
    again = _install("--root", str(tmp_path))
    assert again.returncode == 0 and "installed" not in again.stdout
    assert {f: (tmp_path / f).read_bytes() for f in _tree(tmp_path)} == snapshot


def test_uninstall_should_remove_ours_and_keep_an_edited_config(tmp_path):
    assert _install("--root", str(tmp_path)).returncode == 0
    conf = tmp_path / "etc/vdsm/sriov-migration.conf"
    conf.write_text(conf.read_text() + "\n# site edit\n")
    foreign = tmp_path / "usr/libexec/vdsm/hooks/after_vm_destroy/10_other"
    foreign.write_text("#!/bin/sh\n")
    r = _install("--root", str(tmp_path), "--uninstall")
    assert r.returncode == 0 and "kept" in r.stdout
    assert sorted(_tree(tmp_path)) == ["etc/vdsm/sriov-migration.conf",
                                       "usr/libexec/vdsm/hooks/after_vm_destroy/10_other"]


def test_installed_hook_should_take_its_point_from_its_directory(tmp_path):
    assert _install("--hooks-dir", str(tmp_path / "hooks"), "--hooks-only").returncode == 0
    xml = tmp_path / "dom.xml"
    xml.write_bytes(read_domain("mixed_migratable"))
    hook = tmp_path / "hooks/before_vm_migrate_source" / install.HOOK_NAME
    env = dict(os.environ, _hook_domxml=str(xml), vmId=VM,
               SRIOV_MIGRATION_CONF=str(tmp_path / "none.conf"))
    conf = tmp_path / "none.conf"
    conf.write_text("[ledger]\npath = %s\n" % (tmp_path / "l.sqlite"))
    r = subprocess.run([str(hook), "--dry-run"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and json.loads(r.stdout)["verdict"] == "refuse"


def test_fast_path_should_import_neither_libvirt_nor_pyroute2_nor_lxml(tmp_path):
    xml = tmp_path / "dom.xml"
    xml.write_bytes(read_domain("no_sriov"))
    code = ("import sys\n"
            "from vdsm_hooks.hook import main\n"
            "rc = main(['--point', 'before_vm_migrate_source'])\n"
            "heavy = sorted(m for m in ('libvirt', 'pyroute2', 'lxml', 'sriov_host') if m in sys.modules)\n"
            "print(rc, heavy)\n")
    env = dict(os.environ, _hook_domxml=str(xml), vmId=VM)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.stdout.strip() == "0 []", r.stderr
    assert r.stderr == ""


@pytest.mark.parametrize("name", sorted(n[:-4] for n in os.listdir(DOMAINS_DIR)))
def test_every_corpus_xml_should_give_a_plan_or_one_line(host, hook_env, capsys, name):
    """No input in the corpus makes the hook raise or print more than one line."""
    from vdsm_hooks.hook import main

    env, _ = hook_env(read_domain(name))
    rc = main(["--point", "before_vm_migrate_source", "--dry-run"], env=env)
    out, err = capsys.readouterr()
    assert rc in (0, 2)
    if out:
        assert json.loads(out)["verdict"] in ("migrate", "refuse", "nothing")
    else:
        assert rc == 2 and err.count("\n") == 1


@pytest.mark.parametrize("data, fast", [
    pytest.param(read_domain("no_sriov"), True, id="utf-8"),
    pytest.param(b"\xef\xbb\xbf" + read_domain("no_sriov"), True, id="utf-8-bom"),
    pytest.param(read_domain("no_sriov").replace(b"'utf-8'", b'"US-ASCII"'), True, id="us-ascii"),
    pytest.param(read_domain("no_sriov").replace(b"'utf-8'", b"'utf-16'"), False, id="other-decl"),
    pytest.param(read_domain("no_sriov").decode().encode("utf-16"), False, id="utf-16"),
    pytest.param(read_domain("no_sriov").replace(b"<name>", b"<name>&#104;"), False, id="charref"),
    pytest.param(b"<!DOCTYPE d>" + read_domain("no_sriov"), False, id="doctype"),
    pytest.param(b"garbage" + read_domain("no_sriov"), False, id="not-xml"),
])
def test_fast_path_should_judge_only_plain_utf8_from_bytes(data, fast):
    """A document the bytes cannot vouch for goes to the full parser, never to 'nothing'."""
    from vdsm_hooks.hook import may_hold_sriov

    assert may_hold_sriov(data) is not fast
