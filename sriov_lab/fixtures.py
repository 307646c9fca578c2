"""pytest fixtures that give tests running lab hosts.

Import them in a conftest (``from sriov_lab.fixtures import *``-style, by
name). The hosts are session-scoped: they start once (about 0.2 s with a
warm QEMU capabilities cache, ~8-16 s cold) and are stopped, with every
QEMU they ran, when the session ends, whether tests passed or not. Each
test's VMs come from :func:`lab_vms`, which destroys them after the test,
and :func:`lab_vdsm` gives a test one VDSM stand-in per host.

Tests are skipped, with the reason, only where the machine cannot run a
lab at all: not root, or no ``unshare``/``libvirtd``/QEMU, or mount
namespaces refused.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import uuid

import pytest

from sriov_host import config, libvirtconn

from . import domains, vdsm_user
from .guest import ensure_guest
from .hosts import LIBVIRTD
from .lab import Lab
from .procs import is_alive
from .services import LabStandIns
from .vdsm.hooks import HookRunner

QEMU = "/usr/bin/qemu-system-x86_64"


def lab_unavailable_reason():
    """Why this machine cannot run lab hosts, or None if it can."""
    if os.geteuid() != 0:
        return "the lab needs root (libvirtd as root in its own mount namespace)"
    for tool in ("unshare", LIBVIRTD, QEMU):
        if shutil.which(tool) is None:
            return "the lab needs %s (apt-get install libvirt-daemon-system qemu-system-x86)" % tool
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return "mount namespaces are refused here: %s" % probe.stderr.strip()
    return None


def _sigterm_as_interrupt():
    """Let a SIGTERM (CI stopping the run) still reach the fixtures' teardown."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(_sig, _frame):
        raise KeyboardInterrupt("SIGTERM")

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="session")
def lab_guest():
    """The cached guest image (built on first use, ~5 s)."""
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return ensure_guest()


@pytest.fixture(scope="session")
def lab():
    """Two running lab hosts; all stopped and checked gone at session end."""
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    _sigterm_as_interrupt()
    the_lab = Lab(2).start()
    pids = [h.pid for h in the_lab.hosts]
    try:
        yield the_lab
    finally:
        qemu = [p for h in the_lab.hosts for p in h.qemu_pids()]
        the_lab.stop()
        left = [p for p in pids + qemu if is_alive(p)]
        assert not left, "lab processes still running after stop: %s" % left


@pytest.fixture(scope="session")
def lab_hosts(lab):
    return tuple(lab.hosts)


@pytest.fixture(scope="session")
def lab_conns(lab):
    """One libvirt connection per host, opened as the product opens them."""
    conns = [libvirtconn.open_connection(config.load(h.config_path), use_vdsm=False)
             for h in lab.hosts]
    yield tuple(conns)
    for c in conns:
        try:
            c.close()
        except Exception:  # the daemon may already be gone; nothing to free
            pass


class LabVms:
    """Starts lab VMs for one test and destroys them (on every host) after."""

    def __init__(self, hosts, conns, guest):
        self.hosts, self.conns, self.guest = hosts, conns, guest
        self.uuids = []

    def start(self, host_index: int = 0, with_os: bool = True, **kw):
        """Start a VM on host *host_index*; returns ``(spec, dom)``."""
        kw.setdefault("name", "vm-%s" % uuid.uuid4().hex[:8])
        kw.setdefault("guest", self.guest if with_os else None)
        spec = domains.DomainSpec(**kw)
        self.uuids.append(spec.uuid)
        return spec, domains.start(self.conns[host_index], spec)

    def vnic(self, host_index: int = 0, n: int = 0, **kw) -> domains.VnicSpec:
        """A VnicSpec on the n-th VF of a host's inventory."""
        host = self.hosts[host_index]
        pf = host.extra["layout"][n % len(host.extra["layout"])]
        kw.setdefault("mac", "52:54:00:%02x:%02x:%02x" % (host_index, n, len(self.uuids)))
        return domains.VnicSpec(vf_address=host.vf_addresses()[n], pf=pf.name, **kw)

    def cleanup(self):
        for conn in self.conns:
            for vm in self.uuids:
                try:
                    conn.lookupByUUIDString(vm).destroy()
                except Exception:  # not on this host (or already gone)
                    pass


@pytest.fixture
def lab_vms(lab_hosts, lab_conns, lab_guest):
    vms = LabVms(lab_hosts, lab_conns, lab_guest)
    yield vms
    vms.cleanup()


def hook_runners(lab, tmp_path) -> tuple:
    """One HookRunner per host of *lab* over an empty hooks dir in *tmp_path*.

    The scripts run as the lab's user (vdsm, as VDSM runs them), which
    owns *tmp_path*: tests' own hooks record there what they saw.
    """
    if lab.user:
        vdsm_user.reach(str(tmp_path))
        lab.user.give(str(tmp_path), 0o755)
    runners = []
    for h in lab.hosts:
        d = tmp_path / ("hooks-" + h.name)
        d.mkdir()
        runners.append(HookRunner(str(d), env=h.hook_env(), host=h.name, user=lab.user))
    return tuple(runners)


@pytest.fixture
def lab_hook_runners(lab, tmp_path):
    """One HookRunner per host over its own empty hooks dir (tests add scripts)."""
    return hook_runners(lab, tmp_path)


@pytest.fixture
def lab_vdsm(lab, lab_hook_runners):
    """One VDSM stand-in per host, over ``lab_hook_runners`` (tests add the hooks they need).

    Stopped after the test; a test sets ``lab_vdsm[i].before_migrate`` to act
    just before the libvirt migration.
    """
    with LabStandIns(lab, runners=lab_hook_runners) as standins:
        yield standins


__all__ = ["lab_guest", "lab", "lab_hosts", "lab_conns", "lab_vms", "lab_hook_runners",
           "lab_vdsm", "lab_unavailable_reason", "LabVms"]
