"""``SRIOV.listVms``: the VMs running here that have SR-IOV vNICs, with the policy's plan.

The plan is the one every source door answers (``unplug.build_plan``, the
same as ``sriov-migration-hook --dry-run``), so a page or a script can say
"migratable, or why not" without the domain XML. A VM whose vNICs are
unplugged for a migration still shows, through our record in its metadata.
Read-only: nothing here changes a domain or the ledger.
"""

from __future__ import annotations

import logging

from sriov_host import domxml, libvirtconn, rollback, unplug
from sriov_host.errors import SriovError

log = logging.getLogger("sriov-migrationd.vmview")

LIST_ACTIVE = 1  # VIR_CONNECT_LIST_DOMAINS_ACTIVE


def vm_row(vm_id, name, plan, record, job) -> dict:
    """One VM's row; pure, for tests. *record*: our metadata record or None; *job*: MigrationJob or None."""
    return {"vmID": vm_id, "name": name, "plan": plan.to_json(),
            "phase": record.phase if record is not None else "idle",
            "recorded": [{"alias": v.alias, "mac": v.mac, "vf_address": v.vf_address, "vlan": v.vlan,
                          "teaming": v.teaming, "state": v.state} for v in (record.vnics if record else ())],
            "migration": job.to_json() if job is not None else None}


def wanted(row: dict) -> bool:
    """A VM with an SR-IOV vNIC now, or one recorded (unplugged for a migration), or being migrated."""
    return bool(row["plan"]["vnics"] or row["recorded"] or row["migration"])


def list_vms(host, migrations) -> list:
    """Rows for every running VM with SR-IOV vNICs, sorted by name; a VM gone meanwhile is skipped."""
    with libvirtconn.translated("listing the domains"):
        doms = host.conn().listAllDomains(LIST_ACTIVE)
    rows = []
    for dom in doms:
        try:
            with libvirtconn.translated("reading a domain"):
                vm_id, name = dom.UUIDString(), dom.name()
            root = domxml.parse_domain(libvirtconn.live_xml(dom))
            record = rollback.read_live_record(dom)
        except SriovError as e:  # it left while we looked: not an error for the list
            log.info("listVms: skipping a domain that went away: %s", e.message)
            continue
        plan = unplug.build_plan(vm_id, root, host.cfg, lambda: host.inventory().addresses)
        job = migrations.job(vm_id) if migrations is not None else None
        row = vm_row(vm_id, name, plan, record, job)
        if wanted(row):
            rows.append(row)
    return sorted(rows, key=lambda r: (r["name"], r["vmID"]))
