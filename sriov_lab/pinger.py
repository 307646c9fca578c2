"""The lab's traffic source: ICMP echoes at a steady rate, every reply timed.

Run inside the lab's sender namespace (:mod:`sriov_lab.datapath`) by
:class:`sriov_lab.traffic.Pinger`::

    ip netns exec NS python -m sriov_lab.pinger DST --rate 100 --out FILE

It sends until SIGTERM or SIGINT, then writes FILE (JSON): the send time
of every echo and the sequence numbers answered. While running it keeps
FILE.last holding the epoch time of the latest reply, so the caller can
wait for traffic to come back. A raw socket: it needs root, as the lab.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time

ECHO_REQUEST, ECHO_REPLY = 8, 0


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = b"sriov-lab".ljust(16, b"\0")
    head = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(head + payload), ident,
                       seq & 0xFFFF) + payload


def reply_seq(packet: bytes, ident: int):
    """The sequence number of our echo reply in an IPv4 *packet*, else None."""
    if len(packet) < 20:
        return None
    icmp = packet[(packet[0] & 0x0F) * 4:]
    if len(icmp) < 8:
        return None
    kind, _code, _sum, their_ident, seq = struct.unpack("!BBHHH", icmp[:8])
    return seq if kind == ECHO_REPLY and their_ident == ident else None


def run(dst: str, rate: float, out: str) -> None:
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    ident = os.getpid() & 0xFFFF
    interval = 1.0 / rate
    sent, answered = [], set()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        start = time.monotonic()
        epoch0 = time.time() - start
        while not stop:
            seq = len(sent)
            at = start + seq * interval
            if time.monotonic() >= at:
                try:
                    sock.sendto(echo_request(ident, seq), (dst, 0))
                except OSError:
                    pass  # no ARP answer yet (EHOSTUNREACH): a lost echo, like any other
                sent.append(time.monotonic() + epoch0)
                continue
            ready, _, _ = select.select([sock], [], [], max(0.0, at - time.monotonic()))
            if ready:
                _receive(sock, ident, sent, answered, out, epoch0)
    with open(out + ".tmp", "w") as f:
        json.dump({"rate": rate, "sent": sent, "answered": sorted(answered)}, f)
    os.replace(out + ".tmp", out)


def _receive(sock, ident, sent, answered, out, epoch0) -> None:
    seq = reply_seq(sock.recv(2048), ident)
    if seq is None:
        return
    # seq wraps at 65536 (11 min at 100/s): map it to the latest echo it can be
    full = seq + ((len(sent) - 1 - seq) // 65536) * 65536
    if 0 <= full < len(sent) and full not in answered:
        answered.add(full)
        with open(out + ".last", "w") as f:
            f.write("%.6f" % (time.monotonic() + epoch0))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dst")
    p.add_argument("--rate", type=float, default=100.0, help="echoes per second (default 100)")
    p.add_argument("--out", required=True, help="JSON result, written at SIGTERM")
    args = p.parse_args(argv)
    run(args.dst, args.rate, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
