"""``migrate`` to a small fake reservation service over real mutual TLS.

The fake speaks JSON-RPC 2.0 over HTTPS and demands a client certificate
from the test CA, as ``sriov-migrationd`` does with VDSM's PKI; the client
is the project's real ``jsonrpc_plugin.client``.
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sriov_lab.pki import TestCa

pytest.importorskip("jsonrpc_plugin.client")


class FakeService:
    """reserveVfs/releaseVfs that answer from a list of free VFs and record callers."""

    def __init__(self, ca: TestCa, free=1):
        self.calls = []
        self.free = free
        issued = ca.issue("service", sans=("127.0.0.1",))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(issued.cert, issued.key)
        ctx.load_verify_locations(ca.cert_path)
        ctx.verify_mode = ssl.CERT_REQUIRED
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                peer = dict(x[0] for x in self.connection.getpeercert()["subject"])
                service.calls.append((peer["commonName"], req["method"], req["params"]))
                data = json.dumps(dict(service.answer(req["method"], req["params"]),
                                       jsonrpc="2.0", id=req["id"])).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, method, params):
        if method == "SRIOV.releaseVfs":
            return {"result": {"released": len(self.calls)}}
        if len(params["nics"]) > self.free:
            return {"error": {"code": 2001, "message": "no free VF",
                              "data": {"requested": len(params["nics"]), "free": self.free}}}
        return {"result": {"vmID": params["vmID"], "expires": 0, "nics": [
            {"mac": n["mac"], "alias": n["alias"],
             "vf": {"name": "pci_0000_05_10_2", "address": "0000:05:10.2", "pf": "ens1f0", "index": 0}}
            for n in params["nics"]]}}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service(sim, seed):
    svc = FakeService(sim.ca)
    sim.set_host_service("host2", "127.0.0.1", svc.port)
    yield svc
    svc.stop()


def client_flags(ca: TestCa, name="engine-adapter"):
    issued = ca.issue(name, sans=(), client=True)
    return ("--service-cert", issued.cert, "--service-key", issued.key, "--service-ca", ca.cert_path)


def test_migrate_should_reserve_over_mutual_tls_with_the_client_certificate(sim, seed, run, service):
    res = run("migrate", "vm-ready", "--host", "host2", "--poll-interval", "0.05", *client_flags(sim.ca))
    assert res.rc == 0, res.err
    assert [(cn, method) for cn, method, _ in service.calls] == [
        ("engine-adapter", "SRIOV.reserveVfs"), ("engine-adapter", "SRIOV.releaseVfs")]
    params = service.calls[0][2]
    assert params["vmID"] == seed.vm_ready and params["ttl"] == 300
    assert [n["network"] for n in params["nics"]] == ["sriov-other"]
    assert "0000:05:10.2" in res.out


def test_migrate_should_report_the_service_refusal_with_its_code_and_data(sim, seed, run, service):
    service.free = 0
    res = run("migrate", "vm-ready", "--host", "host2", *client_flags(sim.ca))
    assert res.rc == 2
    assert "refused SRIOV.reserveVfs: [2001] no free VF (free=0, requested=1)" in res.err
    assert sim.find("POST", "/migrate$") == []


def test_migrate_should_fail_cleanly_with_a_client_cert_from_another_ca(sim, seed, run, service, tmp_path):
    other = TestCa(str(tmp_path / "rogue"))
    issued = other.issue("rogue", sans=(), client=True)
    res = run("migrate", "vm-ready", "--host", "host2", "--service-cert", issued.cert,
              "--service-key", issued.key, "--service-ca", sim.ca_file)
    assert res.rc == 2 and res.err.count("\n") == 1
    assert "sriov-migrationd at 127.0.0.1:%d unreachable" % service.port in res.err
    assert service.calls == [] and sim.find("POST", "/migrate$") == []


def test_migrate_should_name_missing_tls_material(sim, seed, run, service, tmp_path):
    res = run("migrate", "vm-ready", "--host", "host2", "--service-cert", str(tmp_path / "none.pem"),
              "--service-key", str(tmp_path / "none.key"), "--service-ca", sim.ca_file)
    assert res.rc == 2 and "cannot load TLS material" in res.err and "--service-cert" in res.err
