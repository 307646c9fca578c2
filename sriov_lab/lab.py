"""A running lab: N hosts started together and stopped together.

:class:`Lab` is a context manager so a test session, the CLI and the
demo all stop what they started, on an exception or Ctrl-C too.

Host i gets its own address, so "which host" is an address, as on a
cluster: by default a link-local one in the host's own network namespace,
behind a firewall that lets in what an engine-deployed oVirt host's
firewalld does (:mod:`sriov_lab.netns`, :mod:`sriov_lab.firewall`); its
``sriov-migrationd`` and its VDSM stand-in listen there on their real
ports (54325, 54321). In the real-VF lab (inside L1) host i is
``127.0.0.(11+i)`` on those real ports, behind the same firewall keyed on
its address (:func:`sriov_lab.netns.set_shared_firewall`). With
``SRIOV_LAB_NETNS=0`` host i is ``127.0.0.(11+i)`` with nothing in
between, and all hosts' stand-ins share one free port.
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
import tempfile
import time
from typing import Optional

from sriov_host.config import Config

from . import datapath, firewall, inventory, netns, procs, vdsm_user
from . import hosts as hostmod
from .errors import LabError
from .paths import caps_cache_dir, runtime_base

log = logging.getLogger(__name__)

HOST_NAMES = "abcdefghij"
ADDRESS_BASE = 11  # host i is 127.0.0.(11+i): one address per host, as on a real cluster
VDSM_PORT = 54321  # VDSM's management_port (lib/vdsm/common/config.py.in)
SERVICE_PORT = Config.port  # sriov-migrationd's default [server] port


def host_address(index: int) -> str:
    return "127.0.0.%d" % (ADDRESS_BASE + index)


def reap_networks(base: str) -> list:
    """Remove the wires and host namespaces that labs killed under *base* left; their directories."""
    removed = []
    for root in glob.glob(os.path.join(base, "lab-*")):
        if procs.owner_alive(root):
            continue  # a running lab (another terminal, a test session)
        if datapath.reap(root) | netns.reap(root):
            removed.append(root)
    return removed


class Lab:
    """Start *count* lab hosts under a fresh directory; stop them on exit."""

    def __init__(self, count: int = 2, base: Optional[str] = None, keep: bool = False,
                 ready_timeout: float = 90.0, real_pfs: Optional[list] = None,
                 wire: Optional[str] = None, strict_network: Optional[bool] = None,
                 project_firewall: bool = True, shared_firewall: bool = False):
        if not 1 <= count <= len(HOST_NAMES):
            raise LabError("a lab has 1..%d hosts, not %d" % (len(HOST_NAMES), count))
        self.count = count
        self.base = base or runtime_base()
        self.keep = keep
        self.ready_timeout = ready_timeout
        self.real_pfs = real_pfs  # the real-VF lab: host i owns real PF real_pfs[i]
        self.wire = wire  # the real-VF lab: L1's NIC on the PFs' hub, a port of the lab's switch
        # one namespace and firewall per host (default: unless SRIOV_LAB_NETNS=0); not for real VFs
        self.strict_network = (netns.enabled() if strict_network is None
                               else strict_network) and not real_pfs
        self.project_firewall = project_firewall  # False: the project's firewalld service left out
        # the real-VF lab, in L1: hosts share its namespace, a firewall per host address
        self.shared_firewall = shared_firewall and not self.strict_network
        self.firewall_up = False
        self.network: Optional[netns.Network] = None
        self.root: Optional[str] = None
        self.datapath: Optional[datapath.DataPath] = None  # emulated VFs' wire; see datapath
        self.hosts: list = []
        self.start_seconds: Optional[float] = None
        self.user: Optional[vdsm_user.LabUser] = None  # hooks' and services' user; None: root

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Lab:
        t0 = time.monotonic()
        os.makedirs(self.base, exist_ok=True)
        hostmod.reap_stale(self.base)
        reap_networks(self.base)
        self.root = tempfile.mkdtemp(prefix="lab-", dir=self.base)
        procs.write_owner(self.root)
        try:
            self.user = vdsm_user.lab_user()
            if self.user:
                vdsm_user.reach(self.root)  # its hosts' configs, sockets and ledgers
            lab_id = secrets.token_hex(3)
            if not self.real_pfs or self.wire:
                self.datapath = datapath.create(self.root, lab_id, self.count, wire=self.wire)
            if self.strict_network:
                bridges = [self.datapath.bridge(i) for i in range(self.count)] if self.datapath else None
                self.network = netns.create(self.root, lab_id, self.count,
                                            firewall.rules(self.project_firewall), bridges)
            self._start_hosts()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        log.info("lab: %d host(s) up in %.1f s under %s", self.count, self.start_seconds, self.root)
        return self

    def _start_hosts(self) -> None:
        caps = caps_cache_dir()
        if self.network:  # each host alone in its namespace: the real ports
            addresses = [self.network.address(i) for i in range(self.count)]
            vdsm_port, service_port = VDSM_PORT, SERVICE_PORT
        elif self.shared_firewall:  # L1 holds one lab: the real ports, each on its host's address
            addresses = [host_address(i) for i in range(self.count)]
            vdsm_port, service_port = VDSM_PORT, SERVICE_PORT
            netns.set_shared_firewall(firewall.rules(self.project_firewall), addresses)
            self.firewall_up = True  # iptables-restore writes all of it or nothing
        else:
            addresses = [host_address(i) for i in range(self.count)]
            vdsm_port = inventory.free_port(addresses)  # one VDSM port, each host on its own address
            service_port = None  # a free one per host
        for i in range(self.count):
            name = "host-" + HOST_NAMES[i]
            host = hostmod.prepare_host(name, os.path.join(self.root, name), caps, addresses[i],
                                        sock_group=vdsm_user.GROUP if self.user else "root")
            inventory.write_host_files(host, index=i, vdsm_port=vdsm_port,
                                       real_pf=self.real_pfs[i] if self.real_pfs else None,
                                       bridge=self.datapath.bridge(i) if self.datapath else None,
                                       port=service_port)
            if self.network:
                host.extra["netns"] = self.network.netns(i)
            if self.user:
                vdsm_user.adopt_host(self.user, host)
            self.hosts.append(host)
        rest = self.hosts
        if not hostmod.has_caps_cache(caps):
            # Cold: let one daemon probe QEMU (~8 s), then hand its cache to
            # the others instead of probing N times on the same CPU.
            first, rest = self.hosts[0], self.hosts[1:]
            hostmod.launch(first)
            hostmod.wait_ready(first, self.ready_timeout)
            hostmod.save_caps_cache(first, caps)
            for host in rest:
                hostmod.load_caps_cache(host, caps)
        for host in rest:
            hostmod.launch(host)
        for host in rest:
            hostmod.wait_ready(host, self.ready_timeout)
        hostmod.save_caps_cache(self.hosts[0], caps)

    def stop(self) -> None:
        """Stop every host by PID; remove the directory unless asked to keep it."""
        errors = []
        for host in self.hosts:
            try:
                hostmod.stop(host)
            except Exception as e:  # keep stopping the others
                errors.append("%s: %s" % (host.name, e))
        self.hosts = []
        if self.firewall_up:
            try:
                netns.clear_shared_firewall()
            except LabError as e:
                errors.append(str(e))
            self.firewall_up = False
        if self.network is not None:
            try:
                netns.destroy(self.root, self.network)
            except LabError as e:
                errors.append(str(e))
            self.network = None
        if self.datapath is not None:
            datapath.destroy(self.root, self.datapath)
            self.datapath = None
        if self.root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise LabError("lab: stop failed: %s" % "; ".join(errors))

    def set_firewall(self, project_firewall: bool, hosts: Optional[list] = None) -> None:
        """Rewrite the firewall of *hosts* (indexes; default all) with or without the project's service."""
        allowed = firewall.rules(project_firewall)
        if self.firewall_up and hosts is None:
            netns.set_shared_firewall(allowed, [h.address for h in self.hosts])
            return
        if self.network is None:
            raise LabError("lab: no firewall per host to change (SRIOV_LAB_NETNS=0, or the real-VF "
                           "lab, whose hosts' firewall is set for all of them at once)")
        for i in range(self.count) if hosts is None else hosts:
            netns.set_firewall(self.network.netns(i), allowed)

    def cut_off(self, index: int) -> None:
        """Host *index* takes in nothing from outside until :meth:`set_firewall` restores it."""
        if self.network is None:
            raise LabError("lab: no network to cut (SRIOV_LAB_NETNS=0 or the real-VF lab, "
                           "whose hosts share one)")
        netns.cut_off(self.network.netns(index))

    def __getitem__(self, index: int):
        return self.hosts[index]
