"""The watcher's pure decisions: which vNICs a migration unplugged, when to plug, what never to touch."""

from __future__ import annotations

import pytest

from engine_adapter.watch_model import (
    Event,
    NicView,
    Tracker,
    nic_name,
    not_plugged_back,
    plan,
    plug_failed,
    plugged,
)

VM, VM2 = "vm-1", "vm-2"
C, ADMIN, C2 = "corr-mig", "corr-admin", "corr-mig2"


def unplug(i, name, corr=C, vm=VM):
    return Event(i, 1014, 100.0 + i, corr, vm, "h1", "Network Interface %s (PCI Passthrough) was "
                 "unplugged from VM v. (User: admin@internal-authz)" % name)


def plug(i, name, corr=C, vm=VM):
    return Event(i, 1012, 100.0 + i, corr, vm, "h1", "Network Interface %s (PCI Passthrough) was "
                 "plugged to VM v. (User: admin@internal-authz)" % name)


def ev(i, code, corr=C, vm=VM, description=""):
    return Event(i, code, 100.0 + i, corr, vm, "h1", description)


def feed(tracker, *events):
    notes = []
    for e in events:
        notes += tracker.feed(e, 1000.0)
    return notes


def nics(*spec):
    return [NicView("id-" + name, name, p, True) for name, p in spec]


def failed_tracker(code=65):
    t = Tracker()
    feed(t, unplug(1, "nic1"), unplug(2, "nic2"), ev(3, 62), ev(4, code))
    return t


def test_nic_name_should_read_the_engine_message():
    text = "Network Interface my nic (PCI Passthrough) was unplugged from VM x. (User: u)"
    assert nic_name(text) == "my nic"
    assert nic_name("Network Interface n1 (PCI Passthrough) was plugged to VM x. (User: u)") == "n1"
    assert nic_name("something else") is None
    assert not_plugged_back("After migration of v, following vm nics failed to be plugged back: "
                            "a,b.") == {"a", "b"}


@pytest.mark.parametrize("code", [64, 65, 120, 140, 1111])
def test_tracker_should_plug_what_the_failed_migration_unplugged(code):
    t = failed_tracker(code)
    [mig] = t.due()
    assert mig.unplugged == ["nic1", "nic2"] and mig.trigger["code"] == code
    verdict, todo = plan(mig, "up", nics(("nic1", False), ("nic2", False), ("old", False)), 0, 0)
    assert verdict == "plug" and [n.name for n in todo] == ["nic1", "nic2"]


def test_tracker_should_wait_for_a_rerun_and_plug_nothing_when_it_succeeds():
    t = Tracker()
    feed(t, unplug(1, "nic1"), ev(2, 62), ev(3, 128), ev(4, 62), plug(5, "nic1"), ev(6, 63))
    assert t.due() == []


def test_tracker_should_treat_a_rerun_without_outcome_as_failed_after_its_wait():
    t = Tracker(rerun_wait=30)
    feed(t, unplug(1, "nic1"), ev(2, 62), ev(3, 128))
    assert t.due() == [] and t.expire(1010.0) == []
    assert "treated as failed" in t.expire(1031.0)[0]
    assert [m.todo_names() for m in t.due()] == [["nic1"]]


def test_tracker_should_plug_only_what_12003_names_after_arrival():
    t = Tracker()
    feed(t, unplug(1, "nic1"), unplug(2, "nic2"), ev(3, 62), plug(4, "nic1"),
         ev(5, 12003, description="After migration of v, following vm nics failed to be plugged "
                                  "back: nic2."), ev(6, 63))
    [mig] = t.due()
    assert mig.todo_names() == ["nic2"] and mig.state == "failed"


def test_tracker_should_never_touch_a_vnic_an_admin_plugged_or_unplugged_since():
    t = failed_tracker()
    notes = feed(t, plug(5, "nic1", ADMIN), unplug(6, "nic1", ADMIN))
    assert "nic1 plugged by another command" in notes[0]
    [mig] = t.due()
    assert mig.todo_names() == ["nic2"]


def test_tracker_should_let_go_of_a_vm_that_went_down_or_migrates_again():
    t = failed_tracker()
    assert "not plugged back" in feed(t, ev(5, 61, corr=None))[0]
    assert t.migrations == {}
    t = failed_tracker()
    notes = feed(t, ev(5, 62, corr=C2))
    assert "migrates again" in notes[0] and [m.correlation_id for m in t.due()] == []


def test_tracker_should_ignore_an_admin_unplug_no_migration_claims():
    t = Tracker(candidate_ttl=60)
    feed(t, unplug(1, "nic1", ADMIN), ev(2, 65, corr=C2))
    assert t.due() == []
    t.expire(2000.0)
    assert t.migrations == {}


def test_tracker_should_plug_what_was_unplugged_when_the_unplug_of_another_failed():
    """perform() stops at the first failed unplug: no start event, only the failure."""
    t = Tracker()
    feed(t, unplug(1, "nic1"), ev(2, 65))
    assert [m.todo_names() for m in t.due()] == [["nic1"]]


def test_plan_should_wait_for_the_grace_and_while_migrating():
    mig = failed_tracker().due()[0]
    assert plan(mig, "migrating", [], 10, 5)[0] == "wait"
    assert plan(mig, "up", [], 10, 5)[0] == "wait"
    assert plan(mig, "up", nics(("nic1", False)), 16, 5)[0] == "plug"


@pytest.mark.parametrize("status,why", [(None, "VM deleted"), ("down", "VM is down")])
def test_plan_should_drop_a_vm_gone_or_down(status, why):
    assert plan(failed_tracker().due()[0], status, None, 0, 0) == ("drop", why)


def test_plan_should_never_plug_twice_and_back_off_after_a_failed_plug():
    mig = failed_tracker().due()[0]
    plugged(mig, "nic1")
    assert plug_failed(mig, "nic2", 0, base=2) == 2
    assert plug_failed(mig, "nic2", 0, base=2) == 4
    view = nics(("nic1", False), ("nic2", False))
    assert plan(mig, "up", view, 1, 0) == ("wait", "retry backoff")
    verdict, todo = plan(mig, "up", view, 5, 0)
    assert verdict == "plug" and [n.name for n in todo] == ["nic2"]
    assert plan(mig, "up", nics(("nic1", False), ("nic2", True)), 5, 0)[0] == "done"


def test_tracker_should_survive_a_round_trip_through_json():
    t = failed_tracker()
    plugged(t.due()[0], "nic1")
    again = Tracker.from_json(t.to_json())
    assert again.due()[0].todo_names() == ["nic2"]


def test_tracker_should_skip_events_without_vm_or_name():
    t = Tracker()
    assert feed(t, ev(1, 65, vm=None)) == []
    assert "without a vNIC name" in feed(t, Event(2, 1014, None, C, VM, None, "garbled"))[0]
