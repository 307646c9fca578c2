"""``sriov-migrationd``: the per-host reservation service and reconciler.

:class:`Service` wires the config, the sqlite ledger, libvirt, the verbs,
the TLS server and the reconciler; tests build one in-process, the
console script runs one until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Callable, Optional

from sriov_host import config as config_mod
from sriov_host.errors import SriovError
from sriov_host.ledger import Ledger

from . import vdsm_api
from .client import RpcClient
from .evacuate import Drains
from .host import HostContext, LockedLedger
from .metrics import Metrics, MetricsServer
from .migrator import Migrations
from .reconciler import Reconciler
from .server import ServerThread, build_server
from .vdsm_devices import VdsmDevices
from .verbs import Verbs, _job_active

log = logging.getLogger("sriov-migrationd")


def _default_devices():
    from sriov_host import devices

    return devices


def _preload_netlink() -> None:
    """Import pyroute2 at start, off any migration's path.

    ``SRIOV.migrate`` reads the VFs' settings just before the unplug; a
    first import there would lengthen it (140 ms on a host, seconds under TCG).
    """
    try:
        import pyroute2  # noqa: F401
    except ImportError:  # listVfs and the settings then read nothing, as documented
        log.warning("pyroute2 is not importable: VF MAC/VLAN checks and VF settings are off")


class Service:
    """One host's service; ``start()`` binds and serves, ``stop()`` undoes it all."""

    def __init__(self, cfg, insecure: bool = False, conn_factory: Optional[Callable] = None,
                 devices=None, job_active: Callable = _job_active, reconcile: bool = True,
                 port: Optional[int] = None, listen: Optional[str] = None,
                 peer_factory: Optional[Callable] = None, vdsm_factory: Optional[Callable] = None,
                 plain_on_network: bool = False, cpu_topology=None):
        self.cfg = cfg
        self.insecure = insecure
        self._port = port
        self._listen = listen
        self._plain_on_network = plain_on_network
        self.ledger = LockedLedger(Ledger(cfg.ledger_path))
        self.host = HostContext(cfg, self.ledger, conn_factory, cpu_topology=cpu_topology)
        vdsm_factory = vdsm_factory or vdsm_api.connect
        if devices is None:  # plugs go through VDSM, so VDSM keeps the NICs in its books
            devices = VdsmDevices(_default_devices(), vdsm_factory, cfg)
        self.metrics = Metrics(pool=self._pool_counts, expiries=self.ledger.expiries_total)
        self.migrations = Migrations(self.host, devices, peer_factory or self._peer,
                                     vdsm_factory, job_active, self.metrics)
        self.drains = Drains(self.host, self.migrations, peer_factory or self._peer)
        self.verbs = Verbs(self.host, devices, job_active, self.migrations, self.drains)
        self.reconciler = Reconciler(self.host, devices, job_active,
                                     busy=self.migrations.is_driving,
                                     vdsm_migrating=self.migrations.vdsm_migrating,
                                     metrics=self.metrics,
                                     vdsm_status=self.migrations.vdsm_status,
                                     destroy_left=self.migrations.destroy_left) if reconcile else None
        self._server_thread: Optional[ServerThread] = None
        self._metrics_server: Optional[MetricsServer] = None

    def _pool_counts(self) -> dict:
        """The VFs by listVfs state, for /metrics."""
        from sriov_host import vfstate

        rows = vfstate.vf_table(self.host.inventory(), self.ledger.claims(),
                                self.host.domain_refs(), None, None)
        counts = {}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        return counts

    def _peer(self, address: str, port: int):
        """Another host's service, over mutual TLS with this host's certificate."""
        return RpcClient(address, port, cert=self.cfg.cert, key=self.cfg.key, ca=self.cfg.ca,
                         insecure=not self.cfg.tls, timeout=self.cfg.client_timeout)

    @property
    def port(self) -> int:
        return self._server_thread.server.port

    @property
    def address(self) -> str:
        return self._server_thread.server.server_address[0]

    def start(self) -> Service:
        if self.cfg.vf_device == "hostdev":
            _preload_netlink()
        try:
            server = build_server(self.cfg, self.verbs, self.insecure, self._port, self._listen,
                                  self._plain_on_network)
            self._server_thread = ServerThread(server).start()
            if self.cfg.metrics_port:
                self._metrics_server = MetricsServer(self.metrics, self.cfg.metrics_listen,
                                                     self.cfg.metrics_port).start()
        except BaseException:
            if self._server_thread is not None:
                self._server_thread.stop()
                self._server_thread = None
            self.ledger.close()
            raise
        if self.reconciler is not None:
            self.reconciler.start()
        log.info("sriov-migrationd serving %s on %s:%d", "plain HTTP" if server.ssl_context is None
                 else "mutual TLS", self.address, self.port)
        return self

    def stop(self) -> None:
        if self.reconciler is not None:
            self.reconciler.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        if self._server_thread is not None:
            self._server_thread.stop()
            self._server_thread = None
        self.host.close()
        self.ledger.close()
        log.info("sriov-migrationd stopped")

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _parse_args(argv):
    p = argparse.ArgumentParser(prog="sriov-migrationd",
                                description="The per-host SR-IOV migration service: VF reservations, "
                                            "SRIOV.migrate, rollback.",
                                epilog="example: sriov-migrationd -c /etc/vdsm/sriov-migration.conf "
                                       "(systemd runs it as sriov-migrationd.service)")
    p.add_argument("-c", "--config", help="config file (default $SRIOV_MIGRATION_CONF or %s)"
                   % config_mod.DEFAULT_PATH)
    p.add_argument("--insecure", action="store_true",
                   help="plain HTTP, served on 127.0.0.1 only (for tests)")
    p.add_argument("--insecure-listen-on-network", action="store_true",
                   help="with --insecure: serve plain, unencrypted, unauthenticated HTTP on the "
                        "[server] listen / --listen address even if it is not loopback")
    p.add_argument("--listen", help="address to bind (overrides [server] listen)")
    p.add_argument("--port", type=int, help="port (overrides [server] port)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_mod.load(args.config)
        if args.insecure:
            cfg.tls = False
        service = Service(cfg, insecure=args.insecure, port=args.port, listen=args.listen,
                          plain_on_network=args.insecure_listen_on_network).start()
    except SriovError as e:
        print("sriov-migrationd: %s" % e.message, file=sys.stderr)
        return 1
    except OSError as e:
        print("sriov-migrationd: cannot start: %s" % e, file=sys.stderr)
        return 1
    stopping = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d: shutting down", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.wait(1.0):
        pass
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
