"""What the built RPMs hold, say and depend on (``rpm -qp``, ``rpmlint``)."""

from __future__ import annotations

import os
import shutil

import pytest
import rpm_packaging as rp

pytestmark = pytest.mark.rpm


def _top_level(paths, prefix):
    return {p[len(prefix):].split("/")[0] for p in paths if p.startswith(prefix)}


def _sitelib_prefix(table):
    dirs = {p.split("site-packages/")[0] + "site-packages/" for p in table if "/site-packages/" in p}
    assert len(dirs) == 1, dirs
    return dirs.pop()


def test_main_rpm_should_hold_hooks_unit_config_clis_and_host_packages(rpms):
    table = rp.file_table(rpms["main"])
    sitelib = _sitelib_prefix(table)
    assert sitelib.startswith("/usr/lib/python3")
    outside = {p for p in table if not p.startswith(sitelib) and not p.startswith("/usr/share/doc/")}
    expected = set(rp.HOOKS) | {rp.RPM_UNIT, rp.CONFIG} | {"/usr/bin/" + s for s in rp.MAIN_SCRIPTS}
    assert outside == expected
    version = rp.spec_tag("Version")
    assert _top_level(table, sitelib) == set(rp.MAIN_PACKAGES) | {
        "vdsm_sriov_migration-%s.dist-info" % version}


def test_engine_rpm_should_hold_the_adapter_only(rpms):
    table = rp.file_table(rpms["engine"])
    sitelib = _sitelib_prefix(table)
    assert {p for p in table if not p.startswith(sitelib)} == {"/usr/bin/" + s for s in rp.ENGINE_SCRIPTS}
    assert _top_level(table, sitelib) == set(rp.ENGINE_PACKAGES)


def test_rpms_should_hold_every_module_of_their_packages(rpms):
    for kind, packages in (("main", rp.MAIN_PACKAGES), ("engine", rp.ENGINE_PACKAGES)):
        table = rp.file_table(rpms[kind])
        sitelib = _sitelib_prefix(table)
        for package in packages:
            for d, dirs, files in os.walk(os.path.join(rp.REPO, package)):
                dirs[:] = [x for x in dirs if x != "__pycache__"]
                for f in files:
                    if not f.endswith((".pyc", ".pyo")):
                        rel = os.path.relpath(os.path.join(d, f), rp.REPO)
                        assert sitelib + rel in table, "%s is not in the %s RPM" % (rel, kind)


def test_rpms_should_hold_no_lab_tests_or_benchmarks(rpms):
    for kind in ("main", "engine"):
        for path in rp.file_table(rpms[kind]):
            assert not any(word in path for word in rp.NEVER_PACKAGED), path


def test_config_should_be_noreplace_and_executables_0755(rpms):
    table = rp.file_table(rpms["main"])
    mode, flags = table[rp.CONFIG]
    assert "c" in flags and "n" in flags, "%s flags %r: want %%config(noreplace)" % (rp.CONFIG, flags)
    assert mode & 0o7777 == 0o644
    assert table[rp.RPM_UNIT][0] & 0o7777 == 0o644
    for path in rp.HOOKS + tuple("/usr/bin/" + s for s in rp.MAIN_SCRIPTS):
        assert table[path][0] & 0o7777 == 0o755, path
    assert [p for p, (_m, f) in table.items() if "c" in f] == [rp.CONFIG]


def _requires(rpm):
    return {line.split()[0]: line for line in rp.query(rpm, "--requires").splitlines()}


def test_rpms_should_require_el9_package_names(rpms):
    main = _requires(rpms["main"])
    for name in rp.MAIN_REQUIRES + ("systemd",):
        assert name in main, "main RPM does not require %s" % name
    assert not any("ovirt-engine-sdk" in name for name in main)
    engine = _requires(rpms["engine"])
    for name in rp.ENGINE_REQUIRES:
        assert name in engine
    version = "%s-%s" % (rp.spec_tag("Version"), rp.query(rpms["main"], "--qf", "%{RELEASE}"))
    assert engine[rp.NAME] == "%s = %s" % (rp.NAME, version)


def test_scriptlets_should_manage_the_unit_the_systemd_way(rpms):
    """%post presets on first install, %preun stops on removal, %postun restarts on upgrade."""
    scripts = {tag: rp.query(rpms["main"], "--qf", "%%{%s}" % tag)
               for tag in ("POSTIN", "PREUN", "POSTUN")}
    for tag, text in scripts.items():
        assert rp.UNIT in text, "%s does not name %s: %r" % (tag, rp.UNIT, text)
    assert "$1 -eq 1" in scripts["POSTIN"]
    assert "$1 -eq 0" in scripts["PREUN"]
    assert "$1 -ge 1" in scripts["POSTUN"]
    assert rp.query(rpms["engine"], "--qf", "%{POSTIN}%{PREUN}%{POSTUN}") == "(none)(none)(none)"


def test_rpmlint_should_report_no_errors(rpms):
    if shutil.which("rpmlint") is None:
        pytest.fail("rpmlint is not installed (Debian: apt-get install rpmlint; bash scripts/setup.sh "
                    "installs it)")
    r = rp.run("rpmlint", "-c", rp.RPMLINT_CONFIG, rpms["main"], rpms["engine"], rpms["srpm"], rp.SPEC)
    summary = [line for line in r.stdout.splitlines() if " checked; " in line]
    assert r.returncode == 0 and summary and " 0 errors," in summary[0], r.stdout + r.stderr


def test_build_should_be_reproducible(rpms, tmp_path):
    """Same tarball bytes; same payload and file list (the header names the build dir)."""
    again = rp.build(str(tmp_path))
    with open(rpms["tarball"], "rb") as a, open(again["tarball"], "rb") as b:
        assert a.read() == b.read()
    for kind in ("main", "engine"):
        for qf in ("%{PAYLOADDIGEST}", "[%{FILENAMES} %{FILEDIGESTS} %{FILEMODES} %{FILEMTIMES}\n]"):
            assert rp.query(rpms[kind], "--qf", qf) == rp.query(again[kind], "--qf", qf)
