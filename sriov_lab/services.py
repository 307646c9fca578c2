"""Each lab host's ``sriov-migrationd`` (over mutual TLS with a lab CA) and VDSM stand-in.

The services run as real processes (the installed console script's
module), each with its host's config, so hooks and service share one
ledger exactly as on an oVirt host. The lab CA stands in for VDSM's PKI.
Each listens on its host's own loopback address, named in its
certificate. :class:`LabStandIns` runs the hosts' VDSM stand-ins
(:mod:`sriov_lab.vdsm.api`), which ``SRIOV.migrate`` drives.

Each service runs as its systemd unit runs it (:mod:`sriov_lab.vdsm_user`):
the unit's user and group, exactly its capabilities, the installed
package (not the checkout), its key readable by that user only.
"""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from jsonrpc_plugin.client import RpcClient, RpcUnavailable
from sriov_host import config

from . import hosts as hostmod
from . import netns, vdsm_user
from .errors import LabError
from .pki import Issued, TestCa
from .vdsm.api import VdsmStandIn

ADMIN = "lab-admin"


@dataclass
class HostService:
    host: object
    port: int
    proc: subprocess.Popen
    log_path: str

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "\n".join(f.read().splitlines()[-lines:])
        except OSError:
            return "(no log)"


def enable_tls(config_path: str, issued: Issued, ca_path: str, listen: str = "127.0.0.1",
               **timeouts) -> None:
    """Switch a lab host's config to mutual TLS on *listen* (and optional [timeouts])."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config_path)
    parser["server"].update({"tls": "true", "cert": issued.cert, "key": issued.key,
                             "ca": ca_path, "listen": listen})
    for key, value in timeouts.items():
        parser["timeouts"][key] = str(value)
    with open(config_path, "w", encoding="utf-8") as f:
        parser.write(f)


class LabServices:
    """Start one service per lab host; :meth:`stop` ends them all."""

    def __init__(self, lab, workdir: str, ready_timeout: float = 30.0, **timeouts):
        self.lab = lab
        self.workdir = workdir
        self.ready_timeout = ready_timeout
        # unplug and plug must stay below rollback_grace (the config refuses otherwise)
        self.timeouts = timeouts or {"rollback_grace": 2, "reconcile_interval": 0.5, "unplug": 1.5,
                                     "plug": 1.5}
        self.ca: Optional[TestCa] = None
        self.admin: Optional[Issued] = None
        self.services: list = []

    def __enter__(self) -> LabServices:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LabServices:
        self.ca = TestCa(os.path.join(self.workdir, "pki"))
        self.admin = self.ca.issue(ADMIN, sans=(), client=True)
        try:
            for host in self.lab.hosts:
                self.services.append(self._launch(host))
            for svc in self.services:
                self._wait_ready(svc, self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, index: int) -> HostService:
        """Stop host *index*'s service and start it again: it reads its config afresh."""
        old = self.services[index]
        _terminate(old.proc)
        _reap(old.proc)
        self.services[index] = svc = self._launch(old.host)
        self._wait_ready(svc, self.ready_timeout)
        return svc

    def _launch(self, host) -> HostService:
        sans = tuple(dict.fromkeys((host.address, "127.0.0.1", "localhost")))
        issued = self.ca.issue(host.name, sans=sans)
        enable_tls(host.config_path, issued, self.ca.cert_path, host.address, **self.timeouts)
        log_path = os.path.join(self.workdir, "%s-sriov-migrationd.log" % host.name)
        argv, env = self._command(host, issued)
        argv = netns.exec_argv(host.extra.get("netns")) + argv  # in the host's namespace, if any
        with open(log_path, "ab") as log:
            # cwd /: "python -m" must import the installed package, not a checkout in cwd
            proc = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        with open(os.path.join(host.root, hostmod.SERVICE_PIDFILE), "w") as f:  # for sriov-lab down
            f.write("%d\n" % proc.pid)
        return HostService(host, host.extra["service_port"], proc, log_path)

    def _command(self, host, issued: Issued) -> tuple:
        """The service's argv and env: as the unit's user with its capabilities, if the lab has one."""
        user = getattr(self.lab, "user", None)
        argv = [vdsm_user.python_for(user), "-m", "jsonrpc_plugin.service", "-c", host.config_path]
        if user is None:
            return argv, None
        unit = vdsm_user.unit_privileges()
        user.give(issued.key, 0o440)  # VDSM's vdsmkey.pem: vdsm:kvm 0440
        vdsm_user.reach(self.workdir)
        return user.service_argv(argv, unit), user.environ(dict(os.environ, **unit.environment))

    def _wait_ready(self, svc: HostService, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        client = self.client(svc, timeout=2.0)
        while True:
            if svc.proc.poll() is not None:
                raise LabError("sriov-migrationd of %s exited with %s:\n%s"
                               % (svc.host.name, svc.proc.returncode, svc.log_tail()))
            try:  # from inside the host (its firewall may refuse the lab), as systemd would see it
                netns.call_in(svc.host.extra.get("netns"), client.call, "SRIOV.ping")
                return
            except RpcUnavailable:
                if time.monotonic() > deadline:
                    raise LabError("sriov-migrationd of %s did not answer within %.0f s:\n%s"
                                   % (svc.host.name, timeout, svc.log_tail())) from None
                time.sleep(0.1)

    def client(self, which, timeout: float = 10.0) -> RpcClient:
        """An RpcClient with the admin's client certificate, for a host index or service."""
        svc = self.services[which] if isinstance(which, int) else which
        return RpcClient(svc.host.address, svc.port, cert=self.admin.cert, key=self.admin.key,
                         ca=self.ca.cert_path, timeout=timeout)

    def client_args(self, index: int) -> list:
        """``sriov-client`` arguments that reach host *index* over mutual TLS."""
        svc = self.services[index]
        return ["-a", svc.host.address, "-p", str(svc.port), "--cert", self.admin.cert,
                "--key", self.admin.key, "--ca", self.ca.cert_path]

    def stop(self) -> None:
        for svc in self.services:  # all asked first, so they stop side by side
            _terminate(svc.proc)
        for svc in self.services:
            _reap(svc.proc)
        self.services = []


def _terminate(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)


def _reap(proc, timeout: float = 10.0) -> None:
    """Wait for a SIGTERMed service; kill it if it does not go within *timeout*."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def install_hooks(lab, hooks_root: str) -> list:
    """Install the hooks per host with ``sriov-migration-install``; return runners."""
    from .vdsm.hooks import HookRunner

    user = getattr(lab, "user", None)
    runners = []
    for host in lab.hosts:
        hooks_dir = os.path.join(hooks_root, host.name)
        # The hooks' shebang is the installer's python: the one the hooks' user can run.
        proc = subprocess.run([vdsm_user.python_for(user), "-m", "vdsm_hooks.install", "--hooks-dir",
                               hooks_dir, "--hooks-only"], capture_output=True, text=True, cwd="/")
        if proc.returncode != 0:
            raise LabError("sriov-migration-install failed on %s: %s" % (host.name, proc.stderr))
        runners.append(HookRunner(hooks_dir, env=host.hook_env(), host=host.name, user=user))
    if user is not None:
        vdsm_user.reach(hooks_root)
    return runners


class LabStandIns:
    """One :class:`VdsmStandIn` per lab host, on its ``[vdsm]`` address and port.

    *runners* are the hosts' hook runners (default: the project's hooks,
    installed by ``sriov-migration-install`` under *hooks_root*).
    """

    def __init__(self, lab, runners=None, hooks_root: Optional[str] = None):
        self.lab = lab
        self.runners = list(runners) if runners is not None else None
        self.hooks_root = hooks_root
        self.peers: dict = {}
        self.standins: list = []

    def __enter__(self) -> LabStandIns:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LabStandIns:
        if self.runners is None:
            root = self.hooks_root or tempfile.mkdtemp(prefix="hooks-", dir=self.lab.root)
            self.runners = install_hooks(self.lab, root)
        try:
            for host, runner in zip(self.lab.hosts, self.runners):
                cfg = config.load(host.config_path)
                standin = VdsmStandIn(host.name, cfg, runner, address=host.address,
                                      port=cfg.vdsm_port, peers=self.peers)
                # it listens, and its threads run, in the host's namespace (if the lab has them)
                self.standins.append(netns.call_in(host.extra.get("netns"), standin.start))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for standin in self.standins:
            standin.stop()
        self.standins = []

    def __getitem__(self, index: int) -> VdsmStandIn:
        return self.standins[index]

    def client(self, index: int, timeout: float = 30.0):
        """A JSON-RPC client for host *index*'s stand-in, as ``SRIOV.migrate`` reaches it."""
        s = self.standins[index]
        return RpcClient(s.address, s.port, insecure=True, timeout=timeout)
