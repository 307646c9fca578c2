"""The lab's hooks and services are as unprivileged as on an oVirt host, and that is real.

Hooks run as ``vdsm`` with no capabilities (VDSM's ``_runHooksDir``);
``sriov-migrationd`` runs as its unit's user with exactly the unit's
``AmbientCapabilities``; the ledger, key and password carry the RPM's and
the unit's owners and modes. Each strictness is proven by something
that works as root and fails here.
"""

from __future__ import annotations

import configparser
import glob
import grp
import os
import pwd
import stat
import subprocess

import pytest

from sriov_lab import vdsm_user
from sriov_lab.services import LabServices
from sriov_lab.vdsm import hooks as hr

UNIT_TEXT = """\
[Unit]
Description=x
[Service]
User=vdsm
Group=kvm
Environment=PYTHONUNBUFFERED=1 A=b
# AmbientCapabilities=CAP_SYS_ADMIN
AmbientCapabilities=CAP_NET_ADMIN
AmbientCapabilities=CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW
NoNewPrivileges=yes
StateDirectoryMode=0750
[Install]
WantedBy=multi-user.target
"""


def test_parse_unit_should_read_user_caps_and_state_mode():
    unit = vdsm_user.parse_unit(UNIT_TEXT)
    assert (unit.user, unit.group, unit.ambient) == ("vdsm", "kvm", ("net_admin", "net_raw"))
    assert unit.bounding == ("net_admin", "net_raw") and unit.no_new_privs
    assert unit.environment == {"PYTHONUNBUFFERED": "1", "A": "b"}
    assert unit.state_mode == 0o750
    assert unit.cap_mask == (1 << 12) | (1 << 13)


def test_shipped_unit_should_grant_vdsm_two_network_capabilities():
    unit = vdsm_user.unit_privileges()
    assert (unit.user, unit.group) == ("vdsm", "kvm")
    assert unit.cap_mask == 0x3000


PROBE = """#!/bin/sh
{{ id -u; id -G; grep CapEff /proc/self/status; stat -c %u "$_hook_domxml"; }} > {out}
"""
NETLINK_PROBE = "sriovlabprobe"
# Each works as root and must fail as VDSM's hooks' user.
NEEDS_ROOT = [
    pytest.param('cat "{secret}"\n', id="reads-a-0600-root-file"),
    pytest.param('rmdir "$(mktemp -d -p /var/lib sriov-lab-probe.XXXXXX)"\n',
                 id="writes-under-var-lib"),
    pytest.param("ip link add %s type bridge\n" % NETLINK_PROBE, id="netlink-write"),
    pytest.param('test "$(head -c 256 "{config}" | wc -c)" -gt 64\n',
                 id="reads-pci-config-beyond-64-bytes"),
]


def _script(runner, point, name, body):
    d = os.path.join(runner.hooks_dir, point)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(body)
    os.chmod(path, 0o755)


def _lab_user(lab):
    if lab.user is None:
        pytest.skip("%s=root: the lab runs everything as root" % vdsm_user.ENV_USER)
    return lab.user


@pytest.mark.lab
def test_hook_should_run_as_vdsm_with_no_capabilities(lab, lab_hook_runners, tmp_path):
    user = _lab_user(lab)
    runner = lab_hook_runners[0]
    out = tmp_path / "probe"
    _script(runner, hr.BEFORE_SOURCE, "10_probe", PROBE.format(out=out))

    run = runner.run(hr.BEFORE_SOURCE, "<domain/>", "vm-1")

    assert run.rc == 0, run.stderr
    uid, groups, capeff, domxml_owner = out.read_text().splitlines()
    assert int(uid) == pwd.getpwnam("vdsm").pw_uid == user.uid
    assert grp.getgrnam("kvm").gr_gid in {int(g) for g in groups.split()}
    assert capeff.split() == ["CapEff:", "0000000000000000"]
    assert int(domxml_owner) == user.uid  # VDSM writes the domxml as vdsm


@pytest.fixture
def netlink_probe_gone():
    yield
    subprocess.run(["ip", "link", "del", NETLINK_PROBE], capture_output=True, check=False)


@pytest.mark.lab
@pytest.mark.parametrize("body", NEEDS_ROOT)
def test_hook_that_needs_root_should_fail(lab, lab_hook_runners, tmp_path, body,
                                          netlink_probe_gone):
    _lab_user(lab)
    secret = tmp_path / "secret"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    configs = sorted(glob.glob("/sys/bus/pci/devices/*/config"))
    if "config" in body and not configs:
        pytest.skip("no PCI device here")
    text = "#!/bin/sh\nset -e\n" + body.format(secret=secret, config=configs[0] if configs else "")
    as_vdsm = lab_hook_runners[0]
    as_root = hr.HookRunner(str(tmp_path / "root-hooks"), env=as_vdsm.env, host="root")
    for runner in (as_vdsm, as_root):
        _script(runner, hr.BEFORE_SOURCE, "10_needs_root", text)

    assert as_root.run(hr.BEFORE_SOURCE, "<domain/>", "vm-1").rc == 0  # the probe itself works
    subprocess.run(["ip", "link", "del", NETLINK_PROBE], capture_output=True, check=False)
    run = as_vdsm.run(hr.BEFORE_SOURCE, "<domain/>", "vm-1")
    assert run.failed and run.rc != 0


def _status(pid: int) -> dict:
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@pytest.fixture
def services(lab, tmp_path):
    _lab_user(lab)
    with LabServices(lab, str(tmp_path)) as svc:
        yield svc


@pytest.mark.lab
def test_service_should_run_as_unit_user_with_exactly_unit_capabilities(lab, services):
    unit = vdsm_user.unit_privileges()
    uid, gid = pwd.getpwnam(unit.user).pw_uid, grp.getgrnam(unit.group).gr_gid
    for svc in services.services:
        st = _status(svc.proc.pid)
        assert st["Uid"].split() == [str(uid)] * 4 and st["Gid"].split() == [str(gid)] * 4
        assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == unit.cap_mask == 0x3000
        assert int(st["CapBnd"], 16) == unit.cap_mask and st["NoNewPrivs"] == "1"
        with open("/proc/%d/cmdline" % svc.proc.pid, "rb") as f:
            python = f.read().split(b"\0")[0].decode()
        assert python == lab.user.python  # the installed package, on a python vdsm can run
        assert services.client(svc).call("SRIOV.ping")["host"]


@pytest.mark.lab
def test_ledger_key_and_password_should_carry_rpm_owners_and_modes(lab, services):
    unit = vdsm_user.unit_privileges()
    uid, gid = pwd.getpwnam(unit.user).pw_uid, grp.getgrnam(unit.group).gr_gid
    for svc in services.services:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(svc.host.config_path)
        ledger = parser["ledger"]["path"]
        expected = {
            os.path.dirname(ledger): (uid, gid, unit.state_mode),  # StateDirectory=
            ledger: (uid, gid, 0o644),  # as the service makes it under umask 0022
            parser["server"]["key"]: (uid, gid, 0o440),  # VDSM's vdsmkey.pem
            svc.host.password_file: (uid, gid, 0o600),  # VDSM's libvirt_password
        }
        for path, want in expected.items():
            st = os.stat(path)
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == want, path


@pytest.mark.lab
def test_service_should_fail_to_start_on_a_ledger_under_var_lib(lab, tmp_path):
    user = _lab_user(lab)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(lab.hosts[0].config_path)
    parser["ledger"]["path"] = "/var/lib/sriov-lab-probe/ledger.sqlite"
    conf = tmp_path / "var-lib.conf"
    with open(conf, "w") as f:
        parser.write(f)
    vdsm_user.reach(str(tmp_path))
    conf.chmod(0o644)
    argv = [user.python, "-m", "jsonrpc_plugin.service", "-c", str(conf)]

    proc = subprocess.run(user.service_argv(argv, vdsm_user.unit_privileges()), cwd="/",
                          env=user.environ(dict(os.environ)), capture_output=True, text=True,
                          timeout=60)

    assert proc.returncode == 1, proc.stderr
    assert "Permission denied" in proc.stderr and "/var/lib/sriov-lab-probe" in proc.stderr
    assert not os.path.exists("/var/lib/sriov-lab-probe")
