"""``ping`` latency while 80 idle sockets that never start TLS are open, against no flood.

Starts a real ``sriov-migrationd`` (as bench_rpc does) and alternates
rounds: pings alone, then pings while 80 fresh idle TCP sockets from
another loopback address (127.0.0.5) are open. Each ping is a new
mutual-TLS connection, as sriov-client and SRIOV.migrate's peer calls
are. Before handshakes had their own thread such a flood held every
worker until ``client_timeout`` and a ping waited about 8 s. Target: a
ping under the flood costs at most 3x one without.

    python benchmarks/bench_flood.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_rpc import _start_service  # noqa: E402
from report import print_rows, row  # noqa: E402

NAME = "ping during an idle flood (%d sockets)"
TARGET = 3.0


def _pings(client, n: int) -> list:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.call("SRIOV.ping", {})
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def _flood(port: int, n: int) -> list:
    return [socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.5", 0))
            for _ in range(n)]


def measure(rounds: int = 5, flood: int = 80, pings: int = 10) -> list:
    """One row: median ping ms under the flood against the median without, interleaved."""
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        proc, client = _start_service(tmp)
        try:
            quiet, flooded = [], []
            _pings(client, 3)  # warm up
            for _ in range(rounds):
                quiet += _pings(client, pings)
                socks = _flood(client.port, flood)
                try:
                    time.sleep(0.1)  # accepted and pending
                    flooded += _pings(client, pings)
                finally:
                    for s in socks:
                        s.close()
        finally:
            proc.terminate()
            proc.wait(15)
    q, f = statistics.median(quiet), statistics.median(flooded)
    return [row(NAME % flood, f, "ping, no flood", q, "<= %.0fx baseline" % TARGET, f / q <= TARGET,
                note="median of %d pings each, %d interleaved rounds; worst under the flood %.0f ms"
                % (len(flooded), rounds, max(flooded)))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    print_rows(measure(args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
