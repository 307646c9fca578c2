"""A lab's pid file names its process only while that process is the one it was written for.

On a busy machine (pid_max 32768) a killed lab's pid files soon name
other processes, perhaps another lab's QEMU; reaping the stale lab must
not kill them.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from sriov_lab import hosts, procs


@pytest.fixture
def fake_qemu():
    """A live process whose command line says qemu, as a lab's QEMU's does."""
    proc = subprocess.Popen(["bash", "-c", "exec -a qemu-system-x86_64 sleep 60"])
    deadline = time.monotonic() + 5
    while "qemu" not in procs.cmdline(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def _pidfile(path, pid, written=None):
    path.write_text("%d\n" % pid)
    if written is not None:
        os.utime(path, (written, written))
    return str(path)


def test_pid_file_should_name_the_process_it_was_written_for(tmp_path, fake_qemu):
    assert procs.pid_from_file(_pidfile(tmp_path / "vm.pid", fake_qemu.pid)) == fake_qemu.pid


def test_pid_file_written_before_its_pid_began_should_name_nothing(tmp_path, fake_qemu):
    an_hour_ago = time.time() - 3600
    assert procs.pid_from_file(_pidfile(tmp_path / "vm.pid", fake_qemu.pid, an_hour_ago)) is None


@pytest.mark.parametrize("text", ["", "garbage\n", "-\n"])
def test_unreadable_pid_file_should_name_nothing(tmp_path, text):
    path = tmp_path / "vm.pid"
    path.write_text(text)
    assert procs.pid_from_file(str(path)) is None
    assert procs.pid_from_file(str(tmp_path / "missing.pid")) is None


def test_stale_host_should_not_claim_a_qemu_that_reused_its_pid(tmp_path, fake_qemu):
    run = tmp_path / "run" / "libvirt" / "qemu"
    run.mkdir(parents=True)
    host = hosts.LabHost(name="host-a", root=str(tmp_path), host_uuid="")
    _pidfile(run / "vm-old.pid", fake_qemu.pid, time.time() - 3600)
    assert host.qemu_pids() == []
    _pidfile(run / "vm-new.pid", fake_qemu.pid)
    assert host.qemu_pids() == [fake_qemu.pid]
