"""The -cockpit RPM: the page's files only, the same as ``sriov-migration-install --cockpit``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import rpm_packaging as rp

from vdsm_hooks import cockpit_page

pytestmark = pytest.mark.rpm


def test_cockpit_rpm_should_hold_the_page_only_world_readable(rpms):
    table = rp.file_table(rpms["cockpit"])
    names = [name for name, _ in cockpit_page.page_files()]
    assert set(table) == {cockpit_page.COCKPIT_DIR} | {
        "%s/%s" % (cockpit_page.COCKPIT_DIR, n) for n in names}
    assert {"manifest.json", "index.html"} <= set(names)
    for name in names:
        assert table["%s/%s" % (cockpit_page.COCKPIT_DIR, name)][0] & 0o7777 == 0o644


def test_cockpit_rpm_should_need_cockpit_and_the_main_package(rpms):
    requires = rp.query(rpms["cockpit"], "--requires")
    assert "cockpit-bridge" in requires
    assert "%s = %s" % (rp.NAME, rp.spec_tag("Version")) in requires
    assert rp.query(rpms["cockpit"], "--qf", "%{ARCH}").strip() == "noarch"


def test_cockpit_rpm_and_install_cockpit_should_lay_out_the_same_bytes(rpms, tmp_path):
    by_rpm, by_pip = tmp_path / "rpm", tmp_path / "pip"
    rp.install_root(str(by_rpm), rpms["cockpit"])
    subprocess.run([sys.executable, "-m", "vdsm_hooks.install", "--cockpit", "--hooks-only",
                    "--root", str(by_pip), "--hooks-dir", "/hooks"], check=True, stdout=subprocess.DEVNULL)
    rel = cockpit_page.COCKPIT_DIR.lstrip("/")
    rpm_files = sorted(os.listdir(by_rpm / rel))
    assert rpm_files == sorted(os.listdir(by_pip / rel))
    for name in rpm_files:
        assert (by_rpm / rel / name).read_bytes() == (by_pip / rel / name).read_bytes(), name
