"""What a lab made outside its directory (links, namespaces), written down inside it.

A lab killed before it could clean up leaves these behind; the next lab
(or ``sriov-lab down``) reads the record back and removes them. One
JSON file per kind under the lab's root, from a dataclass.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Optional


def save(lab_root: str, name: str, record) -> None:
    with open(os.path.join(lab_root, name), "w") as f:
        json.dump(asdict(record), f)


def load(lab_root: str, name: str, cls) -> Optional[object]:
    """The record *name* as a *cls*; None if there is none or it cannot be read."""
    try:
        with open(os.path.join(lab_root, name)) as f:
            return cls(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def forget(lab_root: str, name: str) -> None:
    try:
        os.unlink(os.path.join(lab_root, name))
    except FileNotFoundError:
        pass
