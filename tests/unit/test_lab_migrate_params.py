"""The lab's VDSM stand-in reads VM.migrate's params as VDSM does (no libvirtd needed).

VDSM: lib/vdsm/virt/migration.py SourceThread (__init__, _regular_run,
_migration_params, _calculate_migration_flags), API.py migrationCreate,
vm.py _startUnderlyingVm.
"""

from __future__ import annotations

import libvirt
import pytest

from sriov_host import config
from sriov_lab.vdsm import migration as mig
from sriov_lab.vdsm.api import VdsmStandIn

VM = "7a9c0e12-3b4d-4e5f-8a6b-7c8d9e0f1a22"


def test_source_options_should_take_vdsms_defaults_for_what_is_not_sent():
    opts = mig.SourceOptions.from_params({"dst": "127.0.0.12:54321", "method": "online"})
    assert (opts.max_bandwidth, opts.dstqemu, opts.incoming_limit, opts.vdsm_flags) == (52, None, None, 0)


def test_source_options_should_read_the_engines_params_with_vdsms_conversions():
    opts = mig.SourceOptions.from_params({
        "dst": "h:54321", "maxBandwidth": 625, "dstqemu": "127.0.0.22", "incomingLimit": 2,
        "abortOnError": "true", "autoConverge": "true", "compressed": "false", "encrypted": False})
    assert (opts.max_bandwidth, opts.dstqemu, opts.incoming_limit) == (625, "127.0.0.22", 2)
    assert opts.vdsm_flags == libvirt.VIR_MIGRATE_ABORT_ON_ERROR | libvirt.VIR_MIGRATE_AUTO_CONVERGE
    tls = mig.SourceOptions.from_params({"encrypted": "false"})  # VDSM takes it as it comes
    assert tls.vdsm_flags == libvirt.VIR_MIGRATE_TLS


def test_migrate_params_should_stream_to_dstqemu_at_the_bandwidth():
    params = mig._migrate_params(49152, None, "127.0.0.22", 52)
    assert params == {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.22:49152",
                      libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.22",
                      libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 52}
    assert mig._migrate_params(49152, None, "fd00::12")[libvirt.VIR_MIGRATE_PARAM_URI] == \
        "tcp://[fd00::12]:49152"
    assert mig._migrate_params(49152)[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://127.0.0.1:49152"


@pytest.mark.parametrize("limit, code", [
    pytest.param(None, mig.MIGRATE_ERR, id="old-source-gets-migrateErr"),
    pytest.param(2, mig.MIGRATE_LIMIT, id="incomingLimit-gets-migrateLimit"),
])
def test_destination_at_its_limit_should_answer_as_vdsm(limit, code):
    dst = VdsmStandIn("host-b", config.Config(), hooks=None, conn=object())
    dst._arriving.update({"11111111-0000-4000-8000-000000000001", "11111111-0000-4000-8000-000000000002"})
    answer = dst.migration_create(VM, "<domain/>", incoming_limit=limit)
    assert answer["status"]["code"] == code


class _Run:
    failed = False


class _Hooks:
    def run(self, point, xml, vm_id, custom):
        return _Run()


class _Dom:
    def XMLDesc(self, flags=0):
        return "<domain><name>vm</name></domain>"


class _Source:
    name, hooks = "host-a", _Hooks()

    def lookup(self, vm_id):
        return _Dom()


class _Destination:
    """At its limit for the first *busy* attempts."""

    name = "host-b"

    def __init__(self, busy):
        self.busy, self.limits = busy, []

    def migration_create(self, vm_id, xml, result, incoming_limit=None):
        self.limits.append(incoming_limit)
        self.busy -= 1
        code = mig.MIGRATE_LIMIT if self.busy >= 0 else mig.DONE
        return {"status": {"code": code, "message": mig.MESSAGES.get(code, "Done")}}

    def destroy(self, vm_id, result):
        pass


def test_source_should_wait_and_retry_at_the_limit_and_keep_code_82_as_vdsm():
    def libvirt_fails():
        raise mig.VdsmError(mig.MIGRATE_ERR, "libvirt: connection reset", mig.MIGRATE)
    dst = _Destination(busy=2)
    opts = mig.SourceOptions(incoming_limit=2, retry_timeout=0.01, before_migrate=libvirt_fails)
    result = mig.MigrationResult(VM, "host-a", "host-b", 0.0)
    mig.run_source(_Source(), dst, VM, result, opts)
    assert dst.limits == [2, 2, 2] and result.limit_waited
    assert "connection reset" in result.error  # the lab keeps the reason...
    assert result.vdsm_status(40)["status"] == {  # ...VDSM reports its 82 (_recover keeps it)
        "code": mig.MIGRATE_LIMIT, "message": "Incoming migration limit exceeded"}


def test_status_after_a_retried_success_should_be_82_with_migration_done():
    result = mig.MigrationResult(VM, "host-a", "host-b", 0.0, limit_waited=True)
    assert result.vdsm_status(0)["status"]["code"] == mig.MIGRATE_LIMIT  # waiting
    result.ok = True
    result.source_done.set()
    assert result.vdsm_status(99) == {"status": {"code": 82, "message": "Migration done"}, "progress": 100}


def test_cancel_while_waiting_at_the_limit_should_end_as_cancelled():
    dst = _Destination(busy=100)
    opts = mig.SourceOptions(incoming_limit=2, retry_timeout=5.0)
    opts.cancel.set()
    result = mig.MigrationResult(VM, "host-a", "host-b", 0.0)
    mig.run_source(_Source(), dst, VM, result, opts)
    assert result.code == mig.MIG_CANCEL_ERR and len(dst.limits) == 1


@pytest.mark.parametrize("dst, dstqemu, port, want", [
    ("127.0.0.12", None, None, ("127.0.0.12", None)),  # VDSM: tcp://dst, libvirt takes the port
    ("127.0.0.12", "127.0.0.22", None, ("127.0.0.22", None)),  # dstqemu first
    ("127.0.0.12", None, 49200, ("127.0.0.1", 49200)),  # a caller's own port: loopback, as before
])
def test_stream_target_should_go_to_the_destinations_own_address_as_vdsm(dst, dstqemu, port, want):
    opts = mig.SourceOptions(dstqemu=dstqemu, port=port)
    assert mig.stream_target(dst, opts) == want
    uri = mig._migrate_params(want[1], None, want[0])[libvirt.VIR_MIGRATE_PARAM_URI]
    assert uri == "tcp://%s" % want[0] + (":%d" % port if port else "")


def test_stream_target_should_keep_loopback_for_a_host_in_its_own_namespace():
    host, port = mig.stream_target("169.254.40.12", mig.SourceOptions())
    assert host == "127.0.0.1" and 0 < port < 65536
