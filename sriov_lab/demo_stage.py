"""The demo's stage: one scenario's lab hosts, VM and clients, and the small views of them the checks read.

Part of ``sriov-lab demo`` (:mod:`sriov_lab.demo`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from lxml import etree

from sriov_host import config, domxml, hostinventory, inventory, metadata
from sriov_host.ledger import Ledger

from . import datapath, domains
from . import demo_report as report
from .errors import LabError
from .lab import Lab
from .services import LabServices, LabStandIns

SCENARIOS = ("success", "rollback", "unplug-timeout", "no-free-vf", "plain-vdsm-migrate")
TIMEOUTS = {"rollback_grace": 5, "reconcile_interval": 0.5, "unplug": 3, "plug": 3}
# Real VFs in L1, their guest in nested TCG: an unplug takes seconds, the
# guest minutes to boot.
REAL_VF_TIMEOUTS = {"rollback_grace": 60, "reconcile_interval": 1, "unplug": 45, "plug": 45}
REAL_VF_WAITS = {"boot": 600, "nics": 300, "migrate": 900}
WAITS = {"boot": 60, "nics": 30, "migrate": 120}
GUEST_CRASH_MARKS = ("Kernel panic - not syncing", "kernel BUG at", "general protection fault")
SETTLE_S = 3.0  # traffic is followed this long after the guest shows its NICs again
# Epoch seconds (the service's step times) to this process's monotonic clock.
_EPOCH_TO_MONO = time.monotonic() - time.time()


@dataclass
class Stage:
    """One scenario's running lab, services, VDSM stand-ins and connections."""

    lab: Lab
    services: LabServices
    vdsm: LabStandIns
    conns: list
    guest: object
    workdir: str
    real_vf: bool = False
    raw_baseline: bool = False
    checks: list = field(default_factory=list)
    vm: Optional[domains.DomainSpec] = None  # the scenario's VM, for a post-mortem

    @property
    def waits(self) -> dict:
        return REAL_VF_WAITS if self.real_vf else WAITS

    def check(self, ok: bool, what: str) -> bool:
        self.checks.append((bool(ok), what))
        report.check(bool(ok), what)
        return bool(ok)

    @property
    def names(self):
        return [h.name for h in self.lab.hosts]


def _host_vfs(st: Stage, index: int) -> list:
    """The host's own VFs, in inventory order (real ones: its PF's, from libvirt)."""
    host = st.lab.hosts[index]
    if not st.real_vf:
        by_address = inventory.load_nodedev_file(host.extra["inventory"]).by_address()
        return [by_address[a] for a in host.vf_addresses()]
    inv = hostinventory.load(config.load(host.config_path), st.conns[index])
    return [vf for vf in inv.vfs if vf.pf == host.extra["real_pf"]]


def _vnics(st: Stage) -> tuple:
    """Two vNICs on the host's first VFs: one with VLAN 100, one in a failover pair."""
    inv = {vf.address: vf for vf in _host_vfs(st, 0)}
    addrs = list(inv)[:2]
    return (
        domains.VnicSpec(mac="52:54:00:5a:00:01", vf_address=addrs[0], pf=inv[addrs[0]].pf, vlan=100),
        domains.VnicSpec(mac="52:54:00:5a:00:02", vf_address=addrs[1], pf=inv[addrs[1]].pf,
                         failover_alias="ua-%s" % uuid.uuid4()),
    )


def _start_vm(st: Stage, with_os: bool = True):
    vnics = _vnics(st)
    wired = st.lab.datapath is not None  # on the lab's wire; see _measured
    spec = domains.DomainSpec(name="demo-%s" % uuid.uuid4().hex[:6], vnics=vnics,
                              guest=st.guest if with_os else None, persistent_teaming=True,
                              vf_mode=domxml.MODE_HOSTDEV if st.real_vf else domxml.MODE_EMULATED,
                              # QEMU: "failover primary device must be on PCIExpress bus"
                              machine="q35" if st.real_vf else "pc",
                              bridge=st.lab.hosts[0].extra.get("bridge"),
                              guest_ip=(_measured(st, vnics).mac,
                                        "%s/%d" % (datapath.guest_ip(), datapath.PREFIX))
                              if wired else None)
    st.vm = spec
    domains.start(st.conns[0], spec)
    report.step("started VM %s (%s) on %s with vNICs %s", spec.name, spec.uuid,
                st.names[0], ", ".join(report.vnic_label(v) for v in spec.vnics))
    return spec


def _macs(spec) -> set:
    return {v.mac for v in spec.vnics}


def _guest_view(st: Stage, host_index: int, spec, after: int = -1, timeout: Optional[float] = None):
    """Wait until the guest's own NIC list shows every vNIC MAC; return that tick."""
    timeout = timeout or st.waits["nics"]
    def until(_ready, ticks):
        seen = [t for t in ticks if t.counter > after and _macs(spec) <= set(t.nics.values())]
        return seen[-1] if seen else None

    host = st.lab.hosts[host_index]
    report.step("waiting for the guest on %s to list its NICs on its serial console ...", host.name)
    try:
        tick = domains.wait_serial(host, spec.name, until, timeout, "the vNICs in the guest")
    except LabError as e:
        raise LabError("%s\n%s" % (e, domains.post_mortem(st.conns[host_index], host, spec.name))) from e
    report.step("guest on %s sees its NICs: %s", host.name, report.nics(tick.nics))
    return tick


def _client(st: Stage, index: int, method: str, params: dict):
    """Run ``sriov-client`` as an admin would; return (rc, parsed JSON or text, ms)."""
    path = os.path.join(st.workdir, "params-%s.json" % uuid.uuid4().hex[:6])
    with open(path, "w") as f:
        json.dump(params, f)
    argv = [sys.executable, "-m", "jsonrpc_plugin.client", *st.services.client_args(index),
            "-f", path, "SRIOV", method]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    ms = (time.monotonic() - t0) * 1000
    out = proc.stdout.strip() or proc.stderr.strip()
    try:
        return proc.returncode, json.loads(out), ms
    except ValueError:
        return proc.returncode, out, ms


def _sriov_migrate(st: Stage, spec):
    """``sriov-client -a A SRIOV migrate vmID=... dst=B port=...``, its progress shown live."""
    dst = st.services.services[1]
    argv = [sys.executable, "-m", "jsonrpc_plugin.client", *st.services.client_args(0), "SRIOV",
            "migrate", "vmID=%s" % spec.uuid, "dst=%s" % dst.host.address, "port=%d" % dst.port,
            "timeout=%d" % st.waits["migrate"]]
    report.step("sriov-client -a %s SRIOV migrate vmID=%s dst=%s port=%d",
                st.lab.hosts[0].address, spec.uuid, dst.host.address, dst.port)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        report.step("  | %s", line.rstrip())
    out = proc.stdout.read()
    proc.wait(timeout=60)
    try:
        job = json.loads(out)
    except ValueError:
        job = None
    return proc.returncode, job


def _live(st: Stage, host_index: int, spec):
    dom = st.conns[host_index].lookupByUUIDString(spec.uuid)
    root = etree.fromstring(dom.XMLDesc(0).encode())
    aliases = {a.get("name") for a in root.iterfind("devices/interface/alias")}
    return aliases, metadata.read_record(root)


def _guest_slots(st: Stage, host_index: int, spec) -> dict:
    """Each SR-IOV vNIC's guest PCI slot, by MAC (the guest names its NICs by slot)."""
    dom = st.conns[host_index].lookupByUUIDString(spec.uuid)
    root = etree.fromstring(dom.XMLDesc(0).encode())
    out = {}
    for iface in root.iterfind("devices/interface"):
        mac, addr = iface.find("mac"), iface.find("address")
        if mac is not None and addr is not None and mac.get("address") in _macs(spec):
            out[mac.get("address")] = (addr.get("bus"), addr.get("slot"))
    return out


def _ledger_claims(host, vm_id=None):
    with Ledger(config.load(host.config_path).ledger_path) as ledger:
        return ledger.claims(vm_id=vm_id)


def _steps(job) -> dict:
    """The job's steps by name, in this process's monotonic seconds: (start, end, ok)."""
    return {s["step"]: (s["start"] + _EPOCH_TO_MONO,
                        s["start"] + _EPOCH_TO_MONO + (s["ms"] or 0) / 1000.0, s["ok"])
            for s in (job or {}).get("steps", [])}


def _measured(st: Stage, vnics):
    """The vNIC the traffic goes to: the plain one (emulated), the failover pair (real VFs).

    Only real VFs make a failover pair in the guest (libvirt takes
    ``<teaming>`` on hostdev interfaces only); the plain real VF carries
    VLAN 100, which the lab's switch does not tag.
    """
    return vnics[1] if st.real_vf else vnics[0]
