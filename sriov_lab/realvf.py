"""The real-VF lab: the production ``hostdev`` path on real PCI VFs, in a QEMU guest.

This machine has no SR-IOV and no VFIO, but a QEMU >= 8 guest (L1) with
an emulated intel-iommu and two ``igb`` PFs has both: Linux's igb/igbvf,
IOMMU groups, vfio-pci and libvirt's nodedev tree treat its VFs as
hardware. What is real in L1: the PCI functions, VFIO, the PF driver and
libvirt's MAC/VLAN programming through the PF; what is emulated: the igb
silicon (QEMU's model).

Both commands build and cache (outside the checkout, keyed by the recipe)
a QEMU 10 prefix from bookworm-backports (L0) and an L1 disk image, boot
L1 with a shell-script PID 1 and a 9p command directory, and create the
VFs (see :func:`create_vfs`). ``sriov-lab realvf-probe`` then runs
:mod:`sriov_lab.realvf_l1` there: inventory, one plug with MAC and VLAN
and its release, checked from the PF's side. ``sriov-lab demo --real-vf``
(:func:`demo`) runs the ordinary demo inside L1 on two lab hosts that
each own one PF, with an L2 guest whose vNICs are real VFs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from .errors import LabError
from .realvf_images import (
    PFS,
    VFS_PER_PF,
    WIRE_MAC,
    cache_dir,
    ensure_l0,
    ensure_l1,
    l0_key,
    l1_key,
    qemu_argv,
)

REAL_VF_SCENARIOS = ("success", "rollback", "no-free-vf")  # what the demo runs on real VFs

_VF_LINE = re.compile(r"^\s*vf (\d+)\s+link/ether ([0-9a-f:]{17})(.*)$")


def parse_vf_lines(text: str) -> dict:
    """``{vf index: (mac, vlan or None)}`` from ``ip link show PF``."""
    out = {}
    for line in text.splitlines():
        m = _VF_LINE.match(line)
        if m:
            vlan = re.search(r"\bvlan (\d+)", m.group(3))
            out[int(m.group(1))] = (m.group(2), int(vlan.group(1)) if vlan else None)
    return out


# -- building the cache (L0 side) ------------------------------------------

@dataclass
class L1:
    """A booted L1 and its command channel; :meth:`stop` ends it."""

    l0_root: str
    image_dir: str
    src_dir: str
    deps_dir: Optional[str] = None  # this interpreter's site-packages, shared read-only as "deps"
    run_dir: str = ""
    proc: Optional[subprocess.Popen] = None
    seq: int = 0
    timings: dict = field(default_factory=dict)

    @property
    def lab(self) -> str:
        return os.path.join(self.run_dir, "lab")

    def start(self, timeout: float = 180.0) -> L1:
        self.run_dir = tempfile.mkdtemp(prefix="run-", dir=os.path.dirname(self.image_dir))
        os.makedirs(os.path.join(self.lab, "cmd"))
        inside = "/mnt/rv/" + os.path.relpath(self.run_dir, os.path.dirname(self.image_dir))
        image = "/mnt/rv/" + os.path.basename(self.image_dir)
        argv = qemu_argv(image + "/vmlinuz", image + "/initrd", inside + "/l1.qcow2",
                         inside + "/lab", "/mnt/src", inside + "/console.log",
                         "/mnt/deps" if self.deps_dir else None)
        script = " && ".join([
            "mount --bind %s %s/mnt/rv" % (os.path.dirname(self.image_dir), self.l0_root),
            "mount --bind %s %s/mnt/src" % (self.src_dir, self.l0_root),
            *(("mkdir -p %s/mnt/deps && mount --bind %s %s/mnt/deps"
               % (self.l0_root, self.deps_dir, self.l0_root),) if self.deps_dir else ()),
            "mount --bind /dev %s/dev" % self.l0_root,
            "mount -t proc proc %s/proc" % self.l0_root,
            "exec chroot %s sh -c %s" % (self.l0_root, _quote(
                "qemu-img create -q -f qcow2 -b %s/l1.raw -F raw %s/l1.qcow2 && exec %s"
                % (image, inside, " ".join(_quote(a) for a in argv))))])
        t0 = time.monotonic()
        with open(os.path.join(self.run_dir, "qemu.log"), "wb") as log:
            self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                          "sh", "-c", script], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        ready = os.path.join(self.lab, "ready")
        deadline = t0 + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                raise LabError("L1's QEMU exited with %s:\n%s" % (self.proc.returncode, self._log_tail()))
            if time.monotonic() > deadline:
                raise LabError("L1 did not boot to its command loop within %.0f s:\n%s"
                               % (timeout, self._log_tail()))
            time.sleep(0.2)
        self.timings["L1 boot to ready agent"] = time.monotonic() - t0
        return self

    def run(self, script: str, what: str, timeout: float = 120.0) -> str:
        """Run *script* in L1; its output, or LabError naming *what* and the output's tail."""
        rc, out = self.run_rc(script, what, timeout)
        if rc != 0:
            raise LabError("%s failed in L1 (rc %d):\n%s" % (what, rc, "\n".join(out.splitlines()[-8:])))
        return out

    def run_rc(self, script: str, what: str, timeout: float = 120.0, echo=None) -> tuple:
        """Run *script* in L1: ``(rc, output)``; *echo* gets each output line as it comes."""
        self.seq += 1
        base = os.path.join(self.lab, "cmd", "%03d" % self.seq)
        with open(base + ".tmp", "w") as f:
            f.write(script)
        os.rename(base + ".tmp", base + ".sh")
        deadline = time.monotonic() + timeout
        shown = 0
        while True:
            done = os.path.exists(base + ".rc")
            if echo is not None:
                lines = _read(base + ".out").splitlines(keepends=True)
                complete = [ln for ln in lines if ln.endswith("\n") or done]
                for line in complete[shown:]:
                    echo(line.rstrip("\n"))
                shown = max(shown, len(complete))
            if done:
                break
            if self.proc.poll() is not None:
                raise LabError("L1 stopped during %s:\n%s" % (what, self._log_tail()))
            if time.monotonic() > deadline:
                raise LabError("%s: no answer from L1 within %.0f s" % (what, timeout))
            time.sleep(0.2)
        return int(_read(base + ".rc").strip() or "1"), _read(base + ".out")

    def _log_tail(self) -> str:
        text = "".join(_read(os.path.join(self.run_dir, n)) for n in ("qemu.log", "console.log"))
        return "\n".join(text.splitlines()[-10:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# -- the probe -------------------------------------------------------------

def _timed(timings: dict, name: str, func, *args):
    t0 = time.monotonic()
    out = func(*args)
    timings[name] = time.monotonic() - t0
    return out


def create_vfs(l1: L1) -> dict:
    """Create the VFs, then let igbvf probe them once each PF is up again.

    Linux 6.1's igb enables SR-IOV before it reinitialises the PF (fixed in
    6.4, "igb: Enable SR-IOV after reinit"), so a VF probed at once finds
    the PF in reset and takes a random MAC. Driver autoprobe stays off
    while the VFs appear; the PF is reopened (it then signals reset done to
    its VFs), and the VFs are probed after its carrier is back.
    Returns ``{pf name: {index: (mac, vlan)}}`` as the PF shows them.
    """
    out = l1.run("set -e\nfor m in igb igbvf vfio-pci virtio_net tun bridge veth; do modprobe $m; done\n"
                 "for d in {pfs}; do n=$(ls /sys/bus/pci/devices/$d/net); ip link set $n up; "
                 "echo 0 > /sys/bus/pci/devices/$d/sriov_drivers_autoprobe; "
                 "echo {count} > /sys/bus/pci/devices/$d/sriov_numvfs; done\n"
                 "for d in {pfs}; do n=$(ls /sys/bus/pci/devices/$d/net); ip link set $n down; "
                 "ip link set $n up; for i in $(seq 1 150); do "
                 "[ \"$(cat /sys/class/net/$n/carrier 2>/dev/null)\" = 1 ] && break; sleep 0.2; done; "
                 "[ \"$(cat /sys/class/net/$n/carrier)\" = 1 ] || {{ echo \"$n: no carrier\"; exit 1; }}; "
                 "echo 1 > /sys/bus/pci/devices/$d/sriov_drivers_autoprobe; "
                 "for vf in /sys/bus/pci/devices/$d/virtfn*; do "
                 "basename $(readlink $vf) > /sys/bus/pci/drivers_probe; done; done\n"
                 "sleep 1\nfor d in {pfs}; do n=$(ls /sys/bus/pci/devices/$d/net); echo \"== $n\"; "
                 "ip link show $n; done\n".format(pfs=" ".join(PFS), count=VFS_PER_PF),
                 "creating the VFs")
    return _per_pf(out)


def _per_pf(text: str) -> dict:
    out, name = {}, None
    for chunk in text.split("== ")[1:]:
        name, _, body = chunk.partition("\n")
        out[name.strip()] = parse_vf_lines(body)
    return out


def start_libvirtd(l1: L1) -> None:
    l1.run("mkdir -p /run/libvirt /var/log/libvirt/qemu\n/usr/sbin/libvirtd -d -p /run/libvirt/libvirtd.pid\n"
           "for i in $(seq 1 120); do virsh -c qemu:///system version >/dev/null 2>&1 && exit 0; "
           "sleep 0.5; done\nexit 1\n", "starting libvirtd in L1", 90)


def _caches(timings: dict) -> tuple:
    """Build or reuse L0's QEMU prefix and L1's image, timed (saying hit or build)."""
    cache = cache_dir()
    l0 = _timed(timings, "L0 QEMU >= 8 prefix (cache %s)" % ("hit" if os.path.isdir(
        os.path.join(cache, "l0-" + l0_key())) else "build"), ensure_l0, cache)
    image = _timed(timings, "L1 image (cache %s)" % ("hit" if os.path.isdir(
        os.path.join(cache, "l1-" + l1_key())) else "build"), ensure_l1, cache)
    return l0, image


def probe(keep: bool = False, say=print) -> bool:
    """Build or reuse the cache, boot L1, run the hostdev path on a real VF; True if every check held."""
    timings = {}
    l0, image = _caches(timings)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    l1 = L1(l0, image, src)
    checks = []
    try:
        l1.start()
        timings.update(l1.timings)
        before = _timed(timings, "VFs created, probed once the PF is up again", create_vfs, l1)
        _timed(timings, "libvirtd in L1 ready", start_libvirtd, l1)
        out = _timed(timings, "hostdev path in L1 (sriov_lab.realvf_l1)", l1.run,
                     "cd /tmp && PYTHONPATH=/src python3 -m sriov_lab.realvf_l1", "the hostdev probe", 300)
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        if not keep:
            l1.stop()
    say("real-VF probe: PFs and VFs in L1: %s" % {pf: sorted(vfs) for pf, vfs in before.items()})
    for name, ok, detail in _checks(result):
        checks.append(ok)
        say("  %-4s %s%s" % ("ok" if ok else "FAIL", name, (": " + detail) if detail else ""))
    say("timings:")
    for name, seconds in timings.items():
        say("  %-52s %7.1f s" % (name, seconds))
    return all(checks)


def _checks(r: dict) -> list:
    """``[(what, ok, detail)]`` from realvf_l1's report."""
    vf, want = r["vf"], (r["mac"], r["vlan"])
    return [
        ("libvirt's nodedev tree lists the real VFs as NIC VFs (class 0x02)", len(r["inventory"]) ==
         len(PFS) * VFS_PER_PF, ", ".join(r["inventory"])),
        ("the plug bound %s to vfio-pci" % vf["address"], r["driver_plugged"] == "vfio-pci",
         r["driver_plugged"]),
        ("the PF shows vf %d with the vNIC's MAC and VLAN after the plug (ip link)" % vf["index"],
         tuple(r["ip_link_plugged"]) == want, "%s vlan %s" % tuple(r["ip_link_plugged"])),
        ("sriov_host.netlink (pyroute2) reads the same", tuple(r["netlink_plugged"] or ()) == want,
         str(r["netlink_plugged"])),
        ("after the release the VF is back on igbvf", r["driver_released"] == "igbvf",
         r["driver_released"]),
        ("igbvf on every VF took the MAC its PF holds for it (the VF mailbox works)",
         bool(r["igbvf_before"]) and all(mine == pfs for _a, mine, pfs in r["igbvf_before"]),
         ", ".join("%s %s/%s" % tuple(x) for x in r["igbvf_before"])),
        ("after the release igbvf again holds the MAC the PF shows for vf %d" % vf["index"],
         r["igbvf_released"][0] == r["igbvf_released"][1], "%s / %s" % tuple(r["igbvf_released"])),
        ("after the release the PF shows vf %d without the vNIC's VLAN" % vf["index"],
         r["ip_link_released"][1] is None and r["ip_link_released"][0] != r["mac"],
         "%s vlan %s" % tuple(r["ip_link_released"])),
    ]


# -- the demo on real VFs ---------------------------------------------------

def pf_names() -> list:
    """Inside L1: the PFs' netdev names, one per lab host."""
    names = []
    for address in PFS:
        found = os.listdir("/sys/bus/pci/devices/%s/net" % address)
        if not found:
            raise LabError("PF %s has no netdev in L1" % address)
        names.append(found[0])
    return names


def wire_name() -> str:
    """Inside L1: the netdev name of L1's NIC on the PFs' hub (:data:`WIRE_MAC`)."""
    for name in os.listdir("/sys/class/net"):
        if _read(os.path.join("/sys/class/net", name, "address")).strip() == WIRE_MAC:
            return name
    raise LabError("L1 has no NIC with MAC %s (the wire to the PFs' hub)" % WIRE_MAC)


def _share_guest(l1: L1, guest) -> str:
    """Put the L2 guest (built on this machine) where L1's lab finds it; L1's SRIOV_LAB_DIR."""
    from .guest import build_stamp

    target = os.path.join(l1.lab, "labdir", "guest")
    os.makedirs(target, exist_ok=True)
    shutil.copy2(guest.kernel, os.path.join(target, "vmlinuz"))
    shutil.copy2(guest.initrd, os.path.join(target, "initrd.img"))
    with open(os.path.join(target, "build-version"), "w") as f:
        f.write(build_stamp())
    return "/lab/labdir"


def demo(scenarios, raw_baseline: bool = False, say=print) -> bool:
    """``sriov-lab demo --real-vf``: boot L1, then run the demo's *scenarios* inside it.

    Inside L1 the ordinary demo runs with ``--in-l1``: two lab hosts, each
    owning one real PF, services with ``[vf] device = hostdev`` and
    ``[inventory] source = libvirt``, an L2 guest with real hostdev vNICs.
    This project and its Python dependencies come from this checkout and
    this interpreter's site-packages, shared read-only.
    """
    import sysconfig

    from .guest import ensure_guest

    timings = {}
    l0, image = _caches(timings)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    guest = _timed(timings, "L2 guest kernel + initramfs", ensure_guest)
    l1 = L1(l0, image, src, deps_dir=sysconfig.get_paths()["purelib"])
    which = "all" if tuple(scenarios) == REAL_VF_SCENARIOS else scenarios[0]
    rc = 1
    try:
        l1.start()
        timings.update(l1.timings)
        vfs = _timed(timings, "VFs created, probed once the PF is up again", create_vfs, l1)
        say("real-VF lab: L1 up; its PFs and VFs: %s" % {pf: sorted(v) for pf, v in vfs.items()})
        labdir = _share_guest(l1, guest)
        # L1 has no pip for the vdsm user's venv: vdsm runs L1's python3 on the same read-only shares.
        script = ("mkdir -p /deps && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro "
                  "deps /deps\ncd /tmp\nexport SRIOV_LAB_DIR=%s PYTHONPATH=/src:/deps "
                  "PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SRIOV_LAB_VDSM_PYTHONPATH=/src:/deps\n"
                  "exec python3 -m sriov_lab.cli demo --real-vf --in-l1 --scenario %s%s 2>&1\n"
                  % (labdir, which, " --raw-baseline" if raw_baseline else ""))
        rc, _out = _timed(timings, "the demo in L1 (%s)" % which, l1.run_rc, script,
                          "the real-VF demo", 900.0 * len(scenarios), lambda line: say("  L1| " + line))
    finally:
        l1.stop()
    say("real-VF lab timings:")
    for name, seconds in timings.items():
        say("  %-52s %7.1f s" % (name, seconds))
    return rc == 0
