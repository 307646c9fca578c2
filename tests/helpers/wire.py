"""A veth pair and a RARP sniffer: a real link for the MAC announcement to go out of (root only)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid

import pytest

ETH_P_RARP = 0x8035


@contextlib.contextmanager
def veth_pair():
    """``(out, into)``: frames sent out of one end arrive at the other; skips without root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a veth pair)")
    out, into = "srw%s" % uuid.uuid4().hex[:8], "srx%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "link", "add", out, "type", "veth", "peer", "name", into], check=True)
    try:
        for end in (out, into):
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        yield out, into
    finally:
        subprocess.run(["ip", "link", "del", out], check=False)


@contextlib.contextmanager
def rarp_sniffer(ifname: str, timeout: float = 2.0):
    """An AF_PACKET socket receiving the RARP frames that reach *ifname*."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_RARP)) as sock:
        sock.bind((ifname, 0))
        sock.settimeout(timeout)
        yield sock


def rarp_sources(sock) -> list:
    """The source MAC of every RARP frame the sniffer holds now, in order."""
    sock.setblocking(False)
    out = []
    while True:
        try:
            frame = sock.recv(2048)
        except BlockingIOError:
            return out
        out.append(":".join("%02x" % b for b in frame[6:12]))
