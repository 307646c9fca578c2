"""sriov-migrationd outlives a libvirtd restart and works again with no manual step.

VDSM's cached libvirt connection SIGTERMs its own process when libvirtd
goes away; the service opens its own connection instead and reconnects
with backoff. A lab of its own (one real libvirtd, the service as its
own process over mutual TLS): kill -9 libvirtd, start it again, and
``reserveVfs`` and the reconciler must answer and act again.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid

import pytest

from jsonrpc_plugin.client import RpcError, RpcUnavailable
from sriov_host import config, domxml, libvirtconn, metadata, rollback
from sriov_lab import domains
from sriov_lab import hosts as hostmod
from sriov_lab.lab import Lab
from sriov_lab.services import LabServices, LabStandIns

pytestmark = pytest.mark.lab


@pytest.fixture
def one_host(lab, tmp_path):
    """A lab of its own (after the session lab is up), with its service."""
    with Lab(1) as fresh, LabServices(fresh, str(tmp_path)) as services:
        yield fresh.hosts[0], services, fresh


def _until(what, call, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (RpcError, RpcUnavailable) as e:
            if time.monotonic() > deadline:
                raise AssertionError("%s: still failing after %.0f s: %s" % (what, timeout, e))
            time.sleep(0.2)


def _vm_left_unplugged(host):
    """A running VM whose record says its vNIC was unplugged a while ago and never re-plugged."""
    conn = libvirtconn.open_connection(config.load(host.config_path), use_vdsm=False)
    vnic = domains.VnicSpec(mac="52:54:00:9e:00:01", vf_address=host.vf_addresses()[0],
                            pf=host.extra["layout"][0].name)
    spec = domains.DomainSpec(name="vm-%s" % uuid.uuid4().hex[:8])
    dom = domains.start(conn, spec)
    record = domains.record_for(dataclasses.replace(spec, vnics=(vnic,)), libvirtconn.host_uuid(conn))
    record = dataclasses.replace(record, phase="unplugged", updated=time.time() - 600,
                                 vnics=tuple(v.with_state(metadata.UNPLUGGED) for v in record.vnics))
    rollback.save_record(dom, record)
    return conn, spec, vnic


def test_service_should_serve_and_reconcile_again_after_libvirtd_restarts(one_host):
    host, services, lab = one_host
    svc = services.services[0]
    client = services.client(0)
    vm = str(uuid.uuid4())
    nics = [{"mac": "02:00:00:00:09:01"}]
    assert client.call("SRIOV.reserveVfs", {"vmID": vm, "nics": nics})["nics"]
    client.call("SRIOV.releaseVfs", {"vmID": vm})

    os.kill(host.pid, signal.SIGKILL)
    host.proc.wait()
    time.sleep(1.0)  # a reconciler pass and a verb meet the dead socket
    with pytest.raises(RpcError):
        client.call("SRIOV.reserveVfs", {"vmID": vm, "nics": nics})
    assert svc.proc.poll() is None, "the service exited when libvirtd went away:\n" + svc.log_tail()

    hostmod.launch(host)
    hostmod.wait_ready(host)
    answer = _until("reserveVfs after the restart",
                    lambda: client.call("SRIOV.reserveVfs", {"vmID": vm, "nics": nics}))
    assert [n["mac"] for n in answer["nics"]] == ["02:00:00:00:09:01"]
    client.call("SRIOV.releaseVfs", {"vmID": vm})

    # VDSM restarts with libvirtd (libvirtconnection's SIGTERM); the re-plug goes through it
    with LabStandIns(lab, hooks_root=os.path.join(lab.root, "hooks")):
        _replugged_by_the_reconciler(host, client, svc)
    assert svc.proc.poll() is None


def _replugged_by_the_reconciler(host, client, svc):
    conn, spec, vnic = _vm_left_unplugged(host)
    try:
        # The record is written after the attach: wait for both, not the attach alone.
        deadline = time.monotonic() + 15
        while True:
            attached = vnic.alias in domxml.attached_keys(domxml.parse_domain(
                conn.lookupByUUIDString(spec.uuid).XMLDesc(0)))
            status = client.call("SRIOV.migrationStatus", {"vmID": spec.uuid})
            if attached and status["phase"] != "unplugged":
                break
            assert time.monotonic() < deadline, "the reconciler did not re-plug:\n" + svc.log_tail()
            time.sleep(0.2)
        assert status["phase"] == "rolled-back" and status["vnics"][0]["state"] == "plugged"
    finally:
        conn.close()
