"""Following a VDSM migration: VDSM at most once a second, libvirt's job often, a stall timeout.

A fake clock drives :class:`jsonrpc_plugin.follow.Follower`; the VDSM and
libvirt job it watches are functions of that clock.
"""

from __future__ import annotations

from jsonrpc_plugin import follow, vdsm_api
from jsonrpc_plugin.vdsm_api import DONE, FAILED, IN_PROGRESS, MigrationProgress
from sriov_host.errors import SriovError


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Vdsm:
    """getMigrationStatus as a function of the fake time; each ask's time is kept."""

    def __init__(self, clock, answer, vm_status=None):
        self.clock, self.answer, self.asks = clock, answer, []
        if vm_status is not None:
            self.vm_status = lambda vm_id: vm_status(clock())

    def migration_status(self, vm_id):
        self.asks.append(round(self.clock(), 3))
        return self.answer(self.clock())


class Dom:
    """A domain whose libvirt job (jobInfo) runs until *job_end*, its remaining data given by *remaining*."""

    def __init__(self, clock, job_end, remaining=lambda t: 1000):
        self.clock, self.job_end, self.remaining = clock, job_end, remaining

    def active(self, _dom=None):
        return self.clock() < self.job_end

    def jobInfo(self):
        return [2 if self.active() else 0, 0, 0, 0, 0, self.remaining(self.clock())]


def run(answer, job_end=0.0, stall=10.0, remaining=lambda t: 1000, vm_status=None, silence=None):
    clock = Clock()
    vdsm, dom = Vdsm(clock, answer, vm_status), Dom(clock, job_end, remaining)
    out = follow.Follower(vdsm, "vm", dom, dom.active, stall, clock=clock, sleep=clock.sleep,
                          on_silence=silence or (lambda why: None)).run()
    return out, clock.now, vdsm.asks


def running(progress=40, code=0, message="Migration in progress"):
    return MigrationProgress(IN_PROGRESS, progress, message, code)


def test_follower_should_stall_when_nothing_moves_for_the_stall_timeout():
    out, when, asks = run(lambda t: running(), job_end=1e9, stall=10.0)
    assert out.state == follow.STALLED and "no progress for 10 s" in out.message
    assert 10.0 < when <= 10.3
    assert len(asks) <= 12  # about once a second


def test_follower_should_not_stall_while_vdsms_progress_moves():
    def answer(t):
        return MigrationProgress(DONE, 100, "Migration done") if t >= 30 else running(int(t))
    out, when, _ = run(answer, job_end=1e9, stall=3.0)
    assert out.state == DONE and 30.0 <= when < 31.5


def test_follower_should_not_stall_while_libvirts_remaining_data_drops():
    """VDSM's progress moves only every migration_monitor_interval (10 s); libvirt's data does sooner."""
    def answer(t):
        return MigrationProgress(DONE, 100, "Migration done") if t >= 20 else running(40)
    out, when, _ = run(answer, job_end=20.0, stall=5.0, remaining=lambda t: int(10000 - 100 * t))
    assert out.state == DONE and 20.0 <= when < 20.2


def test_follower_should_ask_vdsm_once_a_second_and_at_once_when_the_job_ends():
    def answer(t):
        return MigrationProgress(DONE, 100, "Migration done") if t >= 3.05 else running()
    out, when, asks = run(answer, job_end=3.05)
    assert out.state == DONE
    assert len(asks) <= 5 and all(0.99 <= b - a <= 1.21 for a, b in zip(asks[:3], asks[1:3])), asks
    assert asks[-1] - 3.05 <= 0.11, "asked %.2f s after the job ended" % (asks[-1] - 3.05)


def test_follower_should_ask_again_quickly_while_vdsm_records_the_end():
    def answer(t):
        return MigrationProgress(FAILED, 40, "Fatal error during migration (code 12)", 12) \
            if t >= 3.3 else running()
    out, when, asks = run(answer, job_end=3.05)
    assert out.state == FAILED and when - 3.05 < 0.5, asks
    assert len([a for a in asks if a >= 3.05]) <= 4


def test_follower_should_ask_at_most_once_a_second_over_a_long_migration():
    def answer(t):
        return MigrationProgress(DONE, 100, "Migration done") if t >= 60.05 else running(int(t))
    _, _, asks = run(answer, job_end=60.05)
    assert len(asks) <= 61 + 1 + len(follow.END_BURST)
    gaps = [b - a for a, b in zip(asks, asks[1:]) if b < 60.0]
    assert min(gaps) >= 0.99


def test_follower_should_keep_waiting_at_the_destinations_limit():
    def answer(t):
        if t >= 25:
            return MigrationProgress(DONE, 100, "Migration done", vdsm_api.LIMIT_WAIT)
        return running(0, vdsm_api.LIMIT_WAIT, "Incoming migration limit exceeded (code 82)")
    out, when, _ = run(answer, stall=60.0, vm_status=lambda t: "Migration Source")
    assert out.state == DONE and 25.0 <= when < 26.1


def test_follower_should_see_a_failure_that_keeps_code_82_by_the_vm_being_up_again():
    """VDSM's _recover keeps code 82 after a failure; the VM's status (Up) tells."""
    def answer(t):
        return running(0, vdsm_api.LIMIT_WAIT, "Incoming migration limit exceeded (code 82)")
    out, when, _ = run(answer, stall=60.0, vm_status=lambda t: "Up" if t >= 12 else "Migration Source")
    assert out.state == FAILED and "Up here again" in out.message
    assert 12.0 <= when <= 12.0 + follow.VM_STATUS_EVERY + 1.1


def test_follower_should_see_a_lost_migration_by_the_vm_being_up_with_no_job():
    """libvirtd (or VDSM) restarted under the migration: VDSM answers "in progress" for ever."""
    out, when, _ = run(lambda t: running(40), job_end=4.0, stall=240.0,
                       vm_status=lambda t: "Up" if t >= 4.5 else "Migration Source")
    assert out.state == FAILED and "job is gone" in out.message
    assert 4.5 <= when <= 4.5 + follow.VM_STATUS_EVERY + 1.1


def test_follower_should_not_call_failed_a_migration_whose_job_has_not_started():
    """Before libvirt's job starts, VDSM runs hooks and connects: "in progress", the VM maybe still Up."""
    def answer(t):
        return MigrationProgress(DONE, 100, "Migration done") if t >= 20 else running(0)
    out, when, _ = run(answer, job_end=0.0, stall=60.0, vm_status=lambda t: "Up")
    assert out.state == DONE and 20.0 <= when < 21.1


def test_follower_should_let_libvirt_judge_after_vdsm_stops_answering():
    def answer(t):
        raise SriovError("VDSM VM.getMigrationStatus failed: timeout")
    judged = []

    def silence(why):
        judged.append(why)
        return MigrationProgress(FAILED, 0, "VDSM does not answer and no migration job")
    out, when, asks = run(answer, silence=silence)
    assert out.state == FAILED and len(asks) == follow.STATUS_MISSES and len(judged) == 1
    assert when < follow.STATUS_MISSES * 1.2
