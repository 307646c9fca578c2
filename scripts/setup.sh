#!/bin/bash
# Install what the project needs on a fresh Debian/Ubuntu machine (as root)
# and create the virtualenv .venv with the project in it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="libvirt-dev pkg-config gcc python3-dev python3-venv libxml2-dev openssl
  libvirt-daemon-system qemu-system-x86 busybox-static cpio util-linux
  rpm rpmlint iproute2"
# rpm (for rpmbuild) and rpmlint: scripts/rpm-check and tests/packaging
# build the EL9 RPM with Debian's rpmbuild and lint it. iproute2 (ip):
# the lab's wire (bridges, veth pairs, the sender's network namespace).

missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing apt packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Debian's libvirt-daemon-system starts a system libvirtd; the lab runs its
# own isolated instances and never touches that one.

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q -U pip setuptools wheel
.venv/bin/pip install -q -e '.[engine,lab,test]'
