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


def migration(result, record) -> None:
    """The timeline of one migration, per vNIC figures and the NIC-absent time."""
    _out("          timeline (seconds from the start of the migration):")
    _out("            %-8s %-16s %8s %8s %8s %3s" % ("step", "host", "start", "end", "ms", "rc"))
    for label, host, start, end, rc in result.timeline():
        _out("            %-8s %-16s %8.3f %8.3f %8.0f %3d"
             % (label, host, start, end, (end - start) * 1000, rc))
    for s in result.steps:
        for line in s.stderr:
            _out("            %s %s: %s" % (s.host, s.point, line))
    if record is not None:
        for r in record.vnics:
            _out("          vNIC %s: unplug %s ms, plug %s ms, now on %s (%s), state %s"
                 % (r.mac, _ms(r.unplug_ms), _ms(r.plug_ms), r.vf_address, r.pf, r.state))
    absent = nic_absent(result)
    if absent is not None:
        unplug_start, plug_end = absent
        _out("          NIC-absent time: %.2f s (unplug start to plug end); NICs back %.2f s after "
             "the migration ended" % (plug_end - unplug_start, plug_end - result.migrate_end))


def nic_absent(result):
    """``(unplug start, plug end)`` in monotonic seconds, or None if no plug ran."""
    unplug = result.step("before_vm_migrate_source")
    plug = result.step("after_vm_migrate_destination")
    if unplug is None or plug is None or result.migrate_end is None:
        return None
    return unplug.start, plug.end


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
        _out("  %s: %s  config %s  sriov-migrationd 127.0.0.1:%d" % (h.name, h.uri, h.config_path,
                                                                     svc.port))
    _out("  sriov-client %s SRIOV listVfs" % " ".join(services.client_args(1)))
    _out("lab kept running; Ctrl-C stops everything")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _out("stopping the lab")
