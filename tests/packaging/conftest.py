"""The RPMs are built once per session, and installed once into a scratch root.

With ``$SRIOV_RPM_DIR`` set (scripts/rpm-check does), the tests check the
RPMs already built there instead. Without ``rpmbuild`` (Debian package
``rpm``) and without ``$SRIOV_RPM_DIR``, the RPM tests are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil

import pytest
import rpm_packaging as rp


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "rpm: builds or reads the RPMs (needs rpmbuild; one build per session)")


@pytest.fixture(scope="session")
def rpms(tmp_path_factory):
    """{"main", "engine", "srpm", "tarball"} -> path of what packaging/build-rpm made."""
    given = os.environ.get("SRIOV_RPM_DIR")
    if given:
        return rp.find_rpms(given)
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild is not installed (Debian: apt-get install rpm; bash scripts/setup.sh "
                    "installs it), so the RPM cannot be built here")
    return rp.build(str(tmp_path_factory.mktemp("rpms")))


@pytest.fixture(scope="session")
def rpm_root(rpms, tmp_path_factory):
    """Both RPMs installed with ``rpm -i --root DIR --nodeps --noscripts``."""
    root = str(tmp_path_factory.mktemp("rpmroot"))
    rp.install_root(root, rpms["main"], rpms["engine"])
    return root
