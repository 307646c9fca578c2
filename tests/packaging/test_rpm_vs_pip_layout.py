"""``sriov-migration-install`` (pip) and the RPM lay out the same host.

Compared: what VDSM, systemd and firewalld look at, that is the hook
executables, the unit (by name, in systemd's unit directories: the RPM's in
/usr/lib/systemd/system, the pip install's in /etc/systemd/system), the
config and the firewalld service, with their modes and contents. Legitimately different: the
interpreter on each hook's first line and the directory of the unit's
ExecStart (the venv's bin against /usr/bin), and the Python packages'
site-packages directory, which is not compared.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import rpm_packaging as rp

pytestmark = pytest.mark.rpm


def _pip_install(root):
    installer = os.path.join(os.path.dirname(sys.executable), "sriov-migration-install")
    argv = [installer] if os.access(installer, os.X_OK) else [sys.executable, "-m", "vdsm_hooks.install"]
    r = subprocess.run(argv + ["--root", root], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _host_view(root, skip=()):
    """The files VDSM and systemd look at: path -> mode; a unit is keyed by its name."""
    view = {}
    for path, mode in rp.tree(root).items():
        if any(path.startswith(prefix) for prefix in skip):
            continue
        unit_dir, name = os.path.split(path)
        view["systemd:" + name if unit_dir in rp.SYSTEMD_UNIT_DIRS else path] = (path, mode)
    return view


def _read(root, path):
    with open(os.path.join(root, path.lstrip("/")), encoding="utf-8") as f:
        return f.read()


def _unit_with_bindir(text):
    """The unit text with ExecStart's directory put back to @BINDIR@, and ExecStart's binary."""
    exec_start = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1, exec_start
    binary = exec_start[0][len("ExecStart="):].split()[0]
    return text.replace(os.path.dirname(binary), "@BINDIR@"), binary


def test_pip_and_rpm_installs_should_lay_out_the_same_host(rpm_root, tmp_path):
    pip_root = str(tmp_path / "pip")
    _pip_install(pip_root)
    sitelib = "/" + os.path.relpath(rp.sitelib(rpm_root), rpm_root)
    pip = _host_view(pip_root)
    rpm = _host_view(rpm_root, skip=(sitelib + "/", "/usr/bin/", "/usr/share/doc/", "/usr/share/man/",
                                     "/var/lib/rpm/"))
    # The engine side's watcher (-engine) runs beside the engine, never on a host.
    for engine_side in ("systemd:" + rp.WATCH_UNIT, rp.WATCH_ENV):
        assert rpm.pop(engine_side, None) is not None, engine_side

    assert sorted(rpm) == sorted(pip)
    assert sorted(pip) == sorted(set(rp.HOOKS) | {rp.CONFIG, rp.FIREWALLD_SERVICE, "systemd:" + rp.UNIT})
    assert {k: mode for k, (_p, mode) in rpm.items()} == {k: mode for k, (_p, mode) in pip.items()}

    for hook in rp.HOOKS:
        pip_text, rpm_text = _read(pip_root, hook), _read(rpm_root, hook)
        assert pip_text.startswith("#!") and rpm_text.startswith("#!")
        assert pip_text.split("\n", 1)[1] == rpm_text.split("\n", 1)[1], hook

    assert _read(pip_root, rp.CONFIG) == _read(rpm_root, rp.CONFIG)
    assert _read(pip_root, rp.FIREWALLD_SERVICE) == _read(rpm_root, rp.FIREWALLD_SERVICE)

    key = "systemd:" + rp.UNIT
    pip_unit, pip_bin = _unit_with_bindir(_read(pip_root, pip[key][0]))
    rpm_unit, rpm_bin = _unit_with_bindir(_read(rpm_root, rpm[key][0]))
    assert pip_unit == rpm_unit
    assert os.access(pip_bin, os.X_OK), "the pip unit's ExecStart %s is not there" % pip_bin
    assert os.access(os.path.join(rpm_root, rpm_bin.lstrip("/")), os.X_OK), rpm_bin
