"""/metrics, scraped over HTTP as Prometheus does, after real operations on the service.

The service runs as in the other service tests (test-driver host,
mutual TLS); the values are read back with prometheus_client's own
parser, so a wrong name, type or label fails here as it would in a
Prometheus server.
"""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jsonrpc_plugin.metrics import MetricsServer
from jsonrpc_plugin.service import Service
from sriov_host import config
from sriov_host.errors import LibvirtFailure
from sriov_lab.inventory import free_port

from .conftest import client_for, write_config
from .test_migrate import dst, make_source  # noqa: F401 - fixtures of the SRIOV.migrate tests


def scrape(port: int) -> dict:
    """``{(sample name, labels as sorted tuple): value}`` from one scrape."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _metrics_config(tmp_path, pki, **kw) -> tuple:
    path = write_config(tmp_path, pki, **kw)
    port = free_port()
    with open(path, "a") as f:
        f.write("[metrics]\nport = %d\n" % port)
    return config.load(path, required=True), port


@pytest.fixture
def served(tmp_path, pki):
    cfg, port = _metrics_config(tmp_path, pki)
    svc = Service(cfg, port=0).start()
    yield svc, port
    svc.stop()


def _pool(m) -> dict:
    return {state: m[("sriov_vfs", (("state", state),))]
            for state in ("free", "reserved", "in_use", "excluded")}


def test_pool_gauge_should_follow_reservations_made_over_the_wire(served, pki):
    svc, port = served
    client = client_for(svc, pki)
    before = _pool(scrape(port))
    listed = client.call("SRIOV.listVfs", {})
    assert before["free"] == sum(1 for v in listed if v["state"] == "free") > 0
    assert before["in_use"] == sum(1 for v in listed if v["state"] == "in_use") == 1  # a domain's
    vm = str(uuid.uuid4())
    client.call("SRIOV.reserveVfs", {"vmID": vm, "nics": [{"mac": "02:00:00:00:00:01"},
                                                          {"mac": "02:00:00:00:00:02"}]})
    during = _pool(scrape(port))
    assert during == dict(before, free=before["free"] - 2, reserved=2)
    client.call("SRIOV.releaseVfs", {"vmID": vm})
    assert _pool(scrape(port)) == before


def test_expiries_should_count_each_reservation_dropped_at_its_ttl(served, pki):
    svc, port = served
    client = client_for(svc, pki)
    assert scrape(port)[("sriov_reservation_expiries_total", ())] == 0
    for i in range(2):
        client.call("SRIOV.reserveVfs", {"vmID": str(uuid.uuid4()), "ttl": 1,
                                         "nics": [{"mac": "02:00:00:00:01:%02x" % i}]})
    time.sleep(1.2)
    after = scrape(port)
    assert after[("sriov_reservation_expiries_total", ())] == 2
    assert _pool(after)["reserved"] == 0


def test_a_rolled_back_migration_should_be_counted_and_timed(make_source):  # noqa: F811
    src = make_source(outcome="failed")
    server = MetricsServer(src.svc.metrics, "127.0.0.1", 0).start()
    try:
        src.migrate()
        job = src.wait(timeout=15)
        m = scrape(server.port)
    finally:
        server.stop()
    assert job["phase"] == "rolled-back"
    assert m[("sriov_migrations_total", (("outcome", "rolled-back"),))] == 1
    assert ("sriov_migrations_total", (("outcome", "migrated"),)) not in m
    by = (("by", "sriov-migrate"),)
    assert m[("sriov_unplug_seconds_count", by)] == 1
    assert m[("sriov_rollback_seconds_count", by)] == 1
    steps = {s["step"]: s["ms"] / 1000.0 for s in job["steps"]}
    assert m[("sriov_unplug_seconds_sum", by)] == pytest.approx(steps["unplug"], abs=0.002)
    assert m[("sriov_rollback_seconds_sum", by)] == pytest.approx(steps["rollback"], abs=0.002)


def test_a_scrape_while_libvirtd_is_down_should_leave_out_only_the_pool(tmp_path, pki):
    cfg, port = _metrics_config(tmp_path, pki)

    def down():
        raise LibvirtFailure("cannot connect to libvirt: Failed to connect socket")

    svc = Service(cfg, port=0, conn_factory=down, reconcile=False).start()
    try:
        m = scrape(port)
    finally:
        svc.stop()
    assert not any(name == "sriov_vfs" for name, _ in m)
    assert m[("sriov_reservation_expiries_total", ())] == 0

