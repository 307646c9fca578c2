"""config: defaults, every key, and one-line errors that name the key."""

from __future__ import annotations

import pytest

from sriov_host import config
from sriov_host.errors import ConfigError

FULL = """
[libvirt]
uri = qemu+unix:///system?socket=/lab/a/run/libvirt/libvirt-sock
username = vdsm@ovirt
password_file = /etc/pki/vdsm/keys/libvirt_password

[ledger]
path = /var/lib/sriov/ledger.sqlite

[inventory]
source = nodedev-xml:/etc/sriov/nodedev.xml

[vf]
device = emulated
model = e1000e
bridge = srbab12cda
announce = no
announce_for = 0

[policy]
migratable_by_default = Yes

[timeouts]
unplug = 7.5
plug = 3
reservation_ttl = 120
rollback_grace = 12
reconcile_interval = 0.5

[networks]
sriov-red = ens1f0, ens1f1
Sriov-Blue = ens2f0

[server]
listen = 192.0.2.10
port = 15432
tls = no
cert = /pki/cert.pem
key = /pki/key.pem
ca = /pki/ca.pem
workers = 4
max_request_bytes = 65536
client_timeout = 2.5
handshake_timeout = 1.5
max_pending_handshakes_per_peer = 16

[vdsm]
client = lab
address = 127.0.0.11
port = 15321
migration_timeout = 90
destroy_source = never

[metrics]
listen = 192.0.2.10
port = 9101
listen_on_network_unencrypted = yes
"""


def test_load_should_give_defaults_without_file(tmp_path, monkeypatch):
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.conf"))
    cfg = config.load()
    assert cfg == config.Config(path=None)
    assert (cfg.libvirt_uri, cfg.inventory_source, cfg.vf_device, cfg.migratable_by_default,
            cfg.reservation_ttl, cfg.port, cfg.tls, cfg.networks) == \
        ("qemu:///system", "libvirt", "hostdev", False, 300, 54325, True, {})
    assert cfg.nodedev_xml_path is None
    assert cfg.listen_address == "0.0.0.0"


def test_load_should_read_every_key(tmp_path, monkeypatch):
    path = tmp_path / "sriov-migration.conf"
    path.write_text(FULL)
    monkeypatch.setenv(config.ENV_VAR, str(path))
    cfg = config.load()
    assert cfg.path == str(path)
    got = {k: v for k, v in vars(cfg).items() if k != "path"}
    assert got == {
        "libvirt_uri": "qemu+unix:///system?socket=/lab/a/run/libvirt/libvirt-sock",
        "libvirt_username": "vdsm@ovirt",
        "libvirt_password_file": "/etc/pki/vdsm/keys/libvirt_password",
        "ledger_path": "/var/lib/sriov/ledger.sqlite",
        "inventory_source": "nodedev-xml:/etc/sriov/nodedev.xml",
        "vf_device": "emulated", "vf_model": "e1000e", "vf_bridge": "srbab12cda", "announce": False,
        "announce_for": 0.0,
        "migratable_by_default": True,
        "unplug_timeout": 7.5, "plug_timeout": 3.0, "reservation_ttl": 120,
        "rollback_grace": 12.0, "reconcile_interval": 0.5,
        "networks": {"sriov-red": ["ens1f0", "ens1f1"], "Sriov-Blue": ["ens2f0"]},
        "listen": "192.0.2.10", "port": 15432, "tls": False,
        "cert": "/pki/cert.pem", "key": "/pki/key.pem", "ca": "/pki/ca.pem",
        "workers": 4, "max_request_bytes": 65536, "client_timeout": 2.5,
        "handshake_timeout": 1.5, "max_pending_handshakes_per_peer": 16,
        "metrics_listen": "192.0.2.10", "metrics_port": 9101, "metrics_on_network": True,
        "vdsm_client": "lab", "vdsm_address": "127.0.0.11", "vdsm_port": 15321,
        "migration_timeout": 90.0, "destroy_source": "never",
        "migration": config.MigrationPolicy(stall_timeout=90.0),  # the old key's new meaning
    }
    assert cfg.nodedev_xml_path == "/etc/sriov/nodedev.xml"
    assert cfg.listen_address == "192.0.2.10"


def test_listen_address_should_default_to_loopback_without_tls():
    assert config.loads("[server]\ntls = false\n").listen_address == "127.0.0.1"


def test_load_should_refuse_missing_file_named_by_env(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "absent.conf"))
    with pytest.raises(ConfigError, match="does not exist"):
        config.load()


@pytest.mark.parametrize("text, fragment", [
    pytest.param("[libvrit]\nuri = x\n", "unknown section [libvrit]", id="unknown-section"),
    pytest.param("[ledger]\npth = /x\n", "unknown key 'pth' in [ledger]", id="unknown-key"),
    pytest.param("[policy]\nmigratable_by_default = maybe\n",
                 "[policy] migratable_by_default must be true/false", id="bad-bool"),
    pytest.param("[server]\ntls = on\n", "[server] tls must be", id="bad-tls"),
    pytest.param("[timeouts]\nunplug = soon\n", "[timeouts] unplug must be a number", id="nan-word"),
    pytest.param("[timeouts]\nplug = 0\n", "[timeouts] plug out of range", id="zero"),
    pytest.param("[timeouts]\nrollback_grace = -1\n", "[timeouts] rollback_grace out of range",
                 id="negative"),
    pytest.param("[timeouts]\nreservation_ttl = nan\n", "[timeouts] reservation_ttl", id="nan"),
    pytest.param("[timeouts]\nreservation_ttl = inf\n", "[timeouts] reservation_ttl", id="inf"),
    pytest.param("[timeouts]\nunplug = inf\n", "[timeouts] unplug", id="inf-timeout"),
    pytest.param("[timeouts]\nunplug = 45\n", "[timeouts] unplug (45 s) must be shorter than "
                 "rollback_grace (45 s)", id="unplug-not-below-grace"),
    pytest.param("[vdsm]\ndestroy_source = maybe\n", "[vdsm] destroy_source must be one of "
                 "auto/always/never", id="bad-destroy-source"),
    pytest.param("[timeouts]\nunplug = 5\nplug = 20\nrollback_grace = 10\n", "[timeouts] plug (20 s) must be "
                 "shorter than rollback_grace", id="plug-above-grace"),
    pytest.param("[vdsm]\nclient = stomp\n", "[vdsm] client must be one of vdsm/lab", id="bad-vdsm-client"),
    pytest.param("[vdsm]\nport = 0\n", "[vdsm] port out of range", id="bad-vdsm-port"),
    pytest.param("[server]\nport = 70000\n", "[server] port out of range", id="port-range"),
    pytest.param("[server]\nport = 80.5\n", "[server] port must be an integer", id="port-fraction"),
    pytest.param("[server]\nworkers = 1000\n", "[server] workers out of range", id="workers"),
    pytest.param("[metrics]\nport = 9101\nlisten = 0.0.0.0\n", "[metrics] listen = 0.0.0.0 is not a "
                 "loopback address", id="metrics-on-network"),
    pytest.param("[metrics]\nport = 70000\n", "[metrics] port out of range", id="metrics-port"),
    pytest.param("[server]\nhandshake_timeout = 0\n", "[server] handshake_timeout out of range",
                 id="handshake-timeout"),
    pytest.param("[server]\nmax_pending_handshakes_per_peer = 2.5\n",
                 "[server] max_pending_handshakes_per_peer must be an integer", id="per-peer-fraction"),
    pytest.param("[vf]\ndevice = sriov\n", "[vf] device must be one of hostdev/emulated",
                 id="bad-device"),
    pytest.param("[vf]\nmodel = rtl8139\n", "[vf] model must be one of", id="bad-model"),
    pytest.param("[vf]\nbridge = br0\n", "[vf] bridge applies only to device = emulated",
                 id="bridge-on-hostdev"),
    pytest.param("[vf]\ndevice = emulated\nbridge = a-bridge-name-too-long\n",
                 "[vf] bridge must be a Linux interface name", id="bridge-too-long"),
    pytest.param("[vf]\ndevice = emulated\nbridge = ../br\n",
                 "[vf] bridge must be a Linux interface name", id="bridge-slash"),
    pytest.param("[vf]\nannounce = sometimes\n", "[vf] announce must be true/false", id="announce"),
    pytest.param("[vf]\nannounce_for = -1\n", "[vf] announce_for out of range", id="announce-for"),
    pytest.param("[vf]\nannounce_for = 1e9\n", "[vf] announce_for out of range",
                 id="announce-for-huge"),
    pytest.param("[timeouts]\nplug = 0\n", "[timeouts] plug out of range", id="plug-zero"),
    pytest.param("[inventory]\nsource = sysfs\n", "[inventory] source must be", id="bad-source"),
    pytest.param("[networks]\nred =  , \n", "[networks] red names no PF", id="network-no-pf"),
    pytest.param("[ledger\npath = x\n", "malformed", id="malformed"),
])
def test_loads_should_refuse_bad_values_with_one_line(text, fragment):
    with pytest.raises(ConfigError) as ei:
        config.loads(text, "/etc/vdsm/sriov-migration.conf")
    assert fragment in ei.value.message
    assert "\n" not in ei.value.message
    assert "/etc/vdsm/sriov-migration.conf" in ei.value.message


def test_loads_should_keep_network_name_case_and_refuse_upper_case_keys():
    assert config.loads("[networks]\nSriov-Blue = ens2f0\n").networks == {"Sriov-Blue": ["ens2f0"]}
    with pytest.raises(ConfigError, match="unknown key 'URI' in \\[libvirt\\]"):
        config.loads("[libvirt]\nURI = qemu:///system\n")


def test_load_should_refuse_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(str(tmp_path), required=True)  # a directory


def test_default_section_should_be_refused_not_copied_into_every_section():
    from sriov_host import config
    from sriov_host.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown section \[DEFAULT\]"):
        config.loads("[DEFAULT]\nport = 1\n[server]\ntls = false\n", "x.conf")


def test_load_should_refuse_a_named_file_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.delenv("SRIOV_MIGRATION_CONF", raising=False)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.conf"))


def test_default_unplug_timeout_should_be_vdsms_hotunplug_timeout():
    """VDSM waits 30 s for a guest to release a NIC (hotunplug_timeout); so do we."""
    from sriov_host import config as config_mod

    cfg = config_mod.Config()
    assert cfg.unplug_timeout == 30.0 and cfg.rollback_grace > cfg.unplug_timeout


MIGRATION = """
[migration]
max_bandwidth = 0
convergence_schedule = post-copy
auto_converge = no
compressed = yes
encrypted = TRUE
abort_on_error = false
enable_guest_events = 0
incoming_limit = 1
outgoing_limit = 3
stall_timeout = 30.5

[migration_networks]
Host2.Example.com = 10.10.0.12
host3 = [fd00::13]
"""


def test_migration_section_should_read_every_key():
    pol = config.loads(MIGRATION).migration
    assert pol == config.MigrationPolicy(
        max_bandwidth=0, convergence_schedule="post-copy", auto_converge=False, compressed=True,
        encrypted=True, abort_on_error=False, enable_guest_events=False, incoming_limit=1,
        outgoing_limit=3, stall_timeout=30.5,
        dstqemu={"host2.example.com": "10.10.0.12", "host3": "fd00::13"})
    assert pol.dstqemu_for("HOST2.example.com") == "10.10.0.12" and pol.dstqemu_for("host4") is None


def test_migration_defaults_should_be_the_engines_minimal_downtime_policy():
    pol = config.Config().migration
    assert (pol.max_bandwidth, pol.convergence_schedule, pol.auto_converge, pol.compressed,
            pol.encrypted, pol.abort_on_error, pol.incoming_limit, pol.outgoing_limit,
            pol.stall_timeout) == (625, "minimal-downtime", True, False, False, True, 2, 2, 240.0)


@pytest.mark.parametrize("text, stall", [
    pytest.param("[vdsm]\nmigration_timeout = 600\n", 600.0, id="old-key-alone"),
    pytest.param("[vdsm]\nmigration_timeout = 600\n[migration]\nstall_timeout = 60\n", 60.0,
                 id="new-key-wins"),
    pytest.param("", 240.0, id="neither"),
])
def test_old_migration_timeout_should_still_load_as_the_stall_timeout(text, stall):
    assert config.loads(text).migration.stall_timeout == stall


@pytest.mark.parametrize("text, fragment", [
    pytest.param("[migration]\nmax_bandwidth = fast\n", "[migration] max_bandwidth must be a number, "
                 "got 'fast'", id="bandwidth-word"),
    pytest.param("[migration]\nmax_bandwidth = -1\n", "[migration] max_bandwidth out of range: '-1'",
                 id="bandwidth-negative"),
    pytest.param("[migration]\nmax_bandwidth = 62.5\n", "[migration] max_bandwidth must be an integer",
                 id="bandwidth-fraction"),
    pytest.param("[migration]\nconvergence_schedule = fastest\n", "[migration] convergence_schedule "
                 "must be one of minimal-downtime/suspend-workload/post-copy/legacy, got 'fastest'",
                 id="schedule"),
    pytest.param("[migration]\nencrypted = maybe\n", "[migration] encrypted must be true/false",
                 id="bool"),
    pytest.param("[migration]\nincoming_limit = 0\n", "[migration] incoming_limit out of range: '0'",
                 id="incoming-zero"),
    pytest.param("[migration]\noutgoing_limit = 1000\n", "[migration] outgoing_limit out of range",
                 id="outgoing-huge"),
    pytest.param("[migration]\nstall_timeout = 0\n", "[migration] stall_timeout out of range",
                 id="stall-zero"),
    pytest.param("[migration]\ntimeout = 60\n", "unknown key 'timeout' in [migration]", id="unknown"),
    pytest.param("[migration_networks]\nhost2 = 10.0.0.1 10.0.0.2\n",
                 "[migration_networks] host2 must be one host name or address", id="two-addresses"),
])
def test_migration_section_should_refuse_bad_values_with_one_line(text, fragment):
    with pytest.raises(ConfigError) as ei:
        config.loads(text, "/etc/vdsm/sriov-migration.conf")
    assert fragment in ei.value.message and "\n" not in ei.value.message
    assert "/etc/vdsm/sriov-migration.conf" in ei.value.message
