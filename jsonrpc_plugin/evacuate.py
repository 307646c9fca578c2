"""``SRIOV.evacuate``: drain this host's SR-IOV VMs to other hosts, planned before any unplug.

The order: check the destinations (each a running service, none of them
this host); check every VM as ``SRIOV.migrate`` would (the one policy);
read each destination's free VFs; plan (:mod:`sriov_host.drainplan`); a
plan that does not place every VM is refused with nothing touched. Then
one ``reserveVfs`` per VM on its destination, PFs pinned as planned;
should any fail, every one is released and the drain refused. Only then
do the moves start, at most *max_parallel* at once, each through
``SRIOV.migrate``'s own driver (:mod:`.migrator`) with its own rollback.
The driver's ``reserveVfs`` asks for the same vNICs, so the ledger hands
back the VFs already held (a retry, not a second reservation); until a
VM's turn comes, its reservation is extended here.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
import uuid
from typing import Callable, Optional

from sriov_host import domxml, drainplan, libvirtconn, policy, unplug
from sriov_host.errors import InvalidParams, MigrationInProgress, NoSuchVm, NotMigratable, SriovError

from .rpcerrors import one_line

log = logging.getLogger("sriov-migrationd.evacuate")

POLL = 0.05
FINAL_OK = "migrated"
PLANNED, RESERVED, STARTING, MIGRATING, DONE = "planned", "reserved", "starting", "migrating", "done"


def nic_absent_ms(job: dict) -> Optional[float]:
    """Unplug start to plug end of a finished ``SRIOV.migrate`` job, in ms (None: not both)."""
    steps = {s["step"]: s for s in job.get("steps", [])}
    unplug, plug = steps.get("unplug"), steps.get("plug")
    if not unplug or not plug or plug["ms"] is None:
        return None
    return round((plug["start"] + plug["ms"] / 1000.0 - unplug["start"]) * 1000.0, 1)


class _Row:
    """One VM of a drain: its place in the plan and how its move went."""

    def __init__(self, placement: drainplan.Placement, address: tuple):
        self.placement = placement
        self.vm_id = placement.vm_id
        self.address = address  # (host, port) of its destination's service
        self.state = PLANNED
        self.job = None  # the migrator's MigrationJob once started
        self.error: Optional[str] = None
        self.outcome: Optional[str] = None
        self.next_extend = 0.0

    def to_json(self) -> dict:
        job = self.job.to_json() if self.job is not None else None
        running = [s for s in (job or {}).get("steps", []) if s["ms"] is None]
        return {"vmID": self.vm_id, "dst": self.placement.dst, "state": self.state,
                "phase": job["phase"] if job else None,
                "step": running[-1]["step"] if running else None,
                "steps": job["steps"] if job else [], "outcome": self.outcome,
                "error": self.error or (job or {}).get("error"),
                "nic_absent_ms": nic_absent_ms(job) if job and job["done"] else None,
                "nics": self.placement.to_json()["nics"]}


class Drain:
    """One evacuation of this host, from plan to the last VM's outcome."""

    def __init__(self, dsts: list, max_parallel: int, plan: drainplan.DrainPlan, addresses: dict):
        self.id = str(uuid.uuid4())
        self.dsts = dsts
        self.max_parallel = max_parallel
        self.plan = plan
        self.rows = [_Row(p, addresses[p.dst]) for p in plan.placements]
        self.state = "reserving"
        self.started = time.time()
        self.ended: Optional[float] = None
        self.left: list = []

    @property
    def running(self) -> bool:
        return self.ended is None

    def row(self, vm_id: str) -> Optional[_Row]:
        return next((r for r in self.rows if r.vm_id == vm_id), None)

    def to_json(self) -> dict:
        return {"drain": self.id, "state": self.state, "dsts": self.dsts,
                "max_parallel": self.max_parallel, "started": round(self.started, 3),
                "ended": None if self.ended is None else round(self.ended, 3),
                "plan": self.plan.to_json(), "vms": [r.to_json() for r in self.rows],
                "left": list(self.left)}


class Drains:
    """This host's drains: at most one at a time; the last one kept for its status."""

    def __init__(self, host, migrations, peer_factory: Callable, ttl: Optional[float] = None):
        self.host = host
        self.migrations = migrations
        self.peer_factory = peer_factory
        self.ttl = ttl or host.cfg.reservation_ttl
        self.current: Optional[Drain] = None
        self._claimed: set = set()  # VMs of a drain being planned or run
        self._lock = threading.Lock()

    def holds(self, vm_id: str) -> bool:
        """True while *vm_id* belongs to a drain that has not ended (SRIOV.migrate refuses it)."""
        with self._lock:
            return vm_id in self._claimed

    def vm_view(self, vm_id: str) -> Optional[dict]:
        """The drain's row of *vm_id* (with the drain's id), for ``migrationStatus``."""
        drain = self.current
        row = drain.row(vm_id) if drain is not None else None
        if row is None:
            return None
        return dict(row.to_json(), drain=drain.id, drain_state=drain.state)

    def status(self) -> dict:
        drain = self.current
        if drain is None:
            raise NoSuchVm("no drain has run on this host since the service started")
        return drain.to_json()

    # -- start: check, plan, reserve ---------------------------------------------

    def start(self, dsts, max_parallel: int, dry_run: bool, vms, port: int) -> dict:
        addresses = self._destinations(dsts, port)
        vm_ids = self._vms(vms)
        if not dry_run:
            self._claim(vm_ids)
        try:
            needs = [self._need(vm) for vm in vm_ids]
            inventories = [drainplan.Destination(name, self._free_vfs(name, peer))
                           for name, (_address, peer) in addresses.items()]
            plan = drainplan.plan(needs, inventories)
            if dry_run:
                return {"dry_run": True, "plan": plan.to_json()}
            if not plan.feasible:
                raise NotMigratable("drain refused, nothing touched: %d of %d VM(s) cannot be placed: %s"
                                    % (len(plan.unplaced), len(needs), "; ".join(
                                        "%s: %s" % (u["vmID"], u["why"]) for u in plan.unplaced)),
                                    {"plan": plan.to_json()})
            drain = Drain(list(addresses), max_parallel, plan,
                          {n: a for n, (a, _p) in addresses.items()})
            self._reserve_all(drain, {n: p for n, (_a, p) in addresses.items()})
        except BaseException:
            if not dry_run:
                with self._lock:
                    self._claimed.difference_update(vm_ids)
            raise
        self.current = drain
        drain.state = "running"
        threading.Thread(target=self._run, args=(drain,), name="sriov-drain", daemon=True).start()
        return {"dry_run": False, "drain": drain.id, "plan": plan.to_json(), "state": drain.state}

    def _destinations(self, dsts, default_port: int) -> dict:
        """``{name: ((host, port), peer)}``: each answers, none is this host or another's twin."""
        out, uuids = {}, {}
        for i, (address, port) in enumerate(dsts):
            field = "dsts[%d]" % i
            port = port or default_port
            peer = self.peer_factory(address, port)
            try:
                answer = peer.call("SRIOV.ping")
            except Exception as e:  # noqa: BLE001 - RpcError/RpcUnavailable: an unknown destination
                raise InvalidParams("invalid params: %s: no sriov-migrationd answers at %s:%d (%s)"
                                    % (field, address, port, one_line(e)), {"field": field}) from None
            host_uuid = answer.get("host_uuid") if isinstance(answer, dict) else None
            if host_uuid and host_uuid == self.host.host_id:
                raise InvalidParams("invalid params: %s: %s:%d is this host" % (field, address, port),
                                    {"field": field})
            keys = {host_uuid} if host_uuid else _resolved(address, port)  # no UUID: by address
            twin = next((uuids[k] for k in keys if k in uuids), None)
            if twin is not None:
                raise InvalidParams("invalid params: %s: %s:%d is the same host as dsts[%d]"
                                    % (field, address, port, twin), {"field": field})
            uuids.update((k, i) for k in keys)
            out["%s:%d" % (address, port) if port != default_port else address] = ((address, port), peer)
        return out

    def _vms(self, vms) -> list:
        """The named VMs (each must run here), else every running VM with an SR-IOV vNIC."""
        if vms is not None:
            for i, vm in enumerate(vms):
                if not self.host.is_running_here(vm):
                    raise InvalidParams("invalid params: vms[%d]: VM %s is not running on this host"
                                        % (i, vm), {"field": "vms[%d]" % i})
            return list(vms)
        import libvirt

        out = []
        for dom in self.host.conn().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            vm = dom.UUIDString()
            try:
                root = domxml.parse_domain(libvirtconn.live_xml(dom))
                verdict = unplug.build_plan(vm, root, self.host.cfg,
                                            lambda: self.host.inventory().addresses).verdict
            except SriovError:  # unreadable, or gone while we looked: the plan says which
                verdict = None
            if verdict != policy.NOTHING:  # SR-IOV vNICs (movable or refused: the plan names it)
                out.append(vm)
        return sorted(out)

    def _claim(self, vm_ids) -> None:
        with self._lock:
            if self.current is not None and self.current.running or self._claimed:
                raise MigrationInProgress("a drain of this host is already running (%s); see SRIOV "
                                          "evacuateStatus" % (self.current.id if self.current else
                                                              "being planned"))
            self._claimed.update(vm_ids)

    def _need(self, vm_id: str) -> drainplan.VmNeed:
        """The VM's vNICs and NUMA nodes, or why it cannot move (SRIOV.migrate's own check)."""
        if self.migrations.is_driving(vm_id):
            return drainplan.VmNeed(vm_id, refusal="SRIOV.migrate is already driving it")
        try:
            plan, hints = self.migrations._check(vm_id, {})  # the one policy, as SRIOV.migrate
        except SriovError as e:
            return drainplan.VmNeed(vm_id, refusal=e.message)
        nics = tuple(drainplan.NicNeed(v.mac, v.alias, v.vlan, v.network) for v in plan.vnics)
        return drainplan.VmNeed(vm_id, nics, tuple(hints.nodes))

    def _free_vfs(self, name: str, peer) -> tuple:
        try:
            return drainplan.pools_from_vfs(peer.call("SRIOV.listVfs"))
        except Exception as e:  # noqa: BLE001 - it answered ping a moment ago
            raise NotMigratable("drain refused, nothing touched: cannot read the free VFs of %s: %s"
                                % (name, one_line(e)), {"dst": name}) from None

    def _reserve_all(self, drain: Drain, peers: dict) -> None:
        """One reserveVfs per VM before any unplug; on a failure, release them all and refuse."""
        done = []
        for row in drain.rows:
            if not row.placement.nics:
                row.state = RESERVED
                continue
            peer = peers[row.placement.dst]
            try:
                self._reserve(row, peer)
            except Exception as e:  # noqa: BLE001 - RpcError/RpcUnavailable
                for other, other_peer in done + [(row, peer)]:
                    _release(other, other_peer)
                raise NotMigratable("drain refused, nothing unplugged: reserveVfs of VM %s on %s failed: "
                                    "%s; every reservation of this drain was released"
                                    % (row.vm_id, row.placement.dst, one_line(e)),
                                    {"vmID": row.vm_id, "dst": row.placement.dst}) from None
            done.append((row, peer))
            row.state = RESERVED

    def _reserve(self, row: _Row, peer=None) -> None:
        peer = peer or self.peer_factory(*row.address)
        peer.call("SRIOV.reserveVfs", {"vmID": row.vm_id, "nics": row.placement.reserve_nics(),
                                       "ttl": int(self.ttl)})
        row.next_extend = time.monotonic() + max(1.0, self.ttl / 3.0)

    # -- run: bounded concurrency over the migrator ------------------------------

    def _run(self, drain: Drain) -> None:
        try:
            self._drive(drain)
        except Exception as e:  # noqa: BLE001 - the drain must still end
            log.exception("drain %s crashed", drain.id)
            for row in drain.rows:
                if row.state != DONE:
                    row.state, row.outcome = DONE, row.outcome or "failed"
                    row.error = row.error or "internal error: %s" % e
        finally:
            drain.left = [r.vm_id for r in drain.rows if self._still_here(r.vm_id)]
            drain.state = "done" if all(r.outcome == FINAL_OK for r in drain.rows) else "failed"
            drain.ended = time.time()
            with self._lock:
                self._claimed.difference_update(r.vm_id for r in drain.rows)
            log.info("drain %s: %s; left on this host: %s", drain.id, drain.state,
                     ", ".join(drain.left) or "none")

    def _drive(self, drain: Drain) -> None:
        queue = _spread(drain.rows)
        active = []
        while queue or active:
            # A slot is a VDSM migration (max_outgoing_migrations): it frees once VDSM's part
            # has ended, while the plug on the destination or a re-plug here still runs.
            while queue and sum(1 for r in active if not _past_vdsm(r.job)) < drain.max_parallel:
                row = queue.pop(0)
                if self._begin(row):
                    active.append(row)
            for row in [r for r in active if r.job.done]:
                active.remove(row)
                row.state, row.outcome = DONE, row.job.phase
            now = time.monotonic()
            for row in queue:
                if row.placement.nics and now > row.next_extend:
                    self._extend(row)
            time.sleep(POLL)

    def _begin(self, row: _Row) -> bool:
        """Hand *row* to the migrator; False when it refused (the row then failed, released)."""
        row.state = STARTING
        host, port = row.address
        try:
            self.migrations.start(row.vm_id, host, port, None, None)
        except SriovError as e:
            row.state, row.outcome, row.error = DONE, "failed", "SRIOV.migrate refused: %s" % e.message
            _release(row, self.peer_factory(host, port))
            return False
        row.job = self.migrations.job(row.vm_id)
        row.state = MIGRATING
        return True

    def _extend(self, row: _Row) -> None:
        try:
            self._reserve(row)
        except Exception as e:  # noqa: BLE001 - the driver reserves again at its turn
            log.info("drain: extending the reservation of VM %s on %s failed: %s", row.vm_id,
                     row.placement.dst, one_line(e))
            row.next_extend = time.monotonic() + 1.0

    def _still_here(self, vm_id: str) -> bool:
        try:
            return self.host.is_running_here(vm_id)
        except SriovError:
            return True


def _past_vdsm(job) -> bool:
    """The job has ended, or its VDSM migration has (its ``migrate`` step is finished)."""
    return job.done or any(s.name == "migrate" and s.end is not None for s in list(job.steps))


def _resolved(address: str, port: int) -> set:
    """The addresses *address* resolves to, with *port*: two names of one service compare equal."""
    try:
        infos = socket.getaddrinfo(address.strip("[]"), port, proto=socket.IPPROTO_TCP)
    except OSError:
        return {(address, port)}
    return {info[4][:2] for info in infos}


def _spread(rows) -> list:
    """The start order: destinations taken in turn, so parallel moves go to different hosts."""
    by_dst = {}
    for r in rows:
        by_dst.setdefault(r.placement.dst, []).append(r)
    turns = itertools.zip_longest(*by_dst.values())
    return [r for turn in turns for r in turn if r is not None]


def _release(row: _Row, peer) -> None:
    try:
        peer.call("SRIOV.releaseVfs", {"vmID": row.vm_id})
    except Exception as e:  # noqa: BLE001 - it expires after its TTL anyway
        log.warning("drain: releasing VM %s on %s failed: %s", row.vm_id, row.placement.dst, one_line(e))
