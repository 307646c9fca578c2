"""The firewalld service ``sriov-migration`` read by firewalld's own parser.

``firewall-offline-cmd`` (Debian package ``firewalld``; bash scripts/setup.sh
installs it, daemon masked) runs firewalld's config code with no daemon;
``--system-config`` points it at a scratch copy of /etc/firewalld, so the
machine's own is never written.
"""

from __future__ import annotations

import os
import shutil

import pytest
import rpm_packaging as rp

from vdsm_hooks import install

pytestmark = pytest.mark.skipif(
    shutil.which("firewall-offline-cmd") is None,
    reason="firewall-offline-cmd is not installed (Debian: apt-get install firewalld; "
           "bash scripts/setup.sh installs it with its daemon masked)")

BROKEN = [
    pytest.param("</service>", "", "INVALID_SERVICE", id="unclosed"),
    pytest.param('port="54325"', 'port="543250"', "INVALID_PORT", id="port-out-of-range"),
    pytest.param('protocol="tcp"', 'protocol="tcpx"', "INVALID_PROTOCOL", id="bad-protocol"),
    pytest.param("<port ", "<ports ", "PARSE_ERROR", id="unknown-element"),
]


def _etc_firewalld():
    """path -> (size, mtime_ns) of every file under /etc/firewalld."""
    found = {}
    for d, _, names in os.walk("/etc/firewalld"):
        for n in names:
            st = os.stat(os.path.join(d, n))
            found[os.path.join(d, n)] = (st.st_size, st.st_mtime_ns)
    return found


def _service_file(tmp_path, text=None):
    path = tmp_path / "sriov-migration.xml"
    path.write_text(install.firewalld_service_text() if text is None else text)
    return str(path)


def test_installed_service_should_parse_as_tcp_54325_and_leave_etc_firewalld_alone(tmp_path):
    before = _etc_firewalld()
    r = rp.firewalld_parse(_service_file(tmp_path), str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = [line.strip() for line in r.stdout.splitlines()]
    assert lines[0] == "sriov-migration"
    assert "ports: %d/tcp" % install.SERVICE_PORT in lines
    assert "source-ports:" in lines and "protocols:" in lines, "only the service port: %s" % lines
    assert _etc_firewalld() == before


def test_packaged_data_file_should_parse_without_the_marker(tmp_path):
    data = os.path.join(rp.REPO, "jsonrpc_plugin", "data", "firewalld-sriov-migration.xml")
    with open(data, encoding="utf-8") as f:
        assert install.XML_MARKER not in f.read()
    r = rp.firewalld_parse(data, str(tmp_path))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("old, new, error", BROKEN)
def test_firewalld_parser_should_reject_a_broken_copy(tmp_path, old, new, error):
    """The check can fail: firewalld refuses each of these edits of the shipped file."""
    text = install.firewalld_service_text()
    assert old in text
    r = rp.firewalld_parse(_service_file(tmp_path, text.replace(old, new, 1)), str(tmp_path))
    assert r.returncode != 0 and error in r.stderr, (r.returncode, r.stderr)


def test_zones_with_service_should_read_firewalld_own_listing(tmp_path):
    """The uninstaller finds the zones naming the service in what firewalld prints."""
    listing = rp.zone_listing(_service_file(tmp_path), str(tmp_path), zones=("public", "work"))
    assert install.zones_with_service(listing, rp.FIREWALLD_SERVICE_NAME) == ["public", "work"]
    assert install.zones_with_service(listing, "sriov") == []
