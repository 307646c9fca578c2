"""Live device attach/detach that waits for libvirt to say it happened.

``detachDeviceFlags`` returning is not the device being gone: with ACPI
hot-unplug the guest must cooperate, and with q35's native pciehp the
call returns after 5 s while the device is still there (DEVICE_REMOVED
follows about a second later); a guest with no OS never lets go. So each
operation here:

1. registers for the device events *before* acting (keyed by domain
   UUID and alias, one ``threading.Event`` per wait; libvirt delivers
   events on its event-loop thread),
2. issues the call on a helper thread so one monotonic deadline bounds
   the whole operation, however long libvirt blocks,
3. trusts the live XML over the event: success is the alias being gone
   (detach) or present (attach) in the live domain, polled as a
   fallback, and a DEVICE_REMOVAL_FAILED event is final,
4. deregisters in ``finally``.

The libvirt domain and the event source are small protocols so tests can
fake them in a few lines.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Callable, Iterable, Optional, Protocol

from . import faultpoint
from .domxml import holds
from .errors import LIBVIRT_FAILURE, SriovError
from .libvirtconn import translated
from .xmlsafe import parse_xml

log = logging.getLogger(__name__)

AFFECT_LIVE = 1  # libvirt.VIR_DOMAIN_AFFECT_LIVE (stable ABI); no import needed
ADDED = "device-added"
REMOVED = "device-removed"
REMOVAL_FAILED = "device-removal-failed"
_IN_PROGRESS = "already in the process of unplug"


class DeviceTimeout(SriovError):
    """The device did not arrive or leave in time; ``data`` says which and how."""

    code = LIBVIRT_FAILURE


class AttachOutcomeUnknown(SriovError):
    """The answer to an attach was lost: it may still complete, so its VF must stay held."""

    code = LIBVIRT_FAILURE


class DeviceRemovalFailed(SriovError):
    """The guest refused the unplug (DEVICE_REMOVAL_FAILED): final, no retry."""

    code = LIBVIRT_FAILURE


class Domain(Protocol):
    def UUIDString(self) -> str: ...

    def XMLDesc(self, flags: int = 0) -> str: ...

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int: ...

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int: ...


class EventSource(Protocol):
    """Subscribes to device events of one domain; calls :func:`notify` on them."""

    def subscribe(self, dom: Domain, kinds: Iterable[str]) -> object: ...

    def unsubscribe(self, handle: object) -> None: ...


class _Waiter:
    def __init__(self, kinds):
        self.kinds = frozenset(kinds)
        self.event = threading.Event()
        self.seen: list = []


_waiters: dict = {}
_waiters_lock = threading.Lock()


def notify(vm_uuid: str, alias: str, kind: str) -> None:
    """Deliver one device event to whoever waits on (*vm_uuid*, *alias*)."""
    with _waiters_lock:
        waiter = _waiters.get((vm_uuid, alias))
    if waiter is not None and kind in waiter.kinds:
        waiter.seen.append(kind)
        waiter.event.set()


@contextlib.contextmanager
def _waiting(events: EventSource, dom: Domain, alias: str, kinds):
    with _waiting_all(events, dom, [alias], kinds) as waiters:
        yield waiters[alias]


@contextlib.contextmanager
def _waiting_all(events: EventSource, dom: Domain, aliases, kinds):
    """One waiter per alias, one subscription for them all (libvirt refuses a second
    registration of the same callback for the same domain and event)."""
    uuid = dom.UUIDString()
    waiters = {alias: _Waiter(kinds) for alias in aliases}
    with _waiters_lock:
        busy = [a for a in aliases if (uuid, a) in _waiters]
        if busy:
            raise SriovError("already waiting for a device event of %s alias %s" % (uuid, busy[0]))
        for alias, waiter in waiters.items():
            _waiters[(uuid, alias)] = waiter
    handle = None
    try:
        handle = events.subscribe(dom, kinds)
        yield waiters
    finally:
        if handle is not None:
            events.unsubscribe(handle)
        with _waiters_lock:
            for alias in aliases:
                _waiters.pop((uuid, alias), None)


class LibvirtEvents:
    """The real event source: per-domain callbacks on a libvirt connection."""

    def __init__(self, conn):
        self.conn = conn

    def subscribe(self, dom, kinds) -> list:
        import libvirt

        ids = {ADDED: libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
               REMOVED: libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
               REMOVAL_FAILED: libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED}
        handles = []
        try:
            with translated("registering for device events"):
                for kind in kinds:
                    handles.append(self.conn.domainEventRegisterAny(dom, ids[kind], _callback, kind))
        except BaseException:
            self.unsubscribe(handles)
            raise
        return handles

    def unsubscribe(self, handle) -> None:
        for h in handle:
            try:
                self.conn.domainEventDeregisterAny(h)
            except Exception as e:  # the connection may be gone; nothing to undo then
                log.debug("deregistering device event callback %s: %s", h, e)


def _callback(_conn, dom, alias, kind) -> None:
    """Runs on libvirt's event-loop thread: hand over, do nothing else."""
    notify(dom.UUIDString(), alias, kind)


class _Call:
    """Run a blocking libvirt call on a helper thread; keep its outcome."""

    def __init__(self, started: float, fn: Callable, *args):
        self.started = started
        self.done = threading.Event()
        self.error: Optional[BaseException] = None
        self.returned_at: Optional[float] = None
        threading.Thread(target=self._run, args=(fn, args), daemon=True).start()

    def _run(self, fn, args) -> None:
        try:
            fn(*args)
        except BaseException as e:  # handed to the waiting thread
            self.error = e
        finally:
            self.returned_at = time.monotonic()
            self.done.set()


def _live_root(dom: Domain):
    with translated("reading the live domain XML"):
        xml = dom.XMLDesc(0)
    return parse_xml(xml, "live domain XML")


def alias_present(dom: Domain, alias: str) -> bool:
    """Whether the live domain has a device with this alias right now."""
    return alias in _present_aliases(dom)


def still_holds(dom: Domain, key: str, vf_address: Optional[str]) -> bool:
    """Whether the running domain still has vNIC *key* on *vf_address* (see domxml.holds)."""
    with translated("reading the live domain XML"):
        if not dom.isActive():
            return False
    return holds(_live_root(dom), key, vf_address)


def _check_call(call: _Call, what: str) -> None:
    """Raise the call's error, translated, unless it means 'keep waiting'."""
    err = call.error
    if err is None or _IN_PROGRESS in str(err):
        return
    if isinstance(err, SriovError):
        raise err
    with translated(what):
        raise err


def _wait(dom: Domain, alias: str, want_present: bool, waiter: _Waiter, call: _Call,
          deadline: float, poll_interval: float, what: str) -> None:
    """Wait until the live XML shows the wanted state, or fail."""
    while True:
        remaining = deadline - time.monotonic()
        waiter.event.wait(max(0.0, min(poll_interval, remaining)))
        if REMOVAL_FAILED in waiter.seen:
            raise DeviceRemovalFailed("%s: the guest refused to release device %s" % (what, alias),
                                      {"alias": alias, "events": list(waiter.seen)})
        if alias_present(dom, alias) == want_present:
            return
        _check_call(call, what)
        if time.monotonic() >= deadline:
            if want_present and _outlived(call, dom, alias, what):
                return
            raise DeviceTimeout(
                "%s: device %s still %s after %.1f s (events seen: %s; libvirt call %s)"
                % (what, alias, "absent" if want_present else "present",
                   deadline - call.started, ", ".join(waiter.seen) or "none",
                   "returned" if call.done.is_set() else "still blocked"),
                {"alias": alias, "events": list(waiter.seen), "call_returned": call.done.is_set()})


def _outlived(call: _Call, dom: Domain, alias: str, what: str) -> bool:
    """Past the deadline with the attach call still running: wait for the call itself.

    A VFIO hot-plug pins all guest memory, so on a large VM the call can
    outlive any deadline and still succeed; reporting a failure now would
    let the caller release a VF that then lands in the guest. True if the
    device arrived after all.
    """
    if not call.done.is_set():
        log.warning("%s: device %s not attached yet and the libvirt call is still running; "
                    "waiting for the call itself before deciding", what, alias)
        call.done.wait()
    return alias_present(dom, alias)


def _run_and_wait(dom: Domain, fn, device_xml: str, alias: str, timeout: float,
                  events: Optional[EventSource], kinds, want_present: bool,
                  poll_interval: float, what: str) -> float:
    start = time.monotonic()
    deadline = start + timeout
    if events is None:
        events = LibvirtEvents(dom.connect())
    with _waiting(events, dom, alias, kinds) as waiter:
        call = _Call(start, fn, device_xml, AFFECT_LIVE)
        _wait(dom, alias, want_present, waiter, call, deadline, poll_interval, what)
    elapsed = (time.monotonic() - start) * 1000.0
    log.info("%s: device %s %s in %.0f ms (events: %s)", what, alias,
             "attached" if want_present else "removed", elapsed, ", ".join(waiter.seen) or "none")
    return elapsed


def detach_and_wait(dom: Domain, device_xml: str, alias: str, timeout: float,
                    events: Optional[EventSource] = None, poll_interval: float = 0.2) -> float:
    """Live-detach a device and wait until it is gone; return elapsed ms.

    Raises DeviceTimeout (still present at the deadline),
    DeviceRemovalFailed (the guest refused) or LibvirtFailure.
    """
    return _run_and_wait(dom, dom.detachDeviceFlags, device_xml, alias, timeout, events,
                         (REMOVED, REMOVAL_FAILED), False, poll_interval,
                         "detach from VM %s" % dom.UUIDString())


def attach_and_wait(dom: Domain, device_xml: str, alias: str, timeout: float,
                    events: Optional[EventSource] = None, poll_interval: float = 0.2) -> float:
    """Live-attach a device and wait until the live XML has it; return elapsed ms."""
    return _run_and_wait(dom, dom.attachDeviceFlags, device_xml, alias, timeout, events,
                         (ADDED,), True, poll_interval,
                         "attach to VM %s" % dom.UUIDString())


DETACH_ALIAS_FLAGS = AFFECT_LIVE


def _request_detach(dom: Domain, alias: str, device_xml: str) -> Optional[_Call]:
    """Ask for the unplug without waiting for it.

    ``virDomainDetachDeviceAlias`` returns once the guest has been asked,
    so the requests for several devices overlap. A domain object without
    it (an old libvirt, or a test's fake) gets the blocking call on a
    helper thread instead.
    """
    detach_alias = getattr(dom, "detachDeviceAlias", None)
    if detach_alias is None:
        return _Call(time.monotonic(), dom.detachDeviceFlags, device_xml, AFFECT_LIVE)
    with translated("asking VM %s to release device %s" % (dom.UUIDString(), alias)):
        detach_alias(alias, DETACH_ALIAS_FLAGS)
    return None


def _present_aliases(dom: Domain) -> set:
    return {a.get("name") for a in _live_root(dom).iterfind("devices/*/alias")}


def detach_all_and_wait(dom: Domain, devices, timeout: float,
                        events: Optional[EventSource] = None, poll_interval: float = 0.2):
    """Unplug several devices at once; wait for all under one deadline.

    *devices* is ``[(alias, device_xml)]``. Every waiter is registered
    before the first request. Returns ``(removed, failed)``: ms by alias
    for the devices that left, and the error by alias for those that did
    not (refused by the guest, refused by libvirt, still present at the
    deadline). The caller puts back exactly what was removed.
    """
    what = "detach from VM %s" % dom.UUIDString()
    start = time.monotonic()
    deadline = start + timeout
    if events is None:
        events = LibvirtEvents(dom.connect())
    wake = threading.Event()
    removed, failed, calls = {}, {}, {}
    with _waiting_all(events, dom, [a for a, _x in devices], (REMOVED, REMOVAL_FAILED)) as waiters:
        for waiter in waiters.values():
            waiter.event = wake
        for n, (alias, xml) in enumerate(devices):
            if n:
                faultpoint.reached(faultpoint.BETWEEN_DETACHES)
            try:
                calls[alias] = _request_detach(dom, alias, xml)
            except SriovError as e:
                failed[alias] = e
        _wait_all(dom, waiters, calls, removed, failed, start, deadline, poll_interval, wake, what)
    log.info("%s: removed %s, failed %s in %.0f ms", what, sorted(removed), sorted(failed),
             (time.monotonic() - start) * 1000.0)
    return removed, failed


def _wait_all(dom, waiters, calls, removed, failed, start, deadline, poll_interval, wake, what):
    """Poll the live XML (woken early by any event) until every device is settled."""
    while True:
        pending = [a for a in waiters if a not in removed and a not in failed]
        if not pending:
            return
        wake.wait(max(0.0, min(poll_interval, deadline - time.monotonic())))
        wake.clear()
        present = _present_aliases(dom)
        now = time.monotonic()
        for alias in pending:
            if alias not in present:
                removed[alias] = (now - start) * 1000.0
            elif REMOVAL_FAILED in waiters[alias].seen:
                failed[alias] = DeviceRemovalFailed("%s: the guest refused to release device %s"
                                                    % (what, alias), {"alias": alias})
            elif calls.get(alias) is not None and calls[alias].done.is_set():
                try:
                    _check_call(calls[alias], what)
                except SriovError as e:
                    failed[alias] = e
        if now >= deadline:
            for alias in pending:
                if alias not in removed and alias not in failed:
                    failed[alias] = DeviceTimeout(
                        "%s: device %s still present after %.1f s (events seen: %s)"
                        % (what, alias, deadline - start, ", ".join(waiters[alias].seen) or "none"),
                        {"alias": alias, "events": list(waiters[alias].seen)})
            return
