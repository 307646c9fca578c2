"""What the built RPMs hold, say and depend on (``rpm -qp``, ``rpmlint``)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import rpm_packaging as rp

pytestmark = pytest.mark.rpm


def _top_level(paths, prefix):
    return {p[len(prefix):].split("/")[0] for p in paths if p.startswith(prefix)}


def _sitelib_prefix(table):
    dirs = {p.split("site-packages/")[0] + "site-packages/" for p in table if "/site-packages/" in p}
    assert len(dirs) == 1, dirs
    return dirs.pop()


def _man_pages(table):
    """The commands with a section 8 page in *table* (plain or compressed)."""
    return {p[len(rp.MAN_DIR):].split(".8")[0] for p in table if p.startswith(rp.MAN_DIR)}


def test_main_rpm_should_hold_hooks_unit_config_firewalld_service_clis_and_host_packages(rpms):
    table = rp.file_table(rpms["main"])
    sitelib = _sitelib_prefix(table)
    assert sitelib.startswith("/usr/lib/python3")
    outside = {p for p in table if not p.startswith((sitelib, "/usr/share/doc/", rp.MAN_DIR))}
    expected = set(rp.HOOKS) | {rp.RPM_UNIT, rp.CONFIG, rp.FIREWALLD_SERVICE} | {
        "/usr/bin/" + s for s in rp.MAIN_SCRIPTS}
    assert outside == expected
    assert _man_pages(table) == set(rp.MAIN_SCRIPTS)
    version = rp.spec_tag("Version")
    assert _top_level(table, sitelib) == set(rp.MAIN_PACKAGES) | {
        "vdsm_sriov_migration-%s.dist-info" % version}


def test_engine_rpm_should_hold_the_adapter_and_the_watch_unit_only(rpms):
    table = rp.file_table(rpms["engine"])
    sitelib = _sitelib_prefix(table)
    assert {p for p in table if not p.startswith((sitelib, rp.MAN_DIR))} == {
        "/usr/bin/" + s for s in rp.ENGINE_SCRIPTS} | {rp.RPM_WATCH_UNIT, rp.WATCH_ENV, "/etc/sriov-engine"}
    assert _man_pages(table) == set(rp.ENGINE_SCRIPTS)
    assert _top_level(table, sitelib) == set(rp.ENGINE_PACKAGES)
    assert table[rp.RPM_WATCH_UNIT][0] & 0o7777 == 0o644
    mode, flags = table[rp.WATCH_ENV]
    assert "c" in flags and "n" in flags and mode & 0o7777 == 0o644


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
    assert table[rp.FIREWALLD_SERVICE][0] & 0o7777 == 0o644
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
    engine = {tag: rp.query(rpms["engine"], "--qf", "%%{%s}" % tag) for tag in ("POSTIN", "PREUN", "POSTUN")}
    for tag, text in engine.items():
        assert rp.WATCH_UNIT in text and rp.UNIT not in text, "engine %s: %r" % (tag, text)
    assert "$1 -eq 1" in engine["POSTIN"] and "firewall-cmd" not in "".join(engine.values())
    assert "$1 -eq 0" in engine["PREUN"]
    assert "$1 -ge 1" in engine["POSTUN"]


FW_RELOAD = "firewall-cmd --reload"
FW_ADD = "firewall-cmd --permanent --add-service=sriov-migration"
FW_REMOVE = "firewall-cmd --permanent --zone=%s --remove-service=sriov-migration"
FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$(basename "$0") $*" in
  "systemctl is-active"*) exit {active} ;;
  "firewall-cmd --permanent --list-all-zones") cat "{listing}" ;;
  firewall-cmd*) exit {fw_rc} ;;
esac
exit 0
"""


def _run_scriptlet(rpm, tag, arg, tmp_path, active=True, fw_rc=0, listing=""):
    """The scriptlet as rpm runs it (/bin/sh, $1 = the count of installed
    instances), with systemctl and firewall-cmd recording their calls."""
    bindir, log, listing_file = tmp_path / "bin", tmp_path / "calls", tmp_path / "listing"
    bindir.mkdir(parents=True)
    listing_file.write_text(listing)
    fake = FAKE.format(log=log, active=0 if active else 3, fw_rc=fw_rc, listing=listing_file)
    for name in ("systemctl", "firewall-cmd"):
        (bindir / name).write_text(fake)
        (bindir / name).chmod(0o755)
    script = rp.query(rpm, "--qf", "%%{%s}" % tag)
    env = {"PATH": "%s:/usr/bin:/bin" % bindir}
    r = subprocess.run(["/bin/sh", "-c", script, "sh", str(arg)], env=env, capture_output=True, text=True)
    calls = log.read_text().splitlines() if log.exists() else []
    return r.returncode, [c for c in calls if c.startswith("firewall-cmd")], r.stderr


@pytest.mark.parametrize("tag, arg, active, fw_rc, expected", [
    pytest.param("POSTIN", 1, True, 0, [FW_RELOAD, FW_ADD, FW_RELOAD], id="install"),
    pytest.param("POSTIN", 2, True, 0, [FW_RELOAD], id="upgrade-reloads-only"),
    pytest.param("POSTIN", 1, False, 0, [], id="install-no-firewalld"),
    pytest.param("POSTIN", 1, True, 1, [FW_RELOAD, FW_ADD], id="install-firewall-cmd-fails"),
    pytest.param("PREUN", 1, True, 0, [], id="upgrade-keeps-zones"),
    pytest.param("PREUN", 0, True, 0, [], id="erase-no-zone-has-it"),
    pytest.param("POSTUN", 0, True, 0, [FW_RELOAD], id="erase-reloads"),
    pytest.param("POSTUN", 1, True, 0, [], id="upgrade-no-reload"),
    pytest.param("POSTUN", 0, False, 0, [], id="erase-no-firewalld"),
])
def test_scriptlets_should_open_the_port_only_where_firewalld_runs(rpms, tmp_path, tag, arg, active,
                                                                   fw_rc, expected):
    """Reload (firewalld learns the file), add, reload; never a failed transaction."""
    rc, calls, err = _run_scriptlet(rpms["main"], tag, arg, tmp_path, active=active, fw_rc=fw_rc)
    calls = [c for c in calls if c != "firewall-cmd --permanent --list-all-zones"]
    assert (rc, calls) == (0, expected), err


def test_preun_should_drop_the_service_from_every_zone_firewalld_lists(rpms, rpm_root, tmp_path):
    """On erase, each zone naming the service in firewalld's own listing loses it."""
    if shutil.which("firewall-offline-cmd") is None:
        pytest.skip("firewall-offline-cmd is not installed (Debian: apt-get install firewalld)")
    service = os.path.join(rpm_root, rp.FIREWALLD_SERVICE.lstrip("/"))
    listing = rp.zone_listing(service, str(tmp_path / "fw"), zones=("public", "work"))
    rc, calls, err = _run_scriptlet(rpms["main"], "PREUN", 0, tmp_path / "run", listing=listing)
    assert (rc, calls) == (0, ["firewall-cmd --permanent --list-all-zones",
                               FW_REMOVE % "public", FW_REMOVE % "work"]), err


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
