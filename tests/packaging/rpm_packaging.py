"""What the RPM must hold, and small helpers around ``rpm`` and ``rpmbuild``.

The layout is VDSM's and systemd's view of a host: where VDSM runs hooks
from, where systemd finds units, where the config is read. Python
site-packages paths differ between a pip and an RPM install and are
checked separately.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
import shutil
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_RPM = os.path.join(REPO, "packaging", "build-rpm")
SPEC = os.path.join(REPO, "packaging", "vdsm-hook-sriov-migration.spec")
RPMLINT_CONFIG = os.path.join(REPO, "packaging", "rpmlint.toml")
NAME = "vdsm-hook-sriov-migration"

POINTS = ("before_vm_migrate_source", "before_vm_migrate_destination",
          "after_vm_migrate_destination", "after_vm_migrate_source", "after_vm_destroy")
HOOKS = tuple("/usr/libexec/vdsm/hooks/%s/50_sriov_migration" % p for p in POINTS)
UNIT = "sriov-migrationd.service"
RPM_UNIT = "/usr/lib/systemd/system/" + UNIT
CONFIG = "/etc/vdsm/sriov-migration.conf"
WATCH_UNIT = "sriov-engine-watch.service"
RPM_WATCH_UNIT = "/usr/lib/systemd/system/" + WATCH_UNIT
WATCH_ENV = "/etc/sriov-engine/watch.env"
FIREWALLD_SERVICE_NAME = "sriov-migration"
FIREWALLD_SERVICE = "/usr/lib/firewalld/services/%s.xml" % FIREWALLD_SERVICE_NAME
# systemd's directories for system units that a package or an admin fills.
SYSTEMD_UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system")

MAIN_PACKAGES = ("sriov_host", "vdsm_hooks", "jsonrpc_plugin")
ENGINE_PACKAGES = ("engine_adapter",)
MAIN_SCRIPTS = ("sriov-client", "sriov-migration-hook", "sriov-migrationd")
ENGINE_SCRIPTS = ("sriov-engine",)
MAN_DIR = "/usr/share/man/man8/"  # one page per command, gzipped by rpmbuild where brp-compress runs
# In setup.cfg but in neither package: the lab, and the pip-only installer
# (the RPM's files belong to rpm, which installs and removes them).
NOT_PACKAGED_SCRIPTS = ("sriov-lab", "sriov-migration-install")
NEVER_PACKAGED = ("sriov_lab", "sriov-lab", "/tests/", "benchmarks")

MAIN_REQUIRES = ("vdsm", "python3-libvirt", "python3-lxml", "python3-pyroute2",
                 "python3-jsonrpclib-pelix", "python3-prometheus_client", "firewalld-filesystem")
ENGINE_REQUIRES = ("python3-ovirt-engine-sdk4",)


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"), encoding="utf-8")
    return cfg


def console_scripts() -> dict:
    lines = setup_cfg().get("options.entry_points", "console_scripts").strip().splitlines()
    return dict((p.strip() for p in line.split("=", 1)) for line in lines if line.strip())


def spec_tag(tag: str) -> str:
    with open(SPEC, encoding="utf-8") as f:
        match = re.search(r"^%s:\s*(\S+)\s*$" % re.escape(tag), f.read(), re.MULTILINE)
    return match.group(1) if match else ""


def run(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, **kw)


def query(rpm: str, *args) -> str:
    r = run("rpm", "-qp", *args, rpm)
    assert r.returncode == 0, "rpm -qp %s %s: %s" % (" ".join(args), rpm, r.stderr)
    return r.stdout


def file_table(rpm: str) -> dict:
    """path -> (octal mode, rpm file flags) for every file and directory in *rpm*."""
    out = query(rpm, "--qf", "[%{FILENAMES}\t%{FILEMODES:octal}\t%{FILEFLAGS:fflags}\n]")
    table = {}
    for line in out.splitlines():
        path, mode, flags = line.split("\t")
        table[path] = (int(mode, 8), flags)
    return table


def find_rpms(directory: str) -> dict:
    """{"main", "engine", "cockpit", "srpm", "tarball"} -> path, from a build-rpm output directory."""
    found = {
        "main": glob.glob(os.path.join(directory, NAME + "-[0-9]*.noarch.rpm")),
        "engine": glob.glob(os.path.join(directory, NAME + "-engine-[0-9]*.noarch.rpm")),
        "cockpit": glob.glob(os.path.join(directory, NAME + "-cockpit-[0-9]*.noarch.rpm")),
        "srpm": glob.glob(os.path.join(directory, NAME + "-[0-9]*.src.rpm")),
        "tarball": glob.glob(os.path.join(directory, "vdsm-sriov-migration-*.tar.gz")),
    }
    for kind, paths in found.items():
        assert len(paths) == 1, "%s: expected one %s, found %s" % (directory, kind, paths)
    return {kind: paths[0] for kind, paths in found.items()}


def build(outdir: str) -> dict:
    r = run("bash", BUILD_RPM, outdir)
    assert r.returncode == 0, "packaging/build-rpm failed:\n%s%s" % (r.stdout, r.stderr)
    return find_rpms(outdir)


def install_root(root: str, *rpms: str) -> None:
    """``rpm -i --root ROOT --nodeps --noscripts``, with its database inside ROOT."""
    r = run("rpm", "-i", "--root", root, "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts", *rpms)
    assert r.returncode == 0, "rpm -i --root %s: %s" % (root, r.stderr)


def sitelib(root: str) -> str:
    """The one python3.X/site-packages the RPM put under *root*."""
    found = glob.glob(os.path.join(root, "usr/lib/python3*/site-packages"))
    assert len(found) == 1, found
    return found[0]


def tree(root: str) -> dict:
    """Every file under *root* as "/relative/path" -> st_mode & 0o7777."""
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            path = os.path.join(d, n)
            files["/" + os.path.relpath(path, root)] = os.stat(path).st_mode & 0o7777
    return files


def firewalld_config(workdir: str) -> str:
    """A scratch copy of /etc/firewalld for ``firewall-offline-cmd --system-config``,
    which otherwise writes to the machine's own /etc/firewalld."""
    config = os.path.join(workdir, "etc-firewalld")
    if os.path.isdir("/etc/firewalld"):
        shutil.copytree("/etc/firewalld", config)
    else:
        os.makedirs(config)
    return config


def offline_cmd(config: str, *args) -> subprocess.CompletedProcess:
    """firewalld's own code on the scratch config *config*; no daemon involved."""
    return run("firewall-offline-cmd", "--system-config", config, *args)


def firewalld_parse(service_file: str, workdir: str) -> subprocess.CompletedProcess:
    """firewalld's parser on *service_file*, then the service as firewalld read it."""
    config = firewalld_config(workdir)
    r = offline_cmd(config, "--new-service-from-file", service_file, "--name", FIREWALLD_SERVICE_NAME)
    return r if r.returncode else offline_cmd(config, "--info-service", FIREWALLD_SERVICE_NAME)


def zone_listing(service_file: str, workdir: str, zones=()) -> str:
    """``--list-all-zones`` as firewalld prints it, the service enabled in *zones*."""
    config = firewalld_config(workdir)
    steps = [("--new-service-from-file", service_file, "--name", FIREWALLD_SERVICE_NAME)]
    steps += [("--zone", zone, "--add-service", FIREWALLD_SERVICE_NAME) for zone in zones]
    for args in steps + [("--list-all-zones",)]:
        r = offline_cmd(config, *args)
        assert r.returncode == 0, "firewall-offline-cmd %s: %s" % (" ".join(args), r.stderr)
    return r.stdout
