"""The lab stops everything it started, by PID, even when the code using it fails."""

from __future__ import annotations

import glob

import pytest

from sriov_lab import domains
from sriov_lab.fixtures import lab_unavailable_reason
from sriov_lab.hosts import is_alive
from sriov_lab.lab import Lab

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
            conn = __import__("libvirt").open(host.uri)
            domains.start(conn, domains.DomainSpec(name="leftover"))
            seen.update(root=lab.root, pids=[host.pid] + host.qemu_pids(),
                        mounts=len(_mounts_mentioning(lab.root)))
            conn.close()
            raise RuntimeError("body failed")
    assert len(seen["pids"]) == 2 and seen["mounts"] >= 5  # it really ran, mounted
    assert [p for p in seen["pids"] if is_alive(p)] == []
    assert _mounts_mentioning(seen["root"]) == []
    assert not glob.glob(seen["root"])
