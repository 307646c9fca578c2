"""Lab migration: how long the guest is without its NICs, SRIOV.migrate vs raw libvirt.

One run, one fresh pair of lab hosts (two real libvirtd, real guests
under TCG) with their ``sriov-migrationd`` (mutual TLS) and VDSM
stand-ins. Each trial boots a fresh VM on A with two emulated SR-IOV
vNICs. Each round runs one trial of each kind, raw first in even rounds
and SRIOV.migrate first in odd ones:

- raw, by hand with plain libvirt: register for DEVICE_REMOVED, detach
  both vNICs by alias, wait for both events; ``migrate3`` (live,
  loopback); register for DEVICE_ADDED, attach both on B at their guest
  PCI slots, wait for both. NIC-absent = first detach to last event.
- ``SRIOV.migrate`` called on A's service over the wire, then
  ``SRIOV.migrationStatus`` polled until done. NIC-absent = the unplug
  step's start to B's record turning ``migrated`` (its ``updated``
  stamp, written once the last vNIC is plugged).

"NIC back" counts from the end of the libvirt migration (``migrate3``
returning, in both cases). The rollback trial kills B's libvirtd from
A's stand-in just before ``migrate3`` (after the unplug) and times the
driver's re-plug on A, from the migrate step's end (the failure as VDSM
reports it) to the rollback step's end, against a raw re-attach of the
same vNICs. It runs last: B is gone after it. Targets: SRIOV.migrate
adds <= 1 s to the NIC-absent time, the NICs are back within 1 s of the
migration's end, and within 1 s of the failure. Needs root and the lab
(else skipped).

    python benchmarks/bench_lab.py [--rounds 3] [--no-rollback]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from report import print_rows, row, skipped  # noqa: E402

from sriov_lab import rawlibvirt  # noqa: E402

ABSENT = "lab NIC-absent: SRIOV.migrate vs raw libvirt"
BACK = "lab NIC back after migration end"
ROLLBACK = "lab rollback: re-plug after a failed migration"
RAW_ABSENT = "raw detach x2+migrate3+attach x2"
RAW_BACK = "raw attach x2 after migrate3"
RAW_ATTACH = "raw attach x2, same vNICs"
ABSENT_TARGET = "SRIOV.migrate adds <= 1000 ms"
BACK_TARGET = "<= 1000 ms"
ROLLBACK_TARGET = "<= 1000 ms after the failure"
MAX_MS = 1000.0
VNICS = 2
DEVICE_TIMEOUT = 15.0
MIGRATE_TIMEOUT = 60.0
LIBVIRT_FAILURE = 2003  # the service's JSON-RPC code (DESIGN.md)
# the demo's: unplug and plug below rollback_grace, so the reconciler is only the safety net
TIMEOUTS = {"rollback_grace": 5, "reconcile_interval": 0.5, "unplug": 3, "plug": 3}
EPOCH_MINUS_MONO = time.time() - time.monotonic()


class BenchError(Exception):
    """A trial did not do what it measures; the row says why."""


class LabBench:
    """Lab, connections, services and VDSM stand-ins, torn down together."""

    def __init__(self, workdir: str):
        from sriov_lab.guest import ensure_guest

        self.workdir = workdir
        self.guest = ensure_guest()
        self.vms: list = []
        self.booted = 0
        self.status_errors: list = []  # transient migrationStatus failures, see sriov_migrate
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> LabBench:
        from sriov_host import config, libvirtconn
        from sriov_lab.lab import Lab
        from sriov_lab.services import LabServices, LabStandIns

        with self.stack as stack:
            self.lab = stack.enter_context(Lab(2))
            self.hosts = self.lab.hosts
            self.conns = [libvirtconn.open_connection(config.load(h.config_path), use_vdsm=False)
                          for h in self.hosts]
            for conn in self.conns:
                stack.callback(_close, conn)
            self.services = stack.enter_context(LabServices(self.lab, self.workdir, **TIMEOUTS))
            self.vdsm = stack.enter_context(
                LabStandIns(self.lab, hooks_root=os.path.join(self.workdir, "hooks")))
            stack.callback(self.cleanup)
            self.stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def boot(self):
        """A fresh VM on A with two emulated vNICs on unused VFs of A, guest up."""
        from sriov_lab import domains

        a, n = self.hosts[0], self.booted
        self.booted += 1
        layout = a.extra["layout"]
        vnics = tuple(domains.VnicSpec(mac="52:54:00:be:%02x:%02x" % (n, k),
                                       vf_address=a.vf_addresses()[VNICS * n + k],
                                       pf=layout[k % len(layout)].name)
                      for k in range(VNICS))
        spec = domains.DomainSpec(name="bench-%d" % n, guest=self.guest, vnics=vnics)
        self.vms.append(spec.uuid)
        domains.start(self.conns[0], spec)
        domains.wait_ready(a, spec.name, timeout=90)
        return spec

    def cleanup(self) -> None:
        """Destroy the trial's VMs on both hosts; drop what the ledgers still hold for them."""
        for vm in self.vms:
            for i, conn in enumerate(self.conns):
                with contextlib.suppress(Exception):  # not on this host, or its daemon is gone
                    conn.lookupByUUIDString(vm).destroy()
                with contextlib.suppress(Exception):  # nothing held, or the service is gone
                    self.services.client(i, timeout=5.0).call("SRIOV.releaseVfs", {"vmID": vm})
        self.vms = []


def _close(conn) -> None:
    with contextlib.suppress(Exception):  # the daemon may be gone already
        conn.close()


def _epoch(mono: float) -> float:
    return mono + EPOCH_MINUS_MONO


# -- raw libvirt, by hand ------------------------------------------------------


def raw_detach(conn, dom, aliases) -> None:
    rawlibvirt.detach(conn, dom, aliases, DEVICE_TIMEOUT)


def raw_attach(conn, dom, aliases, xmls) -> None:
    rawlibvirt.attach(conn, dom, aliases, xmls, DEVICE_TIMEOUT)


def raw_trial(env: LabBench) -> dict:
    """Detach both on A, migrate, attach both on B: the floor any machinery pays."""
    import libvirt

    from sriov_lab.inventory import free_port
    from sriov_lab.vdsm.migration import _migrate_params

    spec = env.boot()
    aliases = [v.alias for v in spec.vnics]
    dom = env.conns[0].lookupByUUIDString(spec.uuid)
    xmls = rawlibvirt.vnic_xml(dom, aliases)
    start = time.monotonic()
    raw_detach(env.conns[0], dom, aliases)
    dom.migrate3(env.conns[1], _migrate_params(free_port()), libvirt.VIR_MIGRATE_LIVE)
    migrated = time.monotonic()
    raw_attach(env.conns[1], env.conns[1].lookupByUUIDString(spec.uuid), aliases, xmls)
    end = time.monotonic()
    return {"absent": (end - start) * 1000.0, "back": (end - migrated) * 1000.0}


# -- SRIOV.migrate over the wire ---------------------------------------------------


def sriov_migrate(env: LabBench, spec) -> dict:
    """``SRIOV.migrate`` on A's service, then ``migrationStatus`` until done; the job.

    A ``migrationStatus`` answered 2003 (libvirt failure) is asked again
    and kept in ``env.status_errors``: the source's answer can race the
    domain leaving A, and the rows say when it did.
    """
    from jsonrpc_plugin.client import RpcError

    a, dst = env.services.client(0), env.services.services[1]
    a.call("SRIOV.migrate", {"vmID": spec.uuid, "dst": dst.host.address, "port": dst.port,
                             "timeout": int(MIGRATE_TIMEOUT)})
    deadline = time.monotonic() + MIGRATE_TIMEOUT + 30.0
    job = None
    while time.monotonic() < deadline:
        try:
            job = a.call("SRIOV.migrationStatus", {"vmID": spec.uuid})["migration"]
        except RpcError as e:
            if e.code != LIBVIRT_FAILURE:
                raise
            env.status_errors.append(" ".join(e.message.split()))
        if job and job["done"]:
            return job
        time.sleep(0.05)
    raise BenchError("SRIOV.migrate of %s not done after %.0f s (phase %s)"
                     % (spec.uuid, MIGRATE_TIMEOUT + 30.0, job and job["phase"]))


def _steps(job, *names) -> list:
    """``(start, end)`` epoch seconds of each named step of a finished job."""
    by_name = {s["step"]: s for s in job["steps"]}
    missing = [n for n in names if n not in by_name or by_name[n]["ms"] is None]
    if missing:
        raise BenchError("SRIOV.migrate job has no finished %s step: %s"
                         % ("/".join(missing), [s["step"] for s in job["steps"]]))
    return [(by_name[n]["start"], by_name[n]["start"] + by_name[n]["ms"] / 1000.0) for n in names]


def _libvirt_end(env: LabBench, vm_id: str) -> float:
    """Epoch seconds at which A's stand-in saw ``migrate3`` return (or raise)."""
    result = env.vdsm[0].wait(vm_id, timeout=30.0)
    if result is None or result.migrate_end is None:
        raise BenchError("A's VDSM stand-in never ran migrate3 for %s" % vm_id)
    return _epoch(result.migrate_end)


def _plugged_at(env: LabBench, vm_id: str) -> float:
    """When B's after hook finished plugging: its record's ``updated`` stamp (epoch s)."""
    from sriov_host import domxml, metadata

    dom = env.conns[1].lookupByUUIDString(vm_id)
    record = metadata.read_record(domxml.parse_domain(dom.XMLDesc(0)))
    if record is None or record.phase != "migrated":
        raise BenchError("B's record of %s is %s, not migrated" % (vm_id, record and record.phase))
    return record.updated


def sriov_trial(env: LabBench) -> dict:
    spec = env.boot()
    job = sriov_migrate(env, spec)
    if job["phase"] != "migrated":
        raise BenchError("SRIOV.migrate ended %s: %s" % (job["phase"], job["error"]))
    (unplug_start, _), (_, migrate_end), (_, plug_end) = _steps(job, "unplug", "migrate", "plug")
    plugged, libvirt_end = _plugged_at(env, spec.uuid), _libvirt_end(env, spec.uuid)
    return {"absent": (plugged - unplug_start) * 1000.0, "back": (plugged - libvirt_end) * 1000.0,
            "absent_step": (plug_end - unplug_start) * 1000.0,
            "back_step": (plugged - migrate_end) * 1000.0}


# -- rollback ------------------------------------------------------------------------


def _kill_destination(env: LabBench):
    """For A's stand-in's ``before_migrate``: kill B's libvirtd, so migrate3 fails."""
    dst = env.hosts[1]

    def kill():
        os.kill(dst.pid, signal.SIGKILL)
        dst.proc.wait()

    return kill


@contextlib.contextmanager
def _quiet(*names):
    """The expected failure's warnings stay out of the table's output."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def rollback_trial(env: LabBench) -> dict:
    """The driver's re-plug after the failure, then a raw re-attach of the same vNICs on A."""
    spec = env.boot()
    env.vdsm[0].before_migrate = _kill_destination(env)
    try:
        with _quiet("sriov_lab", "sriov_host", "jsonrpc_plugin"):
            job = sriov_migrate(env, spec)
    finally:
        env.vdsm[0].before_migrate = None
    if job["phase"] != "rolled-back":
        raise BenchError("expected rolled-back, SRIOV.migrate ended %s: %s"
                         % (job["phase"], job["error"]))
    (_, migrate_end), (_, rollback_end) = _steps(job, "migrate", "rollback")
    failed_at = _libvirt_end(env, spec.uuid)
    return {"ms": (rollback_end - migrate_end) * 1000.0,
            "from_libvirt": (rollback_end - failed_at) * 1000.0,
            "raw": raw_reattach(env, spec)}


def raw_reattach(env: LabBench, spec) -> float:
    """ms to attach the rolled-back VM's vNICs by hand on A (detached by hand first).

    A's stand-in dropped them from its device list at the unplug and never
    saw the re-plug, so it warns about the raw detach: quieted here.
    """
    aliases = [v.alias for v in spec.vnics]
    dom = env.conns[0].lookupByUUIDString(spec.uuid)
    xmls = rawlibvirt.vnic_xml(dom, aliases)
    time.sleep(1.0)  # let the guest finish bringing up the re-plugged NICs before ejecting them
    with _quiet("sriov_lab"):
        raw_detach(env.conns[0], dom, aliases)
    start = time.monotonic()
    raw_attach(env.conns[0], dom, aliases, xmls)
    return (time.monotonic() - start) * 1000.0


# -- rows ------------------------------------------------------------------------


def _failed(name: str, baseline: str, target: str, why: str) -> dict:
    return row(name, None, baseline, None, target, False, note="failed: %s" % why)


def _why(e: BaseException) -> str:
    text = " ".join(str(getattr(e, "message", None) or e).split())
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__


def _median(trials: list, key: str) -> float:
    return statistics.median(t[key] for t in trials)


def migration_rows(raw: list, sriov: list, errors: list) -> list:
    if not raw or not sriov:
        why = "; ".join(errors) or "no trial ran"
        return [_failed(ABSENT, RAW_ABSENT, ABSENT_TARGET, why),
                _failed(BACK, RAW_BACK, BACK_TARGET, why)]
    raw_ms, sriov_ms = _median(raw, "absent"), _median(sriov, "absent")
    back_raw, back_sriov = _median(raw, "back"), _median(sriov, "back")
    added = sriov_ms - raw_ms
    each = ", ".join("%.0f/%.0f" % (r["absent"], s["absent"]) for r, s in zip(raw, sriov))
    lost = "; %d trial(s) failed: %s" % (len(errors), "; ".join(errors)) if errors else ""
    return [
        row(ABSENT, sriov_ms, RAW_ABSENT, raw_ms, ABSENT_TARGET, added <= MAX_MS,
            note="2 vNICs, median of %d/%d interleaved trials (raw/SRIOV.migrate ms: %s): "
                 "SRIOV.migrate adds %+.0f ms, unplug step start to B's record 'migrated'; to the "
                 "plug step's end as SRIOV.migrate reports it (polls B every 0.2 s): %.0f ms%s"
                 % (len(raw), len(sriov), each, added, _median(sriov, "absent_step"), lost)),
        row(BACK, back_sriov, RAW_BACK, back_raw, BACK_TARGET, back_sriov <= MAX_MS,
            note="B's record 'migrated' minus the end of migrate3 (as A's VDSM stand-in saw it), "
                 "median of %d; minus the migrate step's end (VDSM's 'done', after "
                 "after_vm_migrate_source and a 0.2 s poll): %.0f ms"
                 % (len(sriov), _median(sriov, "back_step"))),
    ]


def rollback_row(result: dict) -> dict:
    ms = result["ms"]
    return row(ROLLBACK, ms, RAW_ATTACH, result["raw"], ROLLBACK_TARGET, ms <= MAX_MS,
               note="one run: B's libvirtd killed after the unplug, just before migrate3; migrate "
                    "step's end to rollback step's end (SRIOV.migrate's driver re-plugs at once; "
                    "from migrate3 failing, incl. the VDSM stand-in's recovery: %.0f ms). DESIGN's "
                    "target was rollback_grace + 1 s (%d s) when the reconciler re-plugged; the "
                    "reconciler is now only the safety net. Raw: the same vNICs attached by hand "
                    "on A afterwards" % (result["from_libvirt"], TIMEOUTS["rollback_grace"] + 1))


def run_rounds(env: LabBench, rounds: int) -> tuple:
    """Interleaved trials, one fresh VM each; a failed trial is kept as its reason."""
    raw, sriov, errors = [], [], []
    for i in range(rounds):
        order = ((raw_trial, raw), (sriov_trial, sriov))
        for trial, into in order if i % 2 == 0 else order[::-1]:
            try:
                into.append(trial(env))
            except Exception as e:  # noqa: BLE001 - reported in the row, the other trials still run
                errors.append("%s: %s" % (trial.__name__, _why(e)))
            finally:
                env.cleanup()
    return raw, sriov, errors


def measure_in(env: LabBench, rounds: int, rollback: bool) -> list:
    rows = migration_rows(*run_rounds(env, rounds))
    if rollback:
        try:
            rows.append(rollback_row(rollback_trial(env)))
        except Exception as e:  # noqa: BLE001 - reported in the row
            rows.append(_failed(ROLLBACK, RAW_ATTACH, ROLLBACK_TARGET, _why(e)))
    if env.status_errors:
        rows[0]["note"] += ("; SRIOV.migrationStatus on A answered %d error %d while polled every "
                            "50 ms in this run (asked again; sriov-client would stop following): %s"
                            % (len(env.status_errors), LIBVIRT_FAILURE, env.status_errors[0]))
    return rows


def measure(rounds: int = 3, rollback: bool = True) -> list:
    from sriov_lab.fixtures import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        return [skipped(ABSENT, RAW_ABSENT, ABSENT_TARGET, reason),
                skipped(BACK, RAW_BACK, BACK_TARGET, reason),
                skipped(ROLLBACK, RAW_ATTACH, ROLLBACK_TARGET, reason)]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp, LabBench(tmp) as env:
            return measure_in(env, rounds, rollback)
    except Exception as e:  # noqa: BLE001 - the lab itself failed: every row says why
        why = "lab: %s" % _why(e)
        return [_failed(ABSENT, RAW_ABSENT, ABSENT_TARGET, why),
                _failed(BACK, RAW_BACK, BACK_TARGET, why),
                _failed(ROLLBACK, RAW_ATTACH, ROLLBACK_TARGET, why)][:3 if rollback else 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--no-rollback", action="store_true", help="skip the rollback trial")
    args = p.parse_args(argv)
    print_rows(measure(args.rounds, rollback=not args.no_rollback))
    return 0


if __name__ == "__main__":
    sys.exit(main())
