"""ledger: several processes at once, and processes killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sriov_host.inventory import Inventory, Vf
from sriov_host.ledger import Ledger

# The child builds the same 4-VF pool and reserves once the start file exists.
WORKER = r"""
import json, os, sys, time
from sriov_host.errors import SriovError
from sriov_host.inventory import Inventory, Vf
from sriov_host.ledger import Ledger

path, start, vm, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
inv = Inventory(tuple(Vf(name="pci_0000_05_10_%d" % i, address="0000:05:10.%d" % i, pf="ens1f0",
                         pf_address="0000:05:00.0", index=i) for i in range(4)))
led = Ledger(path)
while not os.path.exists(start):
    time.sleep(0.002)
nics = [{"mac": "02:00:00:00:%02x:%02x" % (int(vm[2:]), n)} for n in range(count)]
try:
    res = led.reserve(vm, nics, inv, ttl=60)
    print(json.dumps({"vfs": [c.vf_address for c in res.claims]}))
except SriovError as e:
    print(json.dumps({"code": e.code, "data": e.data, "message": e.message}))
"""

# The child takes the write lock, writes a claim, then dies or waits to be killed.
HOLDER = r"""
import os, signal, sys, time
from sriov_host.ledger import Ledger

led = Ledger(sys.argv[1])
db = led._db
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO claims VALUES ('0000:05:10.0', 'pci_0000_05_10_0', 'ens1f0', 0, 'vm-partial',"
           " '02:00:00:00:00:01', NULL, NULL, NULL, 'reserved', 9e12, 0)")
print("locked", flush=True)
if sys.argv[2] == "suicide":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""

INV = Inventory(tuple(Vf(name="pci_0000_05_10_%d" % i, address="0000:05:10.%d" % i, pf="ens1f0",
                         pf_address="0000:05:00.0", index=i) for i in range(4)))


def spawn(code, *args):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_reserve_should_never_give_a_vf_twice_across_processes(tmp_path):
    path, start = tmp_path / "ledger.sqlite", tmp_path / "start"
    Ledger(str(path)).close()
    counts = [1, 2, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1]
    procs = [spawn(WORKER, path, start, "vm%d" % i, n) for i, n in enumerate(counts)]
    time.sleep(0.3)  # let them import and open the ledger
    start.write_text("go")
    results = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    winners = [r["vfs"] for r in results if "vfs" in r]
    losers = [r for r in results if "vfs" not in r]
    given = [vf for vfs in winners for vf in vfs]
    assert len(given) == len(set(given)) <= 4
    assert losers, "12 processes asking for 16 VFs from 4 must not all win"
    for r, n in zip(results, counts):
        if "vfs" in r:
            assert len(r["vfs"]) == n
        else:
            assert r["code"] == 2001
            assert r["data"]["requested"] == n
            assert r["data"]["free"] < n
            assert r["message"].startswith("no free VF")
    with Ledger(str(path)) as led:
        assert sorted(c.vf_address for c in led.claims()) == sorted(given)
        # nothing is released, so what is left now was free when each loser asked
        assert 4 - len(given) < min(r["data"]["requested"] for r in losers)


def _wait_locked(proc):
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()


@pytest.mark.parametrize("how", [pytest.param("suicide", id="child-kills-itself"),
                                 pytest.param("killed", id="killed-holding-write-lock")])
def test_ledger_should_stay_consistent_after_sigkill_in_transaction(tmp_path, how):
    path = tmp_path / "ledger.sqlite"
    Ledger(str(path)).close()
    holder = spawn(HOLDER, path, how)
    _wait_locked(holder)
    waiter = None
    if how == "killed":
        # A second process queues behind the write lock, then gets it once the holder dies.
        waiter = spawn(WORKER, path, tmp_path / "start", "vm7", 1)
        (tmp_path / "start").write_text("go")
        time.sleep(0.5)
        assert waiter.poll() is None, "the waiter should be blocked by the write lock"
        os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert holder.returncode == -signal.SIGKILL
    if waiter is not None:
        out, err = waiter.communicate(timeout=30)
        assert json.loads(out) == {"vfs": ["0000:05:10.0"]}, err
    with Ledger(str(path), busy_timeout=5) as led:
        assert [c.vm_id for c in led.claims()] == (["vm7"] if waiter else [])
        assert led._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        res = led.reserve("vm-after", [{"mac": "02:00:00:00:00:99"}], INV)
        assert res.claims[0].vf_address == ("0000:05:10.1" if waiter else "0000:05:10.0")
