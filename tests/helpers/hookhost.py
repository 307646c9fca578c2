"""A fake-hardware host for hook tests: config file, ledger path, inventory.

The test driver stands in for the host's libvirt; a nodedev-xml file
stands in for SR-IOV NICs this machine does not have.
"""

from __future__ import annotations

from . import nodedev


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
