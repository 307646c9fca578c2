"""Lab libvirtds want SASL as VDSM configures it: no or wrong credentials are refused."""

from __future__ import annotations

import os

import libvirt
import pytest

from sriov_host import config, libvirtconn
from sriov_host.errors import LibvirtFailure
from sriov_lab import sasl

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _quiet_libvirt():
    """libvirt's default handler prints each refused connection; we assert on them instead."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _cfg_with(host, tmp_path, username=sasl.USERNAME, password=None):
    """The host's own config, with other credentials."""
    cfg = config.load(host.config_path)
    cfg.libvirt_username = username
    if password is not None:
        path = tmp_path / "libvirt_password"
        path.write_text(password + "\n")
        cfg.libvirt_password_file = str(path)
    return cfg


def test_lab_libvirtd_should_refuse_a_connection_without_credentials(lab_hosts):
    with pytest.raises(libvirt.libvirtError) as info:
        libvirt.open(lab_hosts[0].uri)

    assert info.value.get_error_code() == libvirt.VIR_ERR_AUTH_FAILED


@pytest.mark.parametrize("username, password", [
    pytest.param(sasl.USERNAME, "not-the-password", id="wrong-password"),
    pytest.param("root", None, id="unknown-user"),
    pytest.param(sasl.USERNAME, "", id="empty-password"),
])
def test_lab_libvirtd_should_refuse_wrong_credentials(lab_hosts, tmp_path, username, password):
    cfg = _cfg_with(lab_hosts[0], tmp_path, username, password)

    with pytest.raises(LibvirtFailure) as info:
        libvirtconn.open_connection(cfg, use_vdsm=False)

    assert info.value.data["libvirt_code"] == libvirt.VIR_ERR_AUTH_FAILED
    assert info.value.message.startswith("connecting to libvirt at %s: " % cfg.libvirt_uri)
    assert "\n" not in info.value.message


def test_configured_credentials_should_open_each_host_as_the_hooks_and_service_do(lab_hosts):
    for host in lab_hosts:
        cfg = config.load(host.config_path)
        assert (cfg.libvirt_username, cfg.libvirt_password_file) == (sasl.USERNAME,
                                                                     host.password_file)

        conn = libvirtconn.open_connection(cfg, use_vdsm=False)
        try:
            assert libvirtconn.host_uuid(conn) == host.host_uuid
        finally:
            conn.close()


def test_one_hosts_password_should_not_open_the_other(lab_hosts, tmp_path):
    with open(lab_hosts[1].password_file, encoding="utf-8") as f:
        other = f.readline().rstrip("\n")
    cfg = _cfg_with(lab_hosts[0], tmp_path, password=other)

    with pytest.raises(LibvirtFailure):
        libvirtconn.open_connection(cfg, use_vdsm=False)


def test_each_daemon_should_see_vdsms_sasl_config_and_leave_the_machines_alone(lab_hosts):
    for host in lab_hosts:
        with open(os.path.join(host.root, "etc", "libvirtd.conf"), encoding="utf-8") as f:
            assert 'auth_unix_rw = "sasl"' in f.read().splitlines()
        # /proc/PID/root resolves paths in the daemon's own mount namespace.
        inside = "/proc/%d/root/etc/sasl2/libvirt.conf" % host.pid
        with open(inside, encoding="utf-8") as f:
            assert f.read() == sasl.SASL2_CONF
        assert oct(os.stat(host.password_file).st_mode & 0o777) == "0o600"
    with open("/etc/sasl2/libvirt.conf", encoding="utf-8") as f:
        assert f.read() != sasl.SASL2_CONF  # the daemons see their own, not this machine's
