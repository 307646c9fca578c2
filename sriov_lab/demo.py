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
import os
import tempfile
import time
from typing import Optional

from sriov_host import config, libvirtconn

from . import demo_checks, domains
from . import demo_report as report
from .demo_scenarios import RUNNERS
from .demo_stage import GUEST_CRASH_MARKS, REAL_VF_TIMEOUTS, SCENARIOS, TIMEOUTS, Stage
from .guest import ensure_guest
from .lab import Lab
from .realvf import REAL_VF_SCENARIOS
from .services import LabServices, LabStandIns


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
            Lab(2, real_pfs=real_pfs, wire=wire, ready_timeout=180 if real_pfs else 90,
                shared_firewall=bool(real_pfs)) as lab:
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
                demo_checks.check_privileges(st)
                demo_checks.check_firewall(st)
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
