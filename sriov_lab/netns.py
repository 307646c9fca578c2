"""The network between lab hosts: one network namespace per host, a firewall in front of each.

On a cluster each host has its own address and its own firewalld, and
whatever one host's service asks of another crosses that firewall. The
lab builds the same, at small scale::

    machine's namespace: srnID 169.254.X.1/24 (a bridge, no firewall rules)
        |- srhIDa === eth0 169.254.X.11  netns sriovlab-ID-a  (iptables: host-a's firewalld)
        |- srhIDb === eth0 169.254.X.12  netns sriovlab-ID-b  (iptables: host-b's firewalld)

Each host's ``sriov-migrationd`` (started through ``nsenter --net``) and
VDSM stand-in (its listening socket made inside the namespace, see
:func:`call_in`) run in the host's namespace, on the host's address; the
service reaches its local VDSM there, and another host's service across
the bridge and that host's firewall (:mod:`sriov_lab.firewall`). Only the
machine's namespace holds the bridge, with a link-local /24 of its own
(so parallel labs each take another X), which is how the test process and
the lab's engine reach the hosts, as an engine reaches them: through
their firewalls. No rule is ever written in the machine's namespace.

Where the lab has a wire for emulated VFs (:mod:`sriov_lab.datapath`),
the host's VF bridge is in the machine's namespace (QEMU's taps are
there); the host's namespace gets a port of it under the same name, so
the service's MAC announcements leave through the host's own switch port.

libvirtd and QEMU stay in the machine's namespace (their taps are on the
data path's bridges there), so the QEMU migration stream goes over
loopback and does not cross the firewall. ``SRIOV_LAB_NETNS=0`` turns all
of this off (every host on its own loopback address, nothing between).
Everything is named after a lab id, recorded in the lab directory, and
removed on stop, or by the next lab or ``sriov-lab down`` if this one was
killed.

The real-VF lab's hosts cannot each have a namespace (their services
must see their PFs' netdevs): they share L1's, each on its own loopback
address, behind a firewall keyed on that address
(:func:`set_shared_firewall`); QEMU's migration stream goes to the
destination's address there, so it crosses that firewall too.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from . import firewall, labstate
from .errors import LabError

ENV_NETNS = "SRIOV_LAB_NETNS"
NETNS_DIR = "/run/netns"
STATE_FILE = "netns.json"
SUBNETS = range(100, 200)  # 169.254.X.0/24 in the machine's namespace, one per running lab
LOCK_PATH = "/run/lock/sriov-lab-netns.lock"
HOST_BASE = 11
CLONE_NEWNET = 0x40000000
LETTERS = "abcdefghij"


def enabled() -> bool:
    """The strict network is the default; ``SRIOV_LAB_NETNS=0`` is the escape hatch."""
    return os.environ.get(ENV_NETNS, "1").strip().lower() not in ("0", "no", "false", "off")


@dataclass
class Network:
    lab_id: str
    subnet: int
    hosts: int = 2
    links: list = field(default_factory=list)  # made in the machine's namespace: removed on stop
    namespaces: list = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return "srn%s" % self.lab_id

    @property
    def gateway(self) -> str:
        return "169.254.%d.1" % self.subnet

    def address(self, index: int) -> str:
        return "169.254.%d.%d" % (self.subnet, HOST_BASE + index)

    def netns(self, index: int) -> str:
        return "sriovlab-%s-%s" % (self.lab_id, LETTERS[index])

    def uplink(self, index: int) -> tuple:
        return "srh%s%s" % (self.lab_id, LETTERS[index]), "srg%s%s" % (self.lab_id, LETTERS[index])

    def vf_port(self, index: int) -> tuple:
        return "srx%s%s" % (self.lab_id, LETTERS[index]), "sry%s%s" % (self.lab_id, LETTERS[index])


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def exec_argv(name: Optional[str]) -> list:
    """Prefix an argv with this to run it in namespace *name* (nothing if None)."""
    return ["nsenter", "--net=%s" % netns_path(name), "--"] if name else []


_libc = None


def _setns(name: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (name, os.strerror(err)))
    finally:
        os.close(fd)


def call_in(name: Optional[str], func: Callable, *args, **kwargs):
    """Run *func* on a thread that joined namespace *name*; return its result or raise its error.

    Sockets it makes belong to that namespace for their whole life, and
    threads it starts stay in it: a server started here listens there.
    """
    if not name:
        return func(*args, **kwargs)
    box: dict = {}

    def run():
        try:
            _setns(name)
            box["value"] = func(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, name="netns/%s" % name, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def unreachable(address: str, port: int, timeout: float = 3.0) -> Optional[str]:
    """Why a TCP connection to *address*:*port* from this thread's namespace fails, or None."""
    try:
        with socket.create_connection((address, port), timeout):
            return None
    except socket.timeout:
        return "%s:%d: no answer within %.0f s" % (address, port, timeout)
    except OSError as e:
        return "%s:%d: %s" % (address, port, e.strerror or e)


def shut_port_listener(address: str, allowed: list) -> socket.socket:
    """A TCP listener on *address*, in this thread's namespace, on a port none of *allowed* opens."""
    for _ in range(50):
        s = socket.socket()
        s.bind((address, 0))
        if not firewall.allows(allowed, "tcp", s.getsockname()[1]):
            s.listen(1)
            return s
        s.close()
    raise LabError("lab network: no TCP port the firewall leaves shut is free on %s" % address)


def _run(argv: list, what: str, stdin: Optional[str] = None) -> str:
    """Run a network command; its output, or a one-line LabError naming *what* failed."""
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        raise LabError("lab network: no %r command (apt-get install iproute2 iptables util-linux)"
                       % argv[0]) from None
    if proc.returncode != 0:
        raise LabError("lab network: %s failed: %s" % (what, proc.stderr.strip()))
    return proc.stdout


def _ip(*args: str, netns: Optional[str] = None) -> None:
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    _run(argv, " ".join(argv))


def _no_ipv6_here(names: Iterable[str]) -> None:
    """In the calling thread's namespace: no IPv6 autoconf chatter on these links."""
    for name in names:
        path = "/proc/sys/net/ipv6/conf/%s/disable_ipv6" % name
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write("1")


def _used_subnets() -> set:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         timeout=20).stdout
    used = set()
    for word in out.split():
        if word.startswith("169.254."):
            try:
                used.add(int(word.split(".")[2]))
            except (IndexError, ValueError):
                continue
    return used


def create(lab_root: str, lab_id: str, hosts: int, allowed: list,
           vf_bridges: Optional[list] = None) -> Network:
    """Build the bridge, one namespace per host and its firewall; record each step first."""
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    with open(LOCK_PATH, "a") as lock:  # two labs starting together take different subnets
        fcntl.flock(lock, fcntl.LOCK_EX)
        free = [x for x in SUBNETS if x not in _used_subnets()]
        if not free:
            raise LabError("lab network: every 169.254.X.0/24 with X in %d..%d is taken"
                           % (SUBNETS[0], SUBNETS[-1]))
        net = Network(lab_id, free[0], hosts)
        try:
            labstate.save(lab_root, STATE_FILE, net)
            _ip("link", "add", "name", net.bridge, "type", "bridge", "forward_delay", "0")
            net.links.append(net.bridge)
            labstate.save(lab_root, STATE_FILE, net)
            _no_ipv6_here([net.bridge])
            _ip("addr", "add", "%s/24" % net.gateway, "dev", net.bridge)
            _ip("link", "set", net.bridge, "up")
        except BaseException:
            destroy(lab_root, net)
            raise
    try:
        for i in range(hosts):
            _add_host(lab_root, net, i, allowed, vf_bridges[i] if vf_bridges else None)
    except BaseException:
        destroy(lab_root, net)
        raise
    return net


def _add_host(lab_root: str, net: Network, i: int, allowed: list, vf_bridge: Optional[str]) -> None:
    ns = net.netns(i)
    _ip("netns", "add", ns)
    net.namespaces.append(ns)
    labstate.save(lab_root, STATE_FILE, net)
    outside, inside = net.uplink(i)
    _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
    net.links.append(outside)
    labstate.save(lab_root, STATE_FILE, net)
    _no_ipv6_here([outside, inside])
    _ip("link", "set", outside, "master", net.bridge)
    _ip("link", "set", outside, "up")
    _ip("link", "set", inside, "netns", ns)
    _ip("link", "set", inside, "name", "eth0", netns=ns)
    names = ["eth0"]
    if vf_bridge:
        # the host's side of its VF bridge, under the bridge's own name (see the module doc)
        port, peer = net.vf_port(i)
        _ip("link", "add", port, "type", "veth", "peer", "name", peer)
        net.links.append(port)
        labstate.save(lab_root, STATE_FILE, net)
        _no_ipv6_here([port, peer])
        _ip("link", "set", port, "master", vf_bridge)
        # the bridge must not learn a guest's MAC behind this port from an announcement the
        # service sends here, as it learns nothing from frames sent on the bridge itself
        _ip("link", "set", "dev", port, "type", "bridge_slave", "learning", "off")
        _ip("link", "set", port, "up")
        _ip("link", "set", peer, "netns", ns)
        _ip("link", "set", peer, "name", vf_bridge, netns=ns)
        names.append(vf_bridge)
    call_in(ns, _no_ipv6_here, ["all", "default"] + names)
    set_firewall(ns, allowed)
    _ip("addr", "add", "%s/24" % net.address(i), "dev", "eth0", netns=ns)
    for name in ["lo"] + names:
        _ip("link", "set", name, "up", netns=ns)


def set_firewall(ns: str, allowed: list) -> None:
    """Replace namespace *ns*'s INPUT rules with the host firewall that lets *allowed* in."""
    _run(exec_argv(ns) + ["iptables-restore"], "iptables-restore in %s" % ns,
         firewall.iptables_restore(allowed))
    _run(exec_argv(ns) + ["ip6tables-restore"], "ip6tables-restore in %s" % ns,
         firewall.IP6TABLES_RESTORE)


L1_COMMANDS = "/lab/cmd"  # the real-VF lab's L1 has it (realvf_images.L1_INIT); no other machine


def set_shared_firewall(allowed: list, addresses: list, ns: Optional[str] = None) -> None:
    """Hosts on *addresses* that share a namespace each get the firewall that lets *allowed* in.

    With no *ns*, that is the calling process's namespace, which is only
    allowed inside the real-VF lab's L1 (the lab's own machine): rules in
    any other machine's own namespace would touch more than the lab.
    """
    _run(_shared_argv(ns) + ["iptables-restore"], "iptables-restore of the hosts' firewall",
         firewall.shared_iptables_restore(allowed, addresses))


def clear_shared_firewall(ns: Optional[str] = None) -> None:
    """Undo :func:`set_shared_firewall`: an empty filter table again."""
    _run(_shared_argv(ns) + ["iptables-restore"], "iptables-restore of an empty filter table",
         firewall.SHARED_CLEARED)


def shared_firewall_counts(ns: Optional[str] = None) -> list:
    """``[(packets, rule)]`` of the hosts' zone in a shared namespace, from iptables' own counters."""
    argv = _shared_argv(ns) + ["iptables", "-w", "-n", "-v", "-x", "-L", firewall.SHARED_CHAIN]
    out = []
    for line in _run(argv, " ".join(argv)).splitlines()[2:]:  # the chain's name, then the column heads
        fields = line.split(None, 9)
        if len(fields) >= 9 and fields[0].isdigit():
            out.append((int(fields[0]), " ".join(fields[2:])))
    return out


def _shared_argv(ns: Optional[str]) -> list:
    if ns is None and not os.path.isdir(L1_COMMANDS):
        raise LabError("lab network: a firewall keyed on addresses is only written in the real-VF "
                       "lab's L1 or in a namespace the lab made, never in this machine's own")
    return exec_argv(ns)


def cut_off(ns: str) -> None:
    """Namespace *ns* takes in nothing from outside (:data:`firewall.CUT_OFF`) until set again."""
    _run(exec_argv(ns) + ["iptables-restore"], "iptables-restore in %s" % ns, firewall.CUT_OFF)



def destroy(lab_root: str, net: Network) -> None:
    """Remove the namespaces (their ends of each veth go with them) and the links made here."""
    for ns in reversed(net.namespaces):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
    for name in reversed(net.links):
        proc = subprocess.run(["ip", "link", "del", name], capture_output=True, text=True, timeout=20)
        if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
            raise LabError("lab network: cannot remove %s: %s" % (name, proc.stderr.strip()))
    labstate.forget(lab_root, STATE_FILE)


def reap(lab_root: str) -> bool:
    """Remove the network a killed lab under *lab_root* left behind."""
    net = labstate.load(lab_root, STATE_FILE, Network)
    if net is None:
        return False
    destroy(lab_root, net)
    return True


def namespace_exists(name: str) -> bool:
    try:
        os.stat(netns_path(name))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True
