"""Fixtures for the hook contract tests: a host config over libvirt's test driver.

The test driver stands in for a host's libvirt (domain scan, host UUID);
it has no hot-plug, so unplug/plug themselves are proven in the lab.
A nodedev-xml inventory stands in for the SR-IOV NICs this machine lacks.
"""

from __future__ import annotations

import os

import pytest
from helpers.hookhost import HostFixture


@pytest.fixture
def host(tmp_path, monkeypatch):
    h = HostFixture(tmp_path)
    monkeypatch.setenv("SRIOV_MIGRATION_CONF", str(h.conf))
    return h


@pytest.fixture
def hook_env(tmp_path):
    """Build the env VDSM gives a hook: the domain XML file and vmId."""

    def make(xml: bytes, vm_id="4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11", **custom):
        path = tmp_path / "domxml.xml"
        path.write_bytes(xml)
        env = {"_hook_domxml": str(path), "vmId": vm_id, "PATH": os.environ.get("PATH", "")}
        env["SRIOV_MIGRATION_CONF"] = os.environ.get("SRIOV_MIGRATION_CONF", "")
        env.update(custom)
        return env, path

    return make
