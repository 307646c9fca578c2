"""One live migration in VDSM's real order, timed step by step.

VDSM (lib/vdsm/virt/migration.py ``SourceThread._regular_run``, vm.py
``migrationCreate``) is less kind than a reading of its hook list
suggests, and the lab copies it, order and refusals:

1. the source captures the domain XML it sends (``_srcDomXML``) first;
2. then it runs ``before_vm_migrate_source`` (on a fresh XMLDesc);
3. the destination's ``migrationCreate`` builds its devices from that
   *stale* XML: each hostdev vNIC (and, in the lab's emulated VF mode,
   each vNIC our record names) is resolved to a node device by the
   *source's* VF name and refused if the destination has none or another
   domain uses it; only then ``before_vm_migrate_destination`` runs, with
   the same stale XML, and a non-zero rc fails it (hookError, 78);
4. libvirt migrates with a freshly taken ``VIR_MIGRATE_PARAM_DEST_XML``;
5. the destination runs ``after_vm_migrate_destination`` with its live
   XML, on its own thread: the source does not wait for it;
6. the source runs ``after_vm_migrate_source``, on success only, and
   only then reports "Migration done". A failure runs no source hook;
   the destination's half-made VM is destroyed (its ``after_vm_destroy``).

So an unplug done in ``before_vm_migrate_source`` is too late: the
destination has already acted on the source's VFs. The hosts' side of
this lives in :mod:`sriov_lab.vdsm.api`; this module holds the source
thread and the result record (the destination's device resolution is
:mod:`.hostdevices`)
(:func:`sriov_lab.vdsm.api.migrate` drives two in-process stand-ins synchronously).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from sriov_host import domxml
from sriov_host.errors import BadDomainXml

from ..inventory import free_port
from . import hooks as hr
from .define import (  # noqa: F401 - mig.DONE etc. for the stand-in
    CREATE,
    DONE,
    DONE_MSG,
    HOOK_ERROR,
    IN_PROGRESS_MSG,
    MAX_INCOMING_MIGRATIONS,
    MESSAGES,
    MIG_CANCEL_ERR,
    MIG_IN_PROGRESS,
    MIGRATE,
    MIGRATE_ERR,
    MIGRATE_LIMIT,
    MIGRATE_PARAMS,
    MIGRATION_MAX_BANDWIDTH,
    MIGRATION_RETRY_TIMEOUT,
    NO_VM,
    VM_EXISTS,
    VdsmError,
)

log = logging.getLogger(__name__)

STEP_LABELS = {hr.BEFORE_SOURCE: "guard", hr.BEFORE_DEST: "reserve", hr.AFTER_DEST: "plug",
               hr.AFTER_SOURCE: "release", hr.AFTER_DESTROY: "destroy"}


@dataclass
class MigrationResult:
    """Every step of one migration with monotonic timings, for tests and the demo."""

    vm_id: str
    source: str
    destination: str
    t0: float
    steps: list = field(default_factory=list)  # PointRun of both hosts
    src_dom_xml: Optional[str] = None  # what the destination was handed (step 1)
    create_start: Optional[float] = None
    create_end: Optional[float] = None
    migrate_start: Optional[float] = None
    migrate_end: Optional[float] = None
    ok: bool = False
    code: int = DONE
    error: Optional[str] = None
    aborted_at: Optional[str] = None  # a hook point, "migrationCreate" or "migrate"
    source_done: threading.Event = field(default_factory=threading.Event, repr=False)
    dest_done: threading.Event = field(default_factory=threading.Event, repr=False)
    limit_waited: bool = False  # the destination answered migrateLimit at least once

    def vdsm_status(self, progress: int) -> dict:
        """VDSM's ``getMigrationStatus`` of this migration (migration.py ``SourceThread.status``).

        After a migrateLimit answer VDSM's status *is* that answer: code 82
        while it waits and migrates, still 82 with "Migration done" after a
        success (_finishSuccessfully sets the message only), and still 82 after
        a failure that sets no status of its own (_recover keeps an error status).
        """
        limit = {"code": MIGRATE_LIMIT, "message": MESSAGES[MIGRATE_LIMIT]} if self.limit_waited else None
        if not self.source_done.is_set():
            return {"status": limit or {"code": DONE, "message": IN_PROGRESS_MSG}, "progress": progress}
        if self.ok:
            return {"status": {"code": MIGRATE_LIMIT if limit else DONE, "message": DONE_MSG},
                    "progress": 100}
        if limit and self.code == MIGRATE_ERR and self.aborted_at != CREATE:
            return {"status": limit, "progress": progress}
        return {"status": {"code": self.code, "message": self.error}, "progress": progress}

    def step(self, point: str):
        return next((s for s in self.steps if s.point == point), None)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for the source thread and the destination's completion; True if both ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.source_done.wait(timeout):
            return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.dest_done.wait(left)

    def timeline(self) -> list:
        """``[(label, host, start_s, end_s, rc)]`` relative to the start, by start time."""
        rows = [(STEP_LABELS.get(s.point, s.point), s.host, s.start - self.t0, s.end - self.t0, s.rc)
                for s in self.steps]
        if self.create_start is not None:
            end = self.create_end if self.create_end is not None else self.create_start
            rows.append(("create", self.destination, self.create_start - self.t0, end - self.t0,
                         1 if self.aborted_at == CREATE else 0))
        if self.migrate_start is not None:
            end = self.migrate_end if self.migrate_end is not None else self.migrate_start
            rows.append((MIGRATE, "%s->%s" % (self.source, self.destination),
                         self.migrate_start - self.t0, end - self.t0,
                         1 if self.aborted_at == MIGRATE else 0))
        return sorted(rows, key=lambda r: r[2])


def stream_target(dst_address: str, opts: SourceOptions) -> tuple:
    """``(host, port or None)`` for QEMU's stream: dstqemu, else the destination's own address.

    As VDSM's migration.py ``_startUnderlyingMigration``: ``tcp://`` and
    ``dstqemu`` or the host of ``dst``, no port, so the destination's
    libvirtd takes one from its qemu.conf migration range (49152-49215,
    inside what VDSM's firewalld service opens); so the stream crosses the
    destination's firewall where the lab keys one on the address (the
    real-VF lab). A host with a namespace of its own has its address where
    libvirtd's QEMU, in the machine's namespace, cannot listen: loopback
    then, on a free port.
    """
    if opts.port:
        return opts.dstqemu or "127.0.0.1", opts.port
    if opts.dstqemu:
        return opts.dstqemu, None
    if _loopback(dst_address):
        return dst_address, None
    return "127.0.0.1", free_port()


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a name: VDSM resolves it, the lab does not
        return False


def _migrate_params(port: Optional[int], dest_xml: Optional[str] = None, host: Optional[str] = None,
                    bandwidth: Optional[int] = None) -> dict:
    """migrate3's params: QEMU's stream to *host* (see :func:`stream_target`), capped in MiB/s."""
    import libvirt

    host = host or "127.0.0.1"
    uri_host = "[%s]" % host if ":" in host else host  # normalize_literal_addr
    uri = "tcp://%s" % uri_host + (":%d" % port if port else "")  # none: the destination picks
    params = {libvirt.VIR_MIGRATE_PARAM_URI: uri, libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: host}
    if bandwidth:  # migration.py SourceThread._migration_params
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth)
    if dest_xml is not None:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = dest_xml
    return params


def _live_migrate(dom, dst, flags: Optional[int], dest_xml: Optional[str], opts: SourceOptions):
    import libvirt

    if flags is None:
        flags = libvirt.VIR_MIGRATE_LIVE
        if dom.isPersistent():
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    host, port = stream_target(dst.address, opts)
    dom.migrate3(dst.conn, _migrate_params(port, dest_xml, host, opts.max_bandwidth),
                 flags | opts.vdsm_flags)


def custom_properties(xml: str) -> dict:
    """VM custom properties, as VDSM puts them in the hook environment."""
    try:
        return domxml.vdsm_vm_custom(domxml.parse_domain(xml))
    except BadDomainXml:
        return {}


def hook_error(run: hr.PointRun) -> str:
    return "%s on %s: rc %d: %s" % (run.point, run.host, run.rc, " | ".join(run.stderr[-3:]))


@dataclass
class SourceOptions:
    """How one source thread runs: transport, VM.migrate's params, the demo's/tests' hooks into it."""

    port: Optional[int] = None  # libvirt migration port; free one if None
    flags: Optional[int] = None
    before_migrate: Optional[Callable[[], None]] = None  # just before migrate3
    cancel: threading.Event = field(default_factory=threading.Event)
    dom: object = None  # set while migrate3 runs (for migrateCancel)
    max_bandwidth: Optional[int] = None  # MiB/s; None: unlimited (in-process callers)
    dstqemu: Optional[str] = None  # the destination's migration-network address
    incoming_limit: Optional[int] = None  # sent with migrationCreate
    vdsm_flags: int = 0  # VIR_MIGRATE_* from the params, added to the flags
    retry_timeout: float = field(default_factory=lambda: MIGRATION_RETRY_TIMEOUT)

    @classmethod
    def from_params(cls, params: dict, **kw) -> SourceOptions:
        """What VDSM's ``SourceThread.__init__`` (migration.py) reads of VM.migrate's params.

        maxBandwidth or migration_max_bandwidth; dstqemu; incomingLimit; the
        flags of ``_calculate_migration_flags`` (conv.tobool for all but
        ``encrypted``, taken as it comes). The convergence schedule, outgoing
        limit and CPU sets are accepted and not acted on: the stand-in has no
        monitor thread, one source at a time, and lab domains are not pinned.
        """
        import libvirt

        flags = 0
        for key, flag in (("abortOnError", libvirt.VIR_MIGRATE_ABORT_ON_ERROR),
                          ("compressed", libvirt.VIR_MIGRATE_COMPRESSED),
                          ("autoConverge", libvirt.VIR_MIGRATE_AUTO_CONVERGE)):
            flags |= flag if _tobool(params.get(key)) else 0
        if params.get("encrypted"):
            flags |= libvirt.VIR_MIGRATE_TLS
        return cls(max_bandwidth=int(params.get("maxBandwidth") or MIGRATION_MAX_BANDWIDTH),
                   dstqemu=params.get("dstqemu") or None, incoming_limit=params.get("incomingLimit"),
                   vdsm_flags=flags, **kw)


def _tobool(value) -> bool:
    """vdsm.common.conv.tobool: a bool, "true"/"false" in any case, or a number."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    return text == "true" or (text.lstrip("-").isdigit() and int(text) != 0)


def run_source(src, dst, vm_id: str, result: MigrationResult, opts: SourceOptions) -> None:
    """VDSM's source thread: steps 1-6, or a failure with VDSM's code; never raises.

    *src* and *dst* are :class:`sriov_lab.vdsm.api.VdsmStandIn`; the
    destination is called in-process, as VDSM calls its peer over JSON-RPC.
    """
    try:
        _source_steps(src, dst, vm_id, result, opts)
    except VdsmError as e:
        result.code, result.error = e.code, e.message
        result.aborted_at = result.aborted_at or e.stage
        result.dest_done.set()
        log.warning("%s: migration of %s to %s failed: %s", src.name, vm_id, dst.name, e.message)
        dst.destroy(vm_id, result)  # VDSM's _recover: destroy the destination's VM, if any
    except Exception as e:  # noqa: BLE001 - a lab bug must still end the job, as VDSM's would
        log.exception("%s: migration of %s failed unexpectedly", src.name, vm_id)
        result.code, result.error = MIGRATE_ERR, "%s: %s" % (MESSAGES[MIGRATE_ERR], e)
        result.dest_done.set()
    finally:
        result.source_done.set()


def _source_steps(src, dst, vm_id, result, opts) -> None:
    dom = src.lookup(vm_id)
    result.src_dom_xml = src_xml = dom.XMLDesc(0)  # 1: captured before any hook
    custom = custom_properties(src_xml)
    while not _prepare_and_create(src, dst, dom, vm_id, custom, result, opts):  # 2, 3
        _wait_to_retry(src, vm_id, opts)
    _check_cancel(opts)
    if opts.before_migrate is not None:
        opts.before_migrate()
    domain_xml = _underlying_migration(dom, dst, result, opts)  # 4
    dst.complete_incoming(vm_id, result)  # 5, on the destination's own thread
    result.steps.append(src.hooks.run(hr.AFTER_SOURCE, domain_xml, vm_id, custom))  # 6
    src.finished_successfully(vm_id, domain_xml)  # Down, until VM.destroy; then "Migration done"
    result.ok, result.code = True, DONE


def _prepare_and_create(src, dst, dom, vm_id, custom, result, opts) -> bool:
    """The source hook, then the destination's migrationCreate; False: it is at its limit.

    VDSM runs both again on each attempt (migration.py _startUnderlyingMigration).
    """
    run = src.hooks.run(hr.BEFORE_SOURCE, dom.XMLDesc(0), vm_id, custom)  # 2
    result.steps.append(run)
    if run.failed:
        raise VdsmError(MIGRATE_ERR, hook_error(run), hr.BEFORE_SOURCE)
    resp = dst.migration_create(vm_id, result.src_dom_xml, result,
                                incoming_limit=opts.incoming_limit)  # 3
    code = resp["status"]["code"]
    if code == MIGRATE_LIMIT:
        result.limit_waited = True  # VDSM's status is now this answer (see vdsm_status)
        return False
    if code:
        raise VdsmError(code, stage=result.aborted_at or CREATE, message=resp["status"]["message"])
    return True


def _wait_to_retry(src, vm_id: str, opts: SourceOptions) -> None:
    """migration_retry_timeout, or less if cancelled (SourceThread._regular_run's wait)."""
    log.info("%s: migration of %s: the destination is at its incoming limit; retrying in %g s",
             src.name, vm_id, opts.retry_timeout)
    opts.cancel.wait(opts.retry_timeout)
    _check_cancel(opts)


def _check_cancel(opts: SourceOptions) -> None:
    if opts.cancel.is_set():
        raise VdsmError(MIG_CANCEL_ERR, stage=MIGRATE, message="Migration canceled")


def _underlying_migration(dom, dst, result, opts) -> str:
    """migrate3 with a fresh migratable XML; return the XML the source keeps for its hook."""
    import libvirt

    domain_xml = dom.XMLDesc(0)
    dest_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    result.migrate_start = time.monotonic()
    opts.dom = dom
    try:
        _check_cancel(opts)
        _live_migrate(dom, dst, opts.flags, dest_xml, opts)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED or opts.cancel.is_set():
            raise VdsmError(MIG_CANCEL_ERR, stage=MIGRATE, message="Migration canceled: %s" % e) from e
        raise VdsmError(MIGRATE_ERR, "libvirt: %s" % e, MIGRATE) from e
    finally:
        opts.dom = None
        result.migrate_end = time.monotonic()
    return domain_xml


def config_of(hooks: hr.HookRunner):
    """The host config a hook runner's environment names (defaults without one)."""
    from sriov_host import config

    path = hooks.env.get(config.ENV_VAR)
    return config.load(path) if path else config.Config()
