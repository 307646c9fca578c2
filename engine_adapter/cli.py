"""``sriov-engine``: mark vNIC profiles migratable and run checked migrations.

The password comes from ``$OVIRT_PASSWORD`` or ``--password-file``, never
from the command line, where every user of the host could read it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional

from sriov_host import config as host_config
from sriov_host.policy import parse_bool

from . import report
from .errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_MIGRATABLE, EXIT_OK, AdapterError
from .migrate import MigrateOptions, run_migration
from .model import DEFAULT_SERVICE_PORT, decide_vm, refuse_reason
from .session import EngineOptions

PROG = "sriov-engine"
DEFAULT_WATCH_STATE = "/var/lib/sriov-engine-watch/state.json"


class _RefusePassword(argparse.Action):
    """Say why, without echoing the value back where logs and terminals keep it."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("passwords are not accepted on the command line, where process lists show "
                     "them; use $OVIRT_PASSWORD or --password-file")


def _connection_args(parser, suppress: bool) -> None:
    """Connection flags, accepted before or after the subcommand."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    g = parser.add_argument_group("engine connection")
    g.add_argument("--url", default=d(None), help="engine API URL (default $OVIRT_URL)")
    g.add_argument("--username", default=d(None), help="engine user (default $OVIRT_USERNAME)")
    g.add_argument("--password-file", default=d(None), metavar="FILE",
                   help="read the password from FILE ('-' for stdin); default $OVIRT_PASSWORD")
    g.add_argument("--password", action=_RefusePassword, help=argparse.SUPPRESS)
    g.add_argument("--ca-file", default=d(None), metavar="FILE",
                   help="engine CA certificate (default $OVIRT_CAFILE)")
    g.add_argument("--insecure", action="store_true", default=d(None),
                   help="do not verify the engine's TLS certificate (default $OVIRT_INSECURE)")
    g.add_argument("--timeout", type=float, default=d(None), metavar="S",
                   help="bound on every engine and host-service request, login included "
                        "(default $OVIRT_TIMEOUT or 30)")
    g.add_argument("-v", "--verbose", action="store_true", default=d(False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False,
        description="Mark SR-IOV passthrough vNIC profiles migratable and run checked migrations.",
        epilog="example: sriov-engine --password-file ~/.ovirt-pw check-vm web01; "
               "exit codes: 0 done/migratable, 1 VM not migratable, 2 error, 130 interrupted")
    _connection_args(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _connection_args(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=lambda **kw: argparse.ArgumentParser(allow_abbrev=False, **kw))
    sub.required = True
    p = sub.add_parser("profiles", parents=[common], help="list vNIC profiles")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("set-migratable", parents=[common], help="mark a passthrough profile migratable")
    p.add_argument("profile", metavar="PROFILE", help="name, NETWORK/NAME or id")
    p.add_argument("--off", action="store_true", help="mark it not migratable")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("check-vm", parents=[common], help="may this VM migrate? (exit 0 yes, 1 no)")
    p.add_argument("vm", metavar="VM", help="name or id")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser(
        "migrate", parents=[common], help="check, reserve, migrate and wait",
        description="Check the VM, reserve VFs on the destination's sriov-migrationd, ask the "
                    "engine to migrate and wait. An engine >= 4.1 unplugs and plugs the VFs itself "
                    "and picks the destination's VF from its own bookkeeping, so there the "
                    "reservation is only a pre-check. If the migration fails, the passthrough "
                    "vNICs that were plugged before and are now unplugged are plugged again "
                    "through the engine (plugged=true).")
    p.add_argument("vm", metavar="VM", help="name or id")
    p.add_argument("--host", required=True, help="destination host, name or id")
    _migrate_args(p)
    p = sub.add_parser(
        "watch", parents=[common], help="plug back vNICs engine-driven migrations left unplugged",
        description="Follow the engine's events. When a migration the engine ran fails (or its "
                    "plug on the destination fails), set plugged=true, through the engine, on each "
                    "passthrough vNIC that migration unplugged and that is still unplugged, once "
                    "the VM has been Up and not migrating for the grace period.")
    _watch_args(p)
    return parser


def _watch_args(p) -> None:
    p.add_argument("--state-file", default=DEFAULT_WATCH_STATE, metavar="FILE",
                   help="last event id and open migrations, kept across restarts (%(default)s)")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--poll-interval", type=float, default=5.0, metavar="S",
                   help="seconds between reads of the events (5)")
    p.add_argument("--grace", type=float, default=10.0, metavar="S",
                   help="the VM must be Up and not migrating this long before a plug (10)")
    p.add_argument("--page-size", type=int, default=100, metavar="N",
                   help="events per request; a larger burst is paged through (100)")
    p.add_argument("--rerun-wait", type=float, default=300.0, metavar="S",
                   help="after a rerun (event 128) with no outcome in S seconds, treat the "
                        "migration as failed (300)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus /metrics on PORT (off by default)")
    p.add_argument("--metrics-listen", default="127.0.0.1", metavar="ADDR",
                   help="address of /metrics (%(default)s; plain HTTP)")


def _migrate_args(p) -> None:
    p.add_argument("--ttl", type=int, default=300, metavar="S", help="reservation TTL in seconds (300)")
    p.add_argument("--wait-timeout", type=float, default=600.0, metavar="S",
                   help="give up waiting for the migration after S seconds (600)")
    p.add_argument("--poll-interval", type=float, default=2.0, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--settle", type=float, default=5.0, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--replug-wait", type=float, default=60.0, metavar="S",
                   help="after a failed migration, wait up to S seconds for the VM to settle "
                        "before re-plugging its passthrough vNICs (60)")
    p.add_argument("--service-port", type=int, default=DEFAULT_SERVICE_PORT, metavar="PORT",
                   help="sriov-migrationd port on the destination (%d)" % DEFAULT_SERVICE_PORT)
    p.add_argument("--service-address", default="", metavar="HOST[:PORT]",
                   help="reach the destination's service here instead of the engine's host address")
    p.add_argument("--service-cert", default=host_config.VDSM_CERT, metavar="FILE",
                   help="client certificate for mutual TLS (%(default)s)")
    p.add_argument("--service-key", default=host_config.VDSM_KEY, metavar="FILE",
                   help="its key (%(default)s)")
    p.add_argument("--service-ca", default=host_config.VDSM_CA, metavar="FILE",
                   help="CA of the hosts' certificates (%(default)s)")


def _env_bool(name: str) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return False
    value = parse_bool(raw)
    if value is None:
        raise AdapterError("$%s must be true/false/yes/no/1/0, got %r" % (name, raw))
    return value


def _read_password(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.readline().rstrip("\r\n")
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as e:
        raise AdapterError("cannot read password file %s: %s" % (path, e.strerror)) from None


def engine_options(args) -> EngineOptions:
    """Flags first, then the environment; REQUESTS_CA_BUNDLE plays no part."""
    env = os.environ
    password = _read_password(args.password_file) if args.password_file else env.get("OVIRT_PASSWORD", "")
    timeout = args.timeout if args.timeout is not None else env.get("OVIRT_TIMEOUT", "30")
    try:
        timeout = float(timeout)
    except ValueError:
        raise AdapterError("$OVIRT_TIMEOUT must be a number of seconds, got %r" % timeout) from None
    return EngineOptions(
        url=args.url or env.get("OVIRT_URL", ""),
        username=args.username or env.get("OVIRT_USERNAME", ""),
        password=password,
        ca_file=args.ca_file or env.get("OVIRT_CAFILE") or None,
        insecure=bool(args.insecure) or _env_bool("OVIRT_INSECURE"),
        timeout=timeout,
    )


def _emit(out, data) -> None:
    out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def cmd_profiles(engine, args, out, err) -> int:
    profiles = sorted(engine.profiles(), key=lambda p: (p.network or "", p.name))
    if args.json:
        _emit(out, [report.profile_json(p) for p in profiles])
    else:
        out.write(report.profiles_table(profiles) + "\n")
    return EXIT_OK


def cmd_set_migratable(engine, args, out, err) -> int:
    on = not args.off
    profile = engine.find_profile(args.profile)
    why = refuse_reason(profile, on)
    if why:
        raise AdapterError(why)
    updated = engine.set_migratable(profile, on)
    if updated.migratable is not on:
        raise AdapterError("engine accepted the update of %s but shows migratable=%s"
                           % (profile.name, updated.migratable))
    if args.json:
        _emit(out, report.profile_json(updated))
    else:
        out.write("vNIC profile %s/%s (%s): migratable=%s, sriov_migratable=%s\n" % (
            updated.network or "?", updated.name, updated.id, str(on).lower(),
            "true" if on else "(cleared)"))
    return EXIT_OK


def cmd_check_vm(engine, args, out, err) -> int:
    vm = engine.find_vm(args.vm)
    verdict = decide_vm(engine.vnics(vm), engine.host_devices(vm))
    if args.json:
        _emit(out, report.verdict_json(vm.name, vm.id, verdict))
    else:
        if verdict.vnics:
            out.write(report.verdict_table(verdict) + "\n")
        out.write("VM %s: %s (%s)\n" % (vm.name, "migratable" if verdict.migratable
                                         else "NOT migratable", verdict.reason))
    for line in report.property_warnings(verdict):
        err.write(line + "\n")
    return EXIT_OK if verdict.migratable else EXIT_NOT_MIGRATABLE


def rpc_reserver_factory(args, timeout: float):
    """Build the real reservation client for (address, port)."""
    from .reserve import RpcReserver, ServiceTls

    tls = ServiceTls(cert=args.service_cert, key=args.service_key, ca=args.service_ca)

    def factory(host: str, port: int):
        return RpcReserver(host, port, tls, timeout)
    return factory


def cmd_migrate(engine, args, out, err, reserver_factory=None) -> int:
    opts = MigrateOptions(
        ttl=args.ttl, wait_timeout=args.wait_timeout, poll_interval=args.poll_interval,
        settle=args.settle, replug_wait=args.replug_wait, service_port=args.service_port,
        service_address=args.service_address,
    )
    factory = reserver_factory or rpc_reserver_factory(args, engine.opts.timeout)
    return run_migration(engine, args.vm, args.host, factory, out, err, opts)


def cmd_watch(opts: EngineOptions, args, err) -> int:
    """Run the watcher until SIGTERM/SIGINT, or one pass with ``--once``."""
    import signal
    import threading

    from .engine import Engine
    from .watch import Watcher, WatchOptions
    from .watch_io import start_metrics

    if args.page_size < 1 or args.poll_interval <= 0 or args.grace < 0:
        raise AdapterError("--page-size must be >= 1, --poll-interval > 0 and --grace >= 0")
    stop = threading.Event()
    wopts = WatchOptions(state_file=args.state_file, poll_interval=args.poll_interval,
                         grace=args.grace, page_size=args.page_size, rerun_wait=args.rerun_wait,
                         sleep=stop.wait)
    watcher = Watcher(lambda: Engine(opts), wopts)
    server = None
    if args.metrics_port is not None:
        server = start_metrics(watcher.metrics, args.metrics_listen, args.metrics_port)
    try:
        if args.once:
            return EXIT_OK if watcher.run_once() else EXIT_ERROR
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *a: stop.set())
        watcher.run(stop.is_set)
        return EXIT_OK
    finally:
        watcher.close()
        if server is not None:
            server.stop()


def _setup_logging(verbose: bool, err, level: int = logging.WARNING) -> None:
    """Our logger only, to *err*; the SDK's wire debug (which shows tokens) stays off."""
    logger = logging.getLogger(PROG)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else level)
    logger.propagate = False


COMMANDS = {"profiles": cmd_profiles, "set-migratable": cmd_set_migratable,
            "check-vm": cmd_check_vm, "migrate": cmd_migrate}


def main(argv: Optional[list] = None, reserver_factory=None, out=None, err=None) -> int:
    """Entry point; *reserver_factory(host, port)* replaces the real service client."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, err, logging.INFO if args.command == "watch" else logging.WARNING)
    from .engine import Engine

    try:
        opts = engine_options(args)
        if args.command == "watch":
            return cmd_watch(opts, args, err)
        with Engine(opts) as engine:
            if args.command == "migrate":
                return cmd_migrate(engine, args, out, err, reserver_factory)
            return COMMANDS[args.command](engine, args, out, err)
    except AdapterError as e:
        err.write("%s: %s\n" % (PROG, e.message))
        return e.exit_code
    except KeyboardInterrupt:
        err.write("%s: interrupted\n" % PROG)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
