"""sriov_host.devices against fakes: events, deadline, live XML as the truth."""

from __future__ import annotations

import threading
import time

import pytest

from sriov_host import devices
from sriov_host.errors import LibvirtFailure

ALIAS = "ua-1"
NIC = "<interface type='user'><alias name='ua-1'/></interface>"


class FakeDomain:
    """A domain whose device list changes when the fake guest acts."""

    def __init__(self, present=True, act=None, error=None, block=0.0):
        self.present = present
        self.act = act  # what the "guest" does after the call: (delay, event kind, new state)
        self.error = error
        self.block = block
        self.calls = []

    def UUIDString(self):
        return "vm-uuid"

    def XMLDesc(self, flags=0):
        dev = "<interface type='user'><alias name='%s'/></interface>" % ALIAS if self.present else ""
        return "<domain><devices>%s</devices></domain>" % dev

    def _call(self, name, xml, flags):
        self.calls.append((name, flags))
        if self.act:
            delay, kind, state = self.act
            threading.Timer(delay, self._guest, (kind, state)).start()
        time.sleep(self.block)
        if self.error:
            raise self.error
        return 0

    def _guest(self, kind, state):
        if state is not None:
            self.present = state
        if kind:
            devices.notify("vm-uuid", ALIAS, kind)

    def detachDeviceFlags(self, xml, flags=0):
        return self._call("detach", xml, flags)

    def attachDeviceFlags(self, xml, flags=0):
        return self._call("attach", xml, flags)


class FakeEvents:
    def __init__(self):
        self.subscribed, self.unsubscribed = [], []

    def subscribe(self, dom, kinds):
        self.subscribed.append(tuple(kinds))
        return len(self.subscribed)

    def unsubscribe(self, handle):
        self.unsubscribed.append(handle)


def test_detach_should_return_when_removed_event_and_xml_agree():
    dom, events = FakeDomain(act=(0.05, devices.REMOVED, False)), FakeEvents()
    ms = devices.detach_and_wait(dom, NIC, ALIAS, timeout=2, events=events)
    assert ms < 1000 and dom.calls == [("detach", devices.AFFECT_LIVE)]
    assert events.subscribed == [(devices.REMOVED, devices.REMOVAL_FAILED)]
    assert events.unsubscribed == [1]


def test_detach_should_succeed_by_polling_when_no_event_comes():
    dom = FakeDomain(act=(0.1, None, False))
    ms = devices.detach_and_wait(dom, NIC, ALIAS, timeout=2, events=FakeEvents(),
                                 poll_interval=0.05)
    assert ms < 1000


def test_detach_should_not_trust_an_event_the_live_xml_contradicts():
    dom, events = FakeDomain(act=(0.01, devices.REMOVED, None)), FakeEvents()
    with pytest.raises(devices.DeviceTimeout):
        devices.detach_and_wait(dom, NIC, ALIAS, timeout=0.3, events=events, poll_interval=0.05)
    assert events.unsubscribed == [1]


def test_detach_should_keep_one_deadline_while_libvirt_blocks():
    dom = FakeDomain(block=3.0)
    start = time.monotonic()
    with pytest.raises(devices.DeviceTimeout) as err:
        devices.detach_and_wait(dom, NIC, ALIAS, timeout=0.4, events=FakeEvents())
    assert time.monotonic() - start < 1.0
    assert err.value.data == {"alias": ALIAS, "events": [], "call_returned": False}
    assert ALIAS in str(err.value)


def test_removal_failed_event_should_be_final():
    dom = FakeDomain(act=(0.05, devices.REMOVAL_FAILED, None))
    start = time.monotonic()
    with pytest.raises(devices.DeviceRemovalFailed):
        devices.detach_and_wait(dom, NIC, ALIAS, timeout=5, events=FakeEvents())
    assert time.monotonic() - start < 1.0


def test_libvirt_error_should_become_libvirt_failure():
    libvirt = pytest.importorskip("libvirt")
    # libvirtError() copies this thread's last libvirt error (its code
    # decides NoSuchVm vs LibvirtFailure): start from none.
    libvirt.virResetLastError()
    dom = FakeDomain(present=False, error=libvirt.libvirtError("boom"))
    with pytest.raises(LibvirtFailure) as err:
        devices.attach_and_wait(dom, NIC, ALIAS, timeout=2, events=FakeEvents())
    assert isinstance(err.value.__cause__, libvirt.libvirtError)


def test_attach_should_wait_for_alias_in_live_xml():
    dom = FakeDomain(present=False, act=(0.05, devices.ADDED, True))
    assert devices.attach_and_wait(dom, NIC, ALIAS, timeout=2, events=FakeEvents()) < 1000


def test_attach_should_time_out_when_device_never_shows():
    dom = FakeDomain(present=False)
    with pytest.raises(devices.DeviceTimeout, match="still absent"):
        devices.attach_and_wait(dom, NIC, ALIAS, timeout=0.3, events=FakeEvents())


def test_attach_should_wait_for_a_call_that_outlives_the_deadline_and_report_its_outcome():
    """A VFIO attach pinning a large guest's memory: the VF lands after the deadline.

    Reporting a timeout while the call still runs would let the plug release
    a VF that the guest then holds (issue 20 item 4).
    """
    dom = FakeDomain(present=False, act=(0.5, devices.ADDED, True), block=0.6)
    start = time.monotonic()
    ms = devices.attach_and_wait(dom, NIC, ALIAS, timeout=0.2, events=FakeEvents())
    assert time.monotonic() - start >= 0.55 and ms >= 550 and dom.present


def test_attach_should_fail_after_a_late_call_that_attached_nothing():
    dom = FakeDomain(present=False, block=0.5)
    with pytest.raises(devices.DeviceTimeout) as err:
        devices.attach_and_wait(dom, NIC, ALIAS, timeout=0.2, events=FakeEvents())
    assert err.value.data["call_returned"] is True


class ManyDomain:
    """A guest that releases each device *delay* s after it is asked, all in parallel.

    ``detachDeviceAlias`` returns at once, as libvirt's does; *refuse* aliases
    get DEVICE_REMOVAL_FAILED, *stuck* ones never leave.
    """

    def __init__(self, aliases, delay=0.3, refuse=(), stuck=()):
        self.present, self.delay = set(aliases), delay
        self.refuse, self.stuck, self.calls = set(refuse), set(stuck), []

    def UUIDString(self):
        return "vm-many"

    def XMLDesc(self, flags=0):
        return "<domain><devices>%s</devices></domain>" % "".join(
            "<interface type='user'><alias name='%s'/></interface>" % a for a in sorted(self.present))

    def detachDeviceAlias(self, alias, flags=0):
        self.calls.append((alias, flags, time.monotonic()))
        if alias in self.stuck:
            return 0
        kind = devices.REMOVAL_FAILED if alias in self.refuse else devices.REMOVED
        threading.Timer(self.delay, self._guest, (alias, kind)).start()
        return 0

    def _guest(self, alias, kind):
        if kind == devices.REMOVED:
            self.present.discard(alias)
        devices.notify("vm-many", alias, kind)


class StrictEvents(FakeEvents):
    """Like libvirt: the same callback may be registered once per domain and event."""

    def subscribe(self, dom, kinds):
        if len(self.subscribed) > len(self.unsubscribed):
            raise LibvirtFailure("registering for device events: event callback already tracked")
        return super().subscribe(dom, kinds)


def _items(aliases):
    return [(a, "<interface type='user'><alias name='%s'/></interface>" % a) for a in aliases]


def test_detach_all_should_unplug_four_in_about_the_time_of_one():
    aliases = ["ua-%d" % i for i in range(4)]
    dom, events = ManyDomain(aliases, delay=0.3), StrictEvents()
    t0 = time.monotonic()
    removed, failed = devices.detach_all_and_wait(dom, _items(aliases), timeout=5, events=events,
                                                  poll_interval=0.05)
    took = time.monotonic() - t0
    assert failed == {} and sorted(removed) == aliases and dom.present == set()
    assert took < 0.3 * 2, "four 0.3 s unplugs took %.2f s: not in parallel" % took
    assert len(events.subscribed) == 1 and events.unsubscribed == [1]  # one registration per batch
    first_request = min(t for _a, _f, t in dom.calls)
    assert all(t - first_request < 0.1 for _a, _f, t in dom.calls)


def test_detach_all_should_report_each_failure_and_keep_what_was_removed():
    aliases = ["ua-ok", "ua-refused", "ua-stuck"]
    dom = ManyDomain(aliases, delay=0.05, refuse={"ua-refused"}, stuck={"ua-stuck"})
    removed, failed = devices.detach_all_and_wait(dom, _items(aliases), timeout=0.6,
                                                  events=FakeEvents(), poll_interval=0.05)
    assert sorted(removed) == ["ua-ok"]
    assert isinstance(failed["ua-refused"], devices.DeviceRemovalFailed)
    assert isinstance(failed["ua-stuck"], devices.DeviceTimeout)
    assert "still present after 0.6 s" in failed["ua-stuck"].message
    assert dom.present == {"ua-refused", "ua-stuck"}
