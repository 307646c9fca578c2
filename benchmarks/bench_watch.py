"""``sriov-engine watch`` against the engine simulator: how soon the NICs come back, and reading cost.

Row 1: from the failure event (65) of a migration that unplugged 4
passthrough vNICs to every one of them plugged again by a running watcher
(poll interval P, grace 0), against the same 4 plugs sent straight to the
simulator's REST API (``PUT .../nics/{id}`` plugged=true, what the engine's
own plug costs through it), same run. Target: the watcher adds at most
P + 1 s.

Row 2: a watcher's first pass over 10,000 events (fed to its tracker,
state saved) against a plain paged read of the same events through
ovirtsdk4 (``from``, ``max``, ``page N``), same page size. Target: 2x.

    python benchmarks/bench_watch.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from report import print_rows, row  # noqa: E402

from engine_adapter.engine import Engine  # noqa: E402
from engine_adapter.model import Vnic  # noqa: E402
from engine_adapter.session import EngineOptions  # noqa: E402
from engine_adapter.watch import Watcher, WatchOptions  # noqa: E402
from sriov_lab.engine_sim import EngineSimulator  # noqa: E402

USER, PASSWORD = "admin@internal", "bench-Pa55"
POLL = 0.5
NICS = 4
EVENTS = 10000
PAGE = 100


def _seed(sim) -> str:
    net = sim.add_network("n")
    prof = sim.add_profile("p", net, passthrough=True, migratable=True)
    h1 = sim.add_host("h1")
    sim.add_host("h2")
    return sim.add_vm("vm", h1, nics=[{"name": "vf%d" % i, "mac": "56:6f:00:00:01:%02x" % i,
                                       "profile": prof} for i in range(NICS)])


def _opts(sim) -> EngineOptions:
    return EngineOptions(url=sim.url, username=USER, password=PASSWORD, ca_file=sim.ca_file, timeout=10)


def _all_plugged(sim, vm_id) -> bool:
    return all(n["plugged"] for n in sim.vms[vm_id]["nics"])


def _watcher_round(sim, vm_id, engine) -> float:
    """ms from the failure event to every NIC back, the watcher running meanwhile."""
    sim.on_migrate(lambda m: False)
    engine.migrate(engine.vm(vm_id), engine.find_host("h2"))  # fails: the VM stays on h1
    sim.wait_migrations()
    failed = [e for e in sim.event_log.events if e["code"] == 65][-1]["time"]
    deadline = time.time() + 30
    while not _all_plugged(sim, vm_id) and time.time() < deadline:
        time.sleep(0.005)
    if not _all_plugged(sim, vm_id):
        raise RuntimeError("the watcher did not plug the NICs back within 30 s")
    return (time.time() - failed) * 1000.0


def _direct_round(sim, vm_id, engine) -> float:
    """ms to plug the same NICs straight through REST."""
    vm = engine.vm(vm_id)
    for n in sim.vms[vm_id]["nics"]:
        n["plugged"] = False
    t0 = time.time()
    for n in sim.vms[vm_id]["nics"]:
        engine.plug_vnic(vm, Vnic(n["id"], n["name"], None, None, None))
    return (time.time() - t0) * 1000.0


def measure_nic_back(rounds: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp, \
            EngineSimulator(os.path.join(tmp, "pki"), users={USER: PASSWORD}) as sim:
        vm_id = _seed(sim)
        stop = threading.Event()
        watcher = Watcher(lambda: Engine(_opts(sim)), WatchOptions(
            state_file=os.path.join(tmp, "state.json"), poll_interval=POLL, grace=0, sleep=stop.wait))
        thread = threading.Thread(target=watcher.run, args=(stop.is_set,), daemon=True)
        thread.start()
        try:
            with Engine(_opts(sim)) as engine:
                time.sleep(2 * POLL)  # the watcher has read the newest id
                watched, direct = [], []
                for _ in range(rounds):
                    watched.append(_watcher_round(sim, vm_id, engine))
                    direct.append(_direct_round(sim, vm_id, engine))
        finally:
            stop.set()
            thread.join(10)
            watcher.close()
    return {"watched": statistics.median(watched), "direct": statistics.median(direct),
            "worst": max(watched), "rounds": rounds}


def _fill(sim, vm_ids) -> None:
    """EVENTS events: migrations of many VMs (unplug, start, plug, done), as a busy engine logs."""
    codes = (1014, 62, 1012, 63)
    for i in range(EVENTS):
        vm = sim.vms[vm_ids[(i // 4) % len(vm_ids)]]
        code = codes[i % 4]
        sim.event_log.log(code, vm, None, "c%d" % (i // 4), InterfaceName="vf0")


def _plain_read(engine) -> int:
    service = engine._system.events_service()
    n, page = 0, 1
    while True:
        kwargs = {"from_": 0, "max": PAGE}
        if page > 1:
            kwargs["search"] = "page %d" % page
        found = service.list(**kwargs)
        n += len(found)
        if len(found) < PAGE:
            return n
        page += 1


def measure_follow() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp, \
            EngineSimulator(os.path.join(tmp, "pki"), users={USER: PASSWORD}) as sim:
        net = sim.add_network("n")
        prof = sim.add_profile("p", net, passthrough=True, migratable=True)
        host = sim.add_host("h1")
        vms = [sim.add_vm("vm%d" % i, host, nics=[{"name": "vf0", "mac": "56:6f:00:00:02:%02x" % i,
                                                   "profile": prof}]) for i in range(50)]
        _fill(sim, vms)
        with Engine(_opts(sim)) as engine:
            _plain_read(engine)  # warm up
            t0 = time.perf_counter()
            assert _plain_read(engine) == EVENTS
            plain = (time.perf_counter() - t0) * 1000.0
        state = os.path.join(tmp, "state.json")
        watcher = Watcher(lambda: Engine(_opts(sim)), WatchOptions(state_file=state, page_size=PAGE))
        watcher.last_id = 0
        watcher.engine = Engine(_opts(sim)).__enter__()
        try:
            t0 = time.perf_counter()
            watcher.run_once()
            followed = (time.perf_counter() - t0) * 1000.0
        finally:
            watcher.close()
        if watcher.last_id != EVENTS or watcher.metrics.events._value.get() != EVENTS:
            raise RuntimeError("the watcher read %s events, not %d" % (watcher.last_id, EVENTS))
    return {"plain": plain, "followed": followed}


def measure(rounds: int = 3) -> list:
    back = measure_nic_back(rounds)
    follow = measure_follow()
    allowed = back["direct"] + (POLL + 1.0) * 1000.0
    return [
        row("watch: failure event -> %d NICs back" % NICS, back["watched"],
            "the same plugs by REST", back["direct"], "<= baseline + poll (%gs) + 1 s" % POLL,
            back["watched"] <= allowed,
            note="median of %d rounds, worst %.0f ms" % (back["rounds"], back["worst"])),
        row("watch: follow %d events" % EVENTS, follow["followed"], "plain paged read (%d/page)" % PAGE,
            follow["plain"], "<= 2x baseline", follow["followed"] <= 2 * follow["plain"]),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    print_rows(measure(args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
