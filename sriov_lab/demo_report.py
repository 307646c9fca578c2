"""How the demo prints: progress lines, the timeline table, checks, verdicts.

Kept apart from :mod:`sriov_lab.demo` so the scenarios read as what they
do, and the output format can change in one place.
"""

from __future__ import annotations

import sys
import time

_T0 = time.monotonic()


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def title(name: str) -> None:
    _out()
    _out("=== scenario: %s %s" % (name, "=" * max(3, 60 - len(name))))


def step(fmt: str, *args) -> None:
    _out("[%6.1fs] %s" % (time.monotonic() - _T0, fmt % args if args else fmt))


def timed(label: str, host: str, ms: float, text: str) -> None:
    step("%-8s %-8s %7.0f ms  %s", label, host, ms, text)


def check(ok: bool, what: str) -> None:
    _out("          %s %s" % ("ok  " if ok else "FAIL", what))


def nics(nic_map: dict) -> str:
    return " ".join("%s=%s" % (k, v) for k, v in sorted(nic_map.items())) or "(none)"


def vnic_label(v) -> str:
    extra = []
    if v.vlan is not None:
        extra.append("vlan %d" % v.vlan)
    if v.failover_alias:
        extra.append("failover pair")
    return "%s on VF %s%s" % (v.mac, v.vf_address, " (%s)" % ", ".join(extra) if extra else "")


def migration(job, result, record, epoch_to_mono: float) -> None:
    """One migration: SRIOV.migrate's steps and VDSM's, on one clock; per vNIC figures.

    *job* is ``migrationStatus``'s ``migration`` (epoch seconds, from the
    source's service); *result* is the VDSM stand-in's record of its own
    steps (monotonic). *epoch_to_mono* puts both on this process's clock.
    """
    rows = []
    for s in (job or {}).get("steps", []):
        start = s["start"] + epoch_to_mono
        end = start + (s["ms"] or 0) / 1000.0
        rows.append((s["step"], "SRIOV.migrate", start, end, "ok" if s["ok"] else "FAIL"))
    if result is not None:
        for label, host, start, end, rc in result.timeline():
            rows.append(("vdsm " + label, host, start + result.t0, end + result.t0, "rc %d" % rc))
    if not rows:
        _out("          (no migration steps)")
        return
    t0 = min(r[2] for r in rows)
    _out("          timeline (seconds from the first step):")
    _out("            %-14s %-16s %8s %8s %8s  %s" % ("step", "where", "start", "end", "ms", "result"))
    for label, host, start, end, rc in sorted(rows, key=lambda r: r[2]):
        _out("            %-14s %-16s %8.3f %8.3f %8.0f  %s"
             % (label, host, start - t0, end - t0, (end - start) * 1000, rc))
    for s in (result.steps if result is not None else ()):
        for line in s.stderr:
            _out("            %s %s: %s" % (s.host, s.point, line))
    if record is not None:
        for r in record.vnics:
            _out("          vNIC %s: unplug %s ms, plug %s ms, now on %s (%s), state %s"
                 % (r.mac, _ms(r.unplug_ms), _ms(r.plug_ms), r.vf_address, r.pf, r.state))
    absent = nic_absent(job)
    if absent is not None:
        _out("          NIC-absent time: %.2f s (unplug start to plug end); NICs back %.2f s after "
             "the migration ended" % absent)


def step_end(job, name: str):
    """Epoch seconds at which the job's finished step *name* ended, or None."""
    found = [s for s in (job or {}).get("steps", []) if s["step"] == name and s["ms"] is not None]
    return found[0]["start"] + found[0]["ms"] / 1000.0 if found else None


def nic_absent(job):
    """``(unplug start to plug end, plug end minus migrate end)`` in seconds, or None."""
    ends = {name: step_end(job, name) for name in ("unplug", "migrate", "plug")}
    if None in ends.values():
        return None
    unplug_start = next(s["start"] for s in job["steps"] if s["step"] == "unplug")
    return ends["plug"] - unplug_start, ends["plug"] - ends["migrate"]


def traffic(t, mac: str, absent) -> None:
    """The stream's numbers next to the NIC-absent time (``nic_absent``'s answer, or None)."""
    if t.recovered:
        gap = "longest gap %.2f s, from %s to %s" % (t.longest_gap_ms / 1000.0, clock(t.gap_start),
                                                      clock(t.gap_end))
    else:
        gap = "no answer since %s" % (clock(t.gap_start) if t.gap_start else "the start")
    _out("          traffic to %s: %d echoes, %d answered, %d lost; %s%s"
         % (mac, t.sent, t.answered, t.lost, gap,
            "; NIC-absent time %.2f s" % absent[0] if absent else ""))


def clock(epoch) -> str:
    """HH:MM:SS.mmm of an epoch time; "never" for None."""
    if epoch is None:
        return "never"
    return time.strftime("%H:%M:%S", time.localtime(epoch)) + (".%03d" % (epoch % 1 * 1000))


def rollback(record, took: float) -> None:
    if record is None:
        _out("          no rollback seen")
        return
    for r in record.vnics:
        _out("          vNIC %s: re-plug %s ms on its own VF %s, state %s"
             % (r.mac, _ms(r.rollback_ms), r.vf_address, r.state))
    _out("          NICs back %.2f s after the migration failed" % took)


def _ms(value) -> str:
    return "-" if value is None else "%.0f" % value


def verdict(name: str, ok: bool, seconds: float) -> None:
    _out("--- %s: %s (%.1f s)" % (name, "PASS" if ok else "FAIL", seconds))


def summary(results) -> None:
    _out()
    _out("summary: " + ", ".join("%s %s" % (n, "PASS" if ok else "FAIL") for n, ok in results))


def keep(lab, services) -> None:
    """--keep: show how to reach the lab and wait for Ctrl-C."""
    for h, svc in zip(lab.hosts, services.services):
        _out("  %s: %s  config %s  sriov-migrationd %s:%d" % (h.name, h.uri, h.config_path,
                                                               h.address, svc.port))
    _out("  sriov-client %s SRIOV listVfs" % " ".join(services.client_args(1)))
    _out("lab kept running; Ctrl-C stops everything")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _out("stopping the lab")
