"""Run the lab's hooks and services as VDSM's unprivileged ``vdsm`` user.

On an oVirt host VDSM runs the hooks as ``vdsm`` (group ``kvm``) with no
capabilities, and systemd runs ``sriov-migrationd`` as the unit's
``User=``/``Group=`` with exactly its ``AmbientCapabilities``. The lab
does the same with ``setpriv``, so what only works as root (sysfs config
space beyond 64 bytes, netlink writes, files under /var/lib) fails here
as it would there. The capabilities come from the unit the project ships,
never repeated by hand.

``vdsm`` cannot run pyenv's interpreters (under /root, mode 0700) nor
read a checkout that may live anywhere, so the lab builds a virtualenv
with Debian's ``/usr/bin/python3`` and the project installed into it
(not editable), cached under ``/var/cache/sriov-lab`` by a hash of the
sources. Where no venv can be built (the real-VF lab's L1 has no pip),
``SRIOV_LAB_VDSM_PYTHONPATH`` names the read-only shares holding the
project and its dependencies, and ``vdsm`` runs Debian's python3 on them.
``SRIOV_LAB_USER=root`` restores the old behaviour (everything as the
lab's own root user).
"""

from __future__ import annotations

import fcntl
import functools
import grp
import hashlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from .errors import LabError

log = logging.getLogger(__name__)

ENV_USER = "SRIOV_LAB_USER"
ENV_CACHE = "SRIOV_LAB_VENV_CACHE"
ENV_PYTHONPATH = "SRIOV_LAB_VDSM_PYTHONPATH"  # shares instead of a venv (L1: no pip there)
USER, GROUP = "vdsm", "kvm"
VDSM_UID = 36  # VDSM's spec: useradd -u 36 (used when free)
VDSM_HOME = "/var/lib/vdsm"  # not created: a lab file placed there by mistake must fail
PYTHON = "/usr/bin/python3"
SETPRIV = "setpriv"
UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "jsonrpc_plugin", "data", "sriov-migrationd.service")
# What `pip install .` needs from the checkout (setup.cfg's packages + long_description).
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "sriov_host", "vdsm_hooks",
           "jsonrpc_plugin", "engine_adapter", "sriov_lab")
KEEP_VENVS_SECONDS = 24 * 3600


@dataclass(frozen=True)
class UnitPrivileges:
    """The privileges a systemd unit's ``[Service]`` gives its process."""

    user: str = "root"
    group: str = "root"
    ambient: tuple = ()
    bounding: Optional[tuple] = None  # None: the full set
    no_new_privs: bool = False
    environment: dict = field(default_factory=dict)
    state_mode: int = 0o755  # StateDirectoryMode= (systemd's default 0755)

    @property
    def cap_mask(self) -> int:
        """CapEff as /proc/PID/status shows it for a process with these ambient caps."""
        return functools.reduce(lambda m, c: m | (1 << _cap_number(c)), self.ambient, 0)


def parse_unit(text: str) -> UnitPrivileges:
    """``User=``, ``Group=``, capabilities, ``NoNewPrivileges=``, ``Environment=`` of [Service]."""
    section, values = None, {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            key, value = (s.strip() for s in line.split("=", 1))
            values.setdefault(key, []).append(value)

    def caps(key):
        words = [w for v in values.get(key, ()) for w in v.split()]
        return tuple(w.lower()[len("cap_"):] for w in words)

    env = dict(w.split("=", 1) for v in values.get("Environment", ()) for w in v.split() if "=" in w)
    return UnitPrivileges(
        user=values.get("User", ["root"])[-1], group=values.get("Group", ["root"])[-1],
        ambient=caps("AmbientCapabilities"),
        bounding=caps("CapabilityBoundingSet") if "CapabilityBoundingSet" in values else None,
        no_new_privs=values.get("NoNewPrivileges", ["no"])[-1].lower() in ("yes", "true", "1", "on"),
        environment=env, state_mode=int(values.get("StateDirectoryMode", ["0755"])[-1], 8))


def unit_privileges(path: str = UNIT) -> UnitPrivileges:
    with open(path, encoding="utf-8") as f:
        return parse_unit(f.read())


def _cap_number(name: str) -> int:
    """The capability's bit, from setpriv's own table (``--list-caps`` is in bit order)."""
    names = _cap_names()
    if name not in names:
        raise LabError("unknown capability %r in %s" % (name, UNIT))
    return names.index(name)


@functools.lru_cache(maxsize=1)
def _cap_names() -> list:
    proc = subprocess.run([SETPRIV, "--list-caps"], capture_output=True, text=True, check=True)
    return proc.stdout.split()


@dataclass(frozen=True)
class LabUser:
    """The unprivileged user hooks and services run as, and its venv's python."""

    name: str
    uid: int
    gid: int
    python: str
    pythonpath: str = ""  # only without a venv: the read-only shares the python runs on

    def hook_argv(self, argv: list) -> list:
        """*argv* as VDSM runs a hook: the user, its groups, no capabilities at all."""
        return [SETPRIV, "--reuid", str(self.uid), "--regid", str(self.gid), "--init-groups",
                "--inh-caps", "-all", "--"] + list(argv)

    def service_argv(self, argv: list, unit: UnitPrivileges) -> list:
        """*argv* as systemd runs the unit: its user and group, exactly its capabilities."""
        uid, gid = pwd.getpwnam(unit.user).pw_uid, grp.getgrnam(unit.group).gr_gid
        caps = "".join(",+" + c for c in unit.ambient)
        out = [SETPRIV, "--reuid", str(uid), "--regid", str(gid), "--init-groups",
               "--inh-caps", "-all" + caps, "--ambient-caps", "-all" + caps]
        if unit.bounding is not None:
            out += ["--bounding-set", "-all" + "".join(",+" + c for c in unit.bounding)]
        if unit.no_new_privs:
            out.append("--no-new-privs")
        return out + ["--"] + list(argv)

    def environ(self, env: dict) -> dict:
        """*env* with the user's own HOME and names, and no path into a checkout but its shares."""
        out = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        if self.pythonpath:
            out["PYTHONPATH"] = self.pythonpath
        return dict(out, HOME=VDSM_HOME, USER=self.name, LOGNAME=self.name)

    def give(self, path: str, mode: int) -> None:
        """Make *path* this user's (group kvm) with *mode*, as the RPM's %attr would."""
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)


def reach(path: str) -> None:
    """Let others traverse every directory down to *path* (mkdtemp makes them 0700)."""
    path = os.path.abspath(path)
    private = {"/root", os.path.expanduser("~")}
    while True:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            if path in private:
                raise LabError("%s is private: the lab's vdsm user cannot reach what is under it; "
                               "use a directory outside it (TMPDIR, SRIOV_LAB_RUNTIME)" % path)
            os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def adopt_host(user: LabUser, host, unit: Optional[UnitPrivileges] = None) -> None:
    """Give *user* a lab host's files as an oVirt host gives them to vdsm.

    The ledger's directory as the unit's StateDirectory (its user and
    group, StateDirectoryMode), the SASL password as VDSM's
    ``libvirt_password`` (0600 vdsm:kvm), and an empty ledger made as the
    service would make it (0644 under systemd's umask), so the lab's own
    root-side reads never create it as root's.
    """
    from sriov_host import config

    unit = unit or unit_privileges()
    ledger = config.load(host.config_path).ledger_path
    state = os.path.dirname(ledger)
    os.makedirs(state, exist_ok=True)
    uid, gid = pwd.getpwnam(unit.user).pw_uid, grp.getgrnam(unit.group).gr_gid
    os.chown(state, uid, gid)
    os.chmod(state, unit.state_mode)
    if not os.path.exists(ledger):
        fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.fchown(fd, uid, gid)
        os.close(fd)
    user.give(host.password_file, 0o600)


@functools.lru_cache(maxsize=1)
def lab_user() -> Optional[LabUser]:
    """The lab's ``vdsm`` (created if missing, venv built if stale); None with SRIOV_LAB_USER=root."""
    name = os.environ.get(ENV_USER, USER)
    if name == "root":
        return None
    if name != USER:
        raise LabError("%s must be %s or root, not %r" % (ENV_USER, USER, name))
    if shutil.which(SETPRIV) is None:
        raise LabError("the lab needs setpriv (apt-get install util-linux)")
    entry = ensure_user()
    shares = os.environ.get(ENV_PYTHONPATH)
    if shares:
        return LabUser(name, entry.pw_uid, entry.pw_gid, PYTHON, pythonpath=shares)
    return LabUser(name, entry.pw_uid, entry.pw_gid, ensure_venv())


def ensure_user() -> pwd.struct_passwd:
    """VDSM's user: ``vdsm``, primary group ``kvm``, no login, home not created."""
    with _locked(os.path.join(cache_dir(), "useradd.lock")):
        try:
            return pwd.getpwnam(USER)
        except KeyError:
            pass
        try:
            grp.getgrnam(GROUP)
        except KeyError:
            _run(["groupadd", "-r", GROUP])
        argv = ["useradd", "-r", "-M", "-g", GROUP, "-d", VDSM_HOME, "-s", "/usr/sbin/nologin",
                "-c", "Node Virtualization Manager (sriov-lab)"]
        if not _uid_taken(VDSM_UID):
            argv += ["-u", str(VDSM_UID)]
        _run(argv + [USER])
        log.info("lab: created user %s (group %s)", USER, GROUP)
        return pwd.getpwnam(USER)


def _uid_taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def cache_dir() -> str:
    path = os.environ.get(ENV_CACHE) or "/var/cache/sriov-lab"
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def ensure_venv() -> str:
    """The python of a venv with this checkout installed, readable by everyone.

    Keyed by a hash of the sources and the interpreter, built once (about
    10 s with pip's wheel cache) and reused by every later lab.
    """
    base = cache_dir()
    with tempfile.TemporaryDirectory(prefix="vdsm-venv-src-") as tmp:
        src = os.path.join(tmp, "src")
        digest = _stage_sources(src)
        venv = os.path.join(base, "vdsm-venv-%s" % digest[:16])
        marker = os.path.join(venv, ".sriov-lab-complete")
        with _locked(os.path.join(base, "vdsm-venv.lock")):
            if not os.path.exists(marker):
                _build_venv(venv, src)
                with open(marker, "w") as f:
                    f.write("%s\n" % digest)
            os.utime(marker)
            _prune(base, keep=venv)
    return os.path.join(venv, "bin", "python3")


def _stage_sources(dest: str) -> str:
    """Copy what ``pip install .`` needs out of the checkout; return its hash.

    A copy, so pip builds nothing inside the checkout and the hash names
    exactly what was installed while others edit the tree.
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    h = hashlib.sha256(_python_version().encode())
    os.makedirs(dest)
    for name in SOURCES:
        path = os.path.join(repo, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(dest, name), ignore=ignore)
        elif os.path.exists(path):
            shutil.copy2(path, dest)
    for root, dirs, files in os.walk(dest):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, dest).encode() + b"\0")
            with open(full, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _python_version() -> str:
    if not os.access(PYTHON, os.X_OK):
        raise LabError("the lab needs %s for the vdsm user (apt-get install python3-venv python3-dev)"
                       % PYTHON)
    return subprocess.run([PYTHON, "-VV"], capture_output=True, text=True, check=True).stdout


def _build_venv(venv: str, src: str) -> None:
    t0 = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)  # a build a killed run left half done
    _run([PYTHON, "-m", "venv", venv])
    _run([os.path.join(venv, "bin", "pip"), "install", "-q", "--no-input", src], cwd=src)
    log.info("lab: built the vdsm user's venv %s in %.1f s", venv, time.monotonic() - t0)


def _prune(base: str, keep: str) -> None:
    """Drop venvs of older sources no lab has used for a day."""
    now = time.time()
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if not name.startswith("vdsm-venv-") or path == keep or not os.path.isdir(path):
            continue
        try:
            used = os.stat(os.path.join(path, ".sriov-lab-complete")).st_mtime
        except OSError:
            used = os.stat(path).st_mtime
        if now - used > KEEP_VENVS_SECONDS:
            shutil.rmtree(path, ignore_errors=True)


class _locked:
    """An exclusive flock on *path*: labs started side by side build once."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _run(argv: list, cwd: Optional[str] = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise LabError("%s failed (rc %d): %s" % (" ".join(argv[:3]), proc.returncode, tail))


def python_for(user: Optional[LabUser]) -> str:
    """The interpreter hooks and services of a lab with *user* run on."""
    return user.python if user else sys.executable
