"""Unplug many vNICs in the time of one: 1, 2 and 4 vNICs on q35's native pciehp.

    python benchmarks/bench_unplug.py

Under q35's native PCIe hotplug each detach takes 5-6 s before the guest
lets go of the device. ``sriov_host.unplug`` asks for every detach at
once (virDomainDetachDeviceAlias) and waits for all DEVICE_REMOVED events
under one deadline, so the time for 4 should stay near the time for 1.
One lab host, real libvirtd + QEMU (TCG) with a real guest; the baseline
is the 1-vNIC unplug measured in the same run, and one-at-a-time detaches
of 2 vNICs are shown for contrast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from report import print_rows, row, skipped  # noqa: E402

NAME = "unplug %d vNICs at once (q35 pciehp)"
TIMEOUT = 20.0


def _spec(host, n, guest):
    from sriov_lab import domains

    addrs = host.vf_addresses()[:n]
    vnics = tuple(domains.VnicSpec(mac="52:54:00:7b:00:%02x" % i, vf_address=a)
                  for i, a in enumerate(addrs))
    return domains.DomainSpec(name="bench-unplug-%s" % uuid.uuid4().hex[:6], machine="q35",
                              native_pciehp=True, root_ports=max(4, n + 2), vnics=vnics, guest=guest)


def _unplug(conn, host, n, guest, parallel=True) -> float:
    """Boot a VM with *n* vNICs, wait for its guest, unplug them all; return ms."""
    from lxml import etree

    from sriov_host import devices, domxml, libvirtconn
    from sriov_lab import domains

    spec = _spec(host, n, guest)
    dom = domains.start(conn, spec)
    try:
        domains.wait_ready(host, spec.name, timeout=90)
        root = domxml.parse_domain(libvirtconn.live_xml(dom))
        items = [(a.get("name"), etree.tostring(a.getparent(), encoding="unicode"))
                 for a in root.iterfind("devices/interface/alias")
                 if a.get("name") in {v.alias for v in spec.vnics}]
        if parallel:
            removed, failed = devices.detach_all_and_wait(dom, items, TIMEOUT)
            if failed or len(removed) != n:
                raise RuntimeError("unplug of %d vNICs failed: %s" % (n, failed))
            return max(removed.values())
        t0 = time.monotonic()
        for alias, xml in items:
            devices.detach_and_wait(dom, xml, alias, TIMEOUT)
        return (time.monotonic() - t0) * 1000.0
    finally:
        try:
            dom.destroy()
        except Exception:  # noqa: BLE001 - gone already
            pass


def measure() -> list:
    from sriov_host import config, libvirtconn
    from sriov_lab.fixtures import lab_unavailable_reason
    from sriov_lab.guest import ensure_guest
    from sriov_lab.lab import Lab

    names = [NAME % n for n in (2, 4)] + ["unplug 2 vNICs one at a time (q35 pciehp)"]
    reason = lab_unavailable_reason()
    if reason:
        return [skipped(n, "1 vNIC", "<= 1.5x one", reason) for n in names]
    guest = ensure_guest()
    with tempfile.TemporaryDirectory(prefix="bench-unplug-"), Lab(1) as lab:
        host = lab.hosts[0]
        conn = libvirtconn.open_connection(config.load(host.config_path), use_vdsm=False)
        one = _unplug(conn, host, 1, guest)
        two = _unplug(conn, host, 2, guest)
        four = _unplug(conn, host, 4, guest)
        serial = _unplug(conn, host, 2, guest, parallel=False)
    return [row(names[0], two, "1 vNIC", one, "<= 1.5x one", two <= 1.5 * one),
            row(names[1], four, "1 vNIC", one, "<= 1.5x one", four <= 1.5 * one,
                note="all requested at once (virDomainDetachDeviceAlias), one deadline"),
            row(names[2], serial, "1 vNIC", one, "(contrast)", True,
                note="detach_and_wait per vNIC, as before: the times add up")]


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print_rows(measure())
    return 0


if __name__ == "__main__":
    sys.exit(main())
