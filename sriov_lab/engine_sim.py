"""An oVirt engine REST simulator, for tests and the lab demo.

The real engine (Java, PostgreSQL, SSO) cannot run here, so this small
HTTPS server stands in for it. It speaks the engine's XML for the few
endpoints ``sriov-engine`` uses, its SSO token endpoint, and its
``<fault><reason/><detail/></fault>`` errors, over real TLS with a test CA.
It records every request, so tests can check exactly what ovirtsdk4 sent.

Its migrate action runs a pluggable callback in a background thread (the
e2e test hooks a real lab migration in there), and a host record can
carry the address and port of that host's ``sriov-migrationd``.

It behaves like an engine >= 4.1 for passthrough vNICs: on a migrate
action it unplugs each plugged vNIC whose profile is passthrough and
migratable (``plugged`` false in its vNIC list) before the callback runs;
after a success it plugs them on the destination, after a failure it
leaves them unplugged, as the real engine does. ``PUT .../nics/{id}``
with ``<nic><plugged>`` plugs or unplugs one vNIC (refused when the host
has no free VF, see ``set_vf_capacity``). Every step is logged in its
audit log with the engine's codes and served at ``/events`` (see
``engine_sim_events``); ``rerun_hosts`` makes a failed migration rerun.

    sim = EngineSimulator(tmpdir, users={"admin@internal": "pw"}).start()
    net = sim.add_network("sriov-net", vlan=10)
    prof = sim.add_profile("sriov", net, passthrough=True)
    h1, h2 = sim.add_host("host1", "127.0.0.1"), sim.add_host("host2", "127.0.0.1", 54326)
    sim.add_vm("vm1", h1, nics=[{"name": "nic1", "mac": "56:6f:00:00:00:01", "profile": prof}])
    sim.on_migrate(lambda m: lab.migrate(m.vm_name, m.src, m.dst))  # raise or return False: fails
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import uuid
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import parse_qs

from sriov_host.errors import SriovError
from sriov_host.policy import parse_bool

from . import engine_sim_http as web
from . import engine_sim_xml as ex
from .engine_sim_events import EventLog, events_xml
from .engine_sim_http import SSO_TOKEN, Fault, Recorded, fault_reply
from .engine_sim_migrate import MigrateVmCommand, Migration
from .pki import TestCa

API = "/ovirt-engine/api"
SSO_LOGOUT = "/ovirt-engine/services/sso-logout"

log = logging.getLogger(__name__)


@dataclass
class _Rule:
    method: str
    path: re.Pattern
    kind: str  # "fault" | "hang"
    status: int = 400
    reason: str = ""
    detail: str = ""
    times: int = 1


class EngineSimulator(MigrateVmCommand):
    """The engine stand-in; ``start()`` it, seed it, point ``sriov-engine`` at ``url``."""

    def __init__(self, workdir: str, users: Optional[dict] = None, bind: str = "127.0.0.1",
                 port: int = 0, ca: Optional[TestCa] = None):
        self.users = dict(users or {"admin@internal": "secret"})
        self.ca = ca or TestCa(workdir)
        self._bind = (bind, port)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._tokens = set()
        self._rules = []
        self._callback: Optional[Callable] = None
        self._plug_callback: Optional[Callable] = None
        self.networks, self.profiles, self.hosts, self.vms = {}, {}, {}, {}
        self.requests: list = []
        self.migrations: list = []
        self.allowed_device_properties = {"sriov_migratable"}
        self.migrate_seconds = 0.3
        self.event_log = EventLog()
        self.vf_capacity: dict = {}  # host id -> VFs it can give passthrough vNICs (absent: any)
        self.rerun_hosts: list = []  # hosts a failed migration is rerun to, as the scheduler would
        self._server = None

    # ---- lifecycle -------------------------------------------------------
    def start(self) -> EngineSimulator:
        issued = self.ca.issue("engine-sim", sans=(self._bind[0], "localhost"))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(issued.cert, issued.key)
        self._server = web.Server(self._bind, web.handler(self, ctx))
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="engine-sim",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start() if self._server is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        return "https://%s:%d%s" % (self._bind[0], self._server.server_address[1], API)

    @property
    def ca_file(self) -> str:
        return self.ca.cert_path

    # ---- seeding ---------------------------------------------------------
    def add_network(self, name: str, vlan: Optional[int] = None) -> str:
        return self._add(self.networks, {"name": name, "vlan": vlan})

    def add_profile(self, name: str, network: str, passthrough: bool = True,
                    migratable: bool = False, custom: Optional[dict] = None,
                    failover: Optional[str] = None) -> str:
        return self._add(self.profiles, {"name": name, "network": network, "passthrough": passthrough,
                                         "migratable": migratable, "custom": dict(custom or {}),
                                         "failover": failover})

    def add_host(self, name: str, address: str = "127.0.0.1", service_port: Optional[int] = None) -> str:
        return self._add(self.hosts, {"name": name, "address": address, "service_port": service_port,
                                      "status": "up"})

    def set_host_service(self, host: str, address: str, port: Optional[int] = None) -> None:
        """Where this host's sriov-migrationd listens; a port shows as ``address:port``."""
        with self._lock:
            self.hosts[self._id(self.hosts, host)].update(address=address, service_port=port)

    def add_vm(self, name: str, host: Optional[str], nics=(), status: str = "up",
               vm_id: Optional[str] = None) -> str:
        """*nics*: dicts with name, mac, profile (id), optional interface, id (alias ua-<id>)
        and plugged (default true)."""
        vm_nics = []
        for n in nics:
            profile = self.profiles.get(n.get("profile"))
            iface = n.get("interface") or ("pci_passthrough" if profile and profile["passthrough"]
                                           else "virtio")
            vm_nics.append({"id": n.get("id") or str(uuid.uuid4()), "name": n["name"], "mac": n["mac"],
                            "profile": n.get("profile"), "interface": iface,
                            "plugged": n.get("plugged", True)})
        host_id = self._id(self.hosts, host) if host else None
        return self._add(self.vms, {"name": name, "host": host_id, "status": status, "nics": vm_nics},
                         vm_id)

    def on_plug(self, callback: Optional[Callable[[dict, dict, dict], object]]) -> None:
        """Run *callback(vm, nic, host)* for each passthrough vNIC the engine plugs (VDSM's
        hotplugNic on that host); raise to fail the plug."""
        self._plug_callback = callback

    def on_migrate(self, callback: Optional[Callable[[Migration], object]]) -> None:
        """Run *callback(Migration)* for each migrate action; raise or return False to fail it."""
        self._callback = callback

    def inject_fault(self, method: str, path: str, reason: str, detail: str = "",
                     status: int = 400, times: int = 1) -> None:
        """Answer the next *times* requests matching (*method*, regex *path*) with a fault."""
        self._rules.append(_Rule(method, re.compile(path), "fault", status, reason, detail, times))

    def hang(self, method: str, path: str, times: int = 1) -> None:
        """Never answer matching requests (until stop); ``hang("POST", "sso")`` for the login."""
        self._rules.append(_Rule(method, re.compile(path), "hang", times=times))

    def _add(self, table: dict, record: dict, rid: Optional[str] = None) -> str:
        with self._lock:
            rid = rid or str(uuid.uuid4())
            table[rid] = dict(record, id=rid)
            return rid

    @staticmethod
    def _id(table: dict, key: str) -> str:
        if key in table:
            return key
        for rid, rec in table.items():
            if rec["name"] == key:
                return rid
        raise KeyError(key)

    def find(self, method: str, path_re: str) -> list:
        """Recorded requests with *method* whose path matches *path_re*."""
        with self._lock:
            return [r for r in self.requests if r.method == method and re.search(path_re, r.path)]

    def wait_migrations(self, timeout: float = 10.0) -> bool:
        return all(m.done.wait(timeout) for m in list(self.migrations))

    # ---- request handling (called from handler threads) -----------------
    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def _take_rule(self, method: str, path: str) -> Optional[_Rule]:
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and rule.method == method and rule.path.search(path):
                    rule.times -= 1
                    return rule
        return None

    def handle(self, method: str, path: str, query: dict, headers: dict, body: str) -> tuple:
        """Route one request; returns (status, content type, body)."""
        rule = self._take_rule(method, path)
        if rule is not None and rule.kind == "hang":
            self._stop.wait()
            return 503, "text/plain", "simulator stopped"
        if path == SSO_TOKEN and method == "POST":
            return self._sso_token(body)
        if path == SSO_LOGOUT and method == "POST":
            token = parse_qs(body).get("token", [""])[0]
            self._tokens.discard(token)
            return 200, "application/json", "{}"
        if not path.startswith(API):
            return 404, "text/html", "<html>Not Found</html>"
        if headers.get("authorization", "")[len("Bearer "):] not in self._tokens:
            return fault_reply(401, "Unauthorized", "Missing or invalid SSO token")
        if rule is not None:
            return fault_reply(rule.status, rule.reason, rule.detail)
        corr = headers.get("correlation-id") or query.get("correlation_id") or uuid.uuid4().hex[:8]
        with self._lock:
            return self._api(method, path[len(API):].rstrip("/"), query, body, corr)

    def _sso_token(self, body: str) -> tuple:
        form = {k: v[0] for k, v in parse_qs(body).items()}
        user, password = form.get("username", ""), form.get("password", "")
        if form.get("grant_type") != "password" or "ovirt-app-api" not in form.get("scope", ""):
            return 400, "application/json", json.dumps({"error_code": "invalid_request",
                                                        "error": "bad grant_type or scope"})
        if user not in self.users or self.users[user] != password:
            return 400, "application/json", json.dumps({
                "error_code": "access_denied",
                "error": "Cannot authenticate user '%s': The username or password is incorrect.." % user})
        token = uuid.uuid4().hex
        self._tokens.add(token)
        return 200, "application/json", json.dumps({"access_token": token, "scope": form["scope"],
                                                    "token_type": "bearer", "exp": "9999999999999"})

    def _api(self, method: str, path: str, query: dict, body: str, corr: str = "") -> tuple:
        parts = path.strip("/").split("/")
        route = (method, parts[0], len(parts)) + ((parts[2],) if len(parts) >= 3 else ())
        handler = {
            ("GET", "vnicprofiles", 1): lambda: ex.profiles(self, self.profiles.values()),
            ("GET", "vnicprofiles", 2): lambda: ex.profile(self, self._get(self.profiles, parts[1])),
            ("PUT", "vnicprofiles", 2): lambda: self._put_profile(parts[1], body),
            ("GET", "networks", 1): lambda: ex.networks(self.networks.values()),
            ("GET", "networks", 2): lambda: ex.network(self._get(self.networks, parts[1])),
            ("GET", "vms", 1): lambda: ex.vms(_search(self.vms.values(), query)),
            ("GET", "vms", 2): lambda: ex.vm(self._get(self.vms, parts[1])),
            ("GET", "vms", 3, "nics"): lambda: ex.nics(self._get(self.vms, parts[1])),
            ("GET", "vms", 4, "nics"): lambda: ex.nic(*self._get_nic(parts[1], parts[3])),
            ("PUT", "vms", 4, "nics"): lambda: self._put_nic(parts[1], parts[3], body, corr),
            ("POST", "vms", 3, "migrate"): lambda: self._migrate(parts[1], body, corr),
            ("GET", "events", 1): lambda: events_xml(self._events(query)),
            ("POST", "vms", 3, "cancelmigration"): lambda: self._cancel(parts[1]),
            ("GET", "hosts", 1): lambda: ex.hosts(_search(self.hosts.values(), query)),
            ("GET", "hosts", 2): lambda: ex.host(self._get(self.hosts, parts[1])),
        }.get(route)
        if handler is None:
            return fault_reply(404, "Not Found", "the simulator has no %s %s" % (method, path))
        try:
            return 200, "application/xml", handler()
        except Fault as f:
            return fault_reply(f.status, f.reason, f.detail)
        except SriovError as e:  # a malformed request body
            return fault_reply(400, "Bad Request", e.message)

    def _events(self, query: dict) -> list:
        try:
            return self.event_log.query(query)
        except ValueError as e:
            raise Fault(400, "Operation Failed", str(e)) from None

    @staticmethod
    def _get(table: dict, rid: str) -> dict:
        if rid not in table:
            raise Fault(404, "Operation Failed", "Entity not found: %s" % rid)
        return table[rid]

    def _put_profile(self, rid: str, body: str) -> str:
        """The engine's merge: only what the body carries changes."""
        prof = self._get(self.profiles, rid)
        update = ex.parse_profile_update(body)
        if "custom" in update:
            bad = sorted(set(update["custom"]) - self.allowed_device_properties)
            if bad:
                raise Fault(400, "Operation Failed", "[Cannot edit VM network interface profile. "
                             "Invalid custom property: %s]" % ", ".join(bad))
        migratable = update.get("migratable", prof["migratable"])
        if isinstance(migratable, str):
            migratable = parse_bool(migratable)
            if migratable is None:
                raise Fault(400, "Invalid value", "migratable must be a boolean")
        if prof["failover"] and prof["passthrough"] and not migratable:
            raise Fault(409, "Operation Failed", "[Cannot edit VM network interface profile. "
                         "Failover is supported only for migratable passthrough vNIC profiles.]")
        if prof["passthrough"]:  # ignored silently on other profiles, like the engine
            prof["migratable"] = migratable
        if "custom" in update:
            prof["custom"] = update["custom"]
        return ex.profile(self, prof)

    def _get_nic(self, vm_id: str, nic_id: str) -> tuple:
        vm = self._get(self.vms, vm_id)
        for nic in vm["nics"]:
            if nic["id"] == nic_id:
                return vm, nic
        raise Fault(404, "Operation Failed", "Entity not found: %s" % nic_id)

    def _put_nic(self, vm_id: str, nic_id: str, body: str, corr: str = "") -> str:
        """The engine's merge: ``plugged`` hot-plugs or hot-unplugs; not while migrating."""
        vm, nic = self._get_nic(vm_id, nic_id)
        try:
            update = ex.parse_nic_update(body)
        except ValueError as e:
            raise Fault(400, "Bad Request", str(e)) from None
        if "plugged" not in update:
            return ex.nic(vm, nic)
        plugged = parse_bool(update["plugged"])
        if plugged is None:
            raise Fault(400, "Invalid value", "plugged must be a boolean, got %r" % update["plugged"])
        if plugged != nic["plugged"] and vm["status"] == "migrating":
            raise Fault(409, "Operation Failed", "[Cannot %s Network Interface. The VM is "
                         "migrating.]" % ("hot plug" if plugged else "hot unplug"))
        if plugged and not nic["plugged"] and not self._vf_free(vm["host"], nic):
            raise Fault(409, "Operation Failed", "[Cannot hot plug Network Interface. There is no "
                         "available Virtual Function on the host for the vNIC %s.]" % nic["name"])
        if plugged and not nic["plugged"]:
            error = self._host_plug(vm, nic)
            if error is not None:
                raise Fault(400, "Operation Failed", "[Cannot hot plug Network Interface. "
                             "Failed to hot-plug: %s]" % error)
        if plugged != nic["plugged"]:
            nic["plugged"] = plugged
            self._log_nic(1012 if plugged else 1014, vm, nic, corr)
        return ex.nic(vm, nic)

    def _host_plug(self, vm: dict, nic: dict) -> Optional[str]:
        """The host's part of a plug (the ``on_plug`` callback); the error, or None."""
        if self._plug_callback is None or not self._passthrough(nic):
            return None
        try:
            self._plug_callback(vm, nic, self.hosts.get(vm["host"]))
        except Exception as e:  # a failed hot-plug on the host is an answer, not a crash
            return "%s: %s" % (type(e).__name__, e)
        return None

    def _passthrough(self, nic: dict) -> bool:
        profile = self.profiles.get(nic["profile"])
        return bool(profile and profile["passthrough"]) or nic["interface"] == "pci_passthrough"

    def _vf_free(self, host_id: Optional[str], nic: dict) -> bool:
        """ActivateDeactivateVmNic's VF check: the host must have a VF nobody holds."""
        capacity = self.vf_capacity.get(host_id)
        if capacity is None or not self._passthrough(nic):
            return True
        in_use = sum(1 for v in self.vms.values() if v["host"] == host_id and v["status"] != "down"
                     for n in v["nics"] if n["plugged"] and self._passthrough(n))
        return in_use < capacity

    def _log_nic(self, code: int, vm: dict, nic: dict, corr: str) -> None:
        host = self.hosts.get(vm["host"])
        self.event_log.log(code, vm, host, corr, InterfaceName=nic["name"])

    # ---- test controls ---------------------------------------------------
    def set_vf_capacity(self, host: str, n: Optional[int]) -> None:
        """How many passthrough vNICs *host* can hold plugged (None: no limit)."""
        with self._lock:
            self.vf_capacity[self._id(self.hosts, host)] = n

    def stop_vm(self, vm: str) -> None:
        """The VM goes down (VM_DOWN, 61): its vNICs keep their plugged flags."""
        with self._lock:
            rec = self.vms[self._id(self.vms, vm)]
            rec["status"] = "down"
            self.event_log.log(61, rec, self.hosts.get(rec["host"]))
            rec["host"] = None

    def expire_tokens(self) -> None:
        """Every SSO token stops working, as after an engine restart."""
        with self._lock:
            self._tokens.clear()


def _search(records, query: dict) -> list:
    try:
        return ex.search(records, query.get("search", ""))
    except ValueError as e:
        raise Fault(400, "Operation Failed", str(e)) from None
