"""Network downtime as the guest's traffic sees it: a steady stream, and its longest gap.

:class:`Pinger` runs :mod:`sriov_lab.pinger` in the lab's sender
namespace against the guest's measured vNIC; :func:`summarize` (pure)
turns what it recorded into the numbers the demo and the benchmark
report. The gap is measured between the send times of two consecutive
answered echoes, so it is the time during which nothing reached the
guest and came back, to within one echo interval.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple, Optional

from .errors import LabError

RATE = 100.0  # echoes per second
# A gap may outlast the NIC-absent time by the guest setting its address
# on the new NIC (its loop ticks every 0.5 s) and the end-of-plug poll.
ANNOUNCED_SLACK_MS = 2000.0
# A failover pair's gap up to the migration's end, beyond the migration
# itself: the guest switching to its standby under nested TCG, loaded.
FAILOVER_SLACK_MS = 3000.0
# From a failover guest taking up its new VF to the traffic on it: the
# guest bringing the VF up (4-9 s under nested TCG, timed in the guest
# while this was built), the next announcement (1 s apart), the sender
# re-resolving the guest's address (1 s), with room for a loaded run.
# Without the repeated announcement the traffic waits for the sender's
# ARP entry to expire: 23 s at the least (reachable >= 15 s, delay 5 s,
# 3 probes), 25-48 s measured.
SWITCH_BOUND_MS = 18000.0
IN_FLIGHT_S = 0.5  # echoes sent this close to the stop may simply not be answered yet


@dataclass(frozen=True)
class Traffic:
    sent: int
    answered: int
    longest_gap_ms: float  # inf while the stream never came back
    gap_start: Optional[float]  # epoch s: the last echo answered before the gap
    gap_end: Optional[float]  # epoch s: the first answered after it (None: never)

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    @property
    def recovered(self) -> bool:
        return self.gap_end is not None


def summarize(sent: list, answered: list, interval: float) -> Traffic:
    """The longest stretch without an answered echo, from the first answered one on."""
    answered = sorted(a for a in answered if 0 <= a < len(sent))
    if not answered:
        return Traffic(len(sent), 0, float("inf"), None, None)
    best = (interval, sent[answered[0]], sent[answered[0]])
    for prev, nxt in zip(answered, answered[1:]):
        gap = sent[nxt] - sent[prev]
        if gap > best[0]:
            best = (gap, sent[prev], sent[nxt])
    tail = sent[-1] - sent[answered[-1]]
    if tail > max(best[0], IN_FLIGHT_S) + interval:  # lost at the end and never answered again
        return Traffic(len(sent), len(answered), float("inf"), sent[answered[-1]], None)
    return Traffic(len(sent), len(answered), best[0] * 1000.0, best[1], best[2])


class Gap(NamedTuple):
    ms: float
    start: float  # epoch s, clipped to the window
    end: float


def longest_gap_within(sent: list, answered: list, start: float, end: float) -> Gap:
    """The longest stretch without an answered echo inside [start, end] (epoch s)."""
    answered = sorted(a for a in answered if 0 <= a < len(sent))
    edges = [sent[a] for a in answered]
    if not edges or edges[0] > start:
        edges.insert(0, start)  # nothing answered yet when the window opened
    if edges[-1] < end:
        edges.append(end)  # nor since, until it closed
    best = Gap(0.0, start, start)
    for left, right in zip(edges, edges[1:]):
        left, right = max(start, left), min(end, right)
        if (right - left) * 1000.0 > best.ms:
            best = Gap((right - left) * 1000.0, left, right)
    return best


class Pinger:
    """``with Pinger(netns, ip, workdir) as p: ...; p.result`` once the block ends."""

    def __init__(self, netns: str, dst: str, workdir: str, rate: float = RATE):
        self.netns, self.dst, self.rate = netns, dst, rate
        self.out = os.path.join(workdir, "pinger-%s.json" % dst)
        self.proc: Optional[subprocess.Popen] = None
        self.result: Optional[Traffic] = None
        self.data: Optional[dict] = None  # what the pinger recorded, once it stopped

    def __enter__(self) -> Pinger:
        for path in (self.out, self.out + ".last"):
            if os.path.exists(path):
                os.unlink(path)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-m", "sriov_lab.pinger",
             self.dst, "--rate", str(self.rate), "--out", self.out],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def last_reply(self) -> Optional[float]:
        try:
            with open(self.out + ".last") as f:
                return float(f.read())
        except (OSError, ValueError):
            return None  # none yet, or caught mid-write

    def wait_reply(self, after: float, timeout: float) -> Optional[float]:
        """Epoch time of the first reply seen after epoch *after*; None at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError("the pinger exited: %s" % self.proc.stderr.read().decode().strip())
            last = self.last_reply()
            if last is not None and last > after:
                return last
            time.sleep(0.05)
        return None

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise LabError("the pinger did not stop on SIGTERM") from None
        try:
            with open(self.out) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            if exc[0] is None:
                raise LabError("the pinger left no result (%s): %s" % (e, err.decode().strip())) from e
            return
        self.data = data
        self.result = summarize(data["sent"], data["answered"], 1.0 / data["rate"])

    def gap_within(self, start: float, end: float) -> Gap:
        """See :func:`longest_gap_within`, on this stream (after the block ended)."""
        return longest_gap_within(self.data["sent"], self.data["answered"], start, end)
