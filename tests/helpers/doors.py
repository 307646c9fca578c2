"""Every door's verdict on one domain XML, for the cross-door corpus test.

The doors are: the hooks' dry-run and the guard at
``before_vm_migrate_source``; the destination's dry-run at
``before_vm_migrate_destination`` on the XML the source would send (its
vNICs stripped, our record added); ``SRIOV.migrate`` (in
tests/service, over the wire); and ``sriov-engine check-vm`` on the
engine's view of the same VM. Each answer is reduced to one of
``migrate``, ``refuse``, ``nothing`` or ``error`` plus the stderr lines,
so a test can demand that no door says yes where another says no.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import dataclass, field
from typing import Optional

from engine_adapter import model
from sriov_host import domxml, metadata, policy, xmlsafe
from sriov_host.errors import SriovError
from vdsm_hooks.hook import main

SOURCE = "before_vm_migrate_source"
DESTINATION = "before_vm_migrate_destination"
SOURCE_HOST = "5e1f0000-0000-4000-8000-00000000000a"
ERROR = "error"


@dataclass
class Answer:
    verdict: str  # migrate | refuse | nothing | error
    rc: Optional[int] = None
    lines: list = field(default_factory=list)
    plan: Optional[dict] = None


def run_hook(tmp_path, point: str, data: bytes, cfg, dry_run: bool, env=None) -> Answer:
    """One hook run through ``vdsm_hooks.hook.main``, as VDSM runs it."""
    path = tmp_path / "domxml.xml"
    path.write_bytes(data)
    env = dict({"_hook_domxml": str(path), "vmId": "4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11"},
               **(env or {}))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--point", point] + (["--dry-run"] if dry_run else []), env=env, cfg=cfg)
    plan = json.loads(out.getvalue()) if out.getvalue() else None
    return Answer(plan["verdict"] if plan else ERROR if rc else policy.NOTHING, rc,
                  err.getvalue().splitlines(), plan)


def dry_run(tmp_path, data: bytes, cfg, env=None) -> Answer:
    return run_hook(tmp_path, SOURCE, data, cfg, True, env)


def guard(tmp_path, data: bytes, cfg) -> Answer:
    """The real source hook: it refuses any VM whose vNICs are still attached."""
    answer = run_hook(tmp_path, SOURCE, data, cfg, False)
    answer.verdict = policy.NOTHING if answer.rc == 0 else policy.REFUSE
    return answer


def source_view(data: bytes, cfg):
    """``(root, vnics)`` as a source host sees the document, or None if it does not parse."""
    try:
        root = domxml.parse_domain(data)
        return root, domxml.find_vnics(root, domxml.MODE_HOSTDEV, vf_addresses(cfg))
    except SriovError:
        return None


def vf_addresses(cfg) -> set:
    from sriov_host import hostinventory

    return set(hostinventory.load(cfg, None).addresses)


def incoming_xml(root, vnics) -> bytes:
    """What the destination gets: the vNICs stripped and recorded, whatever the verdict was."""
    record = metadata.MigrationRecord(vnics=tuple(metadata.VnicRecord(
        alias=v.alias, mac=v.mac, kind=v.kind, vf_address=v.vf_address, vlan=v.vlan,
        teaming=v.teaming, network=v.network, guest_address=v.guest_address,
        state=metadata.UNPLUGGED) for v in vnics), host=SOURCE_HOST, phase="unplugged")
    root = domxml.strip_vnics(copy.deepcopy(root), vnics)
    return xmlsafe.to_bytes(metadata.write_record(root, record) if vnics else root)


def destination(tmp_path, root, vnics, cfg) -> Answer:
    return run_hook(tmp_path, DESTINATION, incoming_xml(root, vnics), cfg, True)


def engine_view(root, vnics, cfg) -> tuple:
    """The engine's REST view of the same VM: ``(vnics, host_devices)`` for ``decide_vm``.

    Each SR-IOV vNIC is a passthrough vNIC whose profile's flag is what a
    host reads as ``sriov_migratable`` (profile, VM, host default); a VF
    attached as a plain ``<hostdev>`` and every other host device are the
    VM's host devices.
    """
    device_custom = domxml.vdsm_device_custom(root)
    vm_custom = domxml.vdsm_vm_custom(root).get(policy.PROPERTY)
    out = []
    for i, v in enumerate(x for x in vnics if x.kind == domxml.KIND_INTERFACE):
        flag = policy.decide(v, device_custom, vm_custom, cfg.migratable_by_default).migratable
        profile = model.Profile("p%d" % i, "profile%d" % i, True, flag)
        out.append(model.Vnic(id="nic%d" % i, name="nic%d" % i, mac=v.mac,
                              interface="pci_passthrough", profile=profile, plugged=True))
    vf_addrs = {v.vf_address for v in vnics if v.kind == domxml.KIND_HOSTDEV}
    devices = []
    for elem in root.iterfind("devices/hostdev"):
        addr = domxml.source_address(elem) if elem.get("type") == "pci" else None
        name = "pci_" + addr.replace(":", "_").replace(".", "_") if addr else "dev%d" % len(devices)
        devices.append(model.HostDevice(name, elem.get("type"), vf=addr in vf_addrs))
    return out, devices


def engine_representable(vnics) -> bool:
    """The engine picks a vNIC's VF when it plugs it: a vNIC naming none exists only in XML."""
    return all(v.vf_address for v in vnics)


def check_vm(root, vnics, cfg) -> Answer:
    verdict = model.decide_vm(*engine_view(root, vnics, cfg))
    if not verdict.migratable:
        return Answer(policy.REFUSE, 1, [verdict.reason])
    return Answer(policy.MIGRATE if verdict.vnics else policy.NOTHING, 0, [verdict.reason])
