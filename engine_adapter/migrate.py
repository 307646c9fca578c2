"""A checked migration: check, reserve on the destination, migrate, wait.

The VF is reserved before the engine is asked to migrate, so a migration
never starts toward a host with no free VF. Whatever goes wrong after the
reservation, Ctrl-C included, the reservation is released before we exit.
After a success the destination is asked to release too: its service
keeps the VFs the hook plugged, so only a reservation nobody used goes
(behind an engine that plugs VFs itself, the hooks never use it).

Behind an engine >= 4.1 the engine unplugs and plugs the VFs itself and
picks the destination's VF from its own bookkeeping, so the reservation
is only a pre-check there. Such an engine leaves the vNICs unplugged when
the migration fails; we re-plug them on the source (``replug``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from sriov_host.errors import NO_SUCH_VM

from .errors import EXIT_INTERRUPTED, EXIT_OK, AdapterError, NotMigratable
from .model import decide_vm, migration_state, plugged_passthrough, reservation_nics, service_endpoint
from .replug import replug_after_failure
from .reserve import ServiceError, reserved_vfs_text

STEPS = 5


@dataclass
class MigrateOptions:
    ttl: int = 300
    wait_timeout: float = 600.0
    poll_interval: float = 2.0
    settle: float = 5.0
    replug_wait: float = 60.0
    service_port: int = 54325
    service_address: str = ""
    clock: Callable[[], float] = field(default=time.monotonic)
    sleep: Callable[[float], None] = field(default=time.sleep)


class Steps:
    """Prints each step with its own duration and the time since the start."""

    def __init__(self, out, clock):
        self.out = out
        self.clock = clock
        self.t0 = clock()
        self.n = 0

    def done(self, name: str, text: str, started: float, numbered: bool = True) -> None:
        if numbered:
            self.n += 1
        label = "step %d/%d" % (self.n, STEPS) if numbered else "cleanup "
        now = self.clock()
        self.out.write("[%7.2fs] %s %-8s %s (%.2fs)\n"
                       % (now - self.t0, label, name, text, now - started))
        self.out.flush()

    def failed(self, name: str, text: str, started: float, label: str = "cleanup") -> None:
        """A step that did not finish, or a cleanup step that failed."""
        now = self.clock()
        self.out.write("[%7.2fs] %-8s %-8s FAILED%s (%.2fs)\n"
                       % (now - self.t0, label, name, text and ": " + text, now - started))
        self.out.flush()


class Progress:
    """Shows the wait: an updated line on a terminal, a line per change otherwise."""

    def __init__(self, out, every: float = 10.0):
        self.out = out
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.every = every
        self.last = (None, -every)

    def show(self, state: str, elapsed: float) -> None:
        if self.tty:
            self.out.write("\r  waiting: %-24s %6.1fs" % (state, elapsed))
        elif state != self.last[0] or elapsed - self.last[1] >= self.every:
            self.out.write("  waiting: %s (%.1fs)\n" % (state, elapsed))
            self.last = (state, elapsed)
        else:
            return
        self.out.flush()

    def end(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


class WaitTimeout(AdapterError):
    """The migration is still running when we stop waiting for it."""


def run_migration(engine, vm_key: str, host_key: str, reserver_factory, out, err,
                  opts: MigrateOptions) -> int:
    """Run the five steps; on any failure release the reservation and re-plug on the source."""
    steps = Steps(out, opts.clock)
    vm, vnics = _check(engine, vm_key, steps)
    nics = reservation_nics(vnics)
    host, reserver = _destination(engine, vm, host_key, bool(nics), reserver_factory, steps, opts)
    plugged = plugged_passthrough(vnics)  # what a failed migration must leave plugged again
    stage, t = "reserve", opts.clock()
    try:
        _reserve(reserver, vm, nics, host, steps, opts)
        stage = "migrate"  # from here the engine may be migrating, even if its answer is lost
        t = opts.clock()
        engine.migrate(vm, host)
        steps.done("migrate", "engine accepted the migration of %s to %s" % (vm.name, host.name), t)
        stage = "wait"
        t = opts.clock()
        _wait(engine, vm, host, err, opts)
        steps.done("wait", "VM %s is up on %s" % (vm.name, host.name), t)
    except KeyboardInterrupt:
        steps.failed(stage, "interrupted", t, label="step %d/%d" % (steps.n + 1, STEPS))
        engine_asked = stage != "reserve"
        _cleanup(engine, vm, host, reserver, steps, opts, cancel=engine_asked,
                 replug=plugged if engine_asked else ())
        out.write("sriov-engine: interrupted; the reservation on %s was released\n" % host.name)
        return EXIT_INTERRUPTED
    except AdapterError as e:
        steps.failed(stage, "", t, label="step %d/%d" % (steps.n + 1, STEPS))
        if stage == "reserve" and isinstance(e, ServiceError):
            raise  # reserveVfs is all or nothing: a refusal holds no VF
        _cleanup(engine, vm, host, reserver, steps, opts, cancel=isinstance(e, WaitTimeout),
                 replug=plugged if stage != "reserve" else ())
        raise
    _release(reserver, vm, steps, opts, after_success=True)
    out.write("migrated %s to %s in %.2fs\n" % (vm.name, host.name, opts.clock() - steps.t0))
    return EXIT_OK


def _check(engine, vm_key, steps):
    t = steps.clock()
    vm = engine.find_vm(vm_key)
    vnics = engine.vnics(vm)
    verdict = decide_vm(vnics)
    if not verdict.migratable:
        steps.failed("check-vm", "%s: %s" % (vm.name, verdict.reason), t, label="step 1/%d" % STEPS)
        raise NotMigratable("VM %s is not migratable: %s" % (vm.name, verdict.reason))
    steps.done("check-vm", "%s: %s" % (vm.name, verdict.reason), t)
    return vm, vnics


def _destination(engine, vm, host_key, need_service, reserver_factory, steps, opts):
    t = steps.clock()
    host = engine.find_host(host_key)
    if host.id == vm.host_id:
        raise AdapterError("VM %s already runs on host %s" % (vm.name, host.name))
    if vm.status != "up":
        raise AdapterError("VM %s is %s, not up; only a running VM can be live-migrated"
                           % (vm.name, vm.status))
    address = opts.service_address or host.address
    if not address:
        raise AdapterError("the engine's record of host %s has no address" % host.name)
    addr, port = service_endpoint(address, opts.service_port)
    reserver = reserver_factory(addr, port) if need_service else None
    steps.done("host", "%s, service at %s:%d" % (host.name, addr, port), t)
    return host, reserver


def _reserve(reserver, vm, nics, host, steps, opts):
    t = steps.clock()
    if not nics:
        steps.done("reserve", "nothing to reserve (no passthrough vNICs)", t)
        return
    result = reserver.reserve(vm.id, nics, opts.ttl)
    steps.done("reserve", "%d VF(s) on %s: %s, ttl %ds"
               % (len(nics), host.name, reserved_vfs_text(result), opts.ttl), t)


def _wait(engine, vm, host, err, opts):
    """Poll the VM until it is up on the destination, or the migration failed."""
    t0 = opts.clock()
    progress = Progress(err)
    seen_migrating = False
    try:
        while True:
            now = engine.vm(vm.id)
            elapsed = opts.clock() - t0
            seen_migrating = seen_migrating or now.status == "migrating"
            verdict, why = migration_state(now.status, now.host_id, vm.host_id, host.id,
                                           seen_migrating, elapsed >= opts.settle)
            if verdict == "done":
                return
            if verdict == "failed":
                raise AdapterError("migration of %s to %s failed: %s (host %s)"
                                   % (vm.name, host.name, why, engine.host_name(now.host_id)))
            if elapsed >= opts.wait_timeout:
                raise WaitTimeout("migration of %s to %s did not finish within %gs"
                                   % (vm.name, host.name, opts.wait_timeout))
            progress.show(why, elapsed)
            opts.sleep(opts.poll_interval)
    finally:
        progress.end()


def _cleanup(engine, vm, host, reserver, steps, opts, cancel: bool, replug: tuple):
    """Stop what the engine may still be doing, release the VFs, re-plug *replug* on the source."""
    if cancel:
        t = opts.clock()
        try:
            engine.cancel_migration(vm)
            steps.done("cancel", "asked the engine to cancel the migration", t, numbered=False)
        except (AdapterError, KeyboardInterrupt) as e:
            steps.failed("cancel", getattr(e, "message", "interrupted"), t)
    _release(reserver, vm, steps, opts, after_success=False)
    replug_after_failure(engine, vm, host, replug, steps, opts)


def _release(reserver, vm, steps, opts, after_success: bool) -> None:
    """``releaseVfs`` on the destination; a failure is reported, the TTL frees the VFs.

    After a success the service keeps the VFs the hook plugged (and those
    it is about to plug), so this frees only a reservation nobody used,
    e.g. behind an engine that plugs VFs itself.
    """
    if reserver is None:
        return
    t = opts.clock()
    try:
        result = reserver.release(vm.id)
        n = (result or {}).get("released", "?")
        text = ("released %s unused reserved VF(s); plugged VFs stay in use" % n if after_success
                else "released %s VF(s) for %s" % (n, vm.name))
        steps.done("release", text, t, numbered=False)
    except (AdapterError, KeyboardInterrupt) as e:
        if isinstance(e, ServiceError) and e.code == NO_SUCH_VM:
            steps.done("release", "nothing was reserved", t, numbered=False)
            return
        steps.failed("release", "%s; the reservation expires after its ttl of %ds"
                     % (getattr(e, "message", "interrupted"), opts.ttl), t)
