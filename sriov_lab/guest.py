"""The tiny lab guest: a Debian kernel plus a busybox-static initramfs.

The guest's only job is to prove it is alive and to show its NICs: its
``/init`` loads the NIC drivers, prints a ready line, then a tick line
every half second with a counter and the current NIC list, on the serial
console. Tests read those lines from the serial log file (see
:func:`parse_serial`). It is built once from Debian packages
(``apt-get download``) and cached under ``.lab/guest``.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Optional

from .errors import LabError
from .paths import guest_dir

log = logging.getLogger(__name__)

BUSYBOX = "/bin/busybox"
META_PACKAGE = "linux-image-amd64"
MODULES = ("virtio_pci", "virtio_net", "net_failover", "e1000e", "igbvf")  # igbvf: the real-VF lab
READY = "LAB-GUEST READY"
TICK = "LAB-TICK"
CMDLINE = "console=ttyS0 panic=-1 loglevel=4 rdinit=/init"
GUEST_IP_PARAM = "sriovlab.ip"  # sriovlab.ip=MAC,IP/PREFIX on the kernel command line
BUILD_VERSION = "3"  # bump when the build itself changes; INIT and MODULES are in build_stamp()

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.load); do insmod /lib/modules/$m.ko || echo "LAB-GUEST insmod $m failed"; done
# A silent guest, the worst case for a switch: no IPv6 (its DAD and MLD
# would tell the switch where the MAC is), no gratuitous ARP.
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
labip=""
for a in $(cat /proc/cmdline); do case "$a" in sriovlab.ip=*) labip=${a#sriovlab.ip=};; esac; done
# The address goes on the NIC holding the MAC: a failover pair's master
# (it has lower_* links), or the only NIC with it; never on a VF that
# net_failover has yet to enslave, as it would then answer past the master.
ipup() {
  [ -n "$labip" ] || return 0
  ipmaster=""; iponly=""; ipn=0
  for d in /sys/class/net/*; do
    [ "$(cat $d/address)" = "${labip%%,*}" ] || continue
    ipn=$((ipn+1)); iponly=${d##*/}
    ls $d | grep -q '^lower_' && ipmaster=${d##*/}
  done
  ippick=$ipmaster
  [ -z "$ippick" ] && [ "$ipn" = 1 ] && ippick=$iponly
  [ -n "$ippick" ] || return 0
  ip -4 addr show dev $ippick | grep -q inet && return 0
  ip link set $ippick up && ip addr add ${labip#*,} dev $ippick && echo "LAB-GUEST ip ${labip#*,} on $ippick"
}
nics() {
  out=""
  for d in /sys/class/net/*; do
    n=${d##*/}
    [ "$n" = lo ] && continue
    out="$out$n=$(cat $d/address),"
  done
  echo "${out%,}"
}
links() {
  out=""
  for d in /sys/class/net/*; do
    n=${d##*/}
    [ "$n" = lo ] && continue
    drv=$(basename "$(readlink $d/device/driver 2>/dev/null)" 2>/dev/null)
    master=$(basename "$(readlink $d/master 2>/dev/null)" 2>/dev/null)
    out="$out$n:${drv:--}:${master:--},"
  done
  echo "${out%,}"
}
echo "LAB-GUEST READY kernel=$(uname -r) nics=$(nics)"
i=0
while true; do
  i=$((i+1))
  ipup
  echo "LAB-TICK $i nics=$(nics) links=$(links)"
  sleep 0.5
done
"""


@dataclass(frozen=True)
class GuestImage:
    kernel: str
    initrd: str
    cmdline: str = CMDLINE


def image_paths(cache: Optional[str] = None) -> GuestImage:
    cache = cache or guest_dir()
    return GuestImage(os.path.join(cache, "vmlinuz"), os.path.join(cache, "initrd.img"))


def build_stamp() -> str:
    """What a cached guest was built from: a changed INIT or module list rebuilds it."""
    digest = hashlib.sha256(repr((INIT, MODULES, CMDLINE)).encode()).hexdigest()[:12]
    return "%s-%s" % (BUILD_VERSION, digest)


def ensure_guest(cache: Optional[str] = None, force: bool = False) -> GuestImage:
    """Return the cached guest, building it first if needed."""
    cache = cache or guest_dir()
    image = image_paths(cache)
    stamp = os.path.join(cache, "build-version")
    if not force and _read(stamp) == build_stamp() and all(
            os.path.exists(p) for p in (image.kernel, image.initrd)):
        return image
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="guest-build-", dir=cache) as work:
        _build(work, image)
    with open(stamp, "w") as f:
        f.write(build_stamp())
    return image


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _build(work: str, image: GuestImage) -> None:
    if not os.path.exists(BUSYBOX):
        raise LabError("guest: %s is missing; apt-get install busybox-static" % BUSYBOX)
    deb = _download_kernel(work)
    root = os.path.join(work, "kroot")
    _run(["dpkg-deb", "-x", deb, root])
    kernels = glob.glob(os.path.join(root, "boot", "vmlinuz-*"))
    if not kernels:
        raise LabError("guest: %s holds no /boot/vmlinuz-*" % os.path.basename(deb))
    release = os.path.basename(kernels[0])[len("vmlinuz-"):]
    modules = load_order(os.path.join(root, "lib", "modules", release), MODULES)
    initrd = _initramfs(work, modules)
    shutil.copyfile(kernels[0], image.kernel + ".tmp")
    os.replace(image.kernel + ".tmp", image.kernel)
    shutil.copyfile(initrd, image.initrd + ".tmp")
    os.replace(image.initrd + ".tmp", image.initrd)
    log.info("guest: built kernel %s with %s", release, ", ".join(n for n, _ in modules))


def _run(argv, cwd=None, check=True) -> str:
    try:
        res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise LabError("guest: cannot run %s: %s" % (argv[0], e)) from e
    if check and res.returncode != 0:
        raise LabError("guest: %s failed (rc %d): %s"
                       % (" ".join(argv), res.returncode, res.stderr.strip()[-500:]))
    return res.stdout


def kernel_package() -> str:
    """The versioned kernel package that ``linux-image-amd64`` depends on."""
    for attempt in range(2):
        out = _run(["apt-cache", "depends", META_PACKAGE], check=False)
        m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*)", out)
        if m:
            return m.group(1)
        if attempt == 0:
            _run(["apt-get", "update", "-qq"], check=False)
    raise LabError("guest: apt knows no %s; is an apt source configured?" % META_PACKAGE)


def _download_kernel(work: str) -> str:
    pkg = kernel_package()
    _run(["apt-get", "download", "-q", pkg], cwd=work)
    debs = glob.glob(os.path.join(work, "%s_*.deb" % pkg))
    if not debs:
        raise LabError("guest: apt-get download %s left no .deb" % pkg)
    return debs[0]


def _depends(path: str) -> list:
    """A module's ``depends=`` from its .modinfo strings (no kmod needed)."""
    with open(path, "rb") as f:
        m = re.search(rb"\x00depends=([^\x00]*)\x00", f.read())
    return [d for d in (m.group(1).decode().split(",") if m else []) if d]


def load_order(moddir: str, wanted) -> list:
    """``[(name, path)]`` for *wanted* and their dependencies, deps first."""
    index = {}
    for path in glob.glob(os.path.join(moddir, "kernel", "**", "*.ko"), recursive=True):
        index[os.path.basename(path)[:-3].replace("-", "_")] = path
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            return  # built into the kernel
        for dep in _depends(index[name]):
            visit(dep.replace("-", "_"))
        order.append((name, index[name]))

    for name in wanted:
        visit(name)
    return order


def _initramfs(work: str, modules) -> str:
    tree = os.path.join(work, "initramfs")
    for sub in ("bin", "proc", "sys", "dev", "lib/modules"):
        os.makedirs(os.path.join(tree, sub), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(tree, "bin", "busybox"))
    for name, path in modules:
        shutil.copyfile(path, os.path.join(tree, "lib", "modules", name + ".ko"))
    with open(os.path.join(tree, "modules.load"), "w") as f:
        f.write("\n".join(name for name, _ in modules) + "\n")
    with open(os.path.join(tree, "init"), "w") as f:
        f.write(INIT)
    os.chmod(os.path.join(tree, "init"), 0o755)
    files = sorted(os.path.relpath(os.path.join(d, n), tree)
                   for d, dirs, names in os.walk(tree) for n in dirs + names)
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree, check=True,
                          input="\n".join(files).encode(), capture_output=True).stdout
    out = os.path.join(work, "initrd.img")
    with gzip.open(out, "wb", compresslevel=6) as f:
        f.write(cpio)
    return out


@dataclass(frozen=True)
class Tick:
    counter: int
    nics: dict  # name -> MAC
    links: dict = field(default_factory=dict)  # name -> (driver or "-", master or "-")


def _nics(text: str) -> dict:
    out = {}
    for item in text.split(","):
        if "=" in item:
            name, mac = item.split("=", 1)
            out[name] = mac.lower()
    return out


def _links(text: str) -> dict:
    out = {}
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def parse_serial(text: str) -> tuple:
    """``(ready_line_or_None, [Tick])`` from a serial log's text."""
    ready, ticks = None, []
    for line in io.StringIO(text):
        line = line.strip()
        if line.startswith(READY):
            ready = line
        m = re.match(r"^%s (\d+) nics=(\S*)(?: links=(\S*))?" % TICK, line)
        if m:
            ticks.append(Tick(int(m.group(1)), _nics(m.group(2)), _links(m.group(3) or "")))
    return ready, ticks
