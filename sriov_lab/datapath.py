"""The lab's wire: a switch, one uplink per host, and a network namespace that sends traffic.

Emulated VFs have no wire of their own (a user-mode NIC only talks to
QEMU), so the lab builds one, the shape of a small rack::

    netns sriovlab-ID: lab0 169.254.77.1/16 --- switch srtID (learning bridge)
                                                 |- uplink --- srbIDa: host-a's bridge, its VFs' taps
                                                 |- uplink --- srbIDb: host-b's bridge, ...
                                                 |- (real-VF lab) L1's NIC on the igb PFs' hub

Each lab host's ``[vf] bridge`` is its own bridge (in the real-VF lab,
where VFs are real, it carries the failover standbys), so a vNIC plugged on
host-b is behind another switch port than on host-a: the switch keeps
sending the guest's traffic to host-a until the MAC is announced or the
guest transmits, as a physical top-of-rack switch does.

Only link-local addresses (169.254.0.0/16), inside a namespace the lab
creates, are ever used. The bridges live in the machine's own namespace
(QEMU's taps are there) and carry no address. Everything is named after
the lab's id, recorded in the lab directory, and removed on stop, or by
the next lab if this one was killed.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from typing import Optional

from . import labstate
from .errors import LabError

SENDER_IP = "169.254.77.1"
PREFIX = 16
STATE_FILE = "datapath.json"


def guest_ip(index: int = 0) -> str:
    """The link-local address the lab guest takes on its measured vNIC."""
    return "169.254.77.%d" % (2 + index)


@dataclass
class DataPath:
    lab_id: str  # a few hex digits; every name below is made from it
    hosts: int = 2
    links: list = field(default_factory=list)  # created, so removed on stop

    @property
    def switch(self) -> str:
        return "srt%s" % self.lab_id

    @property
    def netns(self) -> str:
        return "sriovlab-%s" % self.lab_id

    def bridge(self, index: int) -> str:
        return "srb%s%s" % (self.lab_id, "abcdefghij"[index])

    def uplink(self, index: int) -> tuple:
        return "sru%s%s" % (self.lab_id, "abcdefghij"[index]), "srv%s%s" % (self.lab_id, "abcdefghij"[index])

    def sender_veth(self) -> tuple:
        return "srp%s" % self.lab_id, "srq%s" % self.lab_id


def _ip(*args: str, netns: Optional[str] = None) -> None:
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        raise LabError("lab data path: no 'ip' command; apt-get install iproute2") from None
    if proc.returncode != 0:
        raise LabError("lab data path: %s failed: %s" % (" ".join(argv), proc.stderr.strip()))


def _no_ipv6(ifname: str) -> None:
    """Keep the bridges silent: no IPv6 autoconf traffic teaching the switch anything."""
    path = "/proc/sys/net/ipv6/conf/%s/disable_ipv6" % ifname
    if os.path.exists(path):
        with open(path, "w") as f:
            f.write("1")


def _bridge(dp: DataPath, name: str) -> None:
    _ip("link", "add", "name", name, "type", "bridge", "forward_delay", "0")
    dp.links.append(name)
    _no_ipv6(name)
    _ip("link", "set", name, "up")


def _veth_into(dp: DataPath, pair: tuple, bridges: tuple) -> None:
    """A veth pair; each end goes into the bridge named for it (None: leave it)."""
    _ip("link", "add", pair[0], "type", "veth", "peer", "name", pair[1])
    dp.links.append(pair[0])
    for end, bridge in zip(pair, bridges):
        _no_ipv6(end)
        if bridge:
            _ip("link", "set", end, "master", bridge)
        _ip("link", "set", end, "up")


def create(lab_root: str, lab_id: str, hosts: int = 2, wire: Optional[str] = None) -> DataPath:
    """Build the switch, the hosts' bridges and the sender namespace; record them first.

    *wire* (the real-VF lab: L1's NIC on its PFs' hub) becomes a switch
    port too, so the switch reaches the real VFs through their PFs; it is
    not the lab's, so it is released, never deleted.
    """
    dp = DataPath(lab_id, hosts)
    try:
        _ip("netns", "add", dp.netns)
        labstate.save(lab_root, STATE_FILE, dp)
        _bridge(dp, dp.switch)
        if wire:
            _no_ipv6(wire)
            _ip("link", "set", wire, "master", dp.switch)
            _ip("link", "set", wire, "up")
        for i in range(hosts):
            _bridge(dp, dp.bridge(i))
            _veth_into(dp, dp.uplink(i), (dp.bridge(i), dp.switch))
            labstate.save(lab_root, STATE_FILE, dp)
        outside, inside = dp.sender_veth()
        _veth_into(dp, (outside, inside), (dp.switch, None))
        labstate.save(lab_root, STATE_FILE, dp)
        _ip("link", "set", inside, "netns", dp.netns)
        _ip("link", "set", inside, "name", "lab0", netns=dp.netns)
        _ip("addr", "add", "%s/%d" % (SENDER_IP, PREFIX), "dev", "lab0", netns=dp.netns)
        _ip("link", "set", "lab0", "up", netns=dp.netns)
        _ip("link", "set", "lo", "up", netns=dp.netns)
    except BaseException:
        destroy(lab_root, dp)
        raise
    return dp


def destroy(lab_root: str, dp: DataPath) -> None:
    """Remove every link and the namespace; a veth goes with either end."""
    for name in reversed(dp.links):
        subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=20)
    subprocess.run(["ip", "netns", "del", dp.netns], capture_output=True, timeout=20)
    labstate.forget(lab_root, STATE_FILE)


def reap(lab_root: str) -> bool:
    """Remove the data path a killed lab under *lab_root* left behind."""
    dp = labstate.load(lab_root, STATE_FILE, DataPath)
    if dp is None:
        return False
    destroy(lab_root, dp)
    return True
