"""libvirtconn's SASL path: the credential callback and the password file, as VDSM does them."""

from __future__ import annotations

import libvirt
import pytest

from sriov_host import config, libvirtconn
from sriov_host.errors import ConfigError


def _creds(*types):
    """What libvirt hands the callback: [type, prompt, challenge, default, result]."""
    return [[t, "prompt", "", "", None] for t in types]


def test_callback_should_answer_authname_and_passphrase():
    request = libvirtconn.credential_callback("vdsm@ovirt", "s3cret")
    creds = _creds(libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE)

    assert request(creds, None) == 0

    assert [c[4] for c in creds] == ["vdsm@ovirt", "s3cret"]


@pytest.mark.parametrize("other", [
    pytest.param(libvirt.VIR_CRED_USERNAME, id="username"),
    pytest.param(libvirt.VIR_CRED_REALM, id="realm"),
    pytest.param(libvirt.VIR_CRED_EXTERNAL, id="external"),
])
def test_callback_should_refuse_other_credential_types(other):
    request = libvirtconn.credential_callback("vdsm@ovirt", "s3cret")
    creds = _creds(libvirt.VIR_CRED_AUTHNAME, other)

    assert request(creds, None) == -1


@pytest.mark.parametrize("content, expected", [
    pytest.param("s3cret\n", "s3cret", id="trailing-newline"),
    pytest.param("s3cret", "s3cret", id="no-newline"),
    pytest.param(" s3 cret \nsecond line\n", " s3 cret ", id="first-line-only-as-vdsm"),
])
def test_read_password_should_take_the_first_line_without_its_newline(tmp_path, content, expected):
    path = tmp_path / "libvirt_password"
    path.write_text(content)

    assert libvirtconn.read_password(str(path)) == expected


def test_missing_password_file_should_be_one_line_naming_it(tmp_path):
    missing = str(tmp_path / "keys" / "libvirt_password")
    cfg = config.loads("[libvirt]\nuri = test:///default\nusername = vdsm@ovirt\n"
                       "password_file = %s\n" % missing)

    with pytest.raises(ConfigError) as info:
        libvirtconn.open_connection(cfg, use_vdsm=False)

    assert info.value.message == ("cannot read the libvirt password file %s: "
                                  "No such file or directory" % missing)
    assert "\n" not in info.value.message


def test_unreadable_password_file_should_be_one_line_naming_it(tmp_path):
    path = tmp_path / "libvirt_password"
    path.write_bytes(b"\xff\xfe\n")

    with pytest.raises(ConfigError, match="cannot read the libvirt password file %s: not UTF-8"
                       % path):
        libvirtconn.read_password(str(path))
