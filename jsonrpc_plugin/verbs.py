"""The SRIOV.* verbs, and the one decorator that turns errors into JSON-RPC faults.

Each verb validates its params first (``params.SPECS``), so a rejected
call changes nothing; then it works through the shared host package.
Expected errors (bad params, no free VF, unknown VM...) are logged on one
line; anything else is logged with its traceback and answered -32603
without internal details.
"""

from __future__ import annotations

import functools
import logging
import socket
import time

from jsonrpclib import Fault

import sriov_host
from sriov_host import allocation, metadata, plug, rollback, vfclean, vfsettings, vfstate
from sriov_host.errors import (
    LibvirtFailure,
    MigrationInProgress,
    NoSuchVm,
    NotMigratable,
    SriovError,
    one_line,
)
from sriov_host.ledger import RESERVED, STATES

from . import migrator, params, vmview

log = logging.getLogger("sriov-migrationd.verbs")

NAMESPACE = "SRIOV"
INTERNAL_ERROR = -32603


def rpc_verb(func):
    """Validate params, run the verb, log one line, map errors to a Fault."""
    verb = func.__name__
    spec = params.SPECS[verb]

    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        start = time.monotonic()
        vm = kwargs.get("vmID", args[0] if args and spec and spec[0].name == "vmID" else None)
        try:
            bound = params.bind(verb, spec, args, kwargs, self.defaults())
            result = func(self, **bound)
        except SriovError as e:
            message = one_line(e.message)  # an echoed value never makes a 1 MB answer or log line
            _log_call(verb, vm, start, "error %d: %s" % (e.code, message),
                      logging.INFO if e.expected else logging.ERROR)
            return Fault(e.code, message, data=e.data or None)
        except Exception:
            log.exception("%s.%s vmID=%s failed unexpectedly", NAMESPACE, verb, vm)
            _log_call(verb, vm, start, "internal error", logging.ERROR)
            return Fault(INTERNAL_ERROR, "internal error in %s.%s; see the sriov-migrationd log"
                         % (NAMESPACE, verb))
        _log_call(verb, vm, start, "ok", logging.INFO)
        return result

    wrapper.rpc_name = "%s.%s" % (NAMESPACE, verb)
    return wrapper


def _log_call(verb, vm, start, outcome, level):
    log.log(level, "%s.%s vmID=%s -> %s (%.1f ms)", NAMESPACE, verb,
            vm if isinstance(vm, str) and len(vm) <= 64 else "-", outcome,
            (time.monotonic() - start) * 1000.0)


class Verbs:
    """The verbs over one host's context (see host.HostContext)."""

    def __init__(self, host, devices=None, job_active=None, migrations=None, drains=None):
        self.host = host
        self.cfg = host.cfg
        self.devices = devices
        self._job_active = job_active or _job_active
        self.migrations = migrations
        self.drains = drains  # SRIOV.evacuate (evacuate.Drains)

    def defaults(self) -> dict:
        return {"ttl": self.cfg.reservation_ttl}

    def registered(self) -> dict:
        """``SRIOV.name`` -> bound verb, for the server to register."""
        return {m.rpc_name: m for m in (getattr(self, n) for n in params.SPECS)}

    @rpc_verb
    def ping(self):
        return {"version": sriov_host.__version__, "host": socket.gethostname(),
                "host_uuid": self.host.host_id}

    @rpc_verb
    def listVfs(self, pf):
        refs = self.host.domain_refs()
        inv = self.host.inventory()
        kernel = None
        if self.cfg.vf_device == "hostdev":  # real VFs: the kernel knows their MAC/VLAN
            from sriov_host import netlink

            kernel = netlink.kernel_vf_settings([pf] if pf else inv.pfs)
        rows = vfstate.vf_table(inv, self.host.ledger.claims(pf=pf), refs, pf, kernel)
        nets = self.cfg.networks  # for a drain's plan: which VFs may carry which network
        for row in rows:
            row["networks"] = sorted(n for n, pfs in nets.items() if row["pf"] in pfs) if nets else None
        return rows

    @rpc_verb
    def listVms(self):
        return vmview.list_vms(self.host, self.migrations)

    @rpc_verb
    def reserveVfs(self, vmID, nics, ttl, numa_nodes, cpus):
        """Reserve; ``numa`` in the answer says how the VFs stand against a NUMA preference.

        Released VFs that still carry their last VM's settings get their own
        back first; the ledger hands out none that could not (sriov_host.vfclean).
        """
        prefer = allocation.numa_preference(numa_nodes, cpus, self.host.cpu_nodes)
        with self.host.vm_lock(vmID):
            taken = frozenset(self.host.domain_refs())
            inv = self.host.inventory()
            vfclean.clean_released(self.host.ledger, lambda: taken)
            res = self.host.ledger.reserve(vmID, nics, inv, taken_by_domains=taken,
                                           networks=self.cfg.networks, ttl=ttl,
                                           prefer_nodes=prefer.nodes if prefer else ())
        answer = dict(res.to_json(), numa=None)
        if self.cfg.vf_device == "hostdev":
            self._carry_settings(answer["nics"], {n["mac"]: n for n in nics})
        if prefer is not None:
            by_address = inv.by_address()
            answer["numa"] = allocation.numa_report(
                prefer, [(c.mac, by_address.get(c.vf_address)) for c in res.claims])
        return answer

    def _carry_settings(self, answer_nics, asked_by_mac) -> None:
        """Put the source VFs' own settings on the reserved VFs now, before anything is unplugged.

        Setting them needs CAP_NET_ADMIN, which this service has and the
        destination hook (user vdsm) has not; the hook only checks them
        after its attach. Each answer NIC says what was refused, by name.
        """
        for n in answer_nics:
            asked = asked_by_mac.get(n["mac"], {})
            wanted = asked.get("vf_settings")
            if not (wanted or asked.get("vlan")):
                continue
            refused = self._put_settings(n["vf"], wanted)
            if wanted:
                n["vf_settings"] = {"wanted": wanted, "refused": refused}

    def _put_settings(self, vf, wanted) -> dict:
        """Record the VF's own settings (to be put back once released), then set *wanted*.

        A VLAN changes the VF too (libvirt sets it at the plug), so the
        record is made for it alone. A VF whose own settings cannot be
        recorded gets none set: nothing could ever put them back.
        """
        try:
            kept = vfclean.remember(self.host.ledger, vf["pf"], vf["address"])
            if not wanted:
                return {}
            if not kept:
                return {"vf_settings": "the VF's own settings cannot be read, to be put back later"}
            return plug.put_vf_settings(vf["pf"], vf["address"], vfsettings.from_text(wanted))[1]
        except Exception as e:  # noqa: BLE001 - the VF stays reserved; the plug tries again
            log.warning("VF settings on %s not set: %s", vf["address"], e)
            return {"vf_settings": "%s: %s" % (type(e).__name__, e)}

    @rpc_verb
    def releaseVfs(self, vmID):
        """Drop the VM's reservation; all its claims if it does not run here.

        Where it runs, plugged (in_use) VFs stay, and so do the reserved VFs
        of vNICs our record still lists as waiting to be plugged: the
        destination hook may not have run yet when the engine shows the VM up.
        """
        with self.host.vm_lock(vmID):
            try:
                here = self.host.is_running_here(vmID)
            except LibvirtFailure as e:  # libvirtd down: a reservation can go, nothing in use
                log.info("releaseVfs vmID=%s without libvirt (%s): reservations only", vmID, e.message)
                return {"released": self.host.ledger.release(vmID, (RESERVED,))}
            if not here:
                return {"released": self.host.ledger.release(vmID, STATES)}
            dom = self.host.lookup(vmID)
            record = rollback.read_live_record(dom) if dom is not None else None
            pending = [v.mac for v in record.by_state(metadata.UNPLUGGED) if v.mac] if record else []
            return {"released": self.host.ledger.release(vmID, (RESERVED,), keep_macs=pending)}

    @rpc_verb
    def getReservation(self, vmID):
        return self.host.ledger.get_reservation(vmID).to_json()

    @rpc_verb
    def migrationStatus(self, vmID):
        status = self.host.ledger.status(vmID)
        claims = self.host.ledger.claims(vm_id=vmID)
        dom, record = self._live_record(vmID)
        job = self.migrations.job(vmID) if self.migrations is not None else None
        drain = self.drains.vm_view(vmID) if self.drains is not None else None
        if status is None and dom is None and not claims and job is None and drain is None:
            raise NoSuchVm("this host knows nothing of VM %s" % vmID, {"vmID": vmID})
        view = status_view(vmID, record, status, claims, dom is not None)
        view["migration"] = job.to_json() if job is not None else None
        view["drain"] = drain
        return view

    def _live_record(self, vm_id):
        """The VM's domain and our record in it; (None, None) if it is not, or no longer, here.

        A VM that is just leaving (the end of an outgoing migration) can vanish
        between the lookup and the read: that is "not here", not an error.
        """
        dom = self.host.lookup(vm_id)
        if dom is None:
            return None, None
        try:
            return dom, rollback.read_live_record(dom)
        except LibvirtFailure:
            if self.host.lookup(vm_id) is None:
                return None, None
            raise

    @rpc_verb
    def migrate(self, vmID, dst, port, timeout, params):
        """Start a VDSM-level migration driven from here; follow it with migrationStatus.

        *params* (validated MigrateParams keys) go to VDSM over [migration]'s.
        """
        migrations = _supported(self.migrations)
        if self.drains is not None and self.drains.holds(vmID):
            raise MigrationInProgress("VM %s is part of a running drain of this host (SRIOV "
                                      "evacuateStatus)" % vmID, {"vmID": vmID})
        return migrations.start(vmID, dst, port, timeout, params)

    @rpc_verb
    def evacuate(self, dsts, max_parallel, dry_run, vms, port):
        """Plan, reserve all, then move this host's SR-IOV VMs (evacuate.Drains); dry_run plans only."""
        return _supported(self.drains).start(dsts, max_parallel, dry_run, vms, port)

    @rpc_verb
    def recentMigrations(self):
        """The SRIOV.migrate runs that ended since the service started, newest first (each as
        migrationStatus shows it), for the Cockpit page's chart: kept in memory only."""
        return {"kept": migrator.RECENT, "migrations": _supported(self.migrations).recent()}

    @rpc_verb
    def evacuateStatus(self):
        """The running (or last) drain, per VM."""
        return _supported(self.drains).status()

    @rpc_verb
    def announce(self, vmID):
        """Announce the MAC of each plugged vNIC of a VM running here (sriov_host.announce).

        ``SRIOV.migrate`` asks the destination once its hook has plugged:
        the hook runs as vdsm, without the CAP_NET_RAW this service has.
        """
        dom, record = self._live_record(vmID)
        if dom is None or not dom.isActive():
            raise NoSuchVm("VM %s is not running on this host" % vmID, {"vmID": vmID})
        announced, failed = [], []
        for rec in record.by_state(metadata.PLUGGED) if record else []:
            via, error = plug.announce_vnic(self.cfg, dom, rec)
            if error:
                failed.append({"mac": rec.mac, "via": via, "error": error})
            elif via:
                announced.append({"mac": rec.mac, "via": via})
        return {"vmID": vmID, "announced": announced, "failed": failed}

    @rpc_verb
    def restoreNics(self, vmID):
        dom = self.host.lookup(vmID)
        if dom is None or not dom.isActive():
            raise NoSuchVm("VM %s is not running on this host" % vmID, {"vmID": vmID})
        if self.migrations is not None and self.migrations.is_driving(vmID):
            raise MigrationInProgress("SRIOV.migrate is driving VM %s; it re-plugs by itself if "
                                      "the migration fails" % vmID, {"vmID": vmID})
        with self.host.vm_lock(vmID):
            if self._job_active(dom):
                raise rollback.DomainBusy("VM %s has an active libvirt job (migration?); "
                                          "not re-plugging now" % vmID, {"vmID": vmID})
            result = rollback.restore_vnics(dom, self.cfg, self.host.ledger, self.host.host_id,
                                            "restoreNics", self.devices, retry_failed=True)
        if result.failed:
            raise rollback.RestoreFailed("%d of %d vNIC(s) of VM %s not re-plugged: %s" % (
                len(result.failed), len(result.failed) + len(result.restored) + len(result.already),
                vmID, "; ".join("%s: %s" % (f["alias"], f["error"]) for f in result.failed)),
                result.to_json())
        return result.to_json()


def status_view(vm_id, record, status, claims, running_here) -> dict:
    """One host's view: the record's vNICs, with timings the ledger kept."""
    rows = {r["vnic"]: r for r in (status or {}).get("vnics", [])}
    vnics = []
    for v in (record.vnics if record else ()):
        row = rows.pop(v.key, {})
        vnics.append({"alias": v.alias, "mac": v.mac, "vf_address": v.vf_address, "state": v.state,
                      "unplug_ms": _first(v.unplug_ms, row.get("unplug_ms")),
                      "plug_ms": _first(v.plug_ms, row.get("plug_ms")),
                      "rollback_ms": _first(v.rollback_ms, row.get("rollback_ms")),
                      "error": v.error or row.get("error")})
    for key, row in sorted(rows.items()):
        vnics.append({"alias": key, "mac": row["mac"], "vf_address": None, "state": row["state"],
                      "unplug_ms": row["unplug_ms"], "plug_ms": row["plug_ms"],
                      "rollback_ms": row["rollback_ms"], "error": row["error"]})
    if record is not None:
        phase = record.phase
    elif status is not None:
        phase = status["phase"]
    else:
        phase = "reserved" if any(c.state == RESERVED for c in claims) else "idle"
    return {"vmID": vm_id, "phase": phase, "running_here": running_here,
            "record_host": record.host if record else None, "vnics": vnics,
            "vfs": [dict(c.vf_json(), state=c.state, mac=c.mac, alias=c.alias) for c in claims]}


def _first(*values):
    return next((v for v in values if v is not None), None)


def _job_active(dom) -> bool:
    """True while libvirt runs a job (a migration) on the domain."""
    try:
        return dom.jobInfo()[0] != 0  # VIR_DOMAIN_JOB_NONE
    except Exception:  # noqa: BLE001 - drivers without job info have no migration either
        return False


def _supported(part):
    """The service's migrations or drains; a service started without them refuses the verb."""
    if part is None:
        raise NotMigratable("this service was started without migration support")
    return part
