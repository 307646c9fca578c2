"""The firewall of lab hosts that share a namespace: the real-VF lab's, keyed on each host's address.

In L1 the hosts cannot each have a namespace (their services must see
their PFs' netdevs), so each has a loopback address and whatever is sent
to it passes that host's zone (:func:`sriov_lab.netns.set_shared_firewall`).
Here the same rules are written into a namespace this test makes, as they
are into L1's, and the kernel is asked what gets through.
"""

from __future__ import annotations

import secrets
import socket
import subprocess

import pytest

from sriov_lab import firewall, netns

pytestmark = pytest.mark.lab

HOSTS = ["127.0.0.11", "127.0.0.12"]
SERVICE_PORT = 54325


@pytest.fixture
def shared_ns():
    name = "sriovlab-test-%s" % secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _shut_port(allowed) -> int:
    for port in range(20000, 20100):
        if not firewall.allows(allowed, "tcp", port):
            return port
    raise AssertionError("every port in 20000-20099 is opened by the rules")


def _reach(ns: str, address: str, port: int):
    """Listen on *address*:*port* in *ns* and connect to it from there: None, or why it failed."""
    def run():
        with socket.create_server((address, port)):
            return netns.unreachable(address, port)
    return netns.call_in(ns, run)


def test_shared_firewall_should_refuse_a_shut_port_on_a_host_address_only(shared_ns):
    allowed = firewall.rules()
    shut = _shut_port(allowed)
    assert _reach(shared_ns, HOSTS[1], shut) is None  # no firewall yet: it gets through

    netns.set_shared_firewall(allowed, HOSTS, ns=shared_ns)

    refused = _reach(shared_ns, HOSTS[1], shut)
    assert refused and "No route to host" in refused  # icmp-host-prohibited, at once
    assert _reach(shared_ns, HOSTS[0], shut) is not None
    assert _reach(shared_ns, HOSTS[1], SERVICE_PORT) is None  # the project's firewalld service
    assert _reach(shared_ns, HOSTS[1], 54321) is None  # VDSM's
    assert _reach(shared_ns, "127.0.0.1", shut) is None  # the rest of L1 is not a host
    counted = {rule: n for n, rule in netns.shared_firewall_counts(ns=shared_ns)}
    assert [n for rule, n in counted.items() if "dpt:%d " % SERVICE_PORT in rule] == [1]  # one SYN
    assert [n for rule, n in counted.items() if rule.startswith("REJECT")] == [2]


def test_shared_firewall_without_the_projects_service_should_shut_its_port(shared_ns):
    netns.set_shared_firewall(firewall.rules(include_project=False), HOSTS, ns=shared_ns)
    assert _reach(shared_ns, HOSTS[0], SERVICE_PORT) is not None

    netns.clear_shared_firewall(ns=shared_ns)
    assert _reach(shared_ns, HOSTS[0], SERVICE_PORT) is None
