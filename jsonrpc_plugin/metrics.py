"""Prometheus metrics of one host's service: how long NICs are gone, how migrations end.

One registry per service (never the process-global one, so two services
in one test process do not share counters). Durations are observed where
the service itself acts: ``SRIOV.migrate``'s unplug and re-plug, the
reconciler's rollbacks and late plugs, and the per-vNIC plug times the
destination reports back to ``SRIOV.migrate``. The VDSM hooks are short
separate processes and report nothing here. The VF pool and the
reservation expiries are read from the ledger at scrape time, so what the
hooks did is counted too. Served on ``[metrics] listen``:``port`` over
plain HTTP when a port is set.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sriov_host.errors import SriovError

log = logging.getLogger("sriov-migrationd.metrics")

# NIC-absent steps take from tens of ms (emulated) to 5-6 s (q35 pciehp).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
OUTCOMES = ("migrated", "plug-failed", "plug-unconfirmed", "failed", "rolled-back",
            "rollback-failed")
POOL_STATES = ("free", "reserved", "in_use", "excluded")


class Metrics:
    """The service's instruments and its pool/expiry collector."""

    def __init__(self, pool: Optional[Callable[[], dict]] = None,
                 expiries: Optional[Callable[[], int]] = None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.unplug = Histogram("sriov_unplug_seconds", "Time to unplug a VM's SR-IOV vNICs "
                                "before a migration", ["by"], buckets=BUCKETS, registry=self.registry)
        self.plug = Histogram("sriov_plug_seconds", "Time to plug one SR-IOV vNIC on the "
                              "destination", ["by"], buckets=BUCKETS, registry=self.registry)
        self.rollback = Histogram("sriov_rollback_seconds", "Time to re-plug a VM's vNICs on "
                                  "the source after a failed migration", ["by"], buckets=BUCKETS,
                                  registry=self.registry)
        self.migrations = Counter("sriov_migrations", "SRIOV.migrate runs by how they ended",
                                  ["outcome"], registry=self.registry)
        if pool is not None or expiries is not None:
            self.registry.register(_LedgerCollector(pool, expiries))

    def job_ended(self, job) -> None:
        """Count one ``SRIOV.migrate`` job and observe its timed steps."""
        self.migrations.labels(outcome=job.phase).inc()
        for step in job.steps:
            if step.end is None or not step.ok:
                continue
            if step.name == "unplug":
                self.unplug.labels(by="sriov-migrate").observe(step.end - step.start)
            elif step.name == "rollback":
                self.rollback.labels(by="sriov-migrate").observe(step.end - step.start)
        for vnic in job.vnics:
            if vnic.get("state") == "plugged" and vnic.get("plug_ms") is not None:
                self.plug.labels(by="destination-hook").observe(vnic["plug_ms"] / 1000.0)


class _LedgerCollector:
    """The VF pool by state and the reservation expiries, read when scraped."""

    def __init__(self, pool, expiries):
        self.pool, self.expiries = pool, expiries

    def describe(self):
        return []  # read at scrape time only: never call the ledger while registering

    def collect(self):
        if self.pool is not None:
            try:
                counts = self.pool()
            except SriovError as e:  # libvirtd down: no pool figure rather than a wrong one
                log.info("VF pool not exported in this scrape: %s", e.message)
            else:
                family = GaugeMetricFamily("sriov_vfs", "SR-IOV NIC VFs on this host by state",
                                           labels=["state"])
                for state in POOL_STATES:
                    family.add_metric([state], counts.get(state, 0))
                yield family
        if self.expiries is not None:
            family = CounterMetricFamily("sriov_reservation_expiries", "Reservations dropped "
                                         "when their TTL ran out, unused")
            family.add_metric([], self.expiries())
            yield family


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        log.debug("%s %s", self.client_address[0], fmt % args)


class MetricsServer:
    """``/metrics`` over plain HTTP on its own thread; :meth:`stop` ends it."""

    def __init__(self, metrics: Metrics, address: str, port: int):
        app = make_wsgi_app(metrics.registry)
        self._httpd = make_server(address, port, app, WSGIServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sriov-metrics",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self._httpd.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
