"""The RPMs installed into a scratch root: every file where VDSM and systemd look."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import rpm_packaging as rp
from helpers.corpus import read_domain

pytestmark = pytest.mark.rpm

VM = "4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11"


def _at(root, path):
    return os.path.join(root, path.lstrip("/"))


def _exec_start(unit_text):
    lines = [line for line in unit_text.splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    return lines[0][len("ExecStart="):].split()[0]


def test_installed_rpms_should_put_hooks_unit_and_config_where_vdsm_and_systemd_look(rpm_root):
    for hook in rp.HOOKS:
        path = _at(rpm_root, hook)
        assert os.path.isfile(path) and os.access(path, os.X_OK), hook
        with open(path, encoding="utf-8") as f:
            assert f.readline().rstrip("\n") in ("#!/usr/bin/python3", "#!/usr/libexec/platform-python")
    with open(_at(rpm_root, rp.RPM_UNIT), encoding="utf-8") as f:
        exec_start = _exec_start(f.read())
    assert exec_start == "/usr/bin/sriov-migrationd"
    assert os.access(_at(rpm_root, exec_start), os.X_OK)
    assert os.path.isfile(_at(rpm_root, rp.CONFIG))
    for script in rp.MAIN_SCRIPTS + rp.ENGINE_SCRIPTS:
        assert os.access(_at(rpm_root, "/usr/bin/" + script), os.X_OK), script


def test_installed_watch_unit_should_run_sriov_engine_watch_with_its_env_and_password(rpm_root):
    with open(_at(rpm_root, rp.RPM_WATCH_UNIT), encoding="utf-8") as f:
        text = f.read()
    exec_start = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1
    argv = exec_start[0][len("ExecStart="):].split()
    assert argv[:2] == ["/usr/bin/sriov-engine", "watch"]
    assert os.access(_at(rpm_root, argv[0]), os.X_OK)
    assert "--password-file" in argv and "--password" not in argv
    assert "EnvironmentFile=%s" % rp.WATCH_ENV in text.splitlines()
    assert os.path.isfile(_at(rpm_root, rp.WATCH_ENV))
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify", "--root", rpm_root, rp.RPM_WATCH_UNIT],
                           capture_output=True, text=True)
        assert "Unknown key" not in r.stderr and "Unknown section" not in r.stderr, r.stderr


def test_installed_firewalld_service_should_be_where_firewalld_looks_and_parse(rpm_root, tmp_path):
    """firewalld reads packaged services from /usr/lib/firewalld/services; its own parser
    (firewall-offline-cmd, on a scratch config) accepts the RPM's file."""
    path = _at(rpm_root, rp.FIREWALLD_SERVICE)
    assert os.path.isfile(path)
    if shutil.which("firewall-offline-cmd") is None:
        pytest.skip("firewall-offline-cmd is not installed (Debian: apt-get install firewalld)")
    r = rp.firewalld_parse(path, str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "ports: 54325/tcp" in [line.strip() for line in r.stdout.splitlines()]


def test_installed_packages_should_import_from_the_rpm_root(rpm_root):
    sitelib = rp.sitelib(rpm_root)
    modules = ["vdsm_hooks.hook", "vdsm_hooks.install", "jsonrpc_plugin.service", "jsonrpc_plugin.client",
               "sriov_host.config", "engine_adapter.cli"]
    code = ("import importlib, json, sys\n"
            "print(json.dumps({m: importlib.import_module(m).__file__ for m in sys.argv[1:]}))\n")
    env = dict(os.environ, PYTHONPATH=sitelib)
    r = subprocess.run([sys.executable, "-c", code, *modules], env=env, cwd=rpm_root,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for module, path in json.loads(r.stdout).items():
        assert path.startswith(sitelib + os.sep), "%s came from %s" % (module, path)


def test_installed_config_should_be_a_config_the_hooks_accept(rpm_root):
    sitelib = rp.sitelib(rpm_root)
    code = "from sriov_host import config; config.load(required=True)"
    env = dict(os.environ, PYTHONPATH=sitelib, SRIOV_MIGRATION_CONF=_at(rpm_root, rp.CONFIG))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("point", rp.POINTS)
def test_installed_hook_should_exit_0_on_the_fast_path(rpm_root, tmp_path, point):
    """VDSM's way: the executable itself, the XML file in $_hook_domxml; nothing else on the path."""
    xml = read_domain("no_sriov")
    domxml = tmp_path / "domxml"
    domxml.write_bytes(xml)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": rp.sitelib(rpm_root),
           "_hook_domxml": str(domxml), "vmId": VM,
           "SRIOV_MIGRATION_CONF": _at(rpm_root, rp.CONFIG)}
    hook = _at(rpm_root, "/usr/libexec/vdsm/hooks/%s/50_sriov_migration" % point)
    r = subprocess.run([hook], env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stderr) == (0, "")
    assert domxml.read_bytes() == xml


def test_installed_hook_dry_run_should_find_nothing_to_do_on_the_fast_path(rpm_root, tmp_path):
    domxml = tmp_path / "domxml"
    domxml.write_bytes(read_domain("no_sriov"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": rp.sitelib(rpm_root),
           "_hook_domxml": str(domxml), "vmId": VM}
    hook = _at(rpm_root, rp.HOOKS[0])
    r = subprocess.run([hook, "--dry-run"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verdict"] == "nothing"


def test_installed_rpms_should_be_removable_leaving_an_edited_config(rpms, tmp_path):
    """``rpm -e`` takes every file back; an admin's edited config stays as .rpmsave."""
    root = str(tmp_path / "root")
    rp.install_root(root, rpms["main"], rpms["engine"])
    conf = _at(root, rp.CONFIG)
    with open(conf, "a", encoding="utf-8") as f:
        f.write("\n# site edit\n")
    r = rp.run("rpm", "-e", "--root", root, "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts",
               rp.NAME + "-engine", rp.NAME)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(_at(root, "/var/lib/rpm"))
    assert sorted(rp.tree(root)) == [rp.CONFIG + ".rpmsave"]
