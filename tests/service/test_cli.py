"""sriov-client, vdsm-client style, against a real TLS service."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jsonrpc_plugin import client
from jsonrpc_plugin.client import RpcClient, RpcError, RpcUnavailable

from .conftest import client_for

VM = "dddddddd-0000-4000-8000-000000000004"


def cli_args(svc, pki):
    return ["-a", "127.0.0.1", "-p", str(svc.port), "--cert", pki["client_cert"],
            "--key", pki["client_key"], "--ca", pki["ca"], "--timeout", "5"]


def run_cli(svc, pki, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "jsonrpc_plugin.client", *cli_args(svc, pki), *args],
                          input=stdin, capture_output=True, text=True, timeout=30)


def test_cli_should_print_the_result_as_json(service, pki):
    proc = run_cli(service, pki, "SRIOV", "ping")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["version"]


def test_cli_should_read_params_from_stdin_and_take_string_values(service, pki):
    nics = json.dumps({"nics": [{"mac": "00:1a:4a:16:01:51", "vlan": 5}]})
    proc = run_cli(service, pki, "-f", "-", "SRIOV", "reserveVfs", "vmID=" + VM, "ttl=60", stdin=nics)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["nics"][0]["mac"] == "00:1a:4a:16:01:51"
    proc = run_cli(service, pki, "SRIOV", "getReservation", "vmID=" + VM)
    assert json.loads(proc.stdout)["vmID"] == VM


def test_cli_should_print_code_and_message_and_fail(service, pki, capsys):
    rc = client.main(cli_args(service, pki) + ["SRIOV", "getReservation", "vmID=" + VM])
    err = capsys.readouterr().err
    assert rc == 1 and "code=2002" in err and VM in err
    rc = client.main(cli_args(service, pki) + ["SRIOV", "reserveVfs", "vmID=x"])
    assert rc == 1 and "code=-32602" in capsys.readouterr().err


def test_cli_should_reject_other_namespaces_and_bad_args(service, pki, capsys):
    assert client.main(cli_args(service, pki) + ["VM", "getStats"]) == 2
    assert client.main(cli_args(service, pki) + ["SRIOV", "ping", "novalue"]) == 2


def test_cli_should_report_an_unreachable_service(pki, capsys):
    rc = client.main(["-a", "127.0.0.1", "-p", "1", "--insecure", "SRIOV", "ping"])
    assert rc == 1 and "Connection to 127.0.0.1:1 failed" in capsys.readouterr().err


def test_rpcclient_should_raise_rpcerror_with_data(service, pki):
    c = client_for(service, pki)
    with pytest.raises(RpcError) as e:
        c.call("SRIOV.reserveVfs", {"vmID": VM, "nics": [{"mac": "bad"}]})
    assert e.value.code == -32602 and e.value.data == {"field": "nics[0].mac"}


def test_rpcclient_should_raise_unavailable_on_untrusted_server(service, pki):
    c = RpcClient("127.0.0.1", service.port, cert=pki["client_cert"], key=pki["client_key"],
                  ca=pki["rogue_cert"], timeout=3)
    with pytest.raises(RpcUnavailable) as e:
        c.call("SRIOV.ping", {})
    assert "\n" not in e.value.message and "certificate" in e.value.message.lower()


def test_rpcclient_should_time_out_on_a_silent_server():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        c = RpcClient("127.0.0.1", srv.getsockname()[1], insecure=True, timeout=0.5)
        with pytest.raises(RpcUnavailable, match="no answer within 0.5"):
            c.call("SRIOV.ping", {})
    finally:
        srv.close()


def test_rpcclient_should_fail_cleanly_on_missing_tls_files(tmp_path):
    with pytest.raises(RpcUnavailable, match="cannot load TLS material"):
        RpcClient("127.0.0.1", 1, cert=str(tmp_path / "x.pem"), key=str(tmp_path / "x.key"),
                  ca=str(tmp_path / "ca.pem"))


def test_cli_on_the_host_should_check_the_server_against_its_own_certificate_name(
        tmp_path, pki, monkeypatch, capsys):
    """VDSM's certificate names the FQDN; `sriov-client SRIOV ping` on the host must still work."""
    from jsonrpc_plugin.client import main
    from jsonrpc_plugin.service import Service
    from sriov_host import config
    from sriov_lab.pki import TestCa

    ca = TestCa(str(tmp_path / "ca"))
    host = ca.issue("host1.example.com", sans=("host1.example.com",))
    conf = tmp_path / "host.conf"
    conf.write_text("[libvirt]\nuri = test:///default\n[server]\nlisten = 127.0.0.1\ncert = %s\nkey = %s\n"
                    "ca = %s\n[ledger]\npath = %s\n"
                    % (host.cert, host.key, ca.cert_path, tmp_path / "ledger.sqlite"))
    monkeypatch.setenv(config.ENV_VAR, str(conf))
    svc = Service(config.load(), port=0, reconcile=False).start()
    try:
        args = ["-p", str(svc.port), "--cert", host.cert, "--key", host.key, "--ca", ca.cert_path]
        assert main(args + ["SRIOV", "ping"]) == 0
        assert '"version"' in capsys.readouterr().out
        assert main(["-a", "localhost"] + args + ["SRIOV", "ping"]) == 1
        err = capsys.readouterr().err
        assert "Connection to localhost" in err and ("mismatch" in err or "match" in err)
    finally:
        svc.stop()
