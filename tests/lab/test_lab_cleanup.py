"""The lab stops everything it started, by PID, even when the code using it fails."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from sriov_lab import datapath, domains, firewall, netns
from sriov_lab.fixtures import lab_unavailable_reason
from sriov_lab.lab import Lab
from sriov_lab.procs import is_alive

pytestmark = pytest.mark.lab


def _mounts_mentioning(path):
    """Mount entries under *path* in any live mount namespace on the machine."""
    found = []
    for info in glob.glob("/proc/[0-9]*/mountinfo"):
        try:
            with open(info) as f:
                found += [line for line in f if path in line]
        except OSError:
            continue
    return found


def test_lab_should_leave_no_daemon_qemu_or_mount_when_body_fails():
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    seen = {}
    with pytest.raises(RuntimeError, match="body failed"):
        with Lab(1) as lab:
            host = lab.hosts[0]
            conn = host.connect()
            domains.start(conn, domains.DomainSpec(name="leftover"))
            seen.update(root=lab.root, pids=[host.pid] + host.qemu_pids(),
                        mounts=len(_mounts_mentioning(lab.root)), links=list(lab.datapath.links),
                        netns=lab.datapath.netns, hostns=list(lab.network.namespaces if lab.network
                                                              else ()),
                        hostlinks=list(lab.network.links if lab.network else ()))
            seen["wired"] = all(_link_exists(n) for n in seen["links"])
            conn.close()
            raise RuntimeError("body failed")
    assert seen["links"] and seen["wired"]  # it really built its wire
    assert not any(_link_exists(n) for n in seen["links"])
    assert seen["netns"] not in _netns()
    assert not set(seen["hostns"]) & set(_netns())
    assert not any(_link_exists(n) for n in seen["hostlinks"])
    assert len(seen["pids"]) == 2 and seen["mounts"] >= 5  # it really ran, mounted
    assert [p for p in seen["pids"] if is_alive(p)] == []
    assert _mounts_mentioning(seen["root"]) == []
    assert not glob.glob(seen["root"])


def _link_exists(name: str) -> bool:
    return os.path.exists("/sys/class/net/%s" % name)


def _netns() -> list:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_next_lab_should_remove_the_wire_a_killed_lab_left(tmp_path):
    dead = _killed_lab(tmp_path)
    left = datapath.create(str(dead), "dead01", hosts=2)
    assert all(_link_exists(n) for n in left.links) and left.netns in _netns()
    with Lab(1, base=str(tmp_path)):
        pass
    assert not any(_link_exists(n) for n in left.links)
    assert left.netns not in _netns()
    assert not (dead / datapath.STATE_FILE).exists()


def _killed_lab(tmp_path):
    """A lab directory whose owner is dead, as a killed lab leaves it (skips where no lab can run)."""
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    dead = tmp_path / "lab-killed"
    dead.mkdir()
    (dead / "owner.pid").write_text("%d\n" % _dead_pid())
    return dead


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_sriov_lab_down_should_remove_the_host_namespaces_a_killed_lab_left(tmp_path):
    dead = _killed_lab(tmp_path)
    left = netns.create(str(dead), "dead02", 2, firewall.rules())
    assert set(left.namespaces) <= set(_netns()) and all(_link_exists(n) for n in left.links)
    proc = subprocess.run([sys.executable, "-m", "sriov_lab.cli", "down"], capture_output=True,
                          text=True, env=dict(os.environ, SRIOV_LAB_RUNTIME=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert "removed 1 leftover network(s)" in proc.stdout
    assert not set(left.namespaces) & set(_netns())
    assert not any(_link_exists(n) for n in left.links)
    assert not (dead / netns.STATE_FILE).exists()
