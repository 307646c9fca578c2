"""Real-VF lab checks that need a second, unprivileged process.

The service runs as vdsm with CAP_NET_ADMIN and CAP_NET_RAW only; the
kernel gives such a reader 64 bytes of a VF's config space, where no
MSI-X capability lives. :func:`taken_up_as_vdsm` shows, on real VFs a
guest has taken up, that :func:`sriov_host.msix.taken_up` still answers
True for that reader (it reads ``msi_irqs``), and that the config space
it can read is cut to 64 bytes (the signal read before would be blind).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

VDSM_UID = 36  # VDSM's vdsm user (vdsm.spec); setpriv needs no passwd entry for it

_PROBE = """
import json, sys
from sriov_host import msix
out = {}
for addr in sys.argv[1:]:
    with open("/sys/bus/pci/devices/%s/config" % addr, "rb") as f:
        out[addr] = [msix.taken_up(addr), len(f.read(256))]
print(json.dumps(out))
"""


def taken_up_as_vdsm(addresses) -> list:
    """``[(ok, what)]``: each VF taken up as uid 36 with no capabilities sees it, and 64 bytes."""
    cmd = ["setpriv", "--reuid", str(VDSM_UID), "--regid", str(VDSM_UID), "--clear-groups",
           "--", sys.executable, "-c", _PROBE] + list(addresses)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH"))
                                                    if p))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, cwd="/")
        seen = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return [(False, "msix.taken_up as uid %d could not run: %s" % (VDSM_UID, e))]
    if seen is None:
        return [(False, "msix.taken_up as uid %d failed: %s" % (
            VDSM_UID, " ".join(proc.stderr.split())[-300:]))]
    return [(seen[a][0] is True and seen[a][1] == 64,
             "VF %s: taken up, as uid %d without capabilities reads it (msi_irqs): %s, config space "
             "readable: %d bytes" % (a, VDSM_UID, seen[a][0], seen[a][1])) for a in addresses]
