"""Lab traffic: how long the guest's traffic stops in a migration, with and without the announce.

One lab (two real libvirtd hosts, real guests under TCG) on the lab's
wire (``sriov_lab.datapath``: a learning bridge as the switch, one
uplink per host, a sender namespace). Each trial boots a VM on A whose
first emulated vNIC holds 169.254.77.2, sends it 100 ICMP echoes per
second from the sender namespace, migrates it with ``SRIOV.migrate``
and keeps sending until the echoes are answered again (or 90 s). The
longest gap between two answered echoes is the downtime the traffic saw.

- announced: B's after hook announces the MAC (RARP through ``[vf]
  bridge``, see ``sriov_host.announce``) after the plug. Baseline: the
  NIC-absent time of the same migration (unplug start to plug end).
  Target: the gap is the NIC-absent time, not more (+2 s slack for the
  guest's 0.5 s loop setting its address and the end-of-plug poll).
- not announced: B's config says ``announce = false`` (B's service
  restarted to read it). The lab guest is
  silent (no IPv6, no gratuitous ARP), so the switch keeps sending to
  A's port until the sender's ARP entry goes stale and it asks again.
  Baseline: the announced gap of the same run. Reported, no target.

The failover pair (the claim that its gap is the migration's own pause)
needs real VFs and is not measured here. Needs root and the lab.

    python benchmarks/bench_traffic.py [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_lab import BenchError, LabBench, _failed, _why, sriov_migrate  # noqa: E402
from report import print_rows, row, skipped  # noqa: E402

ON = "lab traffic gap, plain vNIC, MAC announced"
OFF = "lab traffic gap, plain vNIC, no announce"
ON_BASE = "NIC-absent time, same migration"
OFF_BASE = "gap with the announce, same run"
ON_TARGET = "gap <= NIC-absent + 2000 ms"
OFF_TARGET = "reported (what the announce changes)"
RECOVERY_S = 90.0


def boot_wired(env: LabBench):
    """A VM on A with one emulated vNIC on A's bridge, 169.254.77.2 in the guest."""
    from sriov_lab import datapath, domains

    a, n = env.hosts[0], env.booted
    env.booted += 1
    vnic = domains.VnicSpec(mac="52:54:00:bf:%02x:01" % n, vf_address=a.vf_addresses()[n],
                            pf=a.extra["layout"][0].name)
    spec = domains.DomainSpec(name="bench-traffic-%d" % n, guest=env.guest, vnics=(vnic,),
                              bridge=a.extra["bridge"],
                              guest_ip=(vnic.mac, "%s/%d" % (datapath.guest_ip(), datapath.PREFIX)))
    env.vms.append(spec.uuid)
    domains.start(env.conns[0], spec)
    domains.wait_ready(a, spec.name, timeout=90)
    return spec


def _announce(env: LabBench, on: bool) -> None:
    """Set ``[vf] announce`` in B's config and restart B's service, which sends it."""
    import configparser

    path = env.hosts[1].config_path
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    if parser["vf"].get("announce") == ("true" if on else "false"):
        return
    parser["vf"]["announce"] = "true" if on else "false"
    with open(path, "w", encoding="utf-8") as f:
        parser.write(f)
    env.services.restart(1)


def trial(env: LabBench, announce: bool) -> dict:
    from sriov_lab import datapath, demo_report, traffic

    _announce(env, announce)
    spec = boot_wired(env)
    with traffic.Pinger(env.lab.datapath.netns, datapath.guest_ip(), env.workdir) as pinger:
        if pinger.wait_reply(0.0, 60.0) is None:
            raise BenchError("the guest never answered at %s" % datapath.guest_ip())
        job = sriov_migrate(env, spec)
        if job["phase"] != "migrated":
            raise BenchError("SRIOV.migrate ended %s: %s" % (job["phase"], job["error"]))
        pinger.wait_reply(demo_report.step_end(job, "plug"), RECOVERY_S)
    t = pinger.result
    if not t.recovered:
        raise BenchError("no echo answered within %.0f s of the plug (%d lost)" % (RECOVERY_S, t.lost))
    return {"gap": t.longest_gap_ms, "absent": demo_report.nic_absent(job)[0] * 1000.0,
            "lost": t.lost}


def rows(on: list, off: list, errors: list) -> list:
    why = "; ".join(errors) or "no trial ran"
    if not on:
        return [_failed(ON, ON_BASE, ON_TARGET, why), _failed(OFF, OFF_BASE, OFF_TARGET, why)]
    gap, absent = (statistics.median(t[k] for t in on) for k in ("gap", "absent"))
    out = [row(ON, gap, ON_BASE, absent, ON_TARGET, gap <= absent + 2000.0,
               note="1 emulated vNIC, 100 echoes/s from the lab's sender namespace through a "
                    "learning bridge; median of %d (gap/NIC-absent ms: %s)"
                    % (len(on), ", ".join("%.0f/%.0f" % (t["gap"], t["absent"]) for t in on)))]
    if not off:
        return out + [_failed(OFF, OFF_BASE, OFF_TARGET, why)]
    off_gap = statistics.median(t["gap"] for t in off)
    out.append(row(OFF, off_gap, OFF_BASE, gap, OFF_TARGET, True,
                   note="same, B's [vf] announce = false; the silent guest is found again only "
                        "when the sender's ARP entry for it goes stale; median of %d (ms: %s)%s"
                        % (len(off), ", ".join("%.0f" % t["gap"] for t in off),
                           "; %s" % "; ".join(errors) if errors else "")))
    return out


def measure(rounds: int = 1) -> list:
    from sriov_lab.fixtures import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        return [skipped(ON, ON_BASE, ON_TARGET, reason), skipped(OFF, OFF_BASE, OFF_TARGET, reason)]
    on, off, errors = [], [], []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-traffic-") as tmp, LabBench(tmp) as env:
            for _ in range(rounds):
                for announce, into in ((True, on), (False, off)):
                    try:
                        into.append(trial(env, announce))
                    except Exception as e:  # noqa: BLE001 - reported in the row
                        errors.append("announce %s: %s" % ("on" if announce else "off", _why(e)))
                    finally:
                        env.cleanup()
    except Exception as e:  # noqa: BLE001 - the lab itself failed: both rows say why
        errors.append("lab: %s" % _why(e))
    return rows(on, off, errors)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="trials of each kind (default 1)")
    args = p.parse_args(argv)
    print_rows(measure(args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
