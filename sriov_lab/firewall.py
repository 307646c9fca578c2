"""What a lab host's firewall lets in: an oVirt host's firewalld after the engine's host deploy.

The engine's host deploy (oVirt/ovirt-engine,
``packaging/ansible-runner-service-project/project/roles/ovirt-host-deploy-firewalld``)
enables, in the default zone, the SSH port (``tasks/main.yml``, "Enable
SSH port") and the firewalld services of ``vars/firewalld_rules_common.yml``
(cockpit, libvirt-tls, snmp, vdsm, ovirt-imageio, ipsec) and
``vars/firewalld_rules_virt.yml`` (ovirt-vmconsole, and port 6081/udp for
OVN tunnels). Nothing else: a port a hook package needs must come with its
own firewalld service, which this project ships
(``jsonrpc_plugin/data/firewalld-sriov-migration.xml``).

The ports of each service are read from firewalld's own service files
(``/usr/lib/firewalld/services/NAME.xml``, Debian's and EL's ``firewalld``
package; ``vdsm.xml`` there is VDSM's), and the project's from the file it
ships: never repeated by hand here. Everything else is refused as
firewalld's default zone (``public``, target ``default``) refuses it: a
REJECT with ``icmp-host-prohibited``, so a client learns it at once.

All of this is pure: :func:`rules` gives the allowed set,
:func:`iptables_restore` the text for ``iptables-restore`` in a host's
network namespace, :func:`shared_iptables_restore` the text for hosts
that share one (the real-VF lab's); :mod:`sriov_lab.netns` applies both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional

from sriov_host import xmlsafe

from .errors import LabError

FIREWALLD_SERVICES = "/usr/lib/firewalld/services"
# ovirt-host-deploy-firewalld: vars/firewalld_rules_common.yml, then vars/firewalld_rules_virt.yml
ENGINE_SERVICES = ("cockpit", "libvirt-tls", "snmp", "vdsm", "ovirt-imageio", "ipsec",
                   "ovirt-vmconsole")
# tasks/main.yml "Enable SSH port" ({{ ansible_port }}/tcp) and firewalld_rules_virt.yml's OVN port
ENGINE_PORTS = (("ssh", "tcp", "22"), ("ovn", "udp", "6081"))
PROJECT_SERVICE = "sriov-migration"


def project_service_path() -> str:
    """The firewalld service file the project ships (installed as sriov-migration.xml)."""
    import jsonrpc_plugin

    return os.path.join(os.path.dirname(jsonrpc_plugin.__file__), "data",
                        "firewalld-sriov-migration.xml")


@dataclass(frozen=True)
class Rule:
    """One allowed protocol and port (``port`` may be a range ``A-B``, or empty)."""

    service: str
    protocol: str
    port: str = ""

    def matches(self, protocol: str, port: int) -> bool:
        if self.protocol != protocol:
            return False
        if not self.port:
            return True
        low, _, high = self.port.partition("-")
        return int(low) <= port <= int(high or low)


def service_rules(name: str, xml_text: str) -> list:
    """The ``<port protocol= port=>`` of a firewalld service file, as :class:`Rule`."""
    root = xmlsafe.parse_xml(xml_text, "firewalld service %s" % name, error=LabError)
    if root.tag != "service":
        raise LabError("firewalld service %s: root is <%s>, not <service>" % (name, root.tag))
    out = [Rule(name, p.get("protocol", ""), p.get("port", "")) for p in root.iter("port")]
    if not out or any(not r.protocol for r in out):
        raise LabError("firewalld service %s: no usable <port protocol=...> in it" % name)
    return out


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise LabError("firewall: cannot read %s: %s (apt-get install firewalld; bash "
                       "scripts/setup.sh keeps its daemon off)" % (path, e.strerror)) from None


def rules(include_project: bool = True, services_dir: str = FIREWALLD_SERVICES,
          project_path: Optional[str] = None) -> list:
    """What an engine-deployed host lets in, plus (*include_project*) the project's service."""
    out = [Rule(name, proto, port) for name, proto, port in ENGINE_PORTS]
    for name in ENGINE_SERVICES:
        out += service_rules(name, _read(os.path.join(services_dir, name + ".xml")))
    if include_project:
        out += service_rules(PROJECT_SERVICE, _read(project_path or project_service_path()))
    return out


def allows(allowed: Iterable[Rule], protocol: str, port: int) -> bool:
    return any(r.matches(protocol, port) for r in allowed)


def _accept(rule: Rule, chain: str) -> str:
    spec = "-p %s" % rule.protocol
    if rule.port and rule.protocol in ("tcp", "udp", "sctp", "dccp"):
        spec += " -m %s --dport %s" % (rule.protocol, rule.port.replace("-", ":"))
    return "-A %s %s -m comment --comment %s -j ACCEPT" % (chain, spec, rule.service)


def _host_rules(allowed: Iterable[Rule], chain: str) -> list:
    """A host's zone in *chain*: replies, ICMP, the allowed ports; REJECT the rest."""
    lines = ["-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" % chain,
             "-A %s -m conntrack --ctstate INVALID -j DROP" % chain,
             "-A %s -p icmp -j ACCEPT" % chain]  # firewalld's zones accept ICMP unless blocked
    lines += [_accept(r, chain) for r in allowed]
    return lines + ["-A %s -j REJECT --reject-with icmp-host-prohibited" % chain]


def iptables_restore(allowed: Iterable[Rule]) -> str:
    """IPv4 rules for a host's namespace: loopback, then the host's zone (:func:`_host_rules`)."""
    lines = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
             "-A INPUT -i lo -j ACCEPT"]
    return "\n".join(lines + _host_rules(allowed, "INPUT") + ["COMMIT", ""])


SHARED_CHAIN = "SRIOV-LAB-HOST"


def shared_iptables_restore(allowed: Iterable[Rule], addresses: Iterable[str]) -> str:
    """IPv4 rules for lab hosts that share one namespace, each on its own loopback address.

    The real-VF lab's hosts share L1's namespace: each one's service and
    hooks program its VFs through its PF's netdev, which a namespace of
    its own would hide. So there the firewall is keyed on the address:
    whatever is sent to a host's address, by another host or by the host
    itself, passes that host's zone. The rest of L1 (its 127.0.0.1, the
    PFs, the shares) is let through: L1 is the lab's own machine.
    """
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":%s - [0:0]" % SHARED_CHAIN]
    lines += ["-A INPUT -d %s/32 -j %s" % (a, SHARED_CHAIN) for a in addresses]
    return "\n".join(lines + _host_rules(allowed, SHARED_CHAIN) + ["COMMIT", ""])


# What a shared namespace's filter table is again once its lab stops: nothing in it.
SHARED_CLEARED = "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                            ":OUTPUT ACCEPT [0:0]", "COMMIT", ""])


# A host cut off the network (the fault matrix's "unreachable"): nothing gets in from outside, not
# even replies on connections already open, as behind a dropped route; its own loopback still works.
CUT_OFF = "\n".join([
    "*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
    "-A INPUT -i lo -j ACCEPT", "COMMIT", ""])

# The lab's hosts have no IPv6 address but loopback's: only loopback gets in.
IP6TABLES_RESTORE = "\n".join([
    "*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
    "-A INPUT -i lo -j ACCEPT", "-A INPUT -j REJECT --reject-with icmp6-adm-prohibited",
    "COMMIT", ""])
