"""Fixtures for the hook contract tests: a host config over libvirt's test driver.

The test driver stands in for a host's libvirt (domain scan, host UUID);
it has no hot-plug, so unplug/plug themselves are proven in the lab.
A nodedev-xml inventory stands in for the SR-IOV NICs this machine lacks.
"""

from __future__ import annotations

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS_DIR = os.path.join(TESTS_DIR, "data", "domains")
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from helpers import nodedev  # noqa: E402


def read_domain(name: str) -> bytes:
    with open(os.path.join(DOMAINS_DIR, name + ".xml"), "rb") as f:
        return f.read()


class HostFixture:
    """One fake-hardware host: config file, ledger path, inventory."""

    def __init__(self, tmp_path, pfs=2, vfs=4, networks=None, default=False):
        self.dir = tmp_path
        self.inventory = tmp_path / "nodedev.xml"
        self.inventory.write_text(nodedev.devices_xml(pfs=pfs, vfs=vfs, base_bus=0x04))
        self.node = tmp_path / "node.xml"
        self.node.write_text(nodedev.node_xml(nodedev.devices(pfs=pfs, vfs=vfs, base_bus=0x04)))
        self.ledger = tmp_path / "ledger.sqlite"
        self.conf = tmp_path / "sriov-migration.conf"
        lines = [
            "[libvirt]", "uri = test://%s" % self.node,
            "[ledger]", "path = %s" % self.ledger,
            "[inventory]", "source = nodedev-xml:%s" % self.inventory,
            "[policy]", "migratable_by_default = %s" % str(default).lower(),
            "[timeouts]", "unplug = 2", "plug = 2", "reservation_ttl = 60",
        ]
        if networks:
            lines.append("[networks]")
            lines += ["%s = %s" % (k, ", ".join(v)) for k, v in networks.items()]
        self.conf.write_text("\n".join(lines) + "\n")

    def claims(self, vm_id=None):
        from sriov_host.ledger import Ledger

        with Ledger(str(self.ledger)) as ledger:
            return ledger.claims(vm_id=vm_id)


@pytest.fixture
def host(tmp_path, monkeypatch):
    h = HostFixture(tmp_path)
    monkeypatch.setenv("SRIOV_MIGRATION_CONF", str(h.conf))
    return h


@pytest.fixture
def hook_env(tmp_path):
    """Build the env VDSM gives a hook: the domain XML file and vmId."""

    def make(xml: bytes, vm_id="4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11", **custom):
        path = tmp_path / "domxml.xml"
        path.write_bytes(xml)
        env = {"_hook_domxml": str(path), "vmId": vm_id, "PATH": os.environ.get("PATH", "")}
        env["SRIOV_MIGRATION_CONF"] = os.environ.get("SRIOV_MIGRATION_CONF", "")
        env.update(custom)
        return env, path

    return make
