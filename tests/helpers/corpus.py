"""The VDSM-like domain XML corpus under ``tests/data/domains``."""

from __future__ import annotations

import os

DOMAINS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "data", "domains")


def read_domain(name: str) -> bytes:
    """The bytes of ``tests/data/domains/<name>.xml``."""
    with open(os.path.join(DOMAINS_DIR, name + ".xml"), "rb") as f:
        return f.read()
