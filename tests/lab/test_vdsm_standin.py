"""The lab's VDSM stand-in is as strict as VDSM: its order, its refusals, its answers.

Everything goes through the stand-in's JSON-RPC verbs on the lab hosts'
own addresses, and is judged by libvirt state and the hooks' rc/stderr.
"""

from __future__ import annotations

import inspect
import os
import signal
import stat
import subprocess
import threading
import time
import uuid

import pytest
from lxml import etree

from jsonrpc_plugin.client import RpcError
from sriov_host import config, devices, domxml, libvirtconn, metadata, rollback
from sriov_host.ledger import Ledger
from sriov_lab import domains, vdsm_user
from sriov_lab import fixtures as lab_fixtures
from sriov_lab.lab import Lab
from sriov_lab.services import LabStandIns
from sriov_lab.vdsm import hooks as hr
from sriov_lab.vdsm.hooks import HookRunner

pytestmark = pytest.mark.lab

IN_PROGRESS = "Migration in progress"
vdsm = lab_fixtures.lab_vdsm  # one VDSM stand-in per lab host, for each test


def record_and_unplug(dom, cfg) -> list:
    """Record our vNICs as unplugged-for-migration, then live-detach each one.

    What the old source hook did at ``before_vm_migrate_source``, and what
    ``SRIOV.migrate`` now does before it calls ``VM.migrate``.
    """
    root = domxml.parse_domain(dom.XMLDesc(0))
    vnics = domxml.find_vnics(root, cfg.vf_device)
    recs = tuple(metadata.VnicRecord(alias=v.alias, mac=v.mac, kind=v.kind, vf_address=v.vf_address,
                                     pf=v.pf, vlan=v.vlan, teaming=v.teaming, network=v.network,
                                     state=metadata.UNPLUGGED) for v in vnics)
    record = metadata.MigrationRecord(vnics=recs, host=libvirtconn.host_uuid(dom.connect()),
                                      phase="unplugged", updated=time.time())
    rollback.save_record(dom, record)
    for v in vnics:
        elem = next(e for e in root.iterfind("devices/interface") if e.find("alias") is not None
                    and e.find("alias").get("name") == v.alias)
        devices.detach_and_wait(dom, etree.tostring(elem, encoding="unicode"), v.alias,
                                cfg.unplug_timeout)
    return vnics


# Run by the hooks' user (vdsm), who can read neither this checkout nor its
# venv: record_and_unplug's own source, on the python the hooks' user runs.
LEGACY_HOOK = """#!{python}
import os, sys, time
from lxml import etree
from sriov_host import config, devices, domxml, libvirtconn, metadata, rollback
{source}
cfg = config.load()
dom = libvirtconn.open_connection(cfg, use_vdsm=False).lookupByUUIDString(os.environ["vmId"])
vnics = record_and_unplug(dom, cfg)
print("legacy-unplug: unplugged %s" % ", ".join(v.mac for v in vnics), file=sys.stderr)
"""

CAPTURE_HOOK = """#!/bin/sh
cp "$_hook_domxml" "{out}/$(basename "$(dirname "$0")")-{host}.xml"
"""


def _script(runner: HookRunner, point: str, name: str, text: str) -> str:
    d = os.path.join(runner.hooks_dir, point)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _capture(runner: HookRunner, out, *points) -> None:
    for point in points:
        _script(runner, point, "05_capture", CAPTURE_HOOK.format(out=out, host=runner.host))


def _captured(out, point: str, runner: HookRunner):
    path = os.path.join(str(out), "%s-%s.xml" % (point, runner.host))
    return open(path).read() if os.path.exists(path) else None


def _install_project_hooks(runners) -> None:
    for runner in runners:
        subprocess.run([vdsm_user.python_for(runner.user), "-m", "vdsm_hooks.install", "--hooks-dir",
                        runner.hooks_dir, "--hooks-only"], check=True, capture_output=True, cwd="/")


def _migrate(client, vm_id: str, dst: str) -> dict:
    return client.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst, "method": "online"}})


def _final_status(client, vm_id: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = client.call("VM.getMigrationStatus", {"vmID": vm_id})
        if st["status"]["code"] or st["status"]["message"] != IN_PROGRESS:
            return st
        assert time.monotonic() < deadline, "migration of %s still in progress" % vm_id
        time.sleep(0.1)


def _aliases(conn, vm_id: str) -> set:
    root = etree.fromstring(conn.lookupByUUIDString(vm_id).XMLDesc(0).encode())
    return {a.get("name") for a in root.iterfind("devices/interface/alias")}


def _active(conn, vm_id: str) -> bool:
    try:
        return bool(conn.lookupByUUIDString(vm_id).isActive())
    except Exception:  # noqa: BLE001 - libvirt: no such domain
        return False


@pytest.fixture
def ledgers_released(lab_hosts, lab_vms):
    """The project's hooks may hold VFs for the test's VMs: free them afterwards."""
    yield
    for h in lab_hosts:
        with Ledger(config.load(h.config_path).ledger_path) as ledger:
            for vm in lab_vms.uuids:
                ledger.release(vm)


def test_legacy_unplug_in_source_hook_should_fail_at_migration_create(
        lab_hosts, lab_conns, lab_vms, lab_hook_runners, vdsm, ledgers_released, tmp_path):
    src, dst = lab_hook_runners
    _install_project_hooks([src])
    os.unlink(os.path.join(src.hooks_dir, hr.BEFORE_SOURCE, "50_sriov_migration"))
    _script(src, hr.BEFORE_SOURCE, "40_legacy_unplug",
            LEGACY_HOOK.format(python=vdsm_user.python_for(src.user),
                               source=inspect.getsource(record_and_unplug)))
    _capture(dst, tmp_path, hr.BEFORE_DEST)
    vnics = (lab_vms.vnic(0, 4), lab_vms.vnic(0, 5))
    spec, _ = lab_vms.start(0, vnics=vnics)
    domains.wait_ready(lab_hosts[0], spec.name)  # a guest that lets go of its NICs
    client = vdsm.client(0)

    assert _migrate(client, spec.uuid, vdsm[1].endpoint)["status"]["code"] == 0
    status = _final_status(client, spec.uuid)

    result = vdsm[0].wait(spec.uuid)
    first_vf = "pci_%s" % vnics[0].vf_address.replace(":", "_").replace(".", "_")
    assert status["status"]["code"] == 12, status
    assert first_vf in status["status"]["message"] and lab_hosts[1].name in status["status"]["message"]
    assert result.aborted_at == "migrationCreate"
    assert result.step(hr.BEFORE_SOURCE).rc == 0
    assert result.step(hr.BEFORE_SOURCE).stderr[-1].startswith("legacy-unplug: unplugged")
    assert _captured(tmp_path, hr.BEFORE_DEST, dst) is None  # never reached
    # The damage the old flow did: the VM stays on A, without its NICs.
    assert _active(lab_conns[0], spec.uuid) and not _active(lab_conns[1], spec.uuid)
    assert not {v.alias for v in vnics} & _aliases(lab_conns[0], spec.uuid)
    live = domxml.parse_domain(lab_conns[0].lookupByUUIDString(spec.uuid).XMLDesc(0))
    assert {r.state for r in metadata.read_record(live).vnics} == {metadata.UNPLUGGED}
    _wait_untracked(vdsm[0], spec.uuid, {v.alias for v in vnics})
    # The old, kinder order handed B the XML as it was after the hook: B would have taken it
    # (B runs only a capturing hook here, so this is VDSM's own device check speaking).
    post_hook_xml = lab_conns[0].lookupByUUIDString(spec.uuid).XMLDesc(0)
    assert vdsm[1].migration_create(spec.uuid, result.src_dom_xml)["status"]["code"] == 12
    try:
        assert vdsm[1].migration_create(spec.uuid, post_hook_xml)["status"]["code"] == 0
    finally:
        vdsm[1].destroy(spec.uuid)


def _wait_untracked(standin, vm_id: str, aliases: set, timeout: float = 5.0) -> None:
    """The stand-in dropped the devices on DEVICE_REMOVED, as VDSM does (and tracks the rest)."""
    deadline = time.monotonic() + timeout
    assert standin.devices(vm_id), "the stand-in does not track VM %s" % vm_id
    while aliases & set(standin.devices(vm_id)):
        assert time.monotonic() < deadline, "stand-in still lists %s" % (
            aliases & set(standin.devices(vm_id)))
        time.sleep(0.05)


def test_vm_unplugged_before_vm_migrate_should_migrate_in_vdsm_order(
        lab_hosts, lab_conns, lab_vms, lab_hook_runners, vdsm, ledgers_released, tmp_path):
    src, dst = lab_hook_runners
    _install_project_hooks(lab_hook_runners)
    _capture(src, tmp_path, hr.BEFORE_SOURCE)
    _capture(dst, tmp_path, hr.BEFORE_DEST, hr.AFTER_DEST)
    vnics = (lab_vms.vnic(0, 6, vlan=100), lab_vms.vnic(0, 7))
    spec, dom = lab_vms.start(0, vnics=vnics)
    domains.wait_ready(lab_hosts[0], spec.name)
    aliases = {v.alias for v in vnics}
    record_and_unplug(dom, config.load(lab_hosts[0].config_path))  # as SRIOV.migrate does
    client = vdsm.client(0)

    started = _migrate(client, spec.uuid, vdsm[1].endpoint)
    with pytest.raises(RpcError) as again:
        _migrate(client, spec.uuid, vdsm[1].endpoint)
    status = _final_status(client, spec.uuid)

    assert started == {"status": {"code": 0, "message": IN_PROGRESS}, "progress": 0}
    assert again.value.code == 51
    assert status == {"status": {"code": 0, "message": "Migration done"}, "progress": 100}
    assert _active(lab_conns[1], spec.uuid) and not _active(lab_conns[0], spec.uuid)
    result = vdsm[0].wait(spec.uuid)
    stale = _captured(tmp_path, hr.BEFORE_DEST, dst)
    assert stale == result.src_dom_xml  # the XML captured before the source hook ran
    root = domxml.parse_domain(stale)
    assert not aliases & {a.get("name") for a in root.iterfind("devices/interface/alias")}
    assert {(r.alias, r.state) for r in metadata.read_record(root).vnics} == {
        (a, metadata.UNPLUGGED) for a in aliases}
    assert _captured(tmp_path, hr.BEFORE_SOURCE, src) is not None
    assert [result.step(p).rc for p in (hr.BEFORE_SOURCE, hr.BEFORE_DEST, hr.AFTER_SOURCE)] == [0, 0, 0]
    assert {row[0] for row in result.timeline()} >= {"guard", "create", "reserve", "migrate", "plug",
                                                    "release"}
    plug = result.step(hr.AFTER_DEST)
    assert plug.rc == 0, plug.stderr
    assert "left to sriov-migrationd" in plug.stderr[-1]  # the hook attaches nothing
    assert domxml.parse_domain(_captured(tmp_path, hr.AFTER_DEST, dst)).findtext("uuid") == spec.uuid
    assert not aliases & _aliases(lab_conns[1], spec.uuid)  # no service here to plug them


def test_vf_in_use_on_destination_should_be_refused_naming_it(
        lab_hosts, lab_conns, lab_vms, vdsm):
    taken = lab_vms.vnic(1, 8)  # B's VF, held by a VM on B
    holder, _ = lab_vms.start(1, with_os=False, vnics=(taken,))
    same_vf = lab_vms.vnic(1, 8, mac="52:54:00:77:00:08")  # a VM on A claiming that address
    spec, _ = lab_vms.start(0, with_os=False, vnics=(same_vf,))
    client = vdsm.client(0)

    _migrate(client, spec.uuid, vdsm[1].endpoint)
    status = _final_status(client, spec.uuid)

    msg = status["status"]["message"]
    assert status["status"]["code"] == 12
    assert taken.vf_address in msg and "in use" in msg and holder.name in msg
    result = vdsm[0].wait(spec.uuid)
    assert result.aborted_at == "migrationCreate"
    assert [s.point for s in result.steps] == [hr.BEFORE_SOURCE, hr.AFTER_DESTROY]
    assert _active(lab_conns[0], spec.uuid) and same_vf.alias in _aliases(lab_conns[0], spec.uuid)


def _hostdev_domain(vm_id: str, vf_address: str) -> str:
    vnic = domxml.Vnic(alias="ua-%s" % uuid.uuid4(), mac="52:54:00:77:01:01")
    nic = domxml.render_attach(vnic, vf_address)
    return ("<domain type='qemu'><name>hostdev-vm</name><uuid>%s</uuid><devices>%s</devices>"
            "</domain>" % (vm_id, nic))


def test_hostdev_interface_should_be_resolved_by_the_source_vf_name(lab_hosts, lab_vms, vdsm):
    a_vf, b_vf = lab_hosts[0].vf_addresses()[9], lab_hosts[1].vf_addresses()[10]
    lab_vms.start(1, with_os=False, vnics=(lab_vms.vnic(1, 10),))
    vm_id = str(uuid.uuid4())
    try:
        missing = vdsm[1].migration_create(vm_id, _hostdev_domain(vm_id, a_vf))
        in_use = vdsm[1].migration_create(vm_id, _hostdev_domain(vm_id, b_vf))
    finally:
        vdsm[1].destroy(vm_id)

    assert missing["status"]["code"] == 12
    assert "pci_%s" % a_vf.replace(":", "_").replace(".", "_") in missing["status"]["message"]
    assert in_use["status"]["code"] == 12 and b_vf in in_use["status"]["message"]


def test_verbs_should_answer_vdsm_errors(lab_vms, vdsm):
    spec, _ = lab_vms.start(0, with_os=False)
    client = vdsm.client(0)
    unknown = str(uuid.uuid4())

    def code(method, params):
        with pytest.raises(RpcError) as err:
            client.call(method, params)
        return err.value.code

    assert code("VM.getMigrationStatus", {"vmID": unknown}) == 1
    assert code("VM.migrate", {"vmID": unknown, "params": {"dst": vdsm[1].endpoint}}) == 1
    assert code("VM.migrate", {"vmID": spec.uuid, "params": {"dst": "127.0.0.99:54321"}}) == 12
    assert code("VM.migrate", {"vmID": spec.uuid, "params": {"dst": vdsm[0].endpoint}}) == 12
    assert code("VM.migrateCancel", {"vmID": spec.uuid}) == 47
    assert vdsm[0].result(spec.uuid) is None


@pytest.fixture
def own_lab(lab):
    """A lab of its own, for a test that kills a libvirtd (after the session lab is up)."""
    with Lab(2) as fresh:
        yield fresh


def test_failed_libvirt_migration_should_report_12_and_run_no_source_hook(own_lab, tmp_path):
    src_conn = libvirtconn.open_connection(config.load(own_lab.hosts[0].config_path), use_vdsm=False)
    runners = lab_fixtures.hook_runners(own_lab, tmp_path)
    _capture(runners[0], tmp_path, hr.AFTER_SOURCE)
    _capture(runners[1], tmp_path, hr.AFTER_DESTROY)
    spec = domains.DomainSpec(name="vm-%s" % uuid.uuid4().hex[:8])
    domains.start(src_conn, spec)
    b = own_lab.hosts[1]

    def kill_destination():
        os.kill(b.pid, signal.SIGKILL)
        b.proc.wait()

    with LabStandIns(own_lab, runners=runners) as standins:
        standins[0].before_migrate = kill_destination
        client = standins.client(0)
        _migrate(client, spec.uuid, standins[1].endpoint)
        status = _final_status(client, spec.uuid)
        result = standins[0].wait(spec.uuid)

    assert status["status"]["code"] == 12 and "libvirt" in status["status"]["message"], status
    assert result.aborted_at == "migrate" and not result.ok
    assert _captured(tmp_path, hr.AFTER_SOURCE, runners[0]) is None
    assert _captured(tmp_path, hr.AFTER_DESTROY, runners[1]) is not None  # VDSM destroys dst's VM
    assert src_conn.lookupByUUIDString(spec.uuid).isActive()
    src_conn.lookupByUUIDString(spec.uuid).destroy()
    src_conn.close()


def _stats(client, vm_id: str) -> str:
    return client.call("VM.getStats", {"vmID": vm_id})[0]["status"]


def _hotplug_xml(xml: str) -> str:
    return "<hotplug><devices>%s</devices></hotplug>" % xml


def test_vm_never_migrated_should_read_in_progress_but_up_in_its_stats(lab_hosts, lab_vms, vdsm):
    """VDSM's idle getMigrationStatus reads "in progress"; only getStats tells (virt/migration.py)."""
    spec, _ = lab_vms.start(0, with_os=False)
    client = vdsm.client(0)

    assert client.call("VM.getMigrationStatus", {"vmID": spec.uuid}) == {
        "status": {"code": 0, "message": IN_PROGRESS}, "progress": 0}
    assert _stats(client, spec.uuid) == "Up"


def test_migrated_vm_should_stay_down_until_destroyed_and_refuse_coming_back(
        lab_hosts, lab_conns, lab_vms, vdsm):
    """clientIF keeps the source VM, Down, until VM.destroy; createVm refuses its id (exist)."""
    spec, _ = lab_vms.start(0, with_os=False)
    a, b = vdsm.client(0), vdsm.client(1)
    _migrate(a, spec.uuid, vdsm[1].endpoint)
    assert _final_status(a, spec.uuid)["status"]["message"] == "Migration done"
    vdsm[0].wait(spec.uuid)

    assert _stats(a, spec.uuid) == "Down" and _stats(b, spec.uuid) == "Up"
    _migrate(b, spec.uuid, vdsm[0].endpoint)
    back = _final_status(b, spec.uuid)
    assert back["status"]["code"] == 4, back  # exist
    assert _active(lab_conns[1], spec.uuid)

    assert a.call("VM.destroy", {"vmID": spec.uuid})["status"]["message"] == "Machine destroyed"
    with pytest.raises(RpcError) as gone:
        _stats(a, spec.uuid)
    assert gone.value.code == 1  # noVM
    _migrate(b, spec.uuid, vdsm[0].endpoint)
    assert _final_status(b, spec.uuid)["status"]["message"] == "Migration done"
    assert _active(lab_conns[0], spec.uuid)


def test_hotunplug_of_a_nic_attached_behind_vdsms_back_should_time_out(
        lab_hosts, lab_conns, lab_vms, vdsm):
    """VDSM has no DEVICE_ADDED handling: a NIC attached through libvirt is not in its books.

    Its hotunplugNic falls back to dev_from_xml, never sees the removal
    event, and fails with a timeout although libvirt removed the NIC;
    one plugged through hotplugNic is in the books and goes cleanly.
    """
    cfg = config.load(lab_hosts[0].config_path)
    behind, known = lab_vms.vnic(0, 2), lab_vms.vnic(0, 3)
    spec, dom = lab_vms.start(0, vnics=())
    domains.wait_ready(lab_hosts[0], spec.name)  # a guest that lets go of its NICs
    xml = {v.alias: domxml.render_attach(domains.to_vnic(v), v.vf_address, mode=cfg.vf_device,
                                         model=cfg.vf_model) for v in (behind, known)}
    devices.attach_and_wait(dom, xml[behind.alias], behind.alias, 10)
    client = vdsm.client(0)
    client.call("VM.hotplugNic", {"vmID": spec.uuid, "params": {"vmId": spec.uuid,
                                                                "xml": _hotplug_xml(xml[known.alias])}})
    vdsm[0].hotunplug_timeout = 3.0
    assert known.alias in vdsm[0].devices(spec.uuid)
    assert behind.alias not in vdsm[0].devices(spec.uuid)

    with pytest.raises(RpcError) as timed_out:
        client.call("VM.hotunplugNic", {"vmID": spec.uuid, "params": {
            "vmId": spec.uuid, "xml": _hotplug_xml(xml[behind.alias])}})
    done = client.call("VM.hotunplugNic", {"vmID": spec.uuid, "params": {
        "vmId": spec.uuid, "xml": _hotplug_xml(xml[known.alias])}})

    assert timed_out.value.code == 50 and "Timeout detaching" in timed_out.value.message
    assert behind.alias not in _aliases(lab_conns[0], spec.uuid)  # libvirt removed it all the same
    assert done["status"]["code"] == 0 and known.alias not in _aliases(lab_conns[0], spec.uuid)


def test_hotplug_should_be_refused_while_the_vm_migrates_out(lab_hosts, lab_vms, vdsm):
    """vm.py _not_migrating: hotplugNic during the VM's outgoing migration is code 51."""
    spec, _ = lab_vms.start(0, with_os=False)
    standin = vdsm[0]
    entered, release = threading.Event(), threading.Event()

    def hold():
        entered.set()
        release.wait(30)

    standin.before_migrate = hold
    client = vdsm.client(0)
    try:
        _migrate(client, spec.uuid, vdsm[1].endpoint)
        assert entered.wait(30)
        assert _stats(client, spec.uuid) == "Migration Source"
        with pytest.raises(RpcError) as refused:
            client.call("VM.hotplugNic", {"vmID": spec.uuid, "params": {
                "vmId": spec.uuid, "xml": _hotplug_xml("<interface type='user'/>")}})
        assert refused.value.code == 51
    finally:
        release.set()
        standin.before_migrate = None
    _final_status(client, spec.uuid)
