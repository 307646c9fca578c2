"""The faults of the matrix: what is killed or cut, and how it comes back.

Each fault hits one lab host (the migration's source or destination) and
brings back what it killed as systemd would (``Restart=always``, the
default 100 ms ``RestartSec``): ``sriov-migrationd`` and libvirtd as new
processes; the VDSM stand-in, which runs inside the lab's own process,
as a fresh stand-in on the same address that recovers its running VMs
from libvirt, as VDSM does (``clientIF._recoverExistingVms``). When
libvirtd dies VDSM's connection SIGTERMs VDSM itself
(``libvirtconnection``), so a libvirtd kill restarts the stand-in too.

The hold itself (:class:`Hold`) is the lab's side of
:mod:`sriov_host.faultpoint`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from typing import Optional

from . import hosts as hostmod
from . import netns
from .vdsm.api import VdsmStandIn
from .vdsm.hooks import HookRunner, ScriptRun

RESTART_SEC = 0.1  # systemd's default RestartSec

KILL_SRC_SERVICE = "kill -9 src sriov-migrationd"
KILL_DST_SERVICE = "kill -9 dst sriov-migrationd"
KILL_SRC_VDSM = "kill src VDSM"
KILL_DST_VDSM = "kill dst VDSM"
KILL_SRC_LIBVIRTD = "kill -9 src libvirtd"
KILL_DST_LIBVIRTD = "kill -9 dst libvirtd"
KILL_HOOK = "kill -9 hook"
DST_UNREACHABLE = "dst unreachable > TTL"
FAULTS = (KILL_SRC_SERVICE, KILL_DST_SERVICE, KILL_SRC_VDSM, KILL_DST_VDSM, KILL_SRC_LIBVIRTD,
          KILL_DST_LIBVIRTD, KILL_HOOK, DST_UNREACHABLE)


class Hold:
    """Arm a step in the fault file; wait for a process to reach it; release it."""

    def __init__(self, path: str, user=None):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if user is not None:  # the services and hooks run as vdsm: they write FILE.reached
            user.give(os.path.dirname(path), 0o755)

    def arm(self, step: str) -> None:
        self.release()
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"lab": True, "step": step}, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)

    def wait_reached(self, timeout: float) -> Optional[int]:
        """The PID holding at the armed step, or None if none got there in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.path + ".reached", encoding="utf-8") as f:
                    return int(json.load(f)["pid"])
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        return None

    def release(self) -> None:
        for path in (self.path, self.path + ".reached"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class KillingHookRunner(HookRunner):
    """A hook runner whose scripts at an armed point are killed (SIGKILL) while they run."""

    def __init__(self, runner: HookRunner):
        super().__init__(runner.hooks_dir, env=runner.env, host=runner.host,
                         timeout=runner.timeout, user=runner.user)
        self.kill_point: Optional[str] = None
        self.killed = threading.Event()
        self._point: Optional[str] = None

    def run(self, point, domxml, vm_id, custom=None):
        self._point = point
        return super().run(point, domxml, vm_id, custom)

    def _run_script(self, script: str, env: dict) -> ScriptRun:
        if self._point != self.kill_point or self.killed.is_set():
            return super()._run_script(script, env)
        start = time.monotonic()
        argv = self.user.hook_argv([script]) if self.user else [script]
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(0.1)  # in the middle of its work: its interpreter is up, its imports under way
        proc.kill()
        _out, err = proc.communicate()
        self.killed.set()
        lines = err.decode("utf-8", errors="replace").splitlines() + ["lab: killed (SIGKILL)"]
        return ScriptRun(script, proc.returncode, lines, start, time.monotonic())


class Injector:
    """Apply one fault to the lab's hosts; :meth:`settle` waits for every restart to finish."""

    def __init__(self, lab, services, standins, ttl: float):
        self.lab, self.services, self.standins, self.ttl = lab, services, standins, ttl
        self._threads: list = []

    def apply(self, fault: str, src: int, dst: int) -> None:
        actions = {
            KILL_SRC_SERVICE: lambda: self._kill_service(src),
            KILL_DST_SERVICE: lambda: self._kill_service(dst),
            KILL_SRC_VDSM: lambda: self.restart_standin(src),
            KILL_DST_VDSM: lambda: self.restart_standin(dst),
            KILL_SRC_LIBVIRTD: lambda: self._kill_libvirtd(src),
            KILL_DST_LIBVIRTD: lambda: self._kill_libvirtd(dst),
            DST_UNREACHABLE: lambda: self._cut(dst),
        }
        actions[fault]()

    def settle(self, timeout: float = 120.0) -> None:
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def _background(self, target) -> None:
        t = threading.Thread(target=target, name="lab-restart", daemon=True)
        t.start()
        self._threads.append(t)

    def _kill_service(self, index: int) -> None:
        proc = self.services.services[index].proc
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        def restart():
            time.sleep(RESTART_SEC)
            self.services.restart(index)

        self._background(restart)

    def restart_standin(self, index: int) -> None:
        """VDSM killed: its books are gone; a new one recovers from libvirt."""
        old = self.standins.standins[index]
        old.stop(wait=False)
        time.sleep(RESTART_SEC)
        new = VdsmStandIn(old.name, old.cfg, old.hooks, address=old.address, port=old.port,
                          peers=self.standins.peers)
        new.hotunplug_timeout = old.hotunplug_timeout
        # in the host's network namespace, as LabStandIns starts it (its address lives there)
        self.standins.standins[index] = netns.call_in(self.lab.hosts[index].extra.get("netns"), new.start)

    def _kill_libvirtd(self, index: int) -> None:
        host = self.lab.hosts[index]
        os.kill(host.pid, signal.SIGKILL)
        host.proc.wait()

        def restart():
            time.sleep(RESTART_SEC)
            hostmod.launch(host)
            hostmod.wait_ready(host)
            self.restart_standin(index)  # VDSM went down with its libvirt connection

        self._background(restart)

    def _cut(self, index: int) -> None:
        """The destination cut off the network for longer than the reservation TTL.

        Inside its network namespace every packet from outside is dropped,
        replies on open connections too, as behind a dropped route: its
        sriov-migrationd and VDSM run on and nothing reaches them (libvirt's
        own traffic, outside the namespaces, is not cut). Then its firewall
        is set again. Without namespaces (SRIOV_LAB_NETNS=0) its
        sriov-migrationd is stopped (SIGSTOP) instead, then SIGCONT.
        """
        proc = self.services.services[index].proc
        if self.lab.network is None:
            os.kill(proc.pid, signal.SIGSTOP)
        else:
            self.lab.cut_off(index)

        def resume():
            time.sleep(self.ttl + 2.0)
            if self.lab.network is None:
                os.kill(proc.pid, signal.SIGCONT)
            else:
                self.lab.set_firewall(self.lab.project_firewall, [index])

        self._background(resume)
