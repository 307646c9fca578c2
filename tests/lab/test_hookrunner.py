"""The lab's hook runner follows VDSM's rules (real temporary scripts, no daemon)."""

from __future__ import annotations

import os

import pytest

from sriov_lab.vdsm import hooks as hr


def _script(tmp_path, point, name, body, mode=0o755):
    d = tmp_path / "hooks" / point
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


@pytest.fixture
def runner(tmp_path):
    return hr.HookRunner(str(tmp_path / "hooks"), env={"SRIOV_MIGRATION_CONF": "/x.conf"},
                         host="host-a")


def test_runner_should_run_executables_in_sorted_order_with_vdsm_env(runner, tmp_path):
    out = tmp_path / "out"
    for name in ("20_b", "10_a", "30_c"):
        _script(tmp_path, hr.BEFORE_SOURCE, name,
                'echo "%s $vmId $SRIOV_MIGRATION_CONF $prop $(cat $_hook_domxml)" >> %s\n'
                % (name, out))
    _script(tmp_path, hr.BEFORE_SOURCE, "15_not_executable", "exit 2\n", mode=0o644)

    run = runner.run(hr.BEFORE_SOURCE, "<domain/>", "vm-1", {"prop": "v"})

    assert run.rc == 0 and not run.failed
    assert out.read_text().splitlines() == [
        "%s vm-1 /x.conf v <domain/>" % n for n in ("10_a", "20_b", "30_c")]


def test_runner_should_drop_stdout_and_keep_stderr_lines(runner, tmp_path):
    _script(tmp_path, hr.AFTER_DEST, "50_x", "echo noise; echo 'one' >&2; echo 'two' >&2\n")
    run = runner.run(hr.AFTER_DEST, "<domain/>", "vm-1")
    assert run.stderr == ["one", "two"]


@pytest.mark.parametrize("point,rc,failed,ran", [
    pytest.param(hr.BEFORE_SOURCE, 1, True, ["10", "20"], id="before-rc1-fails-continues"),
    pytest.param(hr.BEFORE_DEST, 2, True, ["10"], id="before-rc2-fails-stops"),
    pytest.param(hr.AFTER_DEST, 1, False, ["10", "20"], id="after-rc1-logged-only"),
    pytest.param(hr.AFTER_SOURCE, 2, False, ["10"], id="after-rc2-stops-not-failed"),
])
def test_runner_should_apply_vdsm_rc_rules(runner, tmp_path, point, rc, failed, ran):
    out = tmp_path / "out"
    _script(tmp_path, point, "10", "echo 10 >> %s; echo why >&2; exit %d\n" % (out, rc))
    _script(tmp_path, point, "20", "echo 20 >> %s\n" % out)
    run = runner.run(point, "<domain/>", "vm-1")
    assert run.rc == rc and run.failed is failed
    assert out.read_text().split() == ran


def test_runner_should_remove_its_domxml_file(runner, tmp_path):
    out = tmp_path / "path"
    _script(tmp_path, hr.BEFORE_SOURCE, "10", "echo $_hook_domxml > %s\n" % out)
    runner.run(hr.BEFORE_SOURCE, "<domain/>", "vm-1")
    assert not os.path.exists(out.read_text().strip())


def test_runner_should_answer_a_point_without_hooks(runner):
    run = runner.run(hr.AFTER_DESTROY, "<domain/>", "vm-1")
    assert run.rc == 0 and run.scripts == []
