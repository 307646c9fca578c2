"""The host configuration file, read once at the edges.

``/etc/vdsm/sriov-migration.conf`` unless ``$SRIOV_MIGRATION_CONF``
names another (so one machine can hold two lab hosts). Unknown sections
or keys are errors: a typo in a production config should not silently
fall back to a default.
"""

from __future__ import annotations

import configparser
import math
import os
from dataclasses import dataclass, field
from typing import Optional

from . import migration_policy
from .errors import ConfigError
from .migration_policy import MigrationPolicy
from .policy import parse_bool

DEFAULT_PATH = "/etc/vdsm/sriov-migration.conf"
# configparser copies [DEFAULT] into every section; we have no use for it,
# so it is an ordinary (unknown, hence refused) section here.
_NO_DEFAULTS = "\0no-defaults"
ENV_VAR = "SRIOV_MIGRATION_CONF"

VDSM_CERT = "/etc/pki/vdsm/certs/vdsmcert.pem"
VDSM_KEY = "/etc/pki/vdsm/keys/vdsmkey.pem"
VDSM_CA = "/etc/pki/vdsm/certs/cacert.pem"

_SCHEMA = {
    "libvirt": {"uri", "username", "password_file"},
    "ledger": {"path"},
    "inventory": {"source"},
    "vf": {"device", "model", "bridge", "announce", "announce_for"},
    "policy": {"migratable_by_default"},
    "timeouts": {"unplug", "plug", "reservation_ttl", "rollback_grace", "reconcile_interval"},
    "server": {"listen", "port", "tls", "cert", "key", "ca", "workers", "max_request_bytes",
               "client_timeout", "handshake_timeout", "max_pending_handshakes_per_peer"},
    "networks": None,  # free-form: NAME = pf1, pf2
    "vdsm": {"client", "address", "port", "migration_timeout", "destroy_source"},
    "metrics": {"listen", "port", "listen_on_network_unencrypted"},
    "migration": {"max_bandwidth", "convergence_schedule", "auto_converge", "compressed",
                  "encrypted", "abort_on_error", "enable_guest_events", "incoming_limit",
                  "outgoing_limit", "stall_timeout"},
    "migration_networks": None,  # free-form: DESTINATION HOST = its migration-network address
}
VDSM_CLIENTS = ("vdsm", "lab")
DESTROY_SOURCE = ("auto", "always", "never")


@dataclass
class Config:
    libvirt_uri: str = "qemu:///system"
    libvirt_username: Optional[str] = None
    libvirt_password_file: Optional[str] = None
    ledger_path: str = "/var/lib/vdsm/sriov-migration/ledger.sqlite"
    inventory_source: str = "libvirt"
    vf_device: str = "hostdev"
    vf_model: str = "virtio"
    vf_bridge: Optional[str] = None  # emulated VFs join this Linux bridge (the lab's data path)
    announce: bool = True  # RARP for each plugged vNIC's MAC, through its PF (or the bridge)
    announce_for: float = 30.0  # a failover vNIC's MAC once a second this long, from its guest's probe
    migratable_by_default: bool = False
    unplug_timeout: float = 30.0  # VDSM's [vars] hotunplug_timeout (lib/vdsm/common/config.py.in)
    plug_timeout: float = 10.0
    reservation_ttl: int = 300
    rollback_grace: float = 45.0  # longer than the unplug and plug waits (_check_timeouts)
    reconcile_interval: float = 5.0
    networks: dict = field(default_factory=dict)
    listen: Optional[str] = None
    port: int = 54325
    tls: bool = True
    cert: str = VDSM_CERT
    key: str = VDSM_KEY
    ca: str = VDSM_CA
    workers: int = 8
    max_request_bytes: int = 1024 * 1024
    client_timeout: float = 10.0
    handshake_timeout: float = 3.0
    max_pending_handshakes_per_peer: int = 128
    vdsm_client: str = "vdsm"
    vdsm_address: str = "localhost"
    vdsm_port: int = 54321
    # after SRIOV.migrate: VM.destroy the source's Down VM? auto: only where no engine manages the host
    destroy_source: str = "auto"
    # the old name of [migration] stall_timeout, still read (old config files carry it)
    migration_timeout: Optional[float] = None
    migration: MigrationPolicy = field(default_factory=MigrationPolicy)
    metrics_listen: str = "127.0.0.1"
    metrics_port: Optional[int] = None  # None: no /metrics endpoint
    metrics_on_network: bool = False
    path: Optional[str] = None

    @property
    def nodedev_xml_path(self) -> Optional[str]:
        if self.inventory_source.startswith("nodedev-xml:"):
            return self.inventory_source[len("nodedev-xml:"):]
        return None

    @property
    def listen_address(self) -> str:
        """Plain HTTP binds to loopback unless told otherwise."""
        if self.listen:
            return self.listen
        return "0.0.0.0" if self.tls else "127.0.0.1"


def config_path(path: Optional[str] = None) -> str:
    return path or os.environ.get(ENV_VAR) or DEFAULT_PATH


def load(path: Optional[str] = None, required: bool = False) -> Config:
    """Read the config; only a missing *default* file means defaults.

    A file named explicitly (argument or ``$SRIOV_MIGRATION_CONF``) must
    exist: running on defaults because of a typo in a path is worse than
    a clear error.
    """
    required = required or path is not None
    path = config_path(path)
    parser = _new_parser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        if required or os.environ.get(ENV_VAR):
            raise ConfigError("config file %s does not exist" % path) from None
        return Config(path=None)
    except OSError as e:
        raise ConfigError("cannot read config file %s: %s" % (path, e.strerror)) from None
    except configparser.Error as e:
        raise ConfigError("config file %s is malformed: %s" % (path, " ".join(str(e).split()))) from None
    return from_parser(parser, path)


def loads(text: str, path: str = "<string>") -> Config:
    parser = _new_parser()
    try:
        parser.read_string(text)
    except configparser.Error as e:
        raise ConfigError("config %s is malformed: %s" % (path, " ".join(str(e).split()))) from None
    return from_parser(parser, path)


def _new_parser() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, default_section=_NO_DEFAULTS)
    parser.optionxform = str  # keep [networks] names as the engine spells them
    return parser


def _vf_bridge(name: Optional[str], device: str, path: str) -> Optional[str]:
    """``[vf] bridge``: a Linux bridge name, and only for emulated VFs (real ones have a PF)."""
    if name is None:
        return None
    if device != "emulated":
        raise ConfigError("%s: [vf] bridge applies only to device = emulated" % path)
    if not 0 < len(name) <= 15 or any(c in name for c in "/ \t:") or name in (".", ".."):
        raise ConfigError("%s: [vf] bridge must be a Linux interface name (1-15 characters, "
                          "no '/', ':' or spaces), got %r" % (path, name))
    return name


def from_parser(parser, path: str) -> Config:
    _check_schema(parser, path)
    cfg = Config(path=path)
    get = _Getter(parser, path)
    cfg.libvirt_uri = get.str("libvirt", "uri", cfg.libvirt_uri)
    cfg.libvirt_username = get.str("libvirt", "username", None)
    cfg.libvirt_password_file = get.str("libvirt", "password_file", None)
    cfg.ledger_path = get.str("ledger", "path", cfg.ledger_path)
    cfg.inventory_source = get.str("inventory", "source", cfg.inventory_source)
    if cfg.inventory_source != "libvirt" and not cfg.nodedev_xml_path:
        raise ConfigError("%s: [inventory] source must be 'libvirt' or 'nodedev-xml:PATH', got %r"
                          % (path, cfg.inventory_source))
    cfg.vf_device = get.choice("vf", "device", cfg.vf_device, ("hostdev", "emulated"))
    cfg.vf_model = get.choice("vf", "model", cfg.vf_model, ("virtio", "e1000e"))
    cfg.vf_bridge = _vf_bridge(get.str("vf", "bridge", None), cfg.vf_device, path)
    cfg.announce = get.bool("vf", "announce", True)
    cfg.announce_for = get.number("vf", "announce_for", cfg.announce_for, upper=3600,
                                  zero=True)
    cfg.migratable_by_default = get.bool("policy", "migratable_by_default", False)
    cfg.unplug_timeout = get.number("timeouts", "unplug", cfg.unplug_timeout)
    cfg.plug_timeout = get.number("timeouts", "plug", cfg.plug_timeout)
    cfg.reservation_ttl = get.number("timeouts", "reservation_ttl", cfg.reservation_ttl, integer=True)
    cfg.rollback_grace = get.number("timeouts", "rollback_grace", cfg.rollback_grace)
    cfg.reconcile_interval = get.number("timeouts", "reconcile_interval", cfg.reconcile_interval)
    _check_timeouts(cfg, path)
    cfg.networks = _networks(parser, path)
    cfg.listen = get.str("server", "listen", None)
    cfg.port = get.number("server", "port", cfg.port, upper=65535, integer=True)
    cfg.tls = get.bool("server", "tls", True)
    cfg.cert = get.str("server", "cert", cfg.cert)
    cfg.key = get.str("server", "key", cfg.key)
    cfg.ca = get.str("server", "ca", cfg.ca)
    cfg.workers = get.number("server", "workers", cfg.workers, upper=256, integer=True)
    cfg.max_request_bytes = get.number("server", "max_request_bytes", cfg.max_request_bytes,
                                       integer=True)
    cfg.client_timeout = get.number("server", "client_timeout", cfg.client_timeout)
    cfg.handshake_timeout = get.number("server", "handshake_timeout", cfg.handshake_timeout,
                                       upper=60)
    cfg.max_pending_handshakes_per_peer = get.number(
        "server", "max_pending_handshakes_per_peer", cfg.max_pending_handshakes_per_peer,
        upper=4096, integer=True)
    cfg.vdsm_client = get.choice("vdsm", "client", cfg.vdsm_client, VDSM_CLIENTS)
    cfg.vdsm_address = get.str("vdsm", "address", cfg.vdsm_address)
    cfg.vdsm_port = get.number("vdsm", "port", cfg.vdsm_port, upper=65535, integer=True)
    cfg.destroy_source = get.choice("vdsm", "destroy_source", cfg.destroy_source, DESTROY_SOURCE)
    cfg.migration_timeout = get.number("vdsm", "migration_timeout", cfg.migration_timeout)
    cfg.migration = migration_policy.parse(get, parser, path, cfg.migration_timeout)
    cfg.metrics_listen = get.str("metrics", "listen", cfg.metrics_listen)
    cfg.metrics_port = get.number("metrics", "port", cfg.metrics_port, upper=65535, integer=True)
    cfg.metrics_on_network = get.bool("metrics", "listen_on_network_unencrypted", False)
    _check_metrics(cfg, path)
    return cfg


def _check_metrics(cfg, path) -> None:
    """/metrics is plain HTTP: loopback only, unless the admin said so in so many words."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(cfg.metrics_listen).is_loopback
    except ValueError:
        loopback = cfg.metrics_listen == "localhost"
    if not loopback and not cfg.metrics_on_network:
        raise ConfigError("%s: [metrics] listen = %s is not a loopback address; /metrics is plain "
                          "HTTP, so set listen_on_network_unencrypted = yes to serve it there"
                          % (path, cfg.metrics_listen))


def _check_timeouts(cfg, path) -> None:
    """The reconciler must not re-plug a vNIC an unplug or plug is still waiting for."""
    for key, value in (("unplug", cfg.unplug_timeout), ("plug", cfg.plug_timeout)):
        if value >= cfg.rollback_grace:
            raise ConfigError("%s: [timeouts] %s (%g s) must be shorter than rollback_grace (%g s)"
                              % (path, key, value, cfg.rollback_grace))


def _check_schema(parser, path):
    for section in parser.sections():
        if section not in _SCHEMA:
            raise ConfigError("%s: unknown section [%s] (known: %s)"
                              % (path, section, ", ".join(sorted(_SCHEMA))))
        keys = _SCHEMA[section]
        if keys is None:
            continue
        for key in parser[section]:
            if key not in keys:
                raise ConfigError("%s: unknown key %r in [%s] (known: %s)"
                                  % (path, key, section, ", ".join(sorted(keys))))


def _networks(parser, path) -> dict:
    if not parser.has_section("networks"):
        return {}
    out = {}
    for name, value in parser["networks"].items():
        pfs = [p.strip() for p in value.split(",") if p.strip()]
        if not pfs:
            raise ConfigError("%s: [networks] %s names no PF" % (path, name))
        out[name] = pfs
    return out


class _Getter:
    def __init__(self, parser, path):
        self.parser = parser
        self.path = path

    def _raw(self, section, key):
        if self.parser.has_option(section, key):
            return self.parser.get(section, key).strip()
        return None

    def str(self, section, key, default):
        raw = self._raw(section, key)
        return raw if raw else default

    def bool(self, section, key, default):
        raw = self._raw(section, key)
        if raw is None:
            return default
        value = parse_bool(raw)
        if value is None:
            raise ConfigError("%s: [%s] %s must be true/false/yes/no/1/0, got %r"
                              % (self.path, section, key, raw))
        return value

    def number(self, section, key, default, upper=None, integer=False, zero=False):
        raw = self._raw(section, key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError("%s: [%s] %s must be a number, got %r"
                              % (self.path, section, key, raw)) from None
        if (not math.isfinite(value) or value < 0 or (value == 0 and not zero)
                or (upper is not None and value > upper)):
            raise ConfigError("%s: [%s] %s out of range: %r" % (self.path, section, key, raw))
        if integer:
            if value != int(value):
                raise ConfigError("%s: [%s] %s must be an integer, got %r"
                                  % (self.path, section, key, raw))
            return int(value)
        return value

    def choice(self, section, key, default, choices):
        raw = self._raw(section, key)
        if raw is None:
            return default
        if raw not in choices:
            raise ConfigError("%s: [%s] %s must be one of %s, got %r"
                              % (self.path, section, key, "/".join(choices), raw))
        return raw
