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

from helpers import nodedev  # noqa: E402
from service.conftest import hostdev_domain, write_config  # noqa: E402
from service.pki import make_pki  # noqa: E402

from jsonrpc_plugin.client import RpcClient, RpcUnavailable  # noqa: E402


def run(clients, seconds, work):
    counts, errors, stop = [0] * clients, [], threading.Event()
    barrier = threading.Barrier(clients + 1)

    def worker(i):
        try:
            barrier.wait()
            while not stop.is_set():
                work(i)
                counts[i] += 1
        except Exception as e:  # noqa: BLE001 - reported below
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
    elapsed = time.monotonic() - start
    if errors:
        raise SystemExit("benchmark call failed: %r" % errors[0])
    return sum(counts) / elapsed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-rpc-")
    pki = make_pki(os.path.join(tmp, "pki"))
    domains = [hostdev_domain("d%d" % i, str(uuid.UUID(int=10**6 + i)), nodedev.layout(2, 64)[0].vfs[i],
                              "00:1a:4a:16:99:%02x" % i, "ua-d%d" % i) for i in range(4)]
    conf = write_config(Path(tmp), pki, pfs=2, vfs=64, domains=domains)
    port = 54000 + os.getpid() % 1000
    env = dict(os.environ, SRIOV_MIGRATION_CONF=conf)
    proc = subprocess.Popen([sys.executable, "-m", "jsonrpc_plugin.service", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = RpcClient("127.0.0.1", port, cert=pki["client_cert"], key=pki["client_key"],
                           ca=pki["ca"], timeout=30)
        for _ in range(100):
            try:
                client.call("SRIOV.ping", {})
                break
            except RpcUnavailable:
                time.sleep(0.1)
        report(client, args)
    finally:
        proc.terminate()
        proc.wait(15)


def report(client, args):
    vms = [str(uuid.UUID(int=i + 1)) for i in range(args.clients)]
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

    ping_rate = run(args.clients, args.seconds, lambda i: client.call("SRIOV.ping", {}))
    pair_rate = run(args.clients, args.seconds, pair)
    ping_ms, pair_ms = 1000.0 / ping_rate, 1000.0 / pair_rate
    print("clients: %d over mutual TLS, %.1f s per workload" % (args.clients, args.seconds))
    print("ping:                    %8.1f calls/s  (%.2f ms per call, aggregate)" % (ping_rate, ping_ms))
    print("reserveVfs+releaseVfs:   %8.1f pairs/s  (%.2f ms per pair, aggregate)" % (pair_rate, pair_ms))
    ratio = ping_rate / pair_rate
    print("ratio pair/ping: %.2fx (target <= 3x) %s" % (ratio, "OK" if ratio <= 3 else "OVER TARGET"))
    print("ratio per call:  %.2fx" % (ratio / 2))
    return ratio


if __name__ == "__main__":
    main()
