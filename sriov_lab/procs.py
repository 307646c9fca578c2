"""The lab's processes: which PID is whose, and how one ends.

A lab is killed as often as it is stopped (a test's timeout, Ctrl-C, a
CI job cancelled), and the next one reaps what it left by pid file
(:func:`sriov_lab.hosts.reap_stale`). On a busy machine (pid_max 32768)
a stale pid file soon names another process, perhaps another lab's
QEMU, so a pid file names its process only if that process began before
the file was written (:func:`pid_from_file`).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Optional

OWNER_FILE = "owner.pid"


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL after *timeout*; reap if it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while is_alive(pid):
        time.sleep(0.05)


def pid_from_file(path: str) -> Optional[int]:
    """The PID a pid file names, if the process with that PID now is the one that file was written for.

    A pid file outlives its process when a lab is killed, and on a busy
    machine (pid_max 32768) its PID soon names another process, perhaps
    another lab's QEMU: a process that began after the file was written is
    not the file's. None for that, for no file, or for garbage.
    """
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        written = os.stat(path).st_mtime
    except (OSError, ValueError):
        return None
    began = _start_time(pid)
    if began is None or began > written + START_SLACK:
        return None
    return pid


START_SLACK = 2.0  # s; /proc/stat's btime is whole seconds, and libvirt writes the file once QEMU runs


def _start_time(pid: int) -> Optional[float]:
    """When *pid* began, in seconds since the epoch (boot time plus its start in clock ticks)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def is_alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def write_owner(lab_root: str) -> None:
    """Mark *lab_root* as owned by this process, so others leave it alone."""
    with open(os.path.join(lab_root, OWNER_FILE), "w") as f:
        f.write("%d\n" % os.getpid())


def owner_alive(lab_root: str) -> bool:
    """Whether the process that made *lab_root* still runs (its lab is not stale)."""
    pid = pid_from_file(os.path.join(lab_root, OWNER_FILE))
    return pid is not None and is_alive(pid)


def cmdline(pid: int) -> str:
    """A process's command line, one string; empty once it is gone."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
