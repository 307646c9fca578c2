"""The demo's traffic check: a stream of echoes to the guest, its longest gap against the NIC-absent time.

Part of ``sriov-lab demo`` (:mod:`sriov_lab.demo`).
"""

from __future__ import annotations

import time

from . import datapath, traffic
from . import demo_report as report
from .demo_checks import _took_up_vf
from .demo_stage import _EPOCH_TO_MONO, SETTLE_S, Stage, _measured


def _start_traffic(st: Stage, spec, stream):
    """On the lab's wire: echoes at 100/s to the measured vNIC, once it answers; else None."""
    dp = st.lab.datapath
    if dp is None or spec.guest is None:
        return None
    pinger = stream.enter_context(traffic.Pinger(dp.netns, datapath.guest_ip(), st.workdir))
    first = pinger.wait_reply(0.0, st.waits["nics"])
    st.check(first is not None, "the guest answers %d echoes/s at %s on %s (on the lab's switch) "
             "before the migration" % (traffic.RATE, datapath.guest_ip(),
                                       report.vnic_label(_measured(st, spec.vnics))))
    return pinger


def _traffic_back(st: Stage, pinger, job, stream) -> None:
    """Wait (bounded) for echoes answered after the plug and after the guest settled, then stop.

    Called once the guest showed its NICs on the destination (on real VFs:
    the VF enslaved again); a failover pair switches from its standby to
    that VF then, so the stream runs on for :data:`SETTLE_S` more.
    """
    after = max(report.step_end(job, "plug") or 0.0, time.time() + SETTLE_S)
    pinger.wait_reply(after, st.waits["nics"])
    stream.close()


def _check_traffic(st: Stage, spec, pinger, job) -> None:
    """Plain vNIC: the gap is the NIC-absent time. Failover pair: the standby carries it meanwhile.

    A failover pair's gap is checked from the unplug to the end of the
    libvirt migration, and again from when the guest took up its new VF
    (the destination service logs when it saw that): net_failover drops
    what reaches the standby from then until the VF is up, and the
    repeated announcement must bring the traffic to the VF soon after.
    """
    t, absent = pinger.result, report.nic_absent(job)
    mac = _measured(st, spec.vnics).mac
    report.traffic(t, mac, absent)
    st.check(t.recovered, "echoes to %s are answered again on %s" % (mac, st.names[1]))
    if not absent:
        return
    if not st.real_vf:
        st.check(t.longest_gap_ms <= absent[0] * 1000.0 + traffic.ANNOUNCED_SLACK_MS,
                 "the longest gap (%.2f s) is the NIC-absent time (%.2f s), not more: the MAC was "
                 "announced after the plug" % (t.longest_gap_ms / 1000.0, absent[0]))
        return
    result = st.vdsm[0].result(spec.uuid)
    if result is None or result.migrate_end is None:
        st.check(False, "the VDSM stand-in on %s saw the libvirt migration end" % st.names[0])
        return
    steps = {s["step"]: s for s in job["steps"]}
    start = steps["unplug"]["start"]
    migrated = result.migrate_end - _EPOCH_TO_MONO  # epoch s: libvirt's migration ended
    took = (result.migrate_end - result.migrate_start) if result.migrate_start else 0.0
    during = pinger.gap_within(start, migrated).ms
    st.check(during <= max(took * 1000.0, 1000.0) + traffic.FAILOVER_SLACK_MS,
             "from the unplug through the libvirt migration (%.2f s, of which the migration %.2f s) "
             "the longest gap was %.2f s, within the migration (+%.0f s): the failover standby "
             "carried the traffic" % (migrated - start, took, during / 1000.0,
                                      traffic.FAILOVER_SLACK_MS / 1000.0))
    end = pinger.data["sent"][-1]
    later = pinger.gap_within(migrated, end)
    report.step("after the migration the longest gap was %.2f s, %s to %s", later.ms / 1000.0,
                report.clock(later.start), report.clock(later.end))
    taken = _took_up_vf(st, 1)
    st.check(taken is not None and taken < end, "%s's service saw the guest take up its new VF "
             "(at %s), while the traffic still ran" % (st.names[1], report.clock(taken)))
    if taken is None or taken >= end:
        return
    switch = pinger.gap_within(taken, end)
    st.check(switch.ms <= traffic.SWITCH_BOUND_MS,
             "from when the guest took up its new VF the longest gap was %.2f s (%s to %s), within "
             "%.0f s: the repeated announcement moved the switch to the VF's port once it was up"
             % (switch.ms / 1000.0, report.clock(switch.start), report.clock(switch.end),
                traffic.SWITCH_BOUND_MS / 1000.0))
