"""PCI addresses in the three spellings libvirt and sysfs use."""

from __future__ import annotations

import re
from typing import NamedTuple

_ADDR_RE = re.compile(
    r"^(?P<domain>[0-9a-fA-F]{4}):(?P<bus>[0-9a-fA-F]{2}):"
    r"(?P<slot>[0-9a-fA-F]{2})\.(?P<function>[0-7])$"
)


_LIMITS = (0xFFFF, 0xFF, 0x1F, 0x7)  # domain, bus, slot, function


class PciAddress(NamedTuple):
    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        """Parse ``0000:05:10.2``; raise ValueError on anything else."""
        m = _ADDR_RE.match(text or "")
        if m is None:
            raise ValueError("not a PCI address: %r" % (text,))
        return cls(*(int(m.group(k), 16) for k in ("domain", "bus", "slot", "function")))

    @classmethod
    def from_attrs(cls, attrs) -> PciAddress:
        """From an ``<address domain='0x0000' bus='0x05' .../>`` mapping."""
        try:
            addr = cls(*(int(attrs.get(k, "0"), 0) for k in ("domain", "bus", "slot", "function")))
        except (TypeError, ValueError) as e:
            raise ValueError("bad PCI address attributes %s" % dict(attrs)) from e
        if not all(0 <= v <= top for v, top in zip(addr, _LIMITS)):
            raise ValueError("PCI address attributes out of range %s" % dict(attrs))
        return addr

    def __str__(self) -> str:
        return "%04x:%02x:%02x.%x" % self

    @property
    def nodedev_name(self) -> str:
        return "pci_%04x_%02x_%02x_%x" % self

    def xml_attrs(self) -> dict:
        return {
            "type": "pci",
            "domain": "0x%04x" % self.domain,
            "bus": "0x%02x" % self.bus,
            "slot": "0x%02x" % self.slot,
            "function": "0x%x" % self.function,
        }
