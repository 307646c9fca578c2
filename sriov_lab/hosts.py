"""Lab hosts: isolated libvirtd instances on one machine.

Each host is a real ``/usr/sbin/libvirtd`` started in its own mount
namespace (``unshare --mount``), with per-host directories bind-mounted
over ``/run``, ``/var/lib/libvirt``, ``/var/cache/libvirt``,
``/var/log/libvirt``, ``/etc/libvirt`` and ``/etc/sasl2``, and its own
random ``host_uuid`` so libvirt agrees to migrate between them. Like an
oVirt host's, its read-write socket wants SASL (:mod:`sriov_lab.sasl`):
the lab's own admin actions connect with :meth:`LabHost.connect`. The
mounts live only in that namespace, so they vanish with the last process
in it: the daemon, and the QEMU processes it spawned. :meth:`LabHost.stop`
therefore ends those by PID (domains first, then the daemon, then any
QEMU left).
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from . import sasl
from .errors import LabError
from .procs import cmdline, is_alive, owner_alive, pid_from_file, terminate

log = logging.getLogger(__name__)

LIBVIRTD = "/usr/sbin/libvirtd"
BIND_TARGETS = {
    "run": "/run",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
    "etc": "/etc/libvirt",
    "sasl2": "/etc/sasl2",  # libvirt's sasl2 config is /etc/sasl2/libvirt.conf: one per host
}
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""
# auth_unix_rw and the rw socket's group and mode as VDSM's
# configurators/libvirt.py sets them (its group is QEMU_PROCESS_GROUP, which
# user vdsm is in; the lab's vdsm is in kvm): SASL still guards the socket.
# auth_unix_ro is left at libvirt's default, as VDSM leaves it (the lab
# never opens read-only).
LIBVIRTD_CONF = """\
host_uuid = "{host_uuid}"
auth_unix_rw = "sasl"
unix_sock_group = "{sock_group}"
unix_sock_rw_perms = "0770"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""
# Mount inside the new namespace, then become libvirtd (same PID). The
# daemon is pinned to CPU 0 because libvirt revalidates its QEMU
# capabilities cache against the CPUID of the CPU it happens to run on;
# on a VM whose vCPUs report different CPUID data a cache saved on one
# CPU is "outdated" on another and every start re-probes for ~8 s.
# libvirt gives each QEMU all online CPUs again, so guests are not pinned.
_WRAPPER = "set -e\n%s\nexec taskset -c 0 %s\n"


@dataclass
class LabHost:
    """One running lab host. ``uri`` is what clients connect to."""

    name: str
    root: str
    host_uuid: str
    address: str = "127.0.0.1"  # this host's own loopback address (its services bind here)
    proc: Optional[subprocess.Popen] = None
    extra: dict = field(default_factory=dict)

    @property
    def socket(self) -> str:
        return os.path.join(self.root, "run", "libvirt", "libvirt-sock")

    @property
    def uri(self) -> str:
        return "qemu+unix:///system?socket=%s" % self.socket

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def password_file(self) -> str:
        """The host's SASL password for ``vdsm@ovirt`` (VDSM's ``libvirt_password``)."""
        return sasl.password_path(self.root)

    @property
    def auth_file(self) -> str:
        """libvirt's client auth file for this host: ``LIBVIRT_AUTH_FILE=... virsh -c URI``."""
        return sasl.auth_file_path(self.root)

    def connect(self):
        """A root admin connection with the host's SASL credentials (the lab's own actions)."""
        return sasl.open_admin(self.uri, self.root)

    @property
    def log_path(self) -> str:
        return os.path.join(self.root, "log", "libvirtd.log")

    @property
    def config_path(self) -> Optional[str]:
        """The host's sriov-migration.conf (see :mod:`sriov_lab.inventory`)."""
        return self.extra.get("config")

    def hook_env(self) -> dict:
        """What this host's hooks and service need to find its config."""
        return {"SRIOV_MIGRATION_CONF": self.config_path} if self.config_path else {}

    def vf_addresses(self) -> list:
        """This host's VF addresses, in inventory order."""
        return [str(vf) for pf in self.extra.get("layout", ()) for vf in pf.vfs]

    def outside_path(self, inside: str) -> str:
        """Map a path as the daemon sees it to where it is on this machine."""
        for sub, target in BIND_TARGETS.items():
            if inside == target or inside.startswith(target + "/"):
                return os.path.join(self.root, sub) + inside[len(target):]
        return inside

    def qemu_log(self, vm_name: str) -> str:
        return os.path.join(self.root, "log", "qemu", "%s.log" % vm_name)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the daemon's logs, for an error message."""
        out = []
        for path in (self.log_path, os.path.join(self.root, "stderr.log")):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    tail = f.read().splitlines()[-lines:]
            except OSError:
                continue
            out.append("--- %s\n%s" % (path, "\n".join(tail)))
        return "\n".join(out) or "(no log)"

    def qemu_pids(self) -> list:
        """PIDs of this host's QEMU processes, from libvirt's pid files."""
        pids = set()
        for path in glob.glob(os.path.join(self.root, "run", "libvirt", "qemu", "*.pid")):
            if os.path.basename(path) == "driver.pid":  # the daemon's own lock
                continue
            pid = pid_from_file(path)
            if pid is not None:
                pids.add(pid)
        return sorted(p for p in pids if is_alive(p) and "qemu" in cmdline(p))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def prepare_host(name: str, root: str, caps_cache: Optional[str] = None,
                 address: str = "127.0.0.1", sock_group: str = "root") -> LabHost:
    """Lay out a host's directories and config; start nothing.

    *sock_group* may connect to the daemon's read-write socket (and then
    authenticate with SASL).
    """
    host = LabHost(name=name, root=root, host_uuid=str(uuid.uuid4()), address=address)
    for sub in BIND_TARGETS:
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    etc = os.path.join(root, "etc")
    shutil.rmtree(etc)
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    for path in glob.glob(os.path.join(etc, "qemu", "networks", "autostart", "*")):
        os.unlink(path)
    with open(os.path.join(etc, "libvirtd.conf"), "w") as f:
        f.write(LIBVIRTD_CONF.format(host_uuid=host.host_uuid, sock_group=sock_group))
    with open(os.path.join(etc, "qemu.conf"), "w") as f:
        f.write(QEMU_CONF)
    sasl.configure(root)
    os.makedirs(os.path.join(root, "cache", "qemu"), exist_ok=True)
    os.makedirs(os.path.join(root, "log", "qemu"), exist_ok=True)
    if caps_cache:
        load_caps_cache(host, caps_cache)
    return host


def has_caps_cache(caps_cache: str) -> bool:
    return os.path.isdir(caps_cache) and bool(os.listdir(caps_cache))


def load_caps_cache(host: LabHost, caps_cache: str) -> None:
    """Seed the host's QEMU capabilities cache (libvirt revalidates it)."""
    if has_caps_cache(caps_cache):
        shutil.copytree(caps_cache, _caps_dir(host), dirs_exist_ok=True)


def _caps_dir(host: LabHost) -> str:
    return os.path.join(host.root, "cache", "qemu", "capabilities")


def _wrapper_script(root: str) -> str:
    mounts = "\n".join(
        "mount --bind %s %s" % (os.path.join(root, sub), target)
        for sub, target in BIND_TARGETS.items()
    )
    return _WRAPPER % (mounts, LIBVIRTD)


def launch(host: LabHost) -> LabHost:
    """Start the host's libvirtd in a private mount namespace."""
    script = _wrapper_script(host.root)
    stderr = open(os.path.join(host.root, "stderr.log"), "ab")
    try:
        host.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
            start_new_session=True, close_fds=True,
        )
    finally:
        stderr.close()
    _write_pidfile(host)
    log.info("lab host %s: libvirtd pid %s, uuid %s", host.name, host.pid, host.host_uuid)
    return host


def _write_pidfile(host: LabHost) -> None:
    with open(os.path.join(host.root, "libvirtd.lab.pid"), "w") as f:
        f.write("%d\n" % host.pid)


def wait_ready(host: LabHost, timeout: float = 60.0) -> None:
    """Wait until the daemon answers on its socket; show its log if it died."""
    import libvirt

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not host.alive():
            raise LabError("lab host %s: libvirtd exited with rc %s\n%s"
                           % (host.name, host.proc.returncode if host.proc else None,
                              host.log_tail()))
        if os.path.exists(host.socket):
            try:
                conn = host.connect()
            except libvirt.libvirtError as e:
                last = e
            else:
                try:
                    conn.getCapabilities()  # answers once the QEMU driver is up
                    return
                finally:
                    conn.close()
        time.sleep(0.05)
    raise LabError("lab host %s: libvirtd did not answer within %.0f s (%s)\n%s"
                   % (host.name, timeout, last, host.log_tail()))


def save_caps_cache(host: LabHost, caps_cache: str) -> None:
    """Keep QEMU's probed capabilities so the next start skips the probe."""
    src = _caps_dir(host)
    if os.path.isdir(src) and os.listdir(src):
        os.makedirs(caps_cache, exist_ok=True)
        shutil.copytree(src, caps_cache, dirs_exist_ok=True)


def destroy_domains(host: LabHost) -> None:
    """Destroy every running domain so no QEMU outlives its daemon."""
    import libvirt

    try:
        conn = host.connect()
    except (libvirt.libvirtError, OSError):
        return
    try:
        for dom in conn.listAllDomains():
            try:
                persistent = dom.isPersistent()
                if dom.isActive():
                    dom.destroy()
                if persistent:
                    dom.undefine()
            except libvirt.libvirtError as e:
                log.warning("lab host %s: cannot destroy %s: %s", host.name, dom.name(), e)
    finally:
        conn.close()


def stop(host: LabHost, timeout: float = 10.0) -> None:
    """Stop everything this host started, by PID. Safe to call twice."""
    if host.alive():
        destroy_domains(host)
    qemu = host.qemu_pids()
    if host.proc is not None:
        terminate(host.proc.pid, timeout)
        host.proc.wait()
    for pid in qemu + host.qemu_pids():
        terminate(pid, timeout)
    try:
        os.unlink(os.path.join(host.root, "libvirtd.lab.pid"))
    except FileNotFoundError:
        pass


def reap_stale(base: str) -> list:
    """Stop daemons a killed earlier run left under *base* (by pid file).

    Only a PID whose command line is libvirtd is touched, so a recycled
    PID of an unrelated process is left alone.
    """
    stopped = []
    for pidfile in glob.glob(os.path.join(base, "*", "*", "libvirtd.lab.pid")):
        root = os.path.dirname(pidfile)
        if owner_alive(os.path.dirname(root)):
            continue  # another live lab (a second terminal, a test run)
        host = LabHost(name=os.path.basename(root), root=root, host_uuid="")
        pid = pid_from_file(pidfile)
        qemu = host.qemu_pids()
        if pid is not None and cmdline(pid).startswith(LIBVIRTD):
            terminate(pid, 5.0)
            stopped.append(pid)
        for q in qemu:
            if "qemu" in cmdline(q):
                terminate(q, 5.0)
                stopped.append(q)
        os.unlink(pidfile)
    return stopped + _reap_services(base)


SERVICE_PIDFILE = "sriov-migrationd.lab.pid"  # written by services.LabServices, beside libvirtd's


def _reap_services(base: str) -> list:
    """Stop the sriov-migrationd a killed lab left (its pid file, if the PID is still that service)."""
    stopped = []
    for pidfile in glob.glob(os.path.join(base, "*", "*", SERVICE_PIDFILE)):
        if owner_alive(os.path.dirname(os.path.dirname(pidfile))):
            continue
        pid = pid_from_file(pidfile)
        if pid is not None and "jsonrpc_plugin.service" in cmdline(pid):
            terminate(pid, 5.0)
            stopped.append(pid)
        os.unlink(pidfile)
    return stopped
