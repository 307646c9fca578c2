"""Make ``tests/helpers`` importable, and the lab fixtures known, everywhere.

The lab fixtures are registered once, here: imported into two conftests,
the session-scoped ``lab`` would be two fixtures and start two labs.
"""

from __future__ import annotations

import os
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from sriov_lab.fixtures import (  # noqa: E402, F401  (pytest finds fixtures by name)
    lab,
    lab_conns,
    lab_guest,
    lab_hook_runners,
    lab_hosts,
    lab_vdsm,
    lab_vms,
)
