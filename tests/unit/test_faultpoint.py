"""Fault points hold a migration only when the lab armed them, never on a host by accident."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from sriov_host import faultpoint


def _arm(path, step, **extra):
    doc = dict({"lab": True, "step": step}, **extra)
    path.write_text(json.dumps(doc))
    os.chmod(path, 0o644)


def _hold_in_thread(step):
    t = threading.Thread(target=faultpoint.reached, args=(step,), daemon=True)
    t.start()
    return t


def _wait_for(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "%s never appeared" % path
        time.sleep(0.01)


def test_reached_should_do_nothing_without_the_lab_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(faultpoint.ENV, raising=False)
    fault = tmp_path / "fault.json"
    _arm(fault, faultpoint.AFTER_UNPLUG)
    faultpoint.reached(faultpoint.AFTER_UNPLUG)  # returns: nothing armed it for this process
    assert not (tmp_path / "fault.json.reached").exists()


def test_reached_should_hold_at_the_armed_step_until_the_lab_releases_it(tmp_path, monkeypatch):
    fault = tmp_path / "fault.json"
    monkeypatch.setenv(faultpoint.ENV, str(fault))
    _arm(fault, faultpoint.AFTER_RESERVE)
    held = _hold_in_thread(faultpoint.AFTER_RESERVE)
    reached = tmp_path / "fault.json.reached"
    _wait_for(reached)
    assert json.loads(reached.read_text()) == {"step": faultpoint.AFTER_RESERVE, "pid": os.getpid()}
    assert held.is_alive()
    fault.unlink()
    held.join(10)
    assert not held.is_alive()


@pytest.mark.parametrize("step, extra, mode", [
    pytest.param(faultpoint.AFTER_PLUG, {}, 0o644, id="another-step"),
    pytest.param(faultpoint.AFTER_RESERVE, {"lab": False}, 0o644, id="not-the-lab-s-file"),
    pytest.param(faultpoint.AFTER_RESERVE, {}, 0o666, id="writable-by-others"),
])
def test_reached_should_not_hold_on_a_file_the_lab_did_not_arm_for_it(tmp_path, monkeypatch, step,
                                                                       extra, mode):
    fault = tmp_path / "fault.json"
    monkeypatch.setenv(faultpoint.ENV, str(fault))
    _arm(fault, step, **extra)
    os.chmod(fault, mode)
    faultpoint.reached(faultpoint.AFTER_RESERVE)  # returns at once; a hold would last HOLD_MAX
    assert not (tmp_path / "fault.json.reached").exists()


def test_reached_should_not_hold_when_the_named_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(faultpoint.ENV, str(tmp_path / "absent.json"))
    faultpoint.reached(faultpoint.AFTER_RESERVE)
    assert list(tmp_path.iterdir()) == []
