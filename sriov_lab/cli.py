"""``sriov-lab``: run the two-host lab by hand.

Subcommands are entries of :data:`COMMANDS`: ``(name, help, add_args,
run)``. To add one (``demo``), write ``add_args(parser)`` and
``run(args) -> int`` in its own module and list it here.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from .errors import LabError


def _add_up(p):
    p.add_argument("--hosts", type=int, default=2, help="how many lab hosts (default 2)")
    p.add_argument("--keep", action="store_true", help="keep the host directories on exit")
    p.add_argument("--vm", action="store_true", help="also boot the guest on the first host")


def _run_up(args) -> int:
    """Start the hosts, print how to reach them, stop them on Ctrl-C/SIGTERM."""
    from . import domains
    from .guest import ensure_guest
    from .lab import Lab

    with Lab(args.hosts, keep=args.keep) as lab:
        print("lab: %d host(s) up in %.1f s under %s" % (len(lab.hosts), lab.start_seconds, lab.root))
        for h in lab.hosts:
            print("%s  uuid=%s\n  uri    %s\n  virsh  LIBVIRT_AUTH_FILE=%s virsh -c '%s'"
                  "\n  config %s\n  log    %s"
                  % (h.name, h.host_uuid, h.uri, h.auth_file, h.uri, h.config_path, h.log_path))
            if h.extra.get("netns"):
                print("  netns  %s, address %s (behind its firewall: ip netns exec %s iptables -S)"
                      % (h.extra["netns"], h.address, h.extra["netns"]))
        if args.vm:
            spec = domains.DomainSpec(name="lab-vm", guest=ensure_guest())
            domains.start(lab.hosts[0].connect(), spec)
            print("lab-vm (%s) on %s; serial log %s"
                  % (spec.uuid, lab.hosts[0].name,
                     lab.hosts[0].outside_path(domains.serial_path(spec.name))))
        print("lab: running; Ctrl-C stops everything", flush=True)
        while True:
            time.sleep(3600)


def _add_down(p):
    pass


def _run_down(args) -> int:
    """Stop daemons and QEMUs that a killed earlier lab left behind."""
    from .hosts import reap_stale
    from .lab import reap_networks
    from .paths import runtime_base

    base = runtime_base()
    stopped = reap_stale(base)
    _reap_wires(base)
    print("lab: stopped %d leftover process(es)%s"
          % (len(stopped), (": " + " ".join(map(str, stopped))) if stopped else ""))
    removed = reap_networks(base)
    print("lab: removed %d leftover network(s)%s"
          % (len(removed), (": " + " ".join(removed)) if removed else ""))
    return 0


def _reap_wires(base: str) -> None:
    """The emulated VFs' wire (links, namespace) of labs whose owner is gone."""
    import glob
    import os

    from . import datapath
    from .procs import owner_alive

    for root in glob.glob(os.path.join(base, "lab-*")):
        if not owner_alive(root):
            datapath.reap(root)


def _add_faults(p):
    from . import faults

    faults.add_args(p)


def _run_faults(args) -> int:
    from . import faults

    return faults.run(args)


def _add_build_guest(p):
    p.add_argument("--force", action="store_true", help="rebuild even if cached")


def _run_build_guest(args) -> int:
    from .guest import ensure_guest

    t0 = time.monotonic()
    image = ensure_guest(force=args.force)
    print("guest: kernel %s\n       initrd %s  (%.1f s)"
          % (image.kernel, image.initrd, time.monotonic() - t0))
    return 0


def _add_demo(p):
    from . import demo

    demo.add_args(p)


def _run_demo(args) -> int:
    from . import demo

    return demo.run(args)


def _add_realvf_probe(p):
    p.add_argument("--keep", action="store_true", help="leave L1 running (and its run directory)")


def _run_realvf_probe(args) -> int:
    from . import realvf

    return 0 if realvf.probe(keep=args.keep) else 1


COMMANDS = [
    ("up", "start lab hosts and keep them running until Ctrl-C", _add_up, _run_up),
    ("down", "stop what a killed earlier lab left running", _add_down, _run_down),
    ("build-guest", "build (or show) the cached lab guest", _add_build_guest, _run_build_guest),
    ("demo", "run a migration scenario through the hooks", _add_demo, _run_demo),
    ("faults", "a fault at every step of SRIOV.migrate, and the invariants after (a table)",
     _add_faults, _run_faults),
    ("realvf-probe", "the hostdev path on real VFs inside a QEMU guest (builds a cache)",
     _add_realvf_probe, _run_realvf_probe),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sriov-lab", description="Run the lab's real libvirtd + QEMU hosts by hand: up, down, demo.",
        epilog="example: sriov-lab demo --scenario all")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_args, run in COMMANDS:
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def _sigterm(_sig, _frame):
    raise KeyboardInterrupt("SIGTERM")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("lab: stopped", file=sys.stderr)
        return 130
    except LabError as e:
        print("sriov-lab: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
