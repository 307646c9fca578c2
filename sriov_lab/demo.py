"""``sriov-lab demo``: a real SR-IOV live migration and its failure modes, timed.

Each scenario gets a fresh pair of lab hosts, each with its hooks
installed by ``sriov-migration-install`` and its own ``sriov-migrationd``
over mutual TLS. A VM with two SR-IOV vNICs (one VLAN-tagged, one in a
failover pair) is reserved for on the destination through
``sriov-client`` and migrated through the VDSM-compatible hook runner.
VFs are emulated (there is no SR-IOV hardware here); everything else is
the production path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from lxml import etree

from sriov_host import config, inventory, libvirtconn, metadata
from sriov_host.ledger import Ledger

from . import demo_report as report
from . import domains
from .guest import ensure_guest
from .lab import Lab
from .migration import migrate
from .services import LabServices, install_hooks

SCENARIOS = ("success", "rollback", "unplug-timeout", "no-free-vf")
TIMEOUTS = {"rollback_grace": 2, "reconcile_interval": 0.5, "unplug": 3}


@dataclass
class Stage:
    """One scenario's running lab, services, hook runners and connections."""

    lab: Lab
    services: LabServices
    runners: list
    conns: list
    guest: object
    workdir: str
    checks: list = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        self.checks.append((bool(ok), what))
        report.check(bool(ok), what)
        return bool(ok)


def _vnics(host) -> tuple:
    """Two vNICs on the host's first VFs: one with VLAN 100, one in a failover pair."""
    inv = inventory.load_nodedev_file(host.extra["inventory"]).by_address()
    addrs = host.vf_addresses()[:2]
    return (
        domains.VnicSpec(mac="52:54:00:5a:00:01", vf_address=addrs[0], pf=inv[addrs[0]].pf, vlan=100),
        domains.VnicSpec(mac="52:54:00:5a:00:02", vf_address=addrs[1], pf=inv[addrs[1]].pf,
                         failover_alias="ua-%s" % uuid.uuid4()),
    )


def _start_vm(st: Stage, with_os: bool = True):
    spec = domains.DomainSpec(name="demo-%s" % uuid.uuid4().hex[:6], vnics=_vnics(st.lab.hosts[0]),
                              guest=st.guest if with_os else None, persistent_teaming=True)
    domains.start(st.conns[0], spec)
    report.step("started VM %s (%s) on %s with vNICs %s", spec.name, spec.uuid,
                st.lab.hosts[0].name, ", ".join(report.vnic_label(v) for v in spec.vnics))
    return spec


def _macs(spec) -> set:
    return {v.mac for v in spec.vnics}


def _guest_view(st: Stage, host_index: int, spec, after: int = -1, timeout: float = 30.0):
    """Wait until the guest's own NIC list shows every vNIC MAC; return that tick."""
    def until(_ready, ticks):
        seen = [t for t in ticks if t.counter > after and _macs(spec) <= set(t.nics.values())]
        return seen[-1] if seen else None

    host = st.lab.hosts[host_index]
    report.step("waiting for the guest on %s to list its NICs on its serial console ...", host.name)
    tick = domains.wait_serial(host, spec.name, until, timeout, "the vNICs in the guest")
    report.step("guest on %s sees its NICs: %s", host.name, report.nics(tick.nics))
    return tick


def _client(st: Stage, index: int, method: str, params: dict, files: dict = None):
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


def _reserve(st: Stage, spec):
    nics = [{"mac": v.mac, "alias": v.alias, "vlan": v.vlan, "network": v.network}
            for v in spec.vnics]
    rc, res, ms = _client(st, 1, "reserveVfs", {"vmID": spec.uuid, "nics": nics})
    if rc == 0:
        report.timed("reserve", st.lab.hosts[1].name, ms, "sriov-client SRIOV reserveVfs -> %s"
                     % ", ".join("%s on %s (%s)" % (n["mac"], n["vf"]["address"], n["vf"]["pf"])
                                 for n in res["nics"]))
    else:
        report.timed("reserve", st.lab.hosts[1].name, ms, "sriov-client SRIOV reserveVfs FAILED: %s"
                     % res)
    return rc, res


def _live(st: Stage, host_index: int, spec):
    dom = st.conns[host_index].lookupByUUIDString(spec.uuid)
    root = etree.fromstring(dom.XMLDesc(0).encode())
    aliases = {a.get("name") for a in root.iterfind("devices/interface/alias")}
    return aliases, metadata.read_record(root)


def _ledger_claims(host, vm_id=None):
    with Ledger(config.load(host.config_path).ledger_path) as ledger:
        return ledger.claims(vm_id=vm_id)


def scenario_success(st: Stage) -> None:
    spec = _start_vm(st)
    before = _guest_view(st, 0, spec, timeout=60)
    rc, _ = _reserve(st, spec)
    st.check(rc == 0, "VFs reserved on the destination before anything was unplugged")
    report.step("migrating %s -> %s through the VDSM hook order ...", *(h.name for h in st.lab.hosts))
    result = migrate(st.conns[0], st.conns[1], spec.uuid, *st.runners)
    aliases, record = _live(st, 1, spec)
    report.migration(result, record)
    st.check(result.ok, "migration succeeded (%s)" % (result.error or "every hook rc 0"))
    st.check({v.alias for v in spec.vnics} <= aliases, "both vNICs are attached on %s with their aliases"
             % st.lab.hosts[1].name)
    st.check(record and {r.state for r in record.vnics} == {metadata.PLUGGED},
             "our record on the destination says plugged")
    claims = _ledger_claims(st.lab.hosts[1], spec.uuid)
    st.check({c.state for c in claims} == {"in_use"} and len(claims) == 2,
             "the destination ledger holds both VFs in use")
    st.check(_ledger_claims(st.lab.hosts[0], spec.uuid) == [], "the source ledger released its VFs")
    _guest_view(st, 1, spec, after=before.counter)
    st.check(True, "the guest sees both MACs again on %s" % st.lab.hosts[1].name)


def _wait_rollback(st: Stage, spec, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _aliases, record = _live(st, 0, spec)
        if record and record.phase in ("rolled-back", "rollback-failed"):
            return record, time.monotonic()
        time.sleep(0.05)
    return None, time.monotonic()


def scenario_rollback(st: Stage) -> None:
    spec = _start_vm(st)
    before = _guest_view(st, 0, spec, timeout=60)
    _reserve(st, spec)
    dst = st.lab.hosts[1]

    def crash_destination():
        report.step("stopping %s's libvirtd (kill -9) after the unplug: the migration will fail",
                    dst.name)
        os.kill(dst.pid, signal.SIGKILL)
        dst.proc.wait()

    result = migrate(st.conns[0], st.conns[1], spec.uuid, *st.runners,
                     before_migrate=crash_destination)
    report.migration(result, None)
    st.check(not result.ok and result.aborted_at == "migrate", "the migration failed after the unplug")
    grace = TIMEOUTS["rollback_grace"]
    report.step("waiting for %s's sriov-migrationd to re-plug (rollback_grace %s s) ...",
                st.lab.hosts[0].name, grace)
    record, t_back = _wait_rollback(st, spec, grace + 10)
    took = t_back - result.migrate_end
    report.rollback(record, took)
    st.check(record is not None and record.phase == "rolled-back", "the source re-plugged its own VFs")
    st.check(took <= grace + 1, "re-plugged %.2f s after the failure (target <= rollback_grace + 1 = %.0f s)"
             % (took, grace + 1))
    _guest_view(st, 0, spec, after=before.counter)
    st.check(True, "the guest sees both MACs again on %s" % st.lab.hosts[0].name)


def scenario_unplug_timeout(st: Stage) -> None:
    spec = _start_vm(st, with_os=False)
    report.step("this guest has no OS: nothing will ever release a device")
    claims_before = _ledger_claims(st.lab.hosts[0])
    _reserve(st, spec)
    result = migrate(st.conns[0], st.conns[1], spec.uuid, *st.runners)
    report.migration(result, None)
    st.check(result.aborted_at == "before_vm_migrate_source", "the source hook refused the migration (rc 2)")
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "the VM keeps both vNICs on %s"
             % st.lab.hosts[0].name)
    st.check(record and {r.state for r in record.vnics} == {metadata.PLUGGED}, "our record says plugged")
    st.check(_ledger_claims(st.lab.hosts[0]) == claims_before, "the source ledger is unchanged")
    rc, res, ms = _client(st, 1, "releaseVfs", {"vmID": spec.uuid})
    report.timed("release", st.lab.hosts[1].name, ms, "sriov-client SRIOV releaseVfs -> %s" % res)
    st.check(rc == 0 and res.get("released") == 2, "the destination reservation was released")


def scenario_no_free_vf(st: Stage) -> None:
    spec = _start_vm(st, with_os=False)
    dst = st.lab.hosts[1]
    free = [v for v in st.services.client(1).call("SRIOV.listVfs") if v["state"] == "free"]
    for i, _vf in enumerate(free):
        st.services.client(1).call("SRIOV.reserveVfs", {
            "vmID": str(uuid.uuid4()), "nics": [{"mac": "02:00:00:00:02:%02x" % i}]})
    report.step("filled %s's pool: %d VFs reserved by other VMs", dst.name, len(free))
    claims_before = _ledger_claims(dst)
    rc, res = _reserve(st, spec)
    st.check(rc != 0 and "2001" in str(res), "reserveVfs answered 2001 no free VF")
    report.step("nothing is unplugged: the migration is not started")
    aliases, record = _live(st, 0, spec)
    st.check({v.alias for v in spec.vnics} <= aliases, "the VM keeps both vNICs")
    st.check(record and record.phase == "idle", "our record was not touched")
    st.check(_ledger_claims(dst) == claims_before, "the destination ledger is unchanged")


RUNNERS = {"success": scenario_success, "rollback": scenario_rollback,
           "unplug-timeout": scenario_unplug_timeout, "no-free-vf": scenario_no_free_vf}


def run_scenario(name: str, guest, keep: bool = False) -> bool:
    report.title(name)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sriov-demo-") as workdir, Lab(2) as lab:
        report.step("2 lab hosts up in %.1f s", lab.start_seconds)
        with LabServices(lab, workdir, **TIMEOUTS) as services:
            report.step("hooks installed with sriov-migration-install; sriov-migrationd up on both "
                        "hosts over mutual TLS (lab CA)")
            conns = [libvirtconn.open_connection(config.load(h.config_path), use_vdsm=False)
                     for h in lab.hosts]
            st = Stage(lab, services, install_hooks(lab, os.path.join(workdir, "hooks")), conns,
                       guest, workdir)
            try:
                RUNNERS[name](st)
            except Exception as e:  # noqa: BLE001 - a scenario's crash is its failure, reported
                st.check(False, "scenario crashed: %s: %s" % (type(e).__name__, e))
            if keep:
                report.keep(lab, services)
    ok = bool(st.checks) and all(c for c, _ in st.checks)
    report.verdict(name, ok, time.monotonic() - t0)
    return ok


def add_args(p) -> None:
    p.add_argument("--scenario", default="success", choices=SCENARIOS + ("all",),
                   help="which scenario to run (default: success)")
    p.add_argument("--keep", action="store_true",
                   help="leave the last scenario's lab running until Ctrl-C")


def run(args) -> int:
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    report.step("building or reusing the lab guest ...")
    guest = ensure_guest()
    results = [(n, run_scenario(n, guest, keep=args.keep and n == names[-1])) for n in names]
    report.summary(results)
    return 0 if all(ok for _, ok in results) else 1
