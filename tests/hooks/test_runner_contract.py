"""Every hook point through the VDSM-compatible runner and the installed executables.

No daemon is needed: these inputs never reach libvirt (no SR-IOV vNIC,
a refusal, or bad XML), so the runner's rc and stderr rules are the test.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.corpus import read_domain

from sriov_lab.vdsm.hooks import HookRunner
from vdsm_hooks.hook import BEFORE_POINTS, POINTS

VM = "4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11"


@pytest.fixture
def runner(tmp_path, host):
    hooks = tmp_path / "hooks"
    subprocess.run([sys.executable, "-m", "vdsm_hooks.install", "--hooks-dir", str(hooks),
                    "--hooks-only"], check=True, capture_output=True)
    return HookRunner(str(hooks), env={"SRIOV_MIGRATION_CONF": str(host.conf)}, host="h")


@pytest.mark.parametrize("point", POINTS)
def test_runner_should_get_rc0_and_silence_for_a_vm_without_sriov(runner, point):
    run = runner.run(point, read_domain("no_sriov").decode(), VM)
    assert [s.rc for s in run.scripts] == [0]
    assert run.stderr == []


@pytest.mark.parametrize("point", POINTS)
def test_runner_should_see_one_line_and_vdsm_rc_for_malformed_xml(runner, point):
    run = runner.run(point, read_domain("malformed").decode() + "<hostdev", VM)
    assert run.rc == (2 if point in BEFORE_POINTS else 1)
    assert len(run.stderr) == 1 and run.stderr[0].startswith("sriov-migration: vm=%s" % VM)
    assert run.failed == (point in BEFORE_POINTS)


def test_runner_should_stop_the_migration_for_a_non_migratable_vnic(runner):
    run = runner.run("before_vm_migrate_source", read_domain("mixed_migratable").decode(), VM,
                     custom={})
    assert run.failed and run.rc == 2
    assert "56:6f:1a:2b:04:02" in run.stderr[0] and "not migratable" in run.stderr[0]


def test_runner_custom_property_should_reach_the_hook(runner):
    xml = read_domain("one_vf_vlan").decode().replace(
        "<ovirt-vm:sriov_migratable>true</ovirt-vm:sriov_migratable>", "")
    run = runner.run("before_vm_migrate_source", xml, VM, custom={"sriov_migratable": "false"})
    assert run.rc == 2 and "VM custom property sriov_migratable=false" in run.stderr[0]
