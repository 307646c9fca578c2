"""reserveVfs + releaseVfs against ping, 16 concurrent clients over mutual TLS.

Starts a real ``sriov-migrationd`` (libvirt test driver host: 2 PFs x 64
VFs and a few engine-placed domains), runs both workloads in one run and
prints the per-operation cost and the ratio. Target: a reserve+release
pair costs at most 3x a ping, with no VF given twice.

    python benchmarks/bench_rpc.py [--clients 16] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from helpers import nodedev  # noqa: E402
from report import print_rows, row  # noqa: E402
from service.conftest import hostdev_domain, write_config  # noqa: E402

from jsonrpc_plugin.client import RpcClient, RpcUnavailable  # noqa: E402
from sriov_lab.pki import TestCa  # noqa: E402

NAME = "reserveVfs+releaseVfs, %d TLS clients"
TARGET = 3.0


def run(clients, seconds, work):
    """Aggregate calls/s of *work* over *clients* threads; (rate, errors)."""
    counts, errors, stop = [0] * clients, [], threading.Event()
    barrier = threading.Barrier(clients + 1)

    def worker(i):
        try:
            barrier.wait()
            while not stop.is_set():
                work(i)
                counts[i] += 1
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start), errors


def make_pki(base: str) -> dict:
    """The service's and one client's certificates from a test CA (as tests/service does)."""
    ca = TestCa(os.path.join(base, "ca"), name="bench oVirt CA")
    server, client = ca.issue("localhost"), ca.issue("engine", sans=(), client=True)
    return {"ca": ca.cert_path, "cert": server.cert, "key": server.key,
            "client_cert": client.cert, "client_key": client.key}


def _start_service(tmp):
    """A real sriov-migrationd on a test-driver host; (proc, client)."""
    pki = make_pki(os.path.join(tmp, "pki"))
    domains = [hostdev_domain("d%d" % i, str(uuid.UUID(int=10**6 + i)), nodedev.layout(2, 64)[0].vfs[i],
                              "00:1a:4a:16:99:%02x" % i, "ua-d%d" % i) for i in range(4)]
    conf = write_config(Path(tmp), pki, pfs=2, vfs=64, domains=domains)
    port = 54000 + os.getpid() % 1000
    env = dict(os.environ, SRIOV_MIGRATION_CONF=conf)
    proc = subprocess.Popen([sys.executable, "-m", "jsonrpc_plugin.service", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = RpcClient("127.0.0.1", port, cert=pki["client_cert"], key=pki["client_key"],
                       ca=pki["ca"], timeout=30)
    for _ in range(100):
        try:
            client.call("SRIOV.ping", {})
            break
        except RpcUnavailable:
            time.sleep(0.1)
    return proc, client


def measure(clients: int = 16, seconds: float = 3.0) -> list:
    """One row: a reserve+release pair against a ping, same concurrency."""
    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp:
        proc, client = _start_service(tmp)
        try:
            return [workloads(client, clients, seconds)]
        finally:
            proc.terminate()
            proc.wait(15)


def workloads(client, clients, seconds):
    vms = [str(uuid.UUID(int=i + 1)) for i in range(clients)]
    held = {}

    def pair(i):
        res = client.call("SRIOV.reserveVfs", {"vmID": vms[i], "nics": [{"mac": "00:1a:4a:16:20:%02x" % i}]})
        addr = res["nics"][0]["vf"]["address"]
        held[vms[i]] = addr
        other = [vm for vm, a in list(held.items()) if a == addr and vm != vms[i]]
        if other:
            raise AssertionError("VF %s given to %s and %s" % (addr, vms[i], other))
        del held[vms[i]]  # before the release: the VF may be someone else's right after it
        client.call("SRIOV.releaseVfs", {"vmID": vms[i]})

    ping_rate, errors = run(clients, seconds, lambda i: client.call("SRIOV.ping", {}))
    pair_rate, pair_errors = run(clients, seconds, pair)
    twice = [e for e in pair_errors if isinstance(e, AssertionError)]
    if errors or len(twice) < len(pair_errors):
        raise RuntimeError("benchmark call failed: %r" % (errors + pair_errors)[0])
    ratio = ping_rate / pair_rate
    note = "aggregate ms per op, %.1f s per workload; per call %.2fx ping" % (seconds, ratio / 2)
    return row(NAME % clients, 1000.0 / pair_rate, "ping", 1000.0 / ping_rate,
               "<= %.0fx ping, no VF twice" % TARGET, ratio <= TARGET and not twice,
               note=("VF given twice: %s; " % twice[0] if twice else "") + note)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    print_rows(measure(args.clients, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
