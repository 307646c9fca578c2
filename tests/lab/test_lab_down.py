"""``sriov-lab down`` stops everything a SIGKILLed lab left, its services included.

As a new user would: a lab with both hosts' sriov-migrationd running
(what ``demo --keep`` leaves up) is killed with SIGKILL; its daemons
and services live on in their own sessions; ``sriov-lab down`` must stop
every one of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from sriov_lab.fixtures import lab_unavailable_reason
from sriov_lab.paths import ENV_RUNTIME, runtime_base
from sriov_lab.procs import is_alive

pytestmark = pytest.mark.lab

HOLDER = """
import json, sys, tempfile, time
from sriov_lab.lab import Lab
from sriov_lab.services import LabServices
lab = Lab(2).start()
services = LabServices(lab, tempfile.mkdtemp(dir=lab.root)).start()
print(json.dumps({"libvirtd": [h.pid for h in lab.hosts],
                  "services": [s.proc.pid for s in services.services]}), flush=True)
time.sleep(600)
"""


def test_down_should_stop_the_services_and_daemons_of_a_killed_lab():
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    os.makedirs(runtime_base(), exist_ok=True)
    base = tempfile.mkdtemp(prefix="down-", dir=runtime_base())  # a base of its own, short paths
    env = dict(os.environ, **{ENV_RUNTIME: base})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE,
                              text=True, cwd="/")
    try:
        pids = json.loads(holder.stdout.readline())
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    left = pids["libvirtd"] + pids["services"]
    assert len(left) == 4 and all(is_alive(p) for p in left)  # the kill really left them running

    proc = subprocess.run([sys.executable, "-m", "sriov_lab.cli", "down"], env=env,
                          capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr
    assert [p for p in left if is_alive(p)] == []
    for pid in left:
        assert str(pid) in proc.stdout
    shutil.rmtree(base, ignore_errors=True)
