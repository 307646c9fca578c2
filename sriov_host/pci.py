"""PCI addresses in the three spellings libvirt and sysfs use."""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import shown

_ADDR_RE = re.compile(
    r"^(?P<domain>[0-9a-fA-F]{4}):(?P<bus>[0-9a-fA-F]{2}):"
    r"(?P<slot>[0-9a-fA-F]{2})\.(?P<function>[0-7])$"
)


_NAMES = ("domain", "bus", "slot", "function")
_LIMITS = (0xFFFF, 0xFF, 0x1F, 0x7)


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
            raise ValueError("not a PCI address: %s" % shown(text))
        return cls(*(int(m.group(k), 16) for k in ("domain", "bus", "slot", "function")))

    @classmethod
    def from_attrs(cls, attrs) -> PciAddress:
        """From an ``<address domain='0x0000' bus='0x05' .../>`` mapping.

        The error names the one bad attribute, cut short: the value comes
        from untrusted XML and ends up on a log line.
        """
        values = []
        for name, top in zip(_NAMES, _LIMITS):
            raw = attrs.get(name, "0")
            try:
                value = int(raw, 0) if len(raw) <= 16 else None  # no quadratic int() of 1 MB
            except (TypeError, ValueError):
                value = None
            if value is None:
                raise ValueError("bad PCI address attribute %s=%s" % (name, shown(raw))) from None
            if not 0 <= value <= top:
                raise ValueError("PCI address attribute %s=%s out of range 0..%#x"
                                 % (name, shown(raw), top))
            values.append(value)
        return cls(*values)

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
