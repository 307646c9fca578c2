"""The invariants checked after each fault run, through the public contracts.

What an administrator would look at: libvirt's live XML on each host,
``SRIOV.listVfs`` and ``SRIOV.migrationStatus`` on each service, and
VDSM's books (the stand-in's device list and status). Each check returns
one line per problem; an empty list means every invariant holds:

1. the VM runs on exactly one host, in one QEMU;
2. there, each of its vNICs is attached exactly once with its MAC and
   guest PCI slot, and our record says it is plugged with its VLAN;
3. no VF is held by two VMs, and no ledger row names a VM that does not
   hold that VF on that host (a reservation is allowed one TTL, so this
   is checked once every restart has settled);
4. the ledger's in-use rows are exactly the VFs the record names, and
   VDSM's books hold the VM's devices exactly as libvirt does, on the
   host that runs it, and know nothing of it on the other;
5. no migration is still being driven, and no hook process is left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lxml import etree

from jsonrpc_plugin.client import RpcError, RpcUnavailable
from sriov_host import metadata

from . import procs

VIR_DOMAIN_RUNNING = 1


@dataclass(frozen=True)
class Expected:
    """The VM as it must be found: its UUID, name and ``{alias: (mac, vlan, guest slot)}``."""

    uuid: str
    name: str
    vnics: dict


@dataclass
class HostView:
    index: int
    running: bool = False
    live: object = None  # the VM's live XML root, when it runs here
    records: dict = None  # every running VM's record here: uuid -> MigrationRecord or None
    vfs: list = None  # SRIOV.listVfs, None if the service did not answer
    status: object = None  # SRIOV.migrationStatus of the VM, or an error text
    error: str = ""


def look(lab, services, vm: Expected) -> list:
    """Each host's view of the lab, read now."""
    views = []
    for i, host in enumerate(lab.hosts):
        view = HostView(i, records={})
        try:
            conn = host.connect()
        except Exception as e:  # noqa: BLE001 - libvirtd down: that is a finding
            view.error = "libvirt: %s" % " ".join(str(e).split())
            views.append(view)
            continue
        try:
            for dom in conn.listAllDomains(1):
                root = etree.fromstring(dom.XMLDesc(0).encode())
                view.records[dom.UUIDString()] = _record(root)
                if dom.UUIDString() == vm.uuid and dom.state()[0] == VIR_DOMAIN_RUNNING:
                    view.running, view.live = True, root
        finally:
            conn.close()
        view.vfs, view.status = _ask(services, i, "SRIOV.listVfs", {}), \
            _ask(services, i, "SRIOV.migrationStatus", {"vmID": vm.uuid})
        views.append(view)
    return views


def problems(lab, services, standins, vm: Expected, hooks_root: str) -> list:
    views = look(lab, services, vm)
    out = ["host %d: %s" % (v.index, v.error) for v in views if v.error]
    out += ["host %d: listVfs: %s" % (v.index, v.vfs) for v in views if isinstance(v.vfs, str)]
    if out:
        return out
    running = [v for v in views if v.running]
    if len(running) != 1:
        return ["the VM runs on %d hosts" % len(running)]
    here = running[0]
    out += _vnics(here, vm)
    for v in views:
        out += _vfs(v, vm.uuid if v is here else None)
    out += _books(standins, views, here, vm.uuid)
    out += _driving(views)
    qemus = [p for h in lab.hosts for p in h.qemu_pids() if ("guest=%s," % vm.name) in procs.cmdline(p)]
    if len(qemus) != 1:
        out.append("%d QEMU processes run the VM" % len(qemus))
    left = processes_under(hooks_root)
    if left:
        out.append("hook processes still running: %s" % left)
    return out


def _vnics(view: HostView, vm: Expected) -> list:
    out = []
    ifaces = [i for i in view.live.iterfind("devices/interface")]
    record = view.records.get(vm.uuid)
    by_alias = {r.alias: r for r in record.vnics} if record else {}
    for alias, (mac, vlan, slot) in sorted(vm.vnics.items()):
        found = [i for i in ifaces if i.find("alias") is not None and i.find("alias").get("name") == alias]
        if len(found) != 1:
            out.append("host %d: vNIC %s attached %d times" % (view.index, mac, len(found)))
            continue
        got_mac = found[0].find("mac").get("address")
        addr = found[0].find("address")
        got_slot = addr.get("slot") if addr is not None else None
        if got_mac.lower() != mac.lower() or got_slot != slot:
            out.append("host %d: vNIC %s is %s at slot %s (want slot %s)" % (view.index, alias, got_mac,
                                                                            got_slot, slot))
        rec = by_alias.get(alias)
        if rec is None or rec.state != metadata.PLUGGED or rec.vlan != vlan:
            out.append("host %d: record of %s: %s" % (view.index, mac, rec and (rec.state, rec.vlan)))
    return out


def _vfs(view: HostView, vm_here) -> list:
    """Ledger rows against the running domains' records on this host."""
    out, holders = [], {}
    for uuid, rec in view.records.items():
        for r in (rec.by_state(metadata.PLUGGED) if rec else ()):
            holders.setdefault(r.vf_address, []).append((uuid, r.mac))
    out += ["host %d: VF %s held by %d VMs" % (view.index, vf, len(h)) for vf, h in holders.items()
            if len(h) > 1]
    for row in view.vfs:
        if row.get("vm_id") is None:
            continue
        held = {u: (m or "").lower() for u, m in holders.get(row["address"], [])}
        mac = (row.get("mac") or "").lower()  # None: a row from the domains' references
        if row["vm_id"] not in held or (mac and held[row["vm_id"]] != mac) or row["state"] != "in_use":
            out.append("host %d: ledger gives VF %s to VM %s (%s), which does not hold it"
                       % (view.index, row["address"], row["vm_id"], row["state"]))
    if vm_here:
        mine = {r["address"] for r in view.vfs if r.get("vm_id") == vm_here}
        want = {a for a, h in holders.items() if any(u == vm_here for u, _m in h)}
        if mine != want:
            out.append("host %d: ledger has %s for the VM, its record %s" % (view.index, sorted(mine),
                                                                           sorted(want)))
    return out


def _books(standins, views, here: HostView, vm_id: str) -> list:
    """VDSM's device list against libvirt where the VM runs; no VM in VDSM elsewhere."""
    out = []
    live = {a.get("name") for a in here.live.iterfind("devices/*/alias")}
    books = set(standins[here.index].devices(vm_id))
    if books != live:
        out.append("host %d: VDSM's books differ from libvirt: only in VDSM %s, only in libvirt %s"
                   % (here.index, sorted(books - live), sorted(live - books)))
    for v in views:
        if v is here:
            continue
        try:
            status = standins[v.index].status(vm_id)
        except Exception:  # noqa: BLE001 - VDSM's noVM: it holds no such VM
            continue
        out.append("host %d: VDSM still holds the VM (%s)" % (v.index, status))
    return out


def _driving(views) -> list:
    out = []
    for v in views:
        job = v.status.get("migration") if isinstance(v.status, dict) else None
        if job is not None and not job.get("done"):
            out.append("host %d: SRIOV.migrate still driving (%s)" % (v.index, job.get("phase")))
    return out


def migration_jobs(lab, vm_uuid: str) -> list:
    """Hosts where libvirt runs a job on the VM (a migration under way), by index."""
    busy = []
    for i, host in enumerate(lab.hosts):
        try:
            conn = host.connect()
        except Exception:  # noqa: BLE001 - libvirtd restarting: asked again later
            busy.append(i)
            continue
        try:
            if conn.lookupByUUIDString(vm_uuid).jobInfo()[0] != 0:
                busy.append(i)
        except Exception:  # noqa: BLE001 - no such VM here
            pass
        finally:
            conn.close()
    return busy


def _ask(services, index: int, method: str, params: dict):
    try:
        return services.client(index, timeout=5.0).call(method, params)
    except RpcError as e:
        return "error %s: %s" % (e.code, e.message)
    except RpcUnavailable as e:
        return "unavailable: %s" % e


def _record(root):
    try:
        return metadata.read_record(root)
    except Exception:  # noqa: BLE001 - an unreadable record is reported by the vNIC check
        return None


def processes_under(path: str) -> list:
    """PIDs whose command line names something under *path* (hook scripts)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and path in procs.cmdline(int(name)):
            found.append(int(name))
    return found
