"""Timeouts, TLS, credentials and one-line errors, through the CLI and a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import types

import pytest
from engine_fakes import PASSWORD, USER

from engine_adapter import cli
from sriov_lab.pki import TestCa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one_line(text: str) -> bool:
    return text.count("\n") == 1 and text.startswith("sriov-engine: ")


def test_login_that_never_answers_should_give_up_within_timeout(sim, seed, run):
    sim.hang("POST", "/sso/oauth/token")
    started = time.monotonic()
    res = run("--timeout", "0.5", "profiles")
    elapsed = time.monotonic() - started
    assert res.rc == 2 and elapsed < 2.0
    assert one_line(res.err) and "did not answer within 0.5s" in res.err


def test_login_that_never_answers_should_end_the_process_within_timeout(sim, seed, engine_env):
    """The real entry point, as an admin runs it: the process itself exits in time."""
    sim.hang("POST", "/sso/oauth/token")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "engine_adapter.cli", "check-vm", "vm-ready",
                           "--timeout", "1"], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - started < 5
    assert "did not answer within 1s" in proc.stderr and PASSWORD not in proc.stderr


def test_an_engine_call_that_never_answers_should_give_up_within_timeout(sim, seed, run):
    sim.hang("GET", "/vnicprofiles$")
    started = time.monotonic()
    res = run("--timeout", "1", "profiles")
    assert res.rc == 2 and time.monotonic() - started < 3
    assert one_line(res.err) and "did not answer within 1s" in res.err


def test_wrong_password_should_be_one_line_without_the_password(sim, seed, run, monkeypatch):
    monkeypatch.setenv("OVIRT_PASSWORD", "wrong-" + PASSWORD)
    res = run("-v", "profiles")
    assert res.rc == 2
    assert res.err.strip().splitlines()[-1] == (
        "sriov-engine: login to engine %s as %s failed: Cannot authenticate user '%s': The username "
        "or password is incorrect.." % (sim.url.split("/ovirt")[0], USER, USER))
    assert PASSWORD not in res.err + res.out


def test_unknown_ca_should_be_a_tls_failure(sim, seed, run, monkeypatch, tmp_path):
    monkeypatch.setenv("OVIRT_CAFILE", TestCa(str(tmp_path / "other")).cert_path)
    res = run("profiles")
    assert res.rc == 2 and one_line(res.err)
    assert "TLS failure talking to engine" in res.err and "OVIRT_CAFILE" in res.err


def test_requests_ca_bundle_should_not_leak_into_trust(sim, seed, run, monkeypatch):
    monkeypatch.delenv("OVIRT_CAFILE")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.ca_file)
    res = run("profiles")
    assert res.rc == 2 and "TLS failure" in res.err


@pytest.mark.parametrize("how", [
    pytest.param(("--insecure",), id="flag"),
    pytest.param(("env", "yes"), id="env-yes"),
    pytest.param(("env", "True"), id="env-True"),
])
def test_insecure_should_skip_verification(sim, seed, run, monkeypatch, how):
    monkeypatch.delenv("OVIRT_CAFILE")
    if how[0] == "env":
        monkeypatch.setenv("OVIRT_INSECURE", how[1])
        how = ()
    res = run(*how, "profiles")
    assert res.rc == 0, res.err


def test_insecure_env_should_refuse_a_non_boolean(sim, seed, run, monkeypatch):
    monkeypatch.setenv("OVIRT_INSECURE", "maybe")
    res = run("profiles")
    assert res.rc == 2 and "$OVIRT_INSECURE must be true/false/yes/no/1/0" in res.err


def test_unreachable_engine_should_be_one_line(seed, run, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OVIRT_URL", "https://127.0.0.1:%d/ovirt-engine/api" % port)
    res = run("profiles")
    assert res.rc == 2 and one_line(res.err) and "unreachable" in res.err


def test_missing_ca_file_should_be_named(seed, run, monkeypatch, tmp_path):
    monkeypatch.setenv("OVIRT_CAFILE", str(tmp_path / "nope.pem"))
    res = run("profiles")
    assert res.rc == 2 and "engine CA file %s does not exist" % (tmp_path / "nope.pem") in res.err


def test_password_file_should_replace_the_env(sim, seed, run, monkeypatch, tmp_path):
    monkeypatch.delenv("OVIRT_PASSWORD")
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    assert run("--password-file", str(path), "profiles").rc == 0
    assert run("profiles", "--password-file", str(path)).rc == 0  # after the subcommand too
    res = run("profiles")
    assert res.rc == 2 and "no engine password" in res.err


@pytest.mark.parametrize("argv", [
    pytest.param(["--password", PASSWORD, "profiles"], id="before"),
    pytest.param(["profiles", "--password", PASSWORD], id="after"),
])
def test_password_should_have_no_command_line_flag(engine_env, capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert PASSWORD not in err
    assert "passwords are not accepted on the command line" in err


def test_password_file_should_not_be_reachable_by_abbreviation(engine_env, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--passw", "x", "profiles"])
    assert "password file" not in capsys.readouterr().err


def fake_client_module(calls, fail=None):
    """Stands in for jsonrpc_plugin.client (written elsewhere), with its error classes."""
    mod = types.ModuleType("jsonrpc_plugin.client")

    class RpcError(Exception):
        def __init__(self, code, message, data=None):
            super().__init__(message)
            self.code, self.message, self.data = code, message, data

    class RpcUnavailable(Exception):
        pass

    class RpcClient:
        def __init__(self, host, port, **kwargs):
            calls.append(("init", host, port, kwargs))

        def call(self, method, params):
            calls.append((method, params))
            if fail == "unavailable":
                raise RpcUnavailable("connection refused by 127.0.0.1:54399")
            if fail == "tls":
                raise RpcUnavailable("TLS handshake failed: certificate verify failed")
            if method == "SRIOV.reserveVfs":
                return {"vmID": params["vmID"], "nics": []}
            return {"released": len(params)}

    mod.RpcClient, mod.RpcError, mod.RpcUnavailable = RpcClient, RpcError, RpcUnavailable
    return mod


def use_fake_client(monkeypatch, mod):
    """Replace the module whether or not the real one was imported already."""
    import jsonrpc_plugin

    monkeypatch.setitem(sys.modules, "jsonrpc_plugin.client", mod)
    monkeypatch.setattr(jsonrpc_plugin, "client", mod, raising=False)


def test_migrate_should_call_the_host_service_with_mutual_tls(sim, seed, run, monkeypatch, tmp_path):
    calls = []
    use_fake_client(monkeypatch, fake_client_module(calls))
    res = run("migrate", "vm-ready", "--host", "host2", "--poll-interval", "0.05", "--ttl", "60",
              "--service-cert", "c.pem", "--service-key", "k.pem", "--service-ca", "ca.pem")
    assert res.rc == 0, res.err
    assert calls[0] == ("init", "127.0.0.1", 54399,
                        {"cert": "c.pem", "key": "k.pem", "ca": "ca.pem", "insecure": False, "timeout": 30.0})
    method, params = calls[1]
    assert method == "SRIOV.reserveVfs" and params["vmID"] == seed.vm_ready and params["ttl"] == 60
    assert [c[0] for c in calls] == ["init", "SRIOV.reserveVfs", "SRIOV.releaseVfs"]


def test_migrate_should_default_to_the_vdsm_pki(sim, seed, run, monkeypatch):
    calls = []
    use_fake_client(monkeypatch, fake_client_module(calls))
    assert run("migrate", "vm-ready", "--host", "host2", "--poll-interval", "0.05").rc == 0
    assert calls[0][3]["cert"] == "/etc/pki/vdsm/certs/vdsmcert.pem"
    assert calls[0][3]["key"] == "/etc/pki/vdsm/keys/vdsmkey.pem"
    assert calls[0][3]["ca"] == "/etc/pki/vdsm/certs/cacert.pem"


@pytest.mark.parametrize("fail,text", [
    pytest.param("unavailable", "connection refused", id="unreachable"),
    pytest.param("tls", "certificate verify failed", id="tls"),
])
def test_unreachable_host_service_should_stop_before_migrating(sim, seed, run, monkeypatch, fail, text):
    calls = []
    use_fake_client(monkeypatch, fake_client_module(calls, fail))
    res = run("migrate", "vm-ready", "--host", "host2", "--poll-interval", "0.05")
    assert res.rc == 2
    assert "sriov-migrationd at 127.0.0.1:54399 unreachable: " in res.err and text in res.err
    assert sim.find("POST", "/migrate$") == []

