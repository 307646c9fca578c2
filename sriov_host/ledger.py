"""The reservation ledger: which VF belongs to which VM, in sqlite.

Shared by the hooks and the service on one host. Every allocation is
one ``BEGIN IMMEDIATE`` transaction and the VF address is the primary
key, so two processes can never hold the same VF; a process killed at
any point leaves either the whole transaction or none of it, and a
reservation it made but never used expires after its TTL.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from typing import Callable, Optional

from . import allocation
from .errors import InvalidParams, NoFreeVf, NoSuchVm, ReservationExpired, SriovError
from .ledgerrows import (
    IN_USE,
    RESERVED,
    SCHEMA,
    SCHEMA_VERSION,
    STATES,
    UNPLUGGED,
    Claim,
    Reservation,
    VfOriginal,
)

log = logging.getLogger(__name__)

_EXPIRIES = "reservation_expiries"  # a counter in the meta table

_TOMBSTONE_SECONDS = 24 * 3600


class LedgerConflict(SriovError):
    """A VF is already held by another VM in the ledger."""

    code = 2005


class Ledger:
    def __init__(self, path: str, busy_timeout: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.path = path
        self.clock = clock
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._init_schema()

    def close(self):
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _init_schema(self):
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._write() as db:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            found = int(row["value"]) if row is not None else None
            if found is not None and not 1 <= found <= SCHEMA_VERSION:
                raise SriovError("ledger %s has schema version %s; this code needs %d"
                                 % (self.path, row["value"], SCHEMA_VERSION))
            if found != SCHEMA_VERSION:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                           (str(SCHEMA_VERSION),))
            if found is not None and found < SCHEMA_VERSION:
                log.info("ledger %s upgraded from schema version %d to %d",
                         self.path, found, SCHEMA_VERSION)

    @contextmanager
    def _write(self):
        """One write transaction, taken up front so allocations serialize."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reservations -------------------------------------------------

    def reserve(self, vm_id: str, nics: list, inventory, taken_by_domains=frozenset(),
                networks: Optional[dict] = None, ttl: float = 300,
                prefer_nodes=()) -> Reservation:
        """Reserve one VF per NIC for *vm_id*, all or nothing.

        A retry with the same NICs returns the same VFs with a new expiry;
        a different set replaces the VM's earlier reservation. VFs on the
        NUMA nodes *prefer_nodes* come first (see allocation.pick_vfs).
        """
        for i, n in enumerate(nics):
            if not isinstance(n.get("mac"), str):
                raise InvalidParams("nics[%d].mac: a MAC is required; a VF without one (a plain "
                                    "<hostdev>) cannot be re-created on another host" % i,
                                    {"field": "nics[%d].mac" % i})
        nics = [dict(n, mac=n["mac"].lower()) for n in nics]
        if not nics:
            raise InvalidParams("nics: at least one NIC is required")
        macs = [n["mac"] for n in nics]
        if len(set(macs)) != len(macs):
            raise InvalidParams("nics: MAC %s appears twice"
                                % next(m for m in macs if macs.count(m) > 1))
        now = self.clock()
        with self._write() as db:
            self._expire(db, now)
            mine = self._rows(db, "vm_id=? AND state=?", (vm_id, RESERVED))
            if mine and _same_nics(mine, nics):
                db.execute("UPDATE claims SET expires=?, updated=? WHERE vm_id=? AND state=?",
                           (now + ttl, now, vm_id, RESERVED))
                return Reservation(vm_id, now + ttl, tuple(self._ordered(db, vm_id, nics)))
            db.execute("DELETE FROM claims WHERE vm_id=? AND state=?", (vm_id, RESERVED))
            vfs = _pick_clean(db, nics, inventory, taken_by_domains, networks or {}, prefer_nodes)
            for nic, vf in zip(nics, vfs):
                db.execute("INSERT INTO claims VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                           (vf.address, vf.name, vf.pf, vf.index, vm_id, nic["mac"],
                            nic.get("alias"), nic.get("vlan"), nic.get("network"),
                            RESERVED, now + ttl, now))
            db.execute("DELETE FROM expired WHERE vm_id=?", (vm_id,))
            return Reservation(vm_id, now + ttl, tuple(self._ordered(db, vm_id, nics)))

    def get_reservation(self, vm_id: str) -> Reservation:
        with self._write() as db:
            self._expire(db, self.clock())
            rows = self._rows(db, "vm_id=? AND state=?", (vm_id, RESERVED))
            if rows:
                return Reservation(vm_id, min(r.expires for r in rows), tuple(rows))
            expired = db.execute("SELECT 1 FROM expired WHERE vm_id=?", (vm_id,)).fetchone()
        # raised after COMMIT: raising inside would roll the expiry back
        if expired:
            raise ReservationExpired("the reservation for VM %s has expired" % vm_id,
                                     {"vmID": vm_id})
        raise NoSuchVm("no reservation for VM %s on this host" % vm_id, {"vmID": vm_id})

    def release(self, vm_id: str, states=STATES, keep_macs=()) -> int:
        """Drop the VM's claims in the given states, but those of *keep_macs*; returns how many."""
        marks = ",".join("?" * len(states))
        keep = [m.lower() for m in keep_macs]
        spare = " AND lower(coalesce(mac, '')) NOT IN (%s)" % ",".join("?" * len(keep)) if keep else ""
        with self._write() as db:
            cur = db.execute("DELETE FROM claims WHERE vm_id=? AND state IN (%s)%s" % (marks, spare),
                             (vm_id, *states, *keep))
            db.execute("DELETE FROM expired WHERE vm_id=?", (vm_id,))
            return cur.rowcount

    def release_vf(self, vm_id: str, vf_address: str) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM claims WHERE vm_id=? AND vf_address=?",
                              (vm_id, vf_address)).rowcount

    def set_state(self, vm_id: str, vf_address: str, state: str) -> None:
        """Move one of the VM's claims to in_use or unplugged (neither expires).

        Nothing moves back to reserved: a reservation is only made by
        :meth:`reserve`, which sets its expiry.
        """
        if state not in (IN_USE, UNPLUGGED):
            raise ValueError("cannot move a claim to ledger state %r" % state)
        with self._write() as db:
            cur = db.execute(
                "UPDATE claims SET state=?, expires=CASE WHEN ?='reserved' THEN expires END,"
                " updated=? WHERE vm_id=? AND vf_address=?",
                (state, state, self.clock(), vm_id, vf_address))
            if cur.rowcount != 1:
                raise NoSuchVm("VM %s holds no VF %s in the ledger" % (vm_id, vf_address),
                               {"vmID": vm_id, "vf": vf_address})

    def hold(self, vm_id: str, entries: list, state: str) -> None:
        """Record VFs a VM already uses (placed by the engine, not by us).

        *entries* are dicts with ``vf`` (an inventory Vf) and mac/alias/
        vlan/network. A VF the ledger gives to another VM is a conflict
        and nothing is written.
        """
        now = self.clock()
        with self._write() as db:
            for e in entries:
                vf = e["vf"]
                row = db.execute("SELECT vm_id FROM claims WHERE vf_address=?",
                                 (vf.address,)).fetchone()
                if row is not None and row["vm_id"] != vm_id:
                    raise LedgerConflict("VF %s of VM %s is held by VM %s in the ledger"
                                         % (vf.address, vm_id, row["vm_id"]),
                                         {"vf": vf.address, "holder": row["vm_id"]})
                db.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                           (vf.address, vf.name, vf.pf, vf.index, vm_id, e.get("mac"),
                            e.get("alias"), e.get("vlan"), e.get("network"), state, None, now))

    def claims(self, vm_id: Optional[str] = None, pf: Optional[str] = None) -> list:
        where, args = ["1=1"], []
        if vm_id is not None:
            where.append("vm_id=?")
            args.append(vm_id)
        if pf is not None:
            where.append("pf=?")
            args.append(pf)
        with self._write() as db:
            self._expire(db, self.clock())
            return self._rows(db, " AND ".join(where), tuple(args))

    def extend_reserved(self, vm_id: str, ttl: float) -> int:
        """Push back the expiry of the VM's reservation (it is arriving right now)."""
        now = self.clock()
        with self._write() as db:
            return db.execute("UPDATE claims SET expires=?, updated=? WHERE vm_id=? AND state=? "
                              "AND expires IS NOT NULL AND expires < ?",
                              (now + ttl, now, vm_id, RESERVED, now + ttl)).rowcount

    def expire(self) -> list:
        """Reclaim reservations past their TTL; returns the claims dropped."""
        with self._write() as db:
            return self._expire(db, self.clock())

    def expiries_total(self) -> int:
        """Reservations ever dropped at their TTL on this host, by any process."""
        with self._write() as db:
            self._expire(db, self.clock())
            row = db.execute("SELECT value FROM meta WHERE key=?", (_EXPIRIES,)).fetchone()
        return int(row["value"]) if row else 0

    # -- migration status --------------------------------------------

    def set_status(self, vm_id: str, phase: str, vnics=()) -> None:
        """Record this host's view of a migration (for ``migrationStatus``).

        *vnics* are metadata.VnicRecord-like objects; timings are merged,
        so a later phase does not erase an earlier one's figures.
        """
        now = self.clock()
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO vm_status VALUES (?,?,?)", (vm_id, phase, now))
            for v in vnics:
                db.execute(
                    "INSERT INTO vnic_status VALUES (?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (vm_id, vnic) DO UPDATE SET mac=excluded.mac,"
                    " state=excluded.state, unplug_ms=COALESCE(excluded.unplug_ms, unplug_ms),"
                    " plug_ms=COALESCE(excluded.plug_ms, plug_ms),"
                    " rollback_ms=COALESCE(excluded.rollback_ms, rollback_ms),"
                    " error=excluded.error, updated=excluded.updated",
                    (vm_id, v.key, v.mac, v.state, v.unplug_ms, v.plug_ms, v.rollback_ms,
                     v.error, now))

    def status(self, vm_id: str) -> Optional[dict]:
        row = self._db.execute("SELECT * FROM vm_status WHERE vm_id=?", (vm_id,)).fetchone()
        if row is None:
            return None
        vnics = [dict(r) for r in self._db.execute(
            "SELECT vnic, mac, state, unplug_ms, plug_ms, rollback_ms, error, updated"
            " FROM vnic_status WHERE vm_id=? ORDER BY vnic", (vm_id,))]
        return {"vmID": vm_id, "phase": row["phase"], "updated": row["updated"], "vnics": vnics}

    def vms_in_phase(self, phase: str) -> list:
        """``[(vm_id, updated)]`` of the VMs whose status is *phase* ("migrated-away", say)."""
        return [(r["vm_id"], r["updated"]) for r in self._db.execute(
            "SELECT vm_id, updated FROM vm_status WHERE phase=? ORDER BY vm_id", (phase,))]

    def forget_status(self, vm_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM vm_status WHERE vm_id=?", (vm_id,))
            db.execute("DELETE FROM vnic_status WHERE vm_id=?", (vm_id,))

    # -- VF originals (issue 20 item 7) ---------------------------------

    def remember_original(self, vf_address: str, pf: str, settings: str,
                          vlan: Optional[int]) -> bool:
        """Record a VF's settings before our first change; a later call keeps the first one."""
        with self._write() as db:
            return db.execute("INSERT OR IGNORE INTO vf_originals VALUES (?,?,?,?,?,NULL)",
                              (vf_address, pf, settings, vlan, self.clock())).rowcount == 1

    def has_original(self, vf_address: str) -> bool:
        row = self._db.execute("SELECT 1 FROM vf_originals WHERE vf_address=?",
                               (vf_address,)).fetchone()
        return row is not None

    def originals(self, unheld_only: bool = True) -> list:
        """Recorded originals; with *unheld_only*, of VFs no claim holds: to be put back."""
        if self._db.execute("SELECT 1 FROM vf_originals LIMIT 1").fetchone() is None:
            return []  # the common case, asked at every reservation: no write transaction
        unheld = " WHERE vf_address NOT IN (SELECT vf_address FROM claims)" if unheld_only else ""
        with self._write() as db:
            self._expire(db, self.clock())
            cur = db.execute("SELECT * FROM vf_originals%s ORDER BY vf_address" % unheld)
            return [VfOriginal(**dict(r)) for r in cur]

    def original_restored(self, vf_address: str) -> bool:
        """Drop the record once put back, unless a VM claimed the VF meanwhile."""
        with self._write() as db:
            return db.execute("DELETE FROM vf_originals WHERE vf_address=? AND vf_address NOT IN "
                              "(SELECT vf_address FROM claims)", (vf_address,)).rowcount == 1

    def original_not_restored(self, vf_address: str, error: str) -> bool:
        """Keep why the restore failed; True when that reason is new (worth a warning)."""
        with self._write() as db:
            return db.execute("UPDATE vf_originals SET last_error=? WHERE vf_address=? AND "
                              "coalesce(last_error, '') != ?",
                              (error, vf_address, error)).rowcount == 1

    # -- helpers -------------------------------------------------------

    def _expire(self, db, now: float) -> list:
        dead = self._rows(db, "state=? AND expires IS NOT NULL AND expires <= ?", (RESERVED, now))
        if dead:
            db.execute("DELETE FROM claims WHERE state=? AND expires <= ?", (RESERVED, now))
            vms = {c.vm_id for c in dead}
            for vm_id in vms:
                db.execute("INSERT OR REPLACE INTO expired VALUES (?, ?)", (vm_id, now))
            # Kept in the ledger, not in a process: hooks expire reservations too.
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                       "value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)",
                       (_EXPIRIES, str(len(vms))))
        db.execute("DELETE FROM expired WHERE at < ?", (now - _TOMBSTONE_SECONDS,))
        return dead

    @staticmethod
    def _rows(db, where: str, args: tuple) -> list:
        cur = db.execute("SELECT * FROM claims WHERE %s ORDER BY pf, vf_index" % where, args)
        return [Claim(**dict(r)) for r in cur]

    def _ordered(self, db, vm_id: str, nics: list) -> list:
        """The VM's reserved claims in the order the NICs were asked for."""
        rows = {r.mac: r for r in self._rows(db, "vm_id=? AND state=?", (vm_id, RESERVED))}
        return [rows[n["mac"]] for n in nics if n["mac"] in rows]


def _pick_clean(db, nics, inventory, taken_by_domains, networks, prefer_nodes) -> list:
    """allocation.pick_vfs over the VFs nobody holds and that carry no earlier VM's settings.

    A VF with a recorded original that no claim holds was left by a VM with
    its settings (trust, spoofchk...) still on it; only the service can put
    them back (CAP_NET_ADMIN), and until it has, the VF is not handed out.
    """
    held = {r["vf_address"] for r in db.execute("SELECT vf_address FROM claims")}
    dirty = {r["vf_address"] for r in db.execute("SELECT vf_address FROM vf_originals")}
    usable = [vf for vf in inventory.vfs if vf.address not in held and vf.address not in taken_by_domains]
    try:
        return allocation.pick_vfs(nics, [vf for vf in usable if vf.address not in dirty],
                                   networks, prefer_nodes)
    except NoFreeVf as e:
        allowed = [allocation.allowed_pfs(n, networks) for n in nics]
        waiting = sum(1 for vf in usable if vf.address in dirty
                      and any(pfs is None or vf.pf in pfs for pfs in allowed))
        if not waiting:
            raise
        raise NoFreeVf("%s; %d more wait for sriov-migrationd to put their own settings back"
                       % (e.message, waiting), dict(e.data or {}, awaiting_restore=waiting)) from None


def _same_nics(rows: list, nics: list) -> bool:
    """A retry asks for the same vNICs on the same terms (VLAN, network, PF)."""
    have = sorted((r.mac, r.alias or None, r.vlan, r.network or None) for r in rows)
    want = sorted((n["mac"], n.get("alias") or None, n.get("vlan"), n.get("network") or None)
                  for n in nics)
    pf_ok = all(not n.get("pf") or any(r.mac == n["mac"] and r.pf == n["pf"] for r in rows)
                for n in nics)
    return have == want and pf_ok
