#!/bin/bash
# Install what the project needs on a fresh Debian/Ubuntu machine (as root)
# and create the virtualenv .venv with the project in it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="libvirt-dev pkg-config gcc python3-dev python3-venv libxml2-dev openssl
  libvirt-daemon-system qemu-system-x86 busybox-static cpio util-linux
  rpm rpmlint iproute2 iptables firewalld sasl2-bin libsasl2-modules groff-base
  cockpit-ws cockpit-bridge cockpit-system chromium chromium-driver sudo"
# groff-base: the man pages' markup check (tests/packaging/test_man_pages.py).
# iptables: each lab host's firewall, inside the host's own network namespace.
# rpm (for rpmbuild) and rpmlint: scripts/rpm-check and tests/packaging
# build the EL9 RPM with Debian's rpmbuild and lint it. iproute2 (ip):
# the lab's wire (bridges, veth pairs, the sender's network namespace).
# firewalld: only its firewall-offline-cmd, which the tests use to parse the
# shipped firewalld service; its daemon would take over this machine's
# firewall, so it is installed without starting and masked (below).
# sasl2-bin (saslpasswd2) and libsasl2-modules (the SCRAM mechanism): each
# lab libvirtd wants SASL as VDSM configures it (sriov_lab/sasl.py); sasl2-bin's
# saslauthd is not needed, so it is not started.
# cockpit-ws, cockpit-bridge, cockpit-system, chromium, chromium-driver, sudo:
# tests/cockpit log into a cockpit-ws they start themselves on loopback, as a
# user they create (superuser through sudo), with headless Chromium driven by
# Selenium. cockpit.socket must not start here (it would listen on 9090 for
# the whole machine), so cockpit-ws goes in with the daemons held back.
NO_START_PKGS="firewalld sasl2-bin cockpit-ws cockpit-bridge cockpit-system"

# apt-get install "$@" with every daemon kept from starting: policy-rc.d
# answers 101 (action forbidden) to invoke-rc.d and deb-systemd-invoke.
install_no_start() {
  local policy=/usr/sbin/policy-rc.d saved=""
  if [ -e "$policy" ]; then saved=$(mktemp); cp -p "$policy" "$saved"; fi
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  local rc=0
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
  if [ -n "$saved" ]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
  return "$rc"
}

missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing apt packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  plain="" held=""
  for p in $missing; do
    case " $NO_START_PKGS " in *" $p "*) held="$held $p" ;; *) plain="$plain $p" ;; esac
  done
  # shellcheck disable=SC2086
  [ -z "$plain" ] || apt-get install -y -qq --no-install-recommends $plain >/dev/null
  # shellcheck disable=SC2086
  [ -z "$held" ] || install_no_start $held
fi
# Never at boot either (a mask outlives package upgrades); a no-op once done.
if [ -e /lib/systemd/system/firewalld.service ] && [ ! -L /etc/systemd/system/firewalld.service ]; then
  systemctl mask firewalld.service >/dev/null 2>&1 || ln -sf /dev/null /etc/systemd/system/firewalld.service
fi
# Nor cockpit.socket (port 9090 for every address): the tests run their own
# cockpit-ws on loopback.
if [ -e /lib/systemd/system/cockpit.socket ] && [ ! -L /etc/systemd/system/cockpit.socket ]; then
  systemctl mask cockpit.socket >/dev/null 2>&1 || ln -sf /dev/null /etc/systemd/system/cockpit.socket
fi

# Debian's libvirt-daemon-system starts a system libvirtd; the lab runs its
# own isolated instances and never touches that one.

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q -U pip setuptools wheel
.venv/bin/pip install -q -e '.[engine,lab,test]'
