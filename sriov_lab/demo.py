"""``sriov-lab demo``: a real SR-IOV live migration and its failure modes, timed.

Each scenario gets a fresh pair of lab hosts, each with its hooks
installed by ``sriov-migration-install``, its own ``sriov-migrationd``
over mutual TLS, and the lab's VDSM stand-in (VDSM's real order and
refusals; VDSM itself cannot run here). A VM with two SR-IOV vNICs (one
VLAN-tagged, one in a failover pair) is migrated the way an admin does at
VDSM level: ``sriov-client -a SRC SRIOV migrate vmID=... dst=DST``, which
reserves on the destination, unplugs, asks VDSM to migrate and waits for
the plug. ``plain-vdsm-migrate`` shows what a plain ``vdsm-client VM
migrate`` gets: the source hook refuses it, nothing unplugged. VFs are
emulated (there is no SR-IOV hardware here); everything else is the
production path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from lxml import etree

from sriov_host import config, domxml, hostinventory, inventory, libvirtconn, metadata, netlink
from sriov_host.ledger import Ledger
from sriov_host.vfsettings import VfSettings

from . import datapath, domains, realvf_checks, traffic
from . import demo_report as report
from . import inventory as lab_inventory
from .errors import LabError
from .guest import ensure_guest, parse_serial
from .lab import Lab
from .realvf import REAL_VF_SCENARIOS
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


def _pf_view(st: Stage, index: int, address: str) -> tuple:
    """What host *index*'s PF shows, through netlink, for the real VF at *address*."""
    vf = {v.address: v for v in _host_vfs(st, index)}[address]
    return vf, tuple(netlink.vf_settings(vf.pf, vf.index) or (None, None))


def _check_pf_carries(st: Stage, index: int, pairs, when: str) -> None:
    """Real VFs: each vNIC's MAC and VLAN are on its VF, as the PF shows it."""
    for vnic, address in pairs:
        vf, (mac, vlan) = _pf_view(st, index, address)
        st.check((mac, vlan) == (vnic.mac, vnic.vlan), "%s: %s shows vf %d with %s vlan %s %s "
                 "(netlink)" % (st.names[index], vf.pf, vf.index, mac, vlan, when))


def _check_pf_reset(st: Stage, index: int, pairs, when: str) -> None:
    for vnic, address in pairs:
        vf, (mac, vlan) = _pf_view(st, index, address)
        st.check(mac != vnic.mac and vlan is None, "%s: %s shows vf %d reset (%s, no VLAN) %s "
                 "(netlink)" % (st.names[index], vf.pf, vf.index, mac, when))


CARRIED = ("spoofchk", "trust", "max_tx_rate")


def _set_vf_settings(st: Stage, vnic) -> dict:
    """Real VFs: give the source VF of *vnic* non-default settings, as an admin might; what it holds."""
    vf, _ = _pf_view(st, 0, vnic.vf_address)
    refused = netlink.apply_vf_settings(vf.pf, vf.index, [("spoofchk", False), ("trust", True),
                                                          ("rate", (0, 300))])
    held = dict((netlink.read_vf_settings(vf.pf, vf.index) or VfSettings()).items())
    report.step("%s: set %s vf %d spoofchk off, trust on, max_tx_rate 300: the PF holds %s%s",
                st.names[0], vf.pf, vf.index, ", ".join("%s=%s" % (n, held.get(n)) for n in CARRIED),
                "; refused: %s" % refused if refused else "")
    return {n: held.get(n) for n in CARRIED}


def _check_settings(st: Stage, index: int, address: str, wanted: dict, when: str) -> None:
    vf, _ = _pf_view(st, index, address)
    seen = dict((netlink.read_vf_settings(vf.pf, vf.index) or VfSettings()).items())
    got = {n: seen.get(n) for n in CARRIED}
    st.check(got == wanted, "%s: %s vf %d holds the source VF's settings %s (netlink: %s)" % (
        st.names[index], vf.pf, vf.index, when,
        ", ".join("%s=%s" % (n, got[n]) for n in CARRIED)))


def _guest_vf_facts(tick, spec) -> list:
    """``[(ok, what)]``: each MAC on an igbvf NIC in the guest; the failover VF enslaved."""
    by_mac = {}
    for name, mac in (tick.nics.items() if tick else ()):
        by_mac.setdefault(mac, []).append((name,) + tick.links.get(name, ("-", "-")))
    out = []
    for v in spec.vnics:
        vfs = [n for n in by_mac.get(v.mac, []) if n[1] == "igbvf"]
        out.append((bool(vfs), "holds %s on a real VF (igbvf: %s)" % (
            v.mac, ", ".join("%s/%s" % (n[0], n[1]) for n in by_mac.get(v.mac, [])) or "none")))
        if v.failover_alias:
            master = vfs[0][2] if vfs else "-"
            out.append((master != "-", "net_failover enslaved that VF (%s master %s)"
                        % (vfs[0][0] if vfs else "no VF", master)))
    return out


def _last_counter(st: Stage, index: int, spec) -> int:
    """The guest's latest tick on host *index* so far (-1 before any): later ones are newer."""
    _ready, ticks = parse_serial(domains.read_serial(st.lab.hosts[index], spec.name))
    return ticks[-1].counter if ticks else -1


def _check_guest_vfs(st: Stage, index: int, spec, after: int) -> None:
    """Real VFs: wait for a guest tick newer than *after* that shows them; check its facts."""
    host = st.lab.hosts[index]

    def until(_ready, ticks):
        good = [t for t in ticks if t.counter > after and all(ok for ok, _ in _guest_vf_facts(t, spec))]
        return good[-1] if good else None

    try:
        tick = domains.wait_serial(host, spec.name, until, st.waits["nics"], "the VFs in the guest")
    except LabError:
        _ready, ticks = parse_serial(domains.read_serial(host, spec.name))
        tick = ticks[-1] if ticks else None
    for ok, what in _guest_vf_facts(tick, spec):
        st.check(ok, "the guest on %s %s" % (host.name, what))


def scenario_success(st: Stage) -> None:
    spec = _start_vm(st)
    before = _guest_view(st, 0, spec, timeout=st.waits["boot"])
    slots = _guest_slots(st, 0, spec)
    on_a = [(v, v.vf_address) for v in spec.vnics]
    if st.real_vf:
        _check_pf_carries(st, 0, on_a, "before the unplug")
        _check_guest_vfs(st, 0, spec, before.counter - 1)
        settings = _set_vf_settings(st, spec.vnics[0])
    with contextlib.ExitStack() as stream:
        pinger = _start_traffic(st, spec, stream)
        rc, job = _sriov_migrate(st, spec)
        _migrated(st, spec, before, slots, on_a, rc, job, settings if st.real_vf else None)
        if pinger is not None:
            _traffic_back(st, pinger, job, stream)
    if pinger is not None:
        _check_traffic(st, spec, pinger, job)
    absent = report.nic_absent(job)
    if st.raw_baseline and absent:
        raw = _raw_migrate_back(st, spec)
        report.step("NIC-absent, same VM, same hosts: SRIOV.migrate %.2f s (%s to %s), raw libvirt "
                    "%.2f s (%s back to %s: detach x%d, migrate3, attach x%d): %.2fx raw, %+.2f s",
                    absent[0], st.names[0], st.names[1], raw, st.names[1], st.names[0],
                    len(spec.vnics), len(spec.vnics), absent[0] / raw, absent[0] - raw)


def _measured(st: Stage, vnics):
    """The vNIC the traffic goes to: the plain one (emulated), the failover pair (real VFs).

    Only real VFs make a failover pair in the guest (libvirt takes
    ``<teaming>`` on hostdev interfaces only); the plain real VF carries
    VLAN 100, which the lab's switch does not tag.
    """
    return vnics[1] if st.real_vf else vnics[0]


def _start_traffic(st: Stage, spec, stream):
    """On the lab's wire: echoes at 100/s to the measured vNIC, once it answers; else None."""
    dp = st.lab.datapath
    if dp is None or spec.guest is None:
        return None
    pinger = stream.enter_context(traffic.Pinger(dp.netns, datapath.guest_ip(), st.workdir))
    first = pinger.wait_reply(0.0, st.waits["nics"])
    st.check(first is not None, "the guest answers %d echoes/s at %s on %s (on the lab's switch) "
             "before the migration" % (traffic.RATE, datapath.guest_ip(),
                                       report.vnic_label(_measured(st, spec.vnics))))
    return pinger


def _traffic_back(st: Stage, pinger, job, stream) -> None:
    """Wait (bounded) for echoes answered after the plug and after the guest settled, then stop.

    Called once the guest showed its NICs on the destination (on real VFs:
    the VF enslaved again); a failover pair switches from its standby to
    that VF then, so the stream runs on for :data:`SETTLE_S` more.
    """
    after = max(report.step_end(job, "plug") or 0.0, time.time() + SETTLE_S)
    pinger.wait_reply(after, st.waits["nics"])
    stream.close()


def _check_traffic(st: Stage, spec, pinger, job) -> None:
    """Plain vNIC: the gap is the NIC-absent time. Failover pair: the standby carries it meanwhile.

    A failover pair's gap is checked from the unplug to the end of the
    libvirt migration, and again from when the guest took up its new VF
    (the destination service logs when it saw that): net_failover drops
    what reaches the standby from then until the VF is up, and the
    repeated announcement must bring the traffic to the VF soon after.
    """
    t, absent = pinger.result, report.nic_absent(job)
    mac = _measured(st, spec.vnics).mac
    report.traffic(t, mac, absent)
    st.check(t.recovered, "echoes to %s are answered again on %s" % (mac, st.names[1]))
    if not absent:
        return
    if not st.real_vf:
        st.check(t.longest_gap_ms <= absent[0] * 1000.0 + traffic.ANNOUNCED_SLACK_MS,
                 "the longest gap (%.2f s) is the NIC-absent time (%.2f s), not more: the MAC was "
                 "announced after the plug" % (t.longest_gap_ms / 1000.0, absent[0]))
        return
    result = st.vdsm[0].result(spec.uuid)
    if result is None or result.migrate_end is None:
        st.check(False, "the VDSM stand-in on %s saw the libvirt migration end" % st.names[0])
        return
    steps = {s["step"]: s for s in job["steps"]}
    start = steps["unplug"]["start"]
    migrated = result.migrate_end - _EPOCH_TO_MONO  # epoch s: libvirt's migration ended
    took = (result.migrate_end - result.migrate_start) if result.migrate_start else 0.0
    during = pinger.gap_within(start, migrated).ms
    st.check(during <= max(took * 1000.0, 1000.0) + traffic.FAILOVER_SLACK_MS,
             "from the unplug through the libvirt migration (%.2f s, of which the migration %.2f s) "
             "the longest gap was %.2f s, within the migration (+%.0f s): the failover standby "
             "carried the traffic" % (migrated - start, took, during / 1000.0,
                                      traffic.FAILOVER_SLACK_MS / 1000.0))
    end = pinger.data["sent"][-1]
    later = pinger.gap_within(migrated, end)
    report.step("after the migration the longest gap was %.2f s, %s to %s", later.ms / 1000.0,
                report.clock(later.start), report.clock(later.end))
    taken = _took_up_vf(st, 1)
    st.check(taken is not None and taken < end, "%s's service saw the guest take up its new VF "
             "(at %s), while the traffic still ran" % (st.names[1], report.clock(taken)))
    if taken is None or taken >= end:
        return
    switch = pinger.gap_within(taken, end)
    st.check(switch.ms <= traffic.SWITCH_BOUND_MS,
             "from when the guest took up its new VF the longest gap was %.2f s (%s to %s), within "
             "%.0f s: the repeated announcement moved the switch to the VF's port once it was up"
             % (switch.ms / 1000.0, report.clock(switch.start), report.clock(switch.end),
                traffic.SWITCH_BOUND_MS / 1000.0))


def _took_up_vf(st: Stage, index: int):
    """Epoch s when host *index*'s service saw the guest take up its failover VF; None if never."""
    try:
        with open(st.services.services[index].log_path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if "the guest took up its VF" in line]
    except OSError:
        return None
    if not lines:
        return None
    stamp = lines[-1][:23]  # "2026-12-04 07:56:31,386": the logging module's asctime, local time
    try:
        return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000.0
    except ValueError:
        return None


def _migrated(st: Stage, spec, before, slots, on_a, rc, job, settings) -> None:
    """The checks after ``SRIOV.migrate`` returned: job, devices, records, ledgers, guest."""
    plugged_at = _last_counter(st, 1, spec)
    result = st.vdsm[0].wait(spec.uuid, timeout=st.waits["nics"])
    aliases, record = _live(st, 1, spec)
    report.migration(job, result, record, _EPOCH_TO_MONO)
    st.check(rc == 0 and job and job["phase"] == "migrated",
             "sriov-client SRIOV migrate exited 0: migrated with every vNIC plugged")
    st.check([s["step"] for s in job["steps"]][:4] == ["check", "reserve", "unplug", "migrate"]
             if job else False, "VFs reserved on %s before anything was unplugged, unplugged before "
             "VDSM's VM.migrate" % st.names[1])
    st.check({v.alias for v in spec.vnics} <= aliases, "both vNICs are attached on %s with their "
             "aliases" % st.names[1])
    st.check(_guest_slots(st, 1, spec) == slots, "at the same guest PCI slots as on %s" % st.names[0])
    st.check(record and {r.state for r in record.vnics} == {metadata.PLUGGED},
             "our record on the destination says plugged")
    claims = _ledger_claims(st.lab.hosts[1], spec.uuid)
    st.check({c.state for c in claims} == {"in_use"} and len(claims) == 2,
             "the destination ledger holds both VFs in use")
    st.check(_ledger_claims(st.lab.hosts[0], spec.uuid) == [], "the source ledger released its VFs")
    if st.real_vf and record:
        by_alias = {v.alias: v for v in spec.vnics}
        _check_pf_carries(st, 1, [(by_alias[r.alias], r.vf_address) for r in record.vnics],
                          "after the plug")
        _check_pf_reset(st, 0, on_a, "after the unplug")
        moved = {r.alias: r.vf_address for r in record.vnics}[spec.vnics[0].alias]
        _check_settings(st, 1, moved, settings, "after the plug")
    _guest_view(st, 1, spec, after=before.counter)
    st.check(True, "the guest sees both MACs again on %s" % st.names[1])
    if st.real_vf:
        _check_guest_vfs(st, 1, spec, plugged_at)
        if record:  # the announcement's signal, read as the service's user can (issue 20 item 8)
            for ok, what in realvf_checks.taken_up_as_vdsm([r.vf_address for r in record.vnics]):
                st.check(ok, what)


def _raw_migrate_back(st: Stage, spec) -> float:
    """Migrate the VM back to A with plain libvirt calls (services stopped); NIC-absent seconds.

    The same vNICs are detached on B, the VM migrated with ``migrate3``,
    and the vNICs attached on A's own VFs again: the floor any machinery
    pays, measured on the same VM and hosts as the SRIOV.migrate before it.
    """
    import libvirt

    from . import rawlibvirt
    from .inventory import free_port
    from .vdsm.migration import _migrate_params

    st.services.stop()  # no reconciler may act on a VM moved behind its back
    aliases = [v.alias for v in spec.vnics]
    dom = st.conns[1].lookupByUUIDString(spec.uuid)
    mode = domxml.MODE_HOSTDEV if st.real_vf else domxml.MODE_EMULATED
    xmls = [domxml.render_attach(domains.to_vnic(v), v.vf_address, mode=mode, at_guest_address=False)
            for v in spec.vnics]
    timeout = REAL_VF_TIMEOUTS["unplug"] if st.real_vf else TIMEOUTS["unplug"] * 5
    t0 = time.monotonic()
    rawlibvirt.detach(st.conns[1], dom, aliases, timeout)
    dom.migrate3(st.conns[0], _migrate_params(free_port()), libvirt.VIR_MIGRATE_LIVE)
    rawlibvirt.attach(st.conns[0], st.conns[0].lookupByUUIDString(spec.uuid), aliases, xmls, timeout)
    return time.monotonic() - t0


def scenario_rollback(st: Stage) -> None:
    spec = _start_vm(st)
    before = _guest_view(st, 0, spec, timeout=st.waits["boot"])
    dst = st.lab.hosts[1]
    settings = _set_vf_settings(st, spec.vnics[0]) if st.real_vf else None

    def crash_destination():
        report.step("stopping %s's libvirtd (kill -9) after the unplug: the migration will fail",
                    dst.name)
        os.kill(dst.pid, signal.SIGKILL)
        dst.proc.wait()

    st.vdsm[0].before_migrate = crash_destination
    rc, job = _sriov_migrate(st, spec)
    replugged_at = _last_counter(st, 0, spec)
    report.migration(job, st.vdsm[0].result(spec.uuid), None, _EPOCH_TO_MONO)
    steps = _steps(job)
    st.check(rc == 1 and job and job["phase"] == "rolled-back",
             "sriov-client exited 1: the migration failed and %s re-plugged its own VFs" % st.names[0])
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "both vNICs are attached on %s again"
             % st.names[0])
    if "migrate" in steps and "rollback" in steps:
        took = steps["rollback"][1] - steps["migrate"][1]
        report.rollback(record, took)
        target = 10.0 if st.real_vf else 1.0  # a real VF's hot-plug into nested TCG: ~1-2 s each
        st.check(took <= target, "re-plugged %.2f s after the failure, at once (target <= %g s; the "
                 "reconciler's rollback_grace of %s s is only the safety net)"
                 % (took, target, st.services.timeouts["rollback_grace"]))
    st.check(_ledger_claims(dst, spec.uuid) == [], "the reservation on %s was released" % dst.name)
    if st.real_vf and record:
        by_alias = {v.alias: v for v in spec.vnics}
        _check_pf_carries(st, 0, [(by_alias[r.alias], r.vf_address) for r in record.vnics],
                          "after the re-plug")
        _check_settings(st, 0, spec.vnics[0].vf_address, settings, "after the re-plug")
    _guest_view(st, 0, spec, after=before.counter)
    st.check(True, "the guest sees both MACs again on %s" % st.names[0])
    if st.real_vf:
        _check_guest_vfs(st, 0, spec, replugged_at)


def scenario_unplug_timeout(st: Stage) -> None:
    spec = _start_vm(st, with_os=False)
    report.step("this guest has no OS: nothing will ever release a device")
    claims_before = _ledger_claims(st.lab.hosts[0])
    rc, job = _sriov_migrate(st, spec)
    report.migration(job, None, None, _EPOCH_TO_MONO)
    st.check(rc == 1 and job and job["phase"] == "failed" and "still present" in (job["error"] or ""),
             "sriov-client exited 1: the unplug timed out (%s s) and the migration was not started"
             % TIMEOUTS["unplug"])
    st.check(st.vdsm[0].result(spec.uuid) is None, "VDSM was never asked to migrate")
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "the VM keeps both vNICs on %s" % st.names[0])
    st.check(record and {r.state for r in record.vnics} == {metadata.PLUGGED}, "our record says plugged")
    st.check(_ledger_claims(st.lab.hosts[0]) == claims_before, "the source ledger is unchanged")
    st.check(_ledger_claims(st.lab.hosts[1], spec.uuid) == [],
             "the reservation on %s was released" % st.names[1])


def scenario_no_free_vf(st: Stage) -> None:
    spec = _start_vm(st, with_os=False)
    dst = st.lab.hosts[1]
    own = {vf.address for vf in _host_vfs(st, 1)}
    free = [v for v in st.services.client(1).call("SRIOV.listVfs")
            if v["state"] == "free" and v["address"] in own]
    for i, _vf in enumerate(free):
        st.services.client(1).call("SRIOV.reserveVfs", {
            "vmID": str(uuid.uuid4()),
            "nics": [{"mac": "02:00:00:00:02:%02x" % i, "network": lab_inventory.NETWORK}]})
    report.step("filled %s's pool: %d VFs reserved by other VMs", dst.name, len(free))
    claims_before = _ledger_claims(dst)
    rc, job = _sriov_migrate(st, spec)
    report.migration(job, None, None, _EPOCH_TO_MONO)
    st.check(rc == 1 and job and job["phase"] == "failed" and "2001" in (job["error"] or ""),
             "sriov-client exited 1: reserveVfs on %s answered 2001 no free VF" % dst.name)
    st.check(job and "unplug" not in _steps(job), "nothing was unplugged: the migration was not started")
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "the VM keeps both vNICs")
    st.check(record and record.phase == "idle", "our record was not touched")
    st.check(_ledger_claims(dst) == claims_before, "the destination ledger is unchanged")
    if st.real_vf:
        _check_pf_carries(st, 0, [(v, v.vf_address) for v in spec.vnics], "still (nothing unplugged)")


def scenario_plain_vdsm_migrate(st: Stage) -> None:
    spec = _start_vm(st, with_os=False)
    claims = [_ledger_claims(h) for h in st.lab.hosts]
    dst = st.vdsm[1]
    report.step("VM.migrate vmID=%s dst=%s on %s's VDSM, as 'vdsm-client VM migrate' does",
                spec.uuid, dst.endpoint, st.names[0])
    st.vdsm.client(0).call("VM.migrate", {"vmID": spec.uuid, "params": {
        "vmId": spec.uuid, "dst": dst.endpoint, "method": "online"}})
    result = st.vdsm[0].wait(spec.uuid, timeout=60)
    status = st.vdsm.client(0).call("VM.getMigrationStatus", {"vmID": spec.uuid})
    report.migration(None, result, None, _EPOCH_TO_MONO)
    guard = result.step("before_vm_migrate_source") if result else None
    st.check(status["status"]["code"] != 0, "VDSM reports the migration failed: %s"
             % status["status"]["message"])
    st.check(guard is not None and guard.rc == 2 and any("SRIOV migrate" in line for line in guard.stderr),
             "the source hook refused it (rc 2) and said to use 'sriov-client SRIOV migrate'")
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "the VM keeps both vNICs on %s" % st.names[0])
    st.check(record and record.phase == "idle", "our record was not touched")
    st.check([_ledger_claims(h) for h in st.lab.hosts] == claims, "both ledgers are unchanged")


RUNNERS = {"success": scenario_success, "rollback": scenario_rollback,
           "unplug-timeout": scenario_unplug_timeout, "no-free-vf": scenario_no_free_vf,
           "plain-vdsm-migrate": scenario_plain_vdsm_migrate}


def run_scenario(name: str, guest, keep: bool = False, real_pfs=None, raw_baseline: bool = False,
                 wire: Optional[str] = None) -> bool:
    """One scenario on a fresh lab; with *real_pfs* (inside the real-VF lab's L1), on real VFs.

    *wire* is L1's NIC on the PFs' hub: the lab's switch reaches the real VFs through it.
    A scenario whose guest kernel crashed (its serial console says so) is
    run once more, saying why: the L2 guest under nested TCG has died of
    list corruption after an incoming migration, with no VF attached yet,
    which is the emulation's fault, not the code under test's.
    """
    ok, crash = _run_scenario_once(name, guest, keep, real_pfs, raw_baseline, wire)
    if not ok and crash:
        report.step("the lab guest's kernel crashed (%s): running %s once more", crash, name)
        ok, _ = _run_scenario_once(name, guest, keep, real_pfs, raw_baseline, wire)
    return ok


def _run_scenario_once(name, guest, keep, real_pfs, raw_baseline, wire) -> tuple:
    """``(passed, the guest's kernel crash line or None)``."""
    crash = None
    report.title(name + (" (real VFs)" if real_pfs else ""))
    t0 = time.monotonic()
    timeouts = REAL_VF_TIMEOUTS if real_pfs else TIMEOUTS
    with tempfile.TemporaryDirectory(prefix="sriov-demo-") as workdir, \
            Lab(2, real_pfs=real_pfs, wire=wire, ready_timeout=180 if real_pfs else 90) as lab:
        report.step("2 lab hosts up in %.1f s%s", lab.start_seconds,
                    ", each owning one real PF: %s" % ", ".join(real_pfs) if real_pfs else "")
        with LabServices(lab, workdir, ready_timeout=120 if real_pfs else 30,
                         **timeouts) as services, \
                LabStandIns(lab, hooks_root=os.path.join(workdir, "hooks")) as vdsm:
            report.step("hooks installed with sriov-migration-install; sriov-migrationd up on both "
                        "hosts over mutual TLS (lab CA); the VDSM stand-in serves VM.migrate")
            conns = [libvirtconn.open_connection(config.load(h.config_path), use_vdsm=False)
                     for h in lab.hosts]
            st = Stage(lab, services, vdsm, conns, guest, workdir, real_vf=bool(real_pfs),
                       raw_baseline=raw_baseline)
            try:
                RUNNERS[name](st)
            except Exception as e:  # noqa: BLE001 - a scenario's crash is its failure, reported
                st.check(False, "scenario crashed: %s: %s" % (type(e).__name__, e))
                _post_mortem(st)
                crash = _guest_crash(st)
            if keep:
                report.keep(lab, services)
    ok = bool(st.checks) and all(c for c, _ in st.checks)
    report.verdict(name, ok, time.monotonic() - t0)
    return ok, crash


def _guest_crash(st: Stage) -> Optional[str]:
    """The first kernel crash line in the VM's serial log on either host, if any."""
    if st.vm is None:
        return None
    for host in st.lab.hosts:
        for line in domains.read_serial(host, st.vm.name).splitlines():
            if any(mark in line for mark in GUEST_CRASH_MARKS):
                return line.strip()
    return None


def _post_mortem(st: Stage) -> None:
    """After a crash: each host's view of the VM, QEMU's log tail, and what every hook said."""
    if st.vm is None:
        return
    for i, host in enumerate(st.lab.hosts):
        report.step("post-mortem: %s", domains.post_mortem(st.conns[i], host, st.vm.name))
        result = st.vdsm[i].result(st.vm.uuid)
        for run in result.steps if result else ():
            report.step("post-mortem: %s %s rc %s: %s", run.host, run.point, run.rc,
                        " | ".join(run.stderr) or "(no stderr)")


def add_args(p) -> None:
    p.add_argument("--scenario", default="success", choices=SCENARIOS + ("all",),
                   help="which scenario to run (default: success; with --real-vf, all means "
                        "%s)" % ", ".join(REAL_VF_SCENARIOS))
    p.add_argument("--keep", action="store_true",
                   help="leave the last scenario's lab running until Ctrl-C")
    p.add_argument("--real-vf", action="store_true",
                   help="run on real SR-IOV VFs (igb PFs) inside a QEMU guest: the hostdev path")
    p.add_argument("--raw-baseline", action="store_true",
                   help="after the success scenario, migrate the VM back with plain libvirt calls "
                        "and print both NIC-absent times")
    p.add_argument("--in-l1", action="store_true", help=argparse.SUPPRESS)  # the real-VF lab's L1


def run(args) -> int:
    if args.real_vf:
        names = REAL_VF_SCENARIOS if args.scenario == "all" else (args.scenario,)
    else:
        names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    if args.real_vf and not args.in_l1:
        from . import realvf

        return 0 if realvf.demo(names, raw_baseline=args.raw_baseline) else 1
    real_pfs = wire = None
    if args.in_l1:
        from .realvf import pf_names, wire_name

        real_pfs, wire = pf_names(), wire_name()
    report.step("building or reusing the lab guest ...")
    guest = ensure_guest()
    results = [(n, run_scenario(n, guest, keep=args.keep and n == names[-1], real_pfs=real_pfs,
                                raw_baseline=args.raw_baseline, wire=wire)) for n in names]
    report.summary(results)
    return 0 if all(ok for _, ok in results) else 1
