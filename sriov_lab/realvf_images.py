"""The real-VF lab's cached images: QEMU >= 8 for L0 and L1's disk, kernel and init.

Each build is keyed by its recipe (:func:`recipe_key`), so a changed package
list or init rebuilds, and kept under :func:`cache_dir`. Apart from the
runtime of L1 (:mod:`sriov_lab.realvf`), which only boots what is built here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Optional

from .errors import LabError

ENV_CACHE = "SRIOV_LAB_REALVF_CACHE"
DEBIAN = "http://deb.debian.org/debian"
L0_PACKAGES = ("qemu-system-x86", "qemu-utils")  # from bookworm-backports: QEMU >= 8 has igb
L1_PACKAGES = ("linux-image-amd64", "libvirt-daemon-system", "qemu-system-x86", "python3",
               "python3-libvirt", "python3-lxml", "python3-pyroute2", "python3-jsonrpclib-pelix",
               "python3-prometheus-client", "iproute2", "pciutils", "kmod", "udev", "procps",
               "sasl2-bin", "libsasl2-modules",  # the lab hosts' SASL (sasl.py), as on L0
               "iptables", "firewalld")  # each lab host's firewall (firewall.py); no daemon in L1
L1_DISK = "3G"
L1_MEMORY = "2G"  # all of it below 4 GiB: see qemu_argv
PFS = ("0000:01:00.0", "0000:02:00.0")  # each igb behind its own pcie-root-port
VFS_PER_PF = 2
# L1's own NIC on the PFs' hub: the lab's switch in L1 reaches the VFs
# (through the igb PFs) and the failover standbys (on its bridges) with it.
WIRE_MAC = "52:54:00:12:00:03"

# PID 1 of L1: mounts, the 9p shares, then the commands L0 drops in
# /lab/cmd (N.sh -> N.out, then N.rc once it ended).
L1_INIT = r"""#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
modprobe 9pnet_virtio; modprobe 9p
mkdir -p /lab /src
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 lab /lab
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro src /src
hostname l1
ip link set lo up
echo "ready $(cut -d' ' -f1 /proc/uptime)" > /lab/ready
mkdir -p /lab/cmd
while :; do
  for f in /lab/cmd/*.sh; do
    [ -e "$f" ] || continue
    n=${f%.sh}
    mv "$f" "$n.run"
    sh "$n.run" > "$n.out" 2>&1
    echo $? > "$n.rc.tmp" && mv "$n.rc.tmp" "$n.rc"
  done
  sleep 0.2
done
"""

QEMU_CONF = ('security_driver = "none"\ndynamic_ownership = 0\nnamespaces = [ ]\n'
             'stdio_handler = "file"\nuser = "root"\ngroup = "root"\n')


def cache_dir() -> str:
    return os.environ.get(ENV_CACHE, "/var/cache/sriov-lab/realvf")


def recipe_key(*parts) -> str:
    """A short hash of everything a cached build depends on: a changed recipe rebuilds."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def l0_key() -> str:
    return recipe_key("l0", "bookworm", "bookworm-backports", L0_PACKAGES)


def l1_key() -> str:
    return recipe_key("l1", "bookworm", L1_PACKAGES, L1_INIT, L1_DISK)


def qemu_argv(kernel: str, initrd: str, disk: str, lab_dir: str, src_dir: str, console: str,
              deps_dir: Optional[str] = None) -> list:
    """L1's QEMU command line: q35 + intel-iommu, two igb PFs each on its own root port.

    Two igb on pcie.0 collide ("slot 19 function 0 not available for
    igbvf"); the PFs are joined by an internal hub so their links come up
    and nothing leaves the guest; L1's own virtio NIC on that hub
    (:data:`WIRE_MAC`) is the lab's wire to them. All PCI memory stays below 4 GiB (no RAM
    above it, no 64-bit hole): QEMU 10.0's VF BAR mapping drops the upper
    32 bits of a 64-bit VF BAR (traced: PF's VF BAR0 at 0xc020000000, VF
    mapped at 0x20000000), so a VF placed high reads all zeros, never sees
    its PF's reset-done and igbvf takes a random MAC.
    """
    argv = ["qemu-system-x86_64", "-machine", "q35,kernel-irqchip=split", "-accel", "tcg",
            "-cpu", "max", "-smp", "2", "-m", L1_MEMORY,
            "-global", "q35-pcihost.pci-hole64-size=0",
            "-device", "intel-iommu,intremap=on,caching-mode=on",
            "-kernel", kernel, "-initrd", initrd,
            "-append", "root=/dev/vda rw init=/sbin/sriov-l1-init console=ttyS0 intel_iommu=on "
                       "iommu=pt panic=-1",
            "-drive", "file=%s,if=virtio,format=qcow2" % disk]
    for i, _pf in enumerate(PFS, start=1):
        argv += ["-device", "pcie-root-port,id=rp%d,chassis=%d,slot=%d" % (i, i, i),
                 "-netdev", "hubport,id=n%d,hubid=0" % i,
                 "-device", "igb,bus=rp%d,netdev=n%d,mac=52:54:00:12:00:%02x" % (i, i, i)]
    argv += ["-netdev", "hubport,id=wire,hubid=0",
             "-device", "virtio-net-pci,netdev=wire,mac=%s" % WIRE_MAC]
    argv += ["-virtfs", "local,path=%s,mount_tag=lab,security_model=none" % lab_dir,
             "-virtfs", "local,path=%s,mount_tag=src,security_model=none,readonly=on" % src_dir,
             *(("-virtfs", "local,path=%s,mount_tag=deps,security_model=none,readonly=on" % deps_dir)
               if deps_dir else ()),
             "-nic", "none", "-display", "none", "-serial", "file:%s" % console,
             "-monitor", "none", "-no-reboot"]
    return argv


def _run(argv, what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError("%s did not finish within %.0f s" % (what, timeout)) from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise LabError("%s failed (rc %d):\n%s" % (what, proc.returncode, tail))


def _mmdebstrap() -> str:
    path = shutil.which("mmdebstrap")
    if path is None:
        _run(["apt-get", "install", "-y", "-q", "mmdebstrap"], "apt-get install mmdebstrap", 600)
        path = shutil.which("mmdebstrap") or "mmdebstrap"
    return path


def _build_into(final: str, build) -> str:
    """Build in a temporary sibling, then rename: an interrupted build is never a cache hit."""
    if os.path.isdir(final):
        return final
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(final) + ".tmp-", dir=os.path.dirname(final))
    try:
        build(tmp)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_l0(cache: str) -> str:
    """A chroot holding QEMU >= 8 from bookworm-backports (the host's QEMU 7.2 has no igb)."""
    def build(tmp):
        root = os.path.join(tmp, "root")
        _run([_mmdebstrap(), "--variant=apt", "--include=ca-certificates",
              "--customize-hook=chroot \"$1\" apt-get -y -t bookworm-backports install "
              "--no-install-recommends %s" % " ".join(L0_PACKAGES),
              "bookworm", root, "deb %s bookworm main" % DEBIAN,
              "deb %s bookworm-backports main" % DEBIAN], "mmdebstrap of L0's QEMU", 1200)
        for sub in ("mnt/rv", "mnt/src"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)

    return os.path.join(_build_into(os.path.join(cache, "l0-" + l0_key()), build), "root")


def ensure_l1(cache: str) -> str:
    """L1's disk image, kernel and initrd, in one cached directory."""
    def build(tmp):
        root = os.path.join(tmp, "root")
        _run([_mmdebstrap(), "--variant=apt", "--include=" + ",".join(L1_PACKAGES), "bookworm", root,
              "deb %s bookworm main" % DEBIAN], "mmdebstrap of L1", 1800)
        init = os.path.join(root, "sbin", "sriov-l1-init")
        with open(init, "w") as f:
            f.write(L1_INIT)
        os.chmod(init, 0o755)
        with open(os.path.join(root, "etc", "libvirt", "qemu.conf"), "a") as f:
            f.write(QEMU_CONF)
        boot = os.path.join(root, "boot")
        for prefix, name in (("vmlinuz-", "vmlinuz"), ("initrd.img-", "initrd")):
            found = sorted(n for n in os.listdir(boot) if n.startswith(prefix))
            if not found:
                raise LabError("L1 has no %s* in /boot" % prefix)
            shutil.copy2(os.path.join(boot, found[-1]), os.path.join(tmp, name))
        _run(["mkfs.ext4", "-q", "-F", "-d", root, "-L", "l1root", os.path.join(tmp, "l1.raw"), L1_DISK],
             "mkfs.ext4 of L1's disk", 600)
        shutil.rmtree(root)

    return _build_into(os.path.join(cache, "l1-" + l1_key()), build)


# -- L1 running -----------------------------------------------------------
