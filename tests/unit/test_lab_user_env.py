"""The environment the lab's vdsm user runs hooks and services with.

No path into a checkout reaches them, as on a host where the project is
installed; only where the lab has no venv (the real-VF lab's L1, no pip)
the read-only shares it names do.
"""

from __future__ import annotations

from sriov_lab.vdsm_user import VDSM_HOME, LabUser

ROOTS_ENV = {"PYTHONPATH": "/work/checkout", "VIRTUAL_ENV": "/work/checkout/.venv",
             "PYTHONHOME": "/opt/py", "PATH": "/usr/bin", "HOME": "/root", "USER": "root"}


def test_venv_user_should_get_no_path_into_the_checkout():
    env = LabUser("vdsm", 36, 36, "/var/cache/sriov-lab/vdsm-venv-x/bin/python3").environ(ROOTS_ENV)

    assert not {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"} & set(env)
    assert (env["HOME"], env["USER"], env["LOGNAME"], env["PATH"]) == (VDSM_HOME, "vdsm", "vdsm",
                                                                       "/usr/bin")


def test_shares_user_should_get_only_its_shares():
    env = LabUser("vdsm", 36, 36, "/usr/bin/python3", pythonpath="/src:/deps").environ(ROOTS_ENV)

    assert env["PYTHONPATH"] == "/src:/deps"
    assert not {"VIRTUAL_ENV", "PYTHONHOME"} & set(env)
    assert env["HOME"] == VDSM_HOME
