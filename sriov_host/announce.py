"""Announce a plugged vNIC's MAC to the switches, as QEMU does for its own NICs.

After a live migration QEMU broadcasts RARP frames for every emulated
NIC, so the physical switches learn the MAC's new port at once. It
cannot for a passthrough VF, and a guest that does not announce itself
then receives nothing until it happens to transmit: the switches keep
sending its traffic to the source host's port (measured in the lab: the
pinger's traffic stays lost until its own ARP entry expires, tens of
seconds). So after a plug we send those frames for the guest, through
the VF's PF (tagged with the vNIC's VLAN: switches learn per VLAN). The
PF and its VFs share the uplink, so the switch learns the right port.

A failover pair needs more than one announcement. Until the guest has
taken the new VF as its primary and brought it up, it still transmits on
its virtio standby, and every frame it sends there teaches the switches
the standby's port again: the announcement at the plug is undone within
milliseconds. Once the primary is registered, Linux's net_failover drops
what arrives on the standby, and a guest that receives nothing sends
nothing; the traffic then stays lost until a peer's ARP entry expires
(measured in the real-VF lab: 25-48 s). So a failover vNIC's MAC is
announced from when its guest has taken up the VF (the caller's
*ready*), then once a second for a while (``[vf] announce_for``), as
long as it is still plugged here: the first announcement after the
guest's VF is up ends the gap.

:func:`rarp_frame` and :func:`rounds` are pure; :func:`send` is the I/O
edge (an AF_PACKET socket, so it needs CAP_NET_RAW).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from typing import Callable, Optional

log = logging.getLogger(__name__)

ETH_P_RARP = 0x8035
ETH_P_8021Q = 0x8100
ROUNDS_MS = (0, 50, 150)  # like QEMU's announce: a few frames, spaced out, in case one is lost
FOLLOW_UP_MS = 1000  # then, for a failover vNIC, once a second
READY_WAIT_S = 120  # how long a failover guest may take to probe its new VF (nested TCG: ~20 s)
_MIN_FRAME = 60  # Ethernet minimum without the FCS


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError("not a MAC address: %r" % mac)
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError("not a MAC address: %r" % mac) from None


def rarp_frame(mac: str, vlan: Optional[int] = None) -> bytes:
    """A broadcast RARP "request reverse" for *mac*: the frame QEMU's announce sends."""
    src = mac_bytes(mac)
    header = b"\xff" * 6 + src
    if vlan:  # 0: untagged (the vNIC has no VLAN of its own)
        if not 0 < vlan < 4095:
            raise ValueError("VLAN id out of range: %r" % vlan)
        header += struct.pack("!HH", ETH_P_8021Q, vlan)
    # htype Ethernet, ptype IPv4, hlen 6, plen 4, op 3 (request reverse)
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 3) + src + b"\0" * 4 + src + b"\0" * 4
    frame = header + struct.pack("!H", ETH_P_RARP) + body
    return frame.ljust(_MIN_FRAME, b"\0")


def rounds(follow_up_s: float = 0) -> tuple:
    """When to send, in ms from now: QEMU's rounds, then once a second up to *follow_up_s*."""
    last = int(follow_up_s * 1000)
    return ROUNDS_MS + tuple(range(FOLLOW_UP_MS, last + 1, FOLLOW_UP_MS))


def mac_on(ifname: str, mac: str, vlan: Optional[int] = None, rounds_ms=ROUNDS_MS,
           still: Optional[Callable[[], bool]] = None,
           ready: Optional[Callable[[], bool]] = None) -> Optional[str]:
    """Announce *mac* out of *ifname* (see :func:`send`); None if under way, else why not.

    A failure is logged and returned, never raised.
    """
    try:
        send(ifname, [rarp_frame(mac, vlan)], rounds_ms, still, ready)
    except (OSError, ValueError) as e:
        log.warning("could not announce %s on %s: %s", mac, ifname, e)
        return str(e)
    log.info("%s %s on %s%s", "announcing" if ready else "announced", mac, ifname,
             " vlan %d" % vlan if vlan else "")
    return None


def send(ifname: str, frames, rounds_ms=ROUNDS_MS, still: Optional[Callable[[], bool]] = None,
         ready: Optional[Callable[[], bool]] = None) -> None:
    """Send *frames* out of *ifname* at each round (ms), the later ones in the background.

    The socket is bound before returning, so a failure (no such link,
    EPERM without CAP_NET_RAW) raises OSError here; without *ready* the
    rounds count from now and the first is sent before returning. The
    rest must not hold up a re-plug of the next vNIC. With *ready*, the
    rounds count from when it first says True (asked once a second, for
    up to :data:`READY_WAIT_S`): a failover guest that has not taken up
    its VF yet still receives on its standby. Before each round in the
    background *still* is asked: once the vNIC has left (unplugged,
    migrated away), announcing it here would send its traffic to the
    wrong port, so a False (or an error) ends it all.
    """
    frames = list(frames)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        sock.bind((ifname, 0))
        if ready is None:
            for frame in frames:
                sock.send(frame)
    except BaseException:
        sock.close()
        raise
    later = list(rounds_ms) if ready is not None else [ms for ms in rounds_ms if ms > 0]
    if not later:
        sock.close()
        return
    threading.Thread(target=_repeat, args=(sock, frames, later, still, ready), daemon=True,
                     name="announce-%s" % ifname).start()


def _repeat(sock, frames, rounds_ms, still, ready) -> None:
    ifname = sock.getsockname()[0]
    with sock:
        if ready is not None and not _wait_ready(ifname, still, ready):
            return
        start = time.monotonic()
        for at_ms in rounds_ms:
            time.sleep(max(0.0, start + at_ms / 1000.0 - time.monotonic()))
            if not _still(ifname, still):
                return
            try:
                for frame in frames:
                    sock.send(frame)
            except OSError:
                return  # the link went away: the socket was bound, nothing to report to


def _wait_ready(ifname, still, ready) -> bool:
    """Wait, once a second, for *ready*; False if the vNIC left or the wait ran out."""
    deadline = time.monotonic() + READY_WAIT_S
    while _still(ifname, still):
        if _asked(ready, "whether the guest took up its VF"):
            log.info("the guest took up its VF; announcing on %s", ifname)
            return True
        if time.monotonic() >= deadline:
            log.warning("not announcing on %s: the guest did not take up its VF within %d s",
                        ifname, READY_WAIT_S)
            return False
        time.sleep(FOLLOW_UP_MS / 1000.0)
    return False


def _still(ifname, still) -> bool:
    if still is None or _asked(still, "whether the vNIC is still here"):
        return True
    log.info("stopped announcing on %s: the vNIC is no longer plugged here", ifname)
    return False


def _asked(question, what: str) -> bool:
    try:
        return bool(question())
    except Exception as e:  # noqa: BLE001 - in doubt, no: a wrong announcement misdirects traffic
        log.warning("not announcing: could not tell %s: %s", what, e)
        return False
