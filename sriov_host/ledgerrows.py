"""The ledger's tables and rows: its schema, a claim's states, and the records its reads give.

Apart from :mod:`sriov_host.ledger` (the transactions) so the schema can
be read on its own; the states are what every caller compares against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# 2: vf_originals (a VF's own settings before we first changed them). Each
# table is created IF NOT EXISTS, so an older file is brought up by SCHEMA.
SCHEMA_VERSION = 2

RESERVED = "reserved"
IN_USE = "in_use"
UNPLUGGED = "unplugged-for-migration"
STATES = (RESERVED, IN_USE, UNPLUGGED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    vf_address TEXT PRIMARY KEY,
    vf_name TEXT NOT NULL,
    pf TEXT NOT NULL,
    vf_index INTEGER NOT NULL,
    vm_id TEXT NOT NULL,
    mac TEXT,
    alias TEXT,
    vlan INTEGER,
    network TEXT,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'in_use', 'unplugged-for-migration')),
    expires REAL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS claims_vm ON claims (vm_id);
CREATE TABLE IF NOT EXISTS expired (vm_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vm_status (
    vm_id TEXT PRIMARY KEY, phase TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vnic_status (
    vm_id TEXT NOT NULL, vnic TEXT NOT NULL, mac TEXT, state TEXT NOT NULL,
    unplug_ms REAL, plug_ms REAL, rollback_ms REAL, error TEXT, updated REAL NOT NULL,
    PRIMARY KEY (vm_id, vnic));
CREATE TABLE IF NOT EXISTS vf_originals (
    vf_address TEXT PRIMARY KEY, pf TEXT NOT NULL, settings TEXT NOT NULL, vlan INTEGER,
    recorded REAL NOT NULL, last_error TEXT);
"""


@dataclass(frozen=True)
class Claim:
    vf_address: str
    vf_name: str
    pf: str
    vf_index: int
    vm_id: str
    mac: Optional[str]
    alias: Optional[str]
    vlan: Optional[int]
    network: Optional[str]
    state: str
    expires: Optional[float]
    updated: float

    def vf_json(self) -> dict:
        return {"name": self.vf_name, "address": self.vf_address, "pf": self.pf,
                "index": self.vf_index}


@dataclass(frozen=True)
class Reservation:
    vm_id: str
    expires: float
    claims: tuple

    def to_json(self) -> dict:
        return {"vmID": self.vm_id, "expires": int(self.expires),
                "nics": [{"mac": c.mac, "alias": c.alias, "vf": c.vf_json()} for c in self.claims]}


@dataclass(frozen=True)
class VfOriginal:
    """A VF's own settings before this project first changed them (see :mod:`vfclean`)."""

    vf_address: str
    pf: str
    settings: str          # vfsettings.VfSettings.to_text()
    vlan: Optional[int]    # 0: none; None: netlink did not say
    recorded: float
    last_error: Optional[str]  # why the last restore failed
