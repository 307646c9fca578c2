"""The demo's checks of what a migration left: PF-side VF settings, the guest's VFs, the migrated VM.

Part of ``sriov-lab demo`` (:mod:`sriov_lab.demo`).
"""

from __future__ import annotations

import pwd
import time

from sriov_host import metadata, netlink
from sriov_host.vfsettings import VfSettings

from . import demo_report as report
from . import domains, firewall, netns, realvf_checks, vdsm_user
from .demo_stage import _EPOCH_TO_MONO, Stage, _guest_slots, _guest_view, _host_vfs, _ledger_claims, _live
from .errors import LabError
from .guest import parse_serial


def check_privileges(st: Stage) -> None:
    """Each host's sriov-migrationd runs as its unit's user with exactly the unit's capabilities.

    What /proc says of the running process, not what the lab asked for:
    on a real host systemd gives no more, so the demo must not run with more.
    """
    user = st.lab.user
    unit = vdsm_user.unit_privileges()
    for svc in st.services.services:
        uid, caps = _identity(svc.proc.pid)
        if user is None:
            st.check(uid == 0, "%s: sriov-migrationd runs as root (SRIOV_LAB_USER=root)" % svc.host.name)
            continue
        st.check(uid == pwd.getpwnam(unit.user).pw_uid and caps == unit.cap_mask,
                 "%s: sriov-migrationd runs as %s (uid %s) with CapEff %#x, the unit's %s"
                 % (svc.host.name, unit.user, uid, caps, " ".join(unit.ambient)))


def check_firewall(st: Stage) -> None:
    """Each host is behind its firewall: its service's port is reached, a port left shut is not.

    Checked from the demo's own namespace, as the other host and the
    engine reach it, on a listener the check opens on the host's own
    address: so the migrations that follow cross a firewall that refuses
    what the engine's host deploy and the project's firewalld service do
    not open.
    """
    lab = st.lab
    if lab.network is None and not lab.firewall_up:
        report.step("no firewall between the hosts (SRIOV_LAB_NETNS=0)")
        return
    allowed = firewall.rules(lab.project_firewall)
    for host in lab.hosts:
        listener = netns.call_in(host.extra.get("netns"), netns.shut_port_listener, host.address, allowed)
        try:
            port = listener.getsockname()[1]
            why = netns.unreachable(host.address, port)
        finally:
            listener.close()
        st.check(why is not None, "%s: a listener on %s:%d, a port its firewall leaves shut, is "
                 "refused (%s)" % (host.name, host.address, port, why))
        port = host.extra["service_port"]
        why = netns.unreachable(host.address, port)
        st.check(why is None, "%s: sriov-migrationd's port %s:%d is open (the project's firewalld "
                 "service)%s" % (host.name, host.address, port, ": %s" % why if why else ""))


def check_stream_crossed_firewall(st: Stage) -> None:
    """The real-VF lab: QEMU's migration stream went to the destination's address, through its zone.

    The stand-in streams as VDSM does (``tcp://`` and the destination's
    address, the port left to its libvirtd), so the rule for VDSM's
    migration ports must have let a connection in.
    """
    if not st.lab.firewall_up:
        return
    rule = _migration_rule()
    spec = "dpts:%s" % rule.port.replace("-", ":")
    # a connection's first packet meets the rule; the rest pass as ESTABLISHED before it
    opened = sum(n for n, text in netns.shared_firewall_counts() if spec in text)
    st.check(opened > 0, "QEMU's migration stream crossed the destination's firewall: %d connection(s) "
             "let in by its %s service's rule for ports %s" % (opened, rule.service, rule.port))


LIBVIRT_MIGRATION_PORT_MIN = 49152  # qemu.conf migration_port_min, libvirt's default that VDSM keeps


def _migration_rule() -> firewall.Rule:
    """The rule of VDSM's firewalld service that opens libvirt's migration ports."""
    for rule in firewall.rules(include_project=False):
        if rule.service == "vdsm" and rule.port and rule.matches("tcp", LIBVIRT_MIGRATION_PORT_MIN):
            return rule
    raise LabError("firewalld's vdsm service opens no range with port %d, libvirt's migration_port_min"
                   % LIBVIRT_MIGRATION_PORT_MIN)


def _identity(pid: int) -> tuple:
    """``(effective uid, CapEff)`` of a running process, from /proc/PID/status."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["Uid"][1]), int(fields["CapEff"][0], 16)


def _pf_view(st: Stage, index: int, address: str) -> tuple:
    """What host *index*'s PF shows, through netlink, for the real VF at *address*."""
    vf = {v.address: v for v in _host_vfs(st, index)}[address]
    return vf, tuple(netlink.vf_settings(vf.pf, vf.index) or (None, None))


def _check_pf_carries(st: Stage, index: int, pairs, when: str) -> None:
    """Real VFs: each vNIC's MAC and VLAN are on its VF, as the PF shows it."""
    for vnic, address in pairs:
        vf, (mac, vlan) = _pf_view(st, index, address)
        st.check((mac, vlan) == (vnic.mac, vnic.vlan), "%s: %s shows vf %d with %s vlan %s %s "
                 "(netlink)" % (st.names[index], vf.pf, vf.index, mac, vlan, when))


def _check_pf_reset(st: Stage, index: int, pairs, when: str) -> None:
    for vnic, address in pairs:
        vf, (mac, vlan) = _pf_view(st, index, address)
        st.check(mac != vnic.mac and vlan is None, "%s: %s shows vf %d reset (%s, no VLAN) %s "
                 "(netlink)" % (st.names[index], vf.pf, vf.index, mac, when))


CARRIED = ("spoofchk", "trust", "max_tx_rate")


def _set_vf_settings(st: Stage, vnic) -> dict:
    """Real VFs: give the source VF of *vnic* non-default settings, as an admin might; what it holds."""
    vf, _ = _pf_view(st, 0, vnic.vf_address)
    refused = netlink.apply_vf_settings(vf.pf, vf.index, [("spoofchk", False), ("trust", True),
                                                          ("rate", (0, 300))])
    held = dict((netlink.read_vf_settings(vf.pf, vf.index) or VfSettings()).items())
    report.step("%s: set %s vf %d spoofchk off, trust on, max_tx_rate 300: the PF holds %s%s",
                st.names[0], vf.pf, vf.index, ", ".join("%s=%s" % (n, held.get(n)) for n in CARRIED),
                "; refused: %s" % refused if refused else "")
    return {n: held.get(n) for n in CARRIED}


def _check_settings(st: Stage, index: int, address: str, wanted: dict, when: str) -> None:
    vf, _ = _pf_view(st, index, address)
    seen = dict((netlink.read_vf_settings(vf.pf, vf.index) or VfSettings()).items())
    got = {n: seen.get(n) for n in CARRIED}
    st.check(got == wanted, "%s: %s vf %d holds the source VF's settings %s (netlink: %s)" % (
        st.names[index], vf.pf, vf.index, when,
        ", ".join("%s=%s" % (n, got[n]) for n in CARRIED)))


def _guest_vf_facts(tick, spec) -> list:
    """``[(ok, what)]``: each MAC on an igbvf NIC in the guest; the failover VF enslaved."""
    by_mac = {}
    for name, mac in (tick.nics.items() if tick else ()):
        by_mac.setdefault(mac, []).append((name,) + tick.links.get(name, ("-", "-")))
    out = []
    for v in spec.vnics:
        vfs = [n for n in by_mac.get(v.mac, []) if n[1] == "igbvf"]
        out.append((bool(vfs), "holds %s on a real VF (igbvf: %s)" % (
            v.mac, ", ".join("%s/%s" % (n[0], n[1]) for n in by_mac.get(v.mac, [])) or "none")))
        if v.failover_alias:
            master = vfs[0][2] if vfs else "-"
            out.append((master != "-", "net_failover enslaved that VF (%s master %s)"
                        % (vfs[0][0] if vfs else "no VF", master)))
    return out


def _last_counter(st: Stage, index: int, spec) -> int:
    """The guest's latest tick on host *index* so far (-1 before any): later ones are newer."""
    _ready, ticks = parse_serial(domains.read_serial(st.lab.hosts[index], spec.name))
    return ticks[-1].counter if ticks else -1


def _check_guest_vfs(st: Stage, index: int, spec, after: int) -> None:
    """Real VFs: wait for a guest tick newer than *after* that shows them; check its facts."""
    host = st.lab.hosts[index]

    def until(_ready, ticks):
        good = [t for t in ticks if t.counter > after and all(ok for ok, _ in _guest_vf_facts(t, spec))]
        return good[-1] if good else None

    try:
        tick = domains.wait_serial(host, spec.name, until, st.waits["nics"], "the VFs in the guest")
    except LabError:
        _ready, ticks = parse_serial(domains.read_serial(host, spec.name))
        tick = ticks[-1] if ticks else None
    for ok, what in _guest_vf_facts(tick, spec):
        st.check(ok, "the guest on %s %s" % (host.name, what))


def _took_up_vf(st: Stage, index: int):
    """Epoch s when host *index*'s service saw the guest take up its failover VF; None if never."""
    try:
        with open(st.services.services[index].log_path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if "the guest took up its VF" in line]
    except OSError:
        return None
    if not lines:
        return None
    stamp = lines[-1][:23]  # "2026-12-04 07:56:31,386": the logging module's asctime, local time
    try:
        return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000.0
    except ValueError:
        return None


def _migrated(st: Stage, spec, before, slots, on_a, rc, job, settings) -> None:
    """The checks after ``SRIOV.migrate`` returned: job, devices, records, ledgers, guest."""
    plugged_at = _last_counter(st, 1, spec)
    result = st.vdsm[0].wait(spec.uuid, timeout=st.waits["nics"])
    aliases, record = _live(st, 1, spec)
    report.migration(job, result, record, _EPOCH_TO_MONO)
    st.check(rc == 0 and job and job["phase"] == "migrated",
             "sriov-client SRIOV migrate exited 0: migrated with every vNIC plugged")
    st.check([s["step"] for s in job["steps"]][:4] == ["check", "reserve", "unplug", "migrate"]
             if job else False, "VFs reserved on %s before anything was unplugged, unplugged before "
             "VDSM's VM.migrate" % st.names[1])
    st.check({v.alias for v in spec.vnics} <= aliases, "both vNICs are attached on %s with their "
             "aliases" % st.names[1])
    st.check(_guest_slots(st, 1, spec) == slots, "at the same guest PCI slots as on %s" % st.names[0])
    st.check(record and {r.state for r in record.vnics} == {metadata.PLUGGED},
             "our record on the destination says plugged")
    claims = _ledger_claims(st.lab.hosts[1], spec.uuid)
    st.check({c.state for c in claims} == {"in_use"} and len(claims) == 2,
             "the destination ledger holds both VFs in use")
    st.check(_ledger_claims(st.lab.hosts[0], spec.uuid) == [], "the source ledger released its VFs")
    if st.real_vf and record:
        by_alias = {v.alias: v for v in spec.vnics}
        _check_pf_carries(st, 1, [(by_alias[r.alias], r.vf_address) for r in record.vnics],
                          "after the plug")
        _check_pf_reset(st, 0, on_a, "after the unplug")
        moved = {r.alias: r.vf_address for r in record.vnics}[spec.vnics[0].alias]
        _check_settings(st, 1, moved, settings, "after the plug")
    _guest_view(st, 1, spec, after=before.counter)
    st.check(True, "the guest sees both MACs again on %s" % st.names[1])
    if st.real_vf:
        _check_guest_vfs(st, 1, spec, plugged_at)
        if record:  # the announcement's signal, read as the service's user can (issue 20 item 8)
            for ok, what in realvf_checks.taken_up_as_vdsm([r.vf_address for r in record.vnics]):
                st.check(ok, what)
