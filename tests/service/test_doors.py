"""One verdict from every door, on every document of the corpus and its hostile variants.

The doors: the hooks' dry-run, the guard, the destination's dry-run on
the XML the source would send, ``SRIOV.migrate`` over the wire (a real
service over mutual TLS, its libvirt domain faked) and ``sriov-engine
check-vm`` on the engine's view of the same VM (tests/helpers/doors.py).
The corpus (tests/data/domains, origins in tests/data/CORPUS.md) holds
documents written by VDSM, libvirt's test suite and Nova, and our own.
"""

from __future__ import annotations

import uuid

import pytest
from helpers import corpus, doors, nodedev
from helpers.livedomain import FakeDomain
from lxml import etree

from jsonrpc_plugin import vdsm_api
from jsonrpc_plugin.client import RpcError, RpcUnavailable
from jsonrpc_plugin.service import Service
from sriov_host import config, policy
from sriov_host.errors import NOT_MIGRATABLE

from .conftest import client_for

MIGRATE, REFUSE, NOTHING, ERROR = policy.MIGRATE, policy.REFUSE, policy.NOTHING, doors.ERROR
LINE_MAX = 1100  # "sriov-migration: " + a line capped at 1000 characters + its length


class Domains:
    """The host's libvirt: a fake domain per document, looked up by UUID."""

    def __init__(self):
        self.domains = {}

    def lookupByUUIDString(self, vm_id):
        import libvirt

        if vm_id not in self.domains:
            e = libvirt.libvirtError("Domain not found")
            e.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 0, "", None, None, 0, 0)
            raise e
        return self.domains[vm_id]

    def getCapabilities(self):
        return "<capabilities><host><uuid>%s</uuid></host></capabilities>" % doors.SOURCE_HOST

    def listAllDomains(self, flags=0):
        return []

    def isAlive(self):
        return True

    def close(self):
        pass


class Host:
    """One source host: its config (shared by hooks and service) and its service."""

    def __init__(self, base, pki, default: bool):
        inventory = base / "nodedev.xml"
        inventory.write_text(nodedev.devices_xml(pfs=2, vfs=256, base_bus=0x04))
        path = base / "sriov-migration.conf"
        path.write_text("\n".join([
            "[ledger]", "path = %s" % (base / "ledger.sqlite"),
            "[inventory]", "source = nodedev-xml:%s" % inventory,
            "[policy]", "migratable_by_default = %s" % str(default).lower(),
            "[server]", "tls = true", "listen = 127.0.0.1", "cert = %s" % pki["cert"],
            "key = %s" % pki["key"], "ca = %s" % pki["ca"]]) + "\n")
        self.cfg = config.load(str(path), required=True)
        self.conn = Domains()
        self.svc = Service(self.cfg, conn_factory=lambda: self.conn, port=0, reconcile=False,
                           peer_factory=_no_peer, vdsm_factory=_no_vdsm,
                           job_active=lambda dom: False).start()
        self.client = client_for(self.svc, pki)

    def migrate(self, data: bytes) -> doors.Answer:
        """``SRIOV.migrate``: refused now (2006), or accepted (the job then fails at the reserve)."""
        vm_id = str(uuid.uuid4())
        self.conn.domains[vm_id] = FakeDomain(data, uuid=vm_id)
        try:
            res = self.client.call("SRIOV.migrate", {"vmID": vm_id, "dst": "localhost", "port": 1})
        except RpcError as e:
            return doors.Answer(REFUSE if e.code == NOT_MIGRATABLE else ERROR, e.code, [e.message])
        return doors.Answer(MIGRATE if res["vnics"] else NOTHING, 0, [])


def _no_peer(dst, port):
    raise RpcUnavailable("no destination service in this test")


def _no_vdsm(cfg):
    raise vdsm_api.VdsmUnavailable("no VDSM in this test")


@pytest.fixture(scope="module", params=[False, True], ids=["default-false", "default-true"])
def host(request, tmp_path_factory, pki):
    h = Host(tmp_path_factory.mktemp("src"), pki, request.param)
    yield h
    h.svc.stop()


def _cases() -> list:
    out = []
    for name in corpus.names():
        data = corpus.read_domain(name)
        out.append(pytest.param(name, data, id=name))
        out += [pytest.param(name, changed, id="%s/%s" % (name, variant))
                for variant, changed in corpus.hostile(data).items()]
    return out


def _libvirt_could_hold(data: bytes) -> bool:
    """libvirt hands the service its own UTF-8 XML: never a DTD, never an unparseable one."""
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except (etree.XMLSyntaxError, ValueError):
        return False
    return not root.getroottree().docinfo.doctype


def _check_lines(answer: doors.Answer):
    for line in answer.lines:
        assert line.startswith("sriov-migration: ") and len(line) <= LINE_MAX, line[:200]
    assert len(answer.lines) <= 1


@pytest.mark.parametrize("name, data", _cases())
def test_every_door_should_give_the_dry_runs_verdict(host, tmp_path, name, data):
    plan = doors.dry_run(tmp_path, data, host.cfg)
    _check_lines(plan)
    assert plan.verdict in (MIGRATE, REFUSE, NOTHING, ERROR)
    assert (plan.rc == 2) == (plan.verdict in (REFUSE, ERROR))
    assert (plan.verdict == ERROR) == (plan.plan is None) == bool(plan.lines)

    guard = doors.guard(tmp_path, data, host.cfg)
    _check_lines(guard)
    assert guard.verdict == (NOTHING if plan.verdict == NOTHING else REFUSE)
    if plan.verdict == REFUSE:
        assert "migration refused: " + plan.plan["reason"][:200] in guard.lines[0]

    view = doors.source_view(data, host.cfg)
    assert (view is None) == (plan.verdict == ERROR)
    if view is not None:
        dest = doors.destination(tmp_path, *view, host.cfg)
        _check_lines(dest)
        assert dest.verdict == plan.verdict, dest.lines
        if doors.engine_representable(view[1]):
            assert doors.check_vm(*view, host.cfg).verdict == plan.verdict

    if _libvirt_could_hold(data):
        rpc = host.migrate(data)
        assert rpc.verdict == plan.verdict, rpc.lines
        assert all(len(line) <= 1000 + 32 for line in rpc.lines)


@pytest.mark.parametrize("name", corpus.names())
def test_no_encoding_should_hide_an_sriov_vnic(host, tmp_path, name):
    """Whatever the encoding, or a character reference, the verdict is the UTF-8 document's."""
    data = corpus.read_domain(name)
    base = doors.dry_run(tmp_path, data, host.cfg)
    for variant, changed in corpus.hostile(data).items():
        if variant in ("utf-16", "utf-16be-no-bom", "utf-32", "latin-1", "utf-8-bom", "charref"):
            got = doors.dry_run(tmp_path, changed, host.cfg)
            assert (got.verdict, got.plan and got.plan["vnics"]) == \
                   (base.verdict, base.plan and base.plan["vnics"]), variant
        elif variant == "entities":
            got = doors.dry_run(tmp_path, changed, host.cfg)
            assert got.verdict == ERROR and "DTD" in got.lines[0]


@pytest.mark.parametrize("name, data", corpus.EMPTY.items(), ids=list(corpus.EMPTY))
@pytest.mark.parametrize("point, rc", [("before_vm_migrate_source", 2),
                                       ("before_vm_migrate_destination", 2),
                                       ("after_vm_migrate_destination", 1),
                                       ("after_vm_migrate_source", 1), ("after_vm_destroy", 1)])
def test_an_empty_domain_xml_should_be_one_error_line(host, tmp_path, name, data, point, rc):
    for dry_run in (True, False):
        got = doors.run_hook(tmp_path, point, data, host.cfg, dry_run)
        assert (got.rc, got.plan, len(got.lines)) == (rc, None, 1)
        assert "domain XML" in got.lines[0] and ("empty" in got.lines[0] or name == "bom-only")


@pytest.mark.parametrize("variant, fragment", [
    ("huge-mac", "bad MAC address '5555"), ("huge-vlan", "bad VLAN tag '9999"),
    ("huge-bus", "bad PCI address attribute bus='0xfff"), ("huge-alias", None)])
def test_a_huge_attribute_should_be_cut_and_its_length_said(host, tmp_path, variant, fragment):
    data = corpus.hostile(corpus.read_domain("one_vf_vlan"))[variant]
    for answer in (doors.dry_run(tmp_path, data, host.cfg), doors.guard(tmp_path, data, host.cfg),
                   host.migrate(data)):
        line = answer.lines[0] if answer.lines else ""
        assert len(line) <= LINE_MAX
        if fragment:
            assert fragment in line and "chars)" in line, line


def test_a_plain_hostdev_vf_and_its_teaming_should_be_refused_at_every_door(host, tmp_path):
    """The issue's case: a VF as a plain <hostdev>, in a failover pair, never 'migrate'."""
    data = corpus.read_domain("libvirt_net_virtio_teaming_hostdev")
    plan = doors.dry_run(tmp_path, data, host.cfg)
    assert plan.verdict == REFUSE
    assert [(v["mac"], v["vf_address"], v["teaming"]) for v in plan.plan["vnics"]] == [
        (None, "0000:03:07.1", "ua-backup0"), (None, "0000:03:07.2", "ua-backup1")]
    assert "VF 0000:03:07.1, VF 0000:03:07.2 have no MAC" in plan.plan["reason"]
    assert host.migrate(data).verdict == REFUSE
    assert doors.check_vm(*doors.source_view(data, host.cfg), host.cfg).verdict == REFUSE


def test_a_gpu_should_be_named_as_a_pci_device_not_a_vf(host, tmp_path):
    gpu = corpus.read_domain("libvirt_hostdev_pci_address")
    assert doors.dry_run(tmp_path, gpu, host.cfg).verdict == NOTHING  # the README's decision
    vf = corpus.read_domain("vdsm_sriov_vm").replace(b"</devices>", gpu[gpu.index(b"<hostdev"):
                                                                           gpu.index(b"</hostdev>") + 10]
                                                     + b"</devices>")
    plan = doors.dry_run(tmp_path, vf, host.cfg, env={"sriov_migratable": "true"})
    assert plan.verdict == REFUSE
    assert "also has PCI host device 0000:06:12.5, which no live migration" in plan.plan["reason"]
    assert "vf:" not in plan.plan["reason"]


@pytest.mark.parametrize("name", ["vdsm_sriov_vm", "no_sriov"])
def test_a_missing_vmid_should_be_the_domain_uuid(host, tmp_path, name):
    """The README's decision: without $vmId the domain's <uuid> names the VM, on either path."""
    data = corpus.read_domain(name)
    got = doors.dry_run(tmp_path, data, host.cfg, env={"vmId": ""})
    assert got.plan["vm_id"] == etree.fromstring(data).findtext("uuid")


def test_the_corpus_should_hold_documents_from_each_public_source():
    names = corpus.names()
    for prefix, least in (("vdsm_", 4), ("libvirt_", 6), ("nova_", 3)):
        assert len([n for n in names if n.startswith(prefix)]) >= least, prefix
    for name in names:
        head = corpus.read_domain(name)[:600]
        if name.startswith(("vdsm_", "libvirt_", "nova_")):
            assert b"Corpus: " in head and b"commit " in head, name

