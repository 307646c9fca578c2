"""``migrate``: check, reserve on the destination, migrate, wait; release on failure."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

from engine_fakes import MAC2, FakeReserver

FAST = ("--poll-interval", "0.05", "--settle", "1")


def migrate(run, vm, *extra, host="host2", reserver=None):
    return run("migrate", vm, "--host", host, *FAST, *extra, reserver=reserver)


def test_migrate_should_reserve_then_migrate_then_wait_for_the_destination(sim, seed, run):
    fake = FakeReserver()
    res = migrate(run, "vm-ready", reserver=fake)
    assert res.rc == 0, res.out + res.err
    nic_id = next(n["id"] for n in sim.vms[seed.vm_ready]["nics"] if n["mac"] == MAC2)
    assert fake.calls == [("reserve", seed.vm_ready,
                           [{"mac": MAC2, "alias": "ua-" + nic_id, "vlan": None, "network": "sriov-other"}],
                           300), ("release", seed.vm_ready)]
    assert fake.endpoint == ("127.0.0.1", 54399)  # from the engine's host record
    action = sim.find("POST", "/vms/%s/migrate$" % seed.vm_ready)
    assert len(action) == 1 and '<host id="%s"/>' % seed.host2 in action[0].body
    assert sim.vms[seed.vm_ready]["host"] == seed.host2
    steps = re.findall(r"step (\d)/5 (\S+)", res.out)
    assert steps == [("1", "check-vm"), ("2", "host"), ("3", "reserve"), ("4", "migrate"), ("5", "wait")]
    assert re.search(r"step 3/5 reserve .*0000:05:10\.0.*\(\d+\.\d\ds\)", res.out)
    assert "migrated vm-ready to host2 in" in res.out
    assert "waiting: migrating" in res.err


def test_migrate_should_release_what_is_left_of_the_reservation_after_success(sim, seed, run):
    """The service keeps plugged VFs; a reservation no hook used (engine >= 4.1) goes."""
    fake = FakeReserver()
    res = migrate(run, "vm-ready", reserver=fake)
    assert res.rc == 0, res.err
    assert fake.calls[1:] == [("release", seed.vm_ready)]
    assert re.search(r"cleanup  release +released 1 unused reserved VF\(s\); plugged VFs stay in use",
                     res.out)
    assert res.out.index("step 5/5 wait") < res.out.index("cleanup  release") < res.out.index("migrated")


def test_migrate_should_succeed_when_the_release_after_success_fails(sim, seed, run):
    fake = FakeReserver(fail_release=True)
    res = migrate(run, "vm-ready", reserver=fake)
    assert res.rc == 0, res.err
    assert [c[0] for c in fake.calls] == ["reserve", "release"]
    assert "release  FAILED: sriov-migrationd at 127.0.0.1:54399 unreachable" in res.out
    assert "expires after its ttl of 300s" in res.out and "migrated vm-ready to host2" in res.out


def test_migrate_should_reserve_before_the_engine_is_asked(sim, seed, run):
    seen = []
    fake = FakeReserver(on_reserve=lambda: seen.append(len(sim.find("POST", "/migrate$"))))
    assert migrate(run, "vm-ready", reserver=fake).rc == 0
    assert seen == [0]


def test_migrate_should_refuse_a_non_migratable_vm_before_reserving(sim, seed, run):
    fake = FakeReserver()
    res = migrate(run, "vm-blocked", reserver=fake)
    assert res.rc == 1
    assert "VM vm-blocked is not migratable: not migratable: nic2 (profile sriov)" in res.err
    assert fake.calls == [] and fake.endpoint is None
    assert sim.find("POST", "/migrate$") == []


def test_migrate_should_not_call_the_service_for_a_vm_without_passthrough_vnics(sim, seed, run):
    fake = FakeReserver()
    res = migrate(run, "vm-plain", reserver=fake)
    assert res.rc == 0, res.err
    assert fake.endpoint is None and "nothing to reserve" in res.out


def test_migrate_should_stop_when_the_destination_has_no_free_vf(sim, seed, run):
    fake = FakeReserver(fail_reserve=True)
    res = migrate(run, "vm-ready", reserver=fake)
    assert res.rc == 2
    assert res.err == "sriov-engine: sriov-migrationd refused SRIOV.reserveVfs: [2001] no free VF\n"
    assert [c[0] for c in fake.calls] == ["reserve"]  # a refusal holds nothing to release
    assert sim.find("POST", "/migrate$") == []


def test_migrate_should_release_and_quote_the_engine_when_it_refuses(sim, seed, run):
    sim.inject_fault("POST", "/migrate$", "Operation Failed",
                     "[Cannot migrate VM. There is no host that satisfies current scheduling constraints.]",
                     status=409)
    fake = FakeReserver()
    res = migrate(run, "vm-ready", reserver=fake)
    assert res.rc == 2
    assert ("Operation Failed: [Cannot migrate VM. There is no host that satisfies current "
            "scheduling constraints.] (HTTP 409)") in res.err
    assert [c[0] for c in fake.calls] == ["reserve", "release"]
    assert re.search(r"cleanup  release +released 1 VF\(s\)", res.out)
    assert sim.find("POST", "cancelmigration") == []


def test_migrate_should_release_when_the_migration_fails(sim, seed, run):
    def lab_migration(m):
        raise RuntimeError("libvirt: migration failed")
    sim.on_migrate(lab_migration)
    fake = FakeReserver()
    res = migrate(run, "vm-ready", reserver=fake)
    assert res.rc == 2
    assert "migration of vm-ready to host2 failed: migration ended and the VM is still up on its " \
           "source host (host host1)" in res.err
    assert [c[0] for c in fake.calls] == ["reserve", "release"]
    assert sim.vms[seed.vm_ready]["host"] == seed.host1


def test_migrate_should_cancel_and_release_when_the_wait_times_out(sim, seed, run):
    sim.on_migrate(lambda m: not m.cancelled.wait(10))
    fake = FakeReserver()
    started = time.monotonic()
    res = migrate(run, "vm-ready", "--wait-timeout", "0.5", reserver=fake)
    assert res.rc == 2 and time.monotonic() - started < 5
    assert "did not finish within 0.5s" in res.err
    assert len(sim.find("POST", "/vms/%s/cancelmigration$" % seed.vm_ready)) == 1
    assert [c[0] for c in fake.calls] == ["reserve", "release"]
    assert sim.wait_migrations(5) and sim.vms[seed.vm_ready]["host"] == seed.host1


def test_migrate_should_cancel_and_release_on_ctrl_c(sim, seed, run):
    def lab_migration(m):
        deadline = time.monotonic() + 5
        while not sim.find("GET", "/vms/%s$" % m.vm_id) and time.monotonic() < deadline:
            time.sleep(0.01)  # Ctrl-C once the adapter is waiting
        os.kill(os.getpid(), signal.SIGINT)
        return not m.cancelled.wait(10)
    sim.on_migrate(lab_migration)
    fake = FakeReserver()
    res = migrate(run, "vm-ready", reserver=fake)
    assert res.rc == 130
    assert [c[0] for c in fake.calls] == ["reserve", "release"]
    assert sim.find("POST", "cancelmigration$")
    assert "interrupted; the reservation on host2 was released" in res.out
    assert sim.wait_migrations(5)


def test_migrate_should_name_an_unknown_host(sim, seed, run):
    fake = FakeReserver()
    res = migrate(run, "vm-ready", host="host9", reserver=fake)
    assert res.rc == 2 and res.err == "sriov-engine: no host named or with id 'host9' on engine %s\n" \
        % sim.url.split("/ovirt")[0]
    assert fake.calls == []


def test_migrate_should_refuse_the_host_the_vm_runs_on(sim, seed, run):
    res = migrate(run, "vm-ready", host="host1", reserver=FakeReserver())
    assert res.rc == 2 and "already runs on host host1" in res.err


def test_migrate_should_use_the_address_the_engine_holds_for_the_host(sim, seed, run):
    sim.set_host_service("host2", "::1", 54400)
    fake = FakeReserver()
    assert migrate(run, "vm-ready", reserver=fake).rc == 0
    assert fake.endpoint == ("::1", 54400)


def test_migrate_should_let_service_address_override_the_host_record(sim, seed, run):
    fake = FakeReserver()
    assert migrate(run, "vm-ready", "--service-address", "10.0.0.2", reserver=fake).rc == 0
    assert fake.endpoint == ("10.0.0.2", 54325)


def test_simulator_should_run_migrations_in_the_background(sim, seed):
    """The e2e hook point: the callback runs off the request thread, with both host records."""
    got = []
    gate = threading.Event()
    sim.on_migrate(lambda m: (got.append((m.vm_name, m.src["name"], m.dst["address"])), gate.wait(5)))
    assert sim.hosts[seed.host2]["service_port"] == 54399
    sim.vms[seed.vm_plain]["status"] = "up"
    sim._migrate(seed.vm_plain, '<action><host id="%s"/></action>' % seed.host2)
    assert sim.vms[seed.vm_plain]["status"] == "migrating"
    gate.set()
    assert sim.wait_migrations(5)
    assert got == [("vm-plain", "host1", "127.0.0.1")]
    assert sim.vms[seed.vm_plain] == dict(sim.vms[seed.vm_plain], status="up", host=seed.host2)
