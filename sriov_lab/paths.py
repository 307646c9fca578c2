"""Where the lab keeps its cached artefacts and its runtime directories.

Cached artefacts (the guest, QEMU's capabilities cache) live under the
git-ignored ``.lab/`` of the checkout, or ``$SRIOV_LAB_DIR``. Runtime
host directories go under ``/tmp`` because a UNIX socket path must stay
under 108 bytes whatever the checkout's path is.
"""

from __future__ import annotations

import os

ENV_DIR = "SRIOV_LAB_DIR"
ENV_RUNTIME = "SRIOV_LAB_RUNTIME"


def lab_dir() -> str:
    env = os.environ.get(ENV_DIR)
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(repo, ".lab")


def caps_cache_dir() -> str:
    return os.path.join(lab_dir(), "qemu-caps")


def guest_dir() -> str:
    return os.path.join(lab_dir(), "guest")


def runtime_base() -> str:
    return os.environ.get(ENV_RUNTIME) or "/tmp/sriov-lab"
