"""64 clients against a 16-VF pool over TLS, then SIGKILL mid-load and a restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

from jsonrpc_plugin.client import RpcClient, RpcError, RpcUnavailable

from .conftest import write_config


def start_daemon(conf, port):
    env = dict(os.environ, SRIOV_MIGRATION_CONF=conf)
    proc = subprocess.Popen([sys.executable, "-m", "jsonrpc_plugin.service", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc


def wait_ready(client, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            return client.call("SRIOV.ping", {})
        except RpcUnavailable:
            time.sleep(0.1)
    raise AssertionError("sriov-migrationd did not come up")


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def client(pki, port):
    return RpcClient("127.0.0.1", port, cert=pki["client_cert"], key=pki["client_key"],
                     ca=pki["ca"], timeout=20)


def reserve_all(pki, port, n, first=0):
    wins, losses, other = {}, [], []
    barrier = threading.Barrier(n)

    def one(i):
        vm = str(uuid.UUID(int=first + i + 1))
        c = client(pki, port)
        barrier.wait()
        try:
            res = c.call("SRIOV.reserveVfs", {"vmID": vm, "nics": [{"mac": "00:1a:4a:16:10:%02x" % i}]})
            wins[vm] = res["nics"][0]["vf"]["address"]
        except RpcError as e:
            (losses if e.code == 2001 else other).append(e)
        except RpcUnavailable as e:
            other.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return wins, losses, other


def ledger_rows(path):
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT vf_address, vm_id FROM claims").fetchall()
    finally:
        db.close()


def test_64_clients_16_vfs_then_sigkill_and_restart(tmp_path, pki):
    conf = write_config(tmp_path, pki, pfs=2, vfs=8, domains=())
    ledger = str(tmp_path / "ledger.sqlite")
    port = free_port()
    proc = start_daemon(conf, port)
    try:
        wait_ready(client(pki, port), proc)
        wins, losses, other = reserve_all(pki, port, 64)
        assert other == []
        assert len(wins) == 16 and len(set(wins.values())) == 16
        assert len(losses) == 48 and all(e.data["requested"] == 1 for e in losses)
        assert sorted(ledger_rows(ledger)) == sorted((a, vm) for vm, a in wins.items())

        # release them, then load again and kill -9 in the middle of it
        c = client(pki, port)
        for vm in wins:
            assert c.call("SRIOV.releaseVfs", {"vmID": vm}) == {"released": 1}
        load = threading.Thread(target=reserve_all, args=(pki, port, 64, 1000))
        load.start()
        deadline = time.monotonic() + 10
        while len(ledger_rows(ledger)) < 4 and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        load.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    rows = ledger_rows(ledger)
    assert 4 <= len(rows) <= 16 and len({a for a, _ in rows}) == len(rows)
    proc = start_daemon(conf, port)
    try:
        c = client(pki, port)
        wait_ready(c, proc)
        listed = c.call("SRIOV.listVfs", {})
        reserved = {r["address"]: r["vm_id"] for r in listed if r["state"] == "reserved"}
        assert reserved == dict(rows)
        free = sum(1 for r in listed if r["state"] == "free")
        assert free == 16 - len(rows)
        wins, losses, other = reserve_all(pki, port, 32, 2000)
        assert other == [] and len(wins) == free and len(set(wins.values())) == free
        assert not set(wins.values()) & set(reserved)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
