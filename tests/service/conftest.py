"""Fixtures for the service tests: a PKI, a test-driver host, a running service."""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from helpers import nodedev  # noqa: E402

from jsonrpc_plugin.client import RpcClient  # noqa: E402
from jsonrpc_plugin.service import Service  # noqa: E402
from sriov_host import config  # noqa: E402
from sriov_lab.pki import TestCa  # noqa: E402

VM_BUSY = "11111111-2222-3333-4444-555555555555"
BUSY_VF = "0000:3c:00.0"  # first VF of the first PF, held by VM_BUSY's domain


def hostdev_domain(name: str, uuid: str, vf_address: str, mac: str, alias: str,
                   metadata: str = "") -> str:
    """A test-driver domain with one SR-IOV vNIC (engine-placed, unknown to the ledger)."""
    dom, bus, rest = vf_address.split(":")
    slot, fn = rest.split(".")
    return (
        "<domain type='test'><name>%s</name><uuid>%s</uuid><memory>1048576</memory>"
        "<os><type>hvm</type></os>%s<devices>"
        "<interface type='hostdev' managed='no'><mac address='%s'/>"
        "<source><address type='pci' domain='0x%s' bus='0x%s' slot='0x%s' function='0x%s'/></source>"
        "<driver name='vfio'/><alias name='%s'/></interface>"
        "</devices></domain>"
        % (name, uuid, "<metadata>%s</metadata>" % metadata if metadata else "", mac,
           dom, bus, slot, fn, alias))


BUSY_DOMAIN = hostdev_domain("busy", VM_BUSY, BUSY_VF, "00:1a:4a:16:99:01", "ua-busy")


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> dict:
    """Paths by role: a CA, its server and client certs, a client cert from an untrusted CA."""
    base = tmp_path_factory.mktemp("pki")
    ca = TestCa(str(base / "ca"), name="test oVirt CA")
    server = ca.issue("localhost")
    client = ca.issue("engine", sans=(), client=True)
    rogue = TestCa(str(base / "rogue"), name="rogue CA").issue("intruder", sans=(), client=True)
    return {"ca": ca.cert_path, "cert": server.cert, "key": server.key,
            "client_cert": client.cert, "client_key": client.key,
            "rogue_cert": rogue.cert, "rogue_key": rogue.key}


def write_config(tmp_path, pki, pfs=2, vfs=8, domains=(BUSY_DOMAIN,), tls=True, extra="") -> str:
    uri = nodedev.write_node(tmp_path / "node.xml", pfs=pfs, vfs=vfs, domains=domains)
    text = ("[libvirt]\nuri = %s\n[ledger]\npath = %s\n"
            "[server]\ntls = %s\ncert = %s\nkey = %s\nca = %s\nclient_timeout = 2\nworkers = 8\n"
            "max_request_bytes = 65536\n[timeouts]\nreconcile_interval = 0.5\nrollback_grace = 2\n"
            "unplug = 1\nplug = 1\n"
            "[networks]\nblue = ens1f0\nred = ens1f1\n%s"
            % (uri, tmp_path / "ledger.sqlite", str(tls).lower(), pki["cert"], pki["key"],
               pki["ca"], extra))
    path = tmp_path / "sriov-migration.conf"
    path.write_text(text)
    return str(path)


@pytest.fixture
def make_service(tmp_path, pki):
    started = []

    def make(tls=True, **kw):
        cfg = config.load(write_config(tmp_path, pki, tls=tls, **kw), required=True)
        svc = Service(cfg, insecure=not tls, port=0).start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()


@pytest.fixture
def service(make_service):
    return make_service()


def client_for(svc, pki, **kw) -> RpcClient:
    tls = svc.verbs.cfg.tls
    return RpcClient("127.0.0.1", svc.port, cert=pki["client_cert"], key=pki["client_key"],
                     ca=pki["ca"], insecure=not tls, **kw)


def tls_context(pki, cert=None, key=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki["ca"])
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def raw_post(svc, pki, body: bytes, headers=None, cert="client", timeout=5.0):
    """POST raw bytes over TLS; return (status, parsed JSON or None, raw body)."""
    ctx = tls_context(pki, pki.get(cert + "_cert"), pki.get(cert + "_key")) if cert else tls_context(pki)
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", svc.port), timeout=timeout),
                           server_hostname="localhost")
    hdrs = {"Host": "localhost", "Content-Type": "application/json",
            "Content-Length": str(len(body)), "Connection": "close"}
    hdrs.update(headers or {})
    head = "POST / HTTP/1.1\r\n" + "".join("%s: %s\r\n" % kv for kv in hdrs.items()) + "\r\n"
    try:
        sock.sendall(head.encode() + body)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = None
    return status, parsed, payload


def rpc_body(method: str, params=None, rpc_id=1) -> bytes:
    msg = {"jsonrpc": "2.0", "method": method, "params": {} if params is None else params}
    if rpc_id is not None:
        msg["id"] = rpc_id
    return json.dumps(msg).encode()
