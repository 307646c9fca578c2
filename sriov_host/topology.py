"""This host's CPU -> NUMA node map, for vCPU pinning that names host CPUs.

Parsing is pure (:func:`from_cpulists`); :class:`SysfsTopology` only
reads the kernel's ``/sys/devices/system/node/nodeN/cpulist``, which is
cheap, world-readable and needs no libvirt (libvirt's capabilities
``<topology>`` is built from the same files). Anything with a
``cpu_nodes()`` method will do, so a test hands in a three-line fake.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Protocol

from .errors import BadDomainXml
from .numa import MAX_NODE, parse_cpuset

log = logging.getLogger(__name__)

SYSFS_NODES = "/sys/devices/system/node"
_NODE_DIR = re.compile(r"^node(\d+)$")


class CpuTopology(Protocol):
    def cpu_nodes(self) -> dict:
        """``{host CPU: NUMA node}``; empty when the host does not say."""


def from_cpulists(cpulists: dict) -> dict:
    """``{node: "0-3,8"}`` -> ``{cpu: node}``; a list that does not parse is skipped."""
    out = {}
    for node, text in sorted(cpulists.items()):
        if not (text or "").strip():
            continue  # a memory-only node has no CPUs
        try:
            cpus = parse_cpuset(text, "node%d cpulist" % node)
        except BadDomainXml as e:
            log.warning("NUMA topology: %s; node %d skipped", e.message, node)
            continue
        out.update((cpu, node) for cpu in cpus)
    return out


class SysfsTopology:
    """The kernel's view; *root* is there for tests."""

    def __init__(self, root: str = SYSFS_NODES):
        self.root = root

    def cpu_nodes(self) -> dict:
        try:
            names = os.listdir(self.root)
        except OSError as e:
            log.info("NUMA topology: cannot list %s: %s", self.root, e.strerror)
            return {}
        lists = {}
        for name in names:
            m = _NODE_DIR.match(name)
            if m is None or int(m.group(1)) > MAX_NODE:
                continue
            try:
                with open(os.path.join(self.root, name, "cpulist"), encoding="ascii") as f:
                    lists[int(m.group(1))] = f.read(4096)
            except (OSError, ValueError) as e:
                log.info("NUMA topology: %s/cpulist unreadable: %s", name, e)
        return from_cpulists(lists)
