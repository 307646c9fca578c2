"""The lab hosts' firewall rules: an engine-deployed host's firewalld plus the project's service."""

from __future__ import annotations

import pytest

from sriov_lab import firewall
from sriov_lab.errors import LabError

SERVICE = """<?xml version="1.0" encoding="utf-8"?>
<service><short>x</short><port protocol="tcp" port="{port}"/><!-- c --></service>
"""


def _fake_services(tmp_path, ports=None):
    for name in firewall.ENGINE_SERVICES:
        (tmp_path / (name + ".xml")).write_text(SERVICE.format(port=(ports or {}).get(name, "1")))
    return str(tmp_path)


def test_rules_should_take_the_project_port_from_the_shipped_file(tmp_path):
    project = tmp_path / "project.xml"
    project.write_text(SERVICE.format(port="6000"))
    services = _fake_services(tmp_path, {"vdsm": "54321"})

    with_project = firewall.rules(True, services, str(project))
    without = firewall.rules(False, services, str(project))

    assert firewall.allows(with_project, "tcp", 6000) and not firewall.allows(without, "tcp", 6000)
    assert firewall.allows(without, "tcp", 54321) and firewall.allows(without, "tcp", 22)
    assert not firewall.allows(with_project, "udp", 6000)


def test_shipped_service_should_open_54325_only():
    rules = firewall.service_rules("sriov-migration", open(firewall.project_service_path()).read())
    assert rules == [firewall.Rule("sriov-migration", "tcp", "54325")]


def test_iptables_restore_should_accept_ranges_and_reject_the_rest_last():
    text = firewall.iptables_restore([firewall.Rule("vdsm", "tcp", "49152-49216"),
                                      firewall.Rule("ipsec", "esp")])
    lines = text.splitlines()
    assert ":INPUT DROP [0:0]" in lines and "-A INPUT -i lo -j ACCEPT" in lines
    assert "-A INPUT -p tcp -m tcp --dport 49152:49216 -m comment --comment vdsm -j ACCEPT" in lines
    assert "-A INPUT -p esp -m comment --comment ipsec -j ACCEPT" in lines
    assert lines[-2:] == ["-A INPUT -j REJECT --reject-with icmp-host-prohibited", "COMMIT"]


@pytest.mark.parametrize("text", ["<service/>", "<zone><port protocol='tcp' port='1'/></zone>",
                                  "<service><port port='1'/></service>", "not xml"],
                         ids=["no-port", "not-a-service", "no-protocol", "malformed"])
def test_service_rules_should_refuse_an_unusable_file_in_one_line(text):
    with pytest.raises(LabError) as ei:
        firewall.service_rules("bad", text)
    assert "bad" in str(ei.value) and "\n" not in str(ei.value)


def test_rules_should_say_which_file_is_missing(tmp_path):
    with pytest.raises(LabError, match="cockpit.xml"):
        firewall.rules(True, str(tmp_path))


def test_shared_rules_should_send_only_the_hosts_addresses_through_the_zone():
    text = firewall.shared_iptables_restore([firewall.Rule("sriov-migration", "tcp", "54325")],
                                            ["127.0.0.11", "127.0.0.12"])
    lines = text.splitlines()
    chain = firewall.SHARED_CHAIN

    assert ":INPUT ACCEPT [0:0]" in lines  # the rest of L1 is let through
    assert "-A INPUT -d 127.0.0.11/32 -j %s" % chain in lines
    assert "-A INPUT -d 127.0.0.12/32 -j %s" % chain in lines
    assert not any(" -i lo " in line for line in lines)  # the hosts' own traffic is on lo too
    rules = [line for line in lines if line.startswith("-A %s " % chain)]
    assert "--dport 54325" in rules[-2] and rules[-1].endswith("icmp-host-prohibited")
    assert text.endswith("\nCOMMIT\n")


def test_shared_firewall_should_refuse_this_machines_own_namespace():
    from sriov_lab import netns

    with pytest.raises(LabError, match="never in this machine's own"):
        netns.set_shared_firewall([], ["127.0.0.11"])
