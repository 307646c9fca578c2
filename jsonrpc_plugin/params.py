"""Strict validation of the SRIOV verbs' params, before anything is touched.

Every verb's params are declared once here, in the documented order, so
a call may pass them as an object (named) or, like VDSM, as a positional
array. A bad value raises InvalidParams (-32602) naming the field, e.g.
``nics[1].vlan``; a call that fails here has changed nothing.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sriov_host import migration_policy, numa, vfsettings
from sriov_host.errors import InvalidParams, clip, shown

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
ALIAS_RE = re.compile(r"^ua-[A-Za-z0-9_-]{1,124}$")
PF_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
NIC_KEYS = ("mac", "alias", "vlan", "network", "pf", "vf_settings")
MAX_NICS = 64
MAX_TTL = 7 * 24 * 3600
_MISSING = object()


def _fail(field: str, why: str, value: Any = _MISSING) -> InvalidParams:
    got = "" if value is _MISSING else ", got %s" % _short(value)
    return InvalidParams("invalid params: %s: %s%s" % (field, why, got), {"field": field})


def _short(value: Any) -> str:
    return shown(value)


def _string(field: str, value, pattern=None, what="a string", max_len=256) -> str:
    if not isinstance(value, str):
        raise _fail(field, "must be %s" % what, value)
    if pattern is not None and not pattern.match(value):
        raise _fail(field, "must be %s" % what, value)
    if not value or len(value) > max_len or any(ord(c) < 32 for c in value):
        raise _fail(field, "must be %s (1..%d printable characters)" % (what, max_len), value)
    return value


def _int(field: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(field, "must be an integer %d..%d" % (low, high), value)
    return value


def vm_id(field: str, value) -> str:
    return _string(field, value, UUID_RE, "a UUID").lower()


def mac(field: str, value) -> str:
    return _string(field, value, MAC_RE, "a MAC address like 00:1a:4a:16:01:51").lower()


def vlan(field: str, value) -> Optional[int]:
    return None if value is None else _int(field, value, 0, 4094)


def ttl(field: str, value) -> int:
    return _int(field, value, 1, MAX_TTL)


def pf(field: str, value) -> Optional[str]:
    return None if value is None else _string(field, value, PF_RE, "a PF name")


def alias(field: str, value) -> Optional[str]:
    return None if value is None else _string(field, value, ALIAS_RE, "an alias like ua-<id>")


def network(field: str, value) -> Optional[str]:
    return None if value is None else _string(field, value, None, "a network name")


def vf_settings(field: str, value) -> Optional[str]:
    """The source VF's own settings (``spoofchk=off,trust=on,...``), to put on the reserved VF."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise _fail(field, "must be a string of VF settings (spoofchk=on,trust=off,...)", value)
    try:
        return vfsettings.from_text(value).to_text() or None
    except ValueError as e:
        raise _fail(field, str(e), value) from None


_NIC_FIELDS = {"mac": mac, "alias": alias, "vlan": vlan, "network": network, "pf": pf,
               "vf_settings": vf_settings}


def nic(field: str, value) -> dict:
    if not isinstance(value, dict):
        raise _fail(field, "must be an object", value)
    for key in value:
        if key not in _NIC_FIELDS:
            raise _fail("%s.%s" % (field, clip(key)), "unknown key (known: %s)" % ", ".join(NIC_KEYS))
    if "mac" not in value:
        raise _fail("%s.mac" % field, "is required")
    return {key: check("%s.%s" % (field, key), value[key]) for key, check in _NIC_FIELDS.items()
            if key in value}


def nics(field: str, value) -> list:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_NICS:
        raise _fail(field, "must be a list of 1..%d NIC objects" % MAX_NICS, value)
    out = [nic("%s[%d]" % (field, i), v) for i, v in enumerate(value)]
    for key in ("mac", "alias"):
        seen = {}
        for i, n in enumerate(out):
            if n.get(key) is None:
                continue
            if n[key] in seen:
                raise _fail("%s[%d].%s" % (field, i, key), "duplicates %s[%d].%s"
                            % (field, seen[n[key]], key), n[key])
            seen[n[key]] = i
    return out


def _int_list(field: str, value, high: int, what: str) -> Optional[tuple]:
    """An optional list of integers 0..*high*, sorted and unique; ``[]`` or null: none."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > high + 1:
        raise _fail(field, "must be a list of at most %d %s" % (high + 1, what), value)
    return tuple(sorted({_int("%s[%d]" % (field, i), v, 0, high) for i, v in enumerate(value)}))


def numa_nodes(field: str, value) -> Optional[tuple]:
    return _int_list(field, value, numa.MAX_NODE, "host NUMA node numbers")


def cpus(field: str, value) -> Optional[tuple]:
    return _int_list(field, value, numa.MAX_CPU, "host CPU numbers")


@dataclass(frozen=True)
class Param:
    name: str
    check: Callable
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def bind(verb: str, spec: tuple, args: tuple, kwargs: dict, defaults: Optional[dict] = None) -> dict:
    """Map positional or named params onto *spec* and validate each one."""
    if args and kwargs:
        raise InvalidParams("invalid params: pass params either by name or by position",
                            {"field": "params"})
    if len(args) > len(spec):
        raise InvalidParams("invalid params: %s takes at most %d params, got %d"
                            % (verb, len(spec), len(args)), {"field": "params"})
    given = dict(zip((p.name for p in spec), args)) if args else dict(kwargs)
    names = {p.name for p in spec}
    for key in given:
        if key not in names:
            raise _fail(clip(key), "unknown param (known: %s)"
                        % (", ".join(p.name for p in spec) or "none"))
    out = {}
    for p in spec:
        if p.name in given:
            out[p.name] = p.check(p.name, given[p.name])
        elif p.required:
            raise _fail(p.name, "is required")
        else:
            out[p.name] = (defaults or {}).get(p.name, p.default)
    return out


HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$|^\[[0-9a-fA-F:.]{2,45}\]$")
MAX_MIGRATION_TIMEOUT = 24 * 3600


def host(field: str, value) -> str:
    return _string(field, value, HOST_RE, "a host name or address", max_len=253)


def port(field: str, value) -> int:
    return _int(field, value, 1, 65535)


def timeout(field: str, value) -> Optional[int]:
    return None if value is None else _int(field, value, 1, MAX_MIGRATION_TIMEOUT)


# -- SRIOV.migrate's params: VDSM's MigrateParams (lib/vdsm/api/vdsm-api.yml) to override ----

CPULIST_RE = re.compile(r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")  # vdsm taskset.cpulist_parse


def _flag(field: str, value) -> bool:
    """A boolean; "true"/"false" too, as the engine sends most of them."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise _fail(field, "must be a boolean", value)
    return value


def _address(field: str, value) -> str:
    """A host name or address; an IPv6 one bare (VDSM adds the brackets: normalize_literal_addr)."""
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            pass
    return host(field, value)


def _sets(field: str, value) -> list:
    """cpusets / numaNodesets: one list like '1,3-5' per vCPU / vNUMA cell (VDSM checks the count)."""
    if not isinstance(value, list) or not 1 <= len(value) <= numa.MAX_CPU + 1:
        raise _fail(field, "must be a list of CPU/node lists like '1,3-5'", value)
    return [_string("%s[%d]" % (field, i), v, CPULIST_RE, "a list like '1,3-5'") for i, v in enumerate(value)]


def _action(field: str, value) -> dict:
    """One convergence action, as VDSM's MonitorThread runs it: {name, params}."""
    if not isinstance(value, dict) or set(value) - {"name", "params"}:
        raise _fail(field, "must be an object {name, params}", value)
    if value.get("name") not in migration_policy.ACTIONS:
        raise _fail(field + ".name", "must be one of %s" % ", ".join(migration_policy.ACTIONS),
                    value.get("name"))
    args = value.get("params", [])
    if not isinstance(args, list) or len(args) > 4:
        raise _fail(field + ".params", "must be a list of at most 4 values", args)
    args = [str(_int("%s.params[%d]" % (field, i), a, 0, 10**6)) if not isinstance(a, str) else a
            for i, a in enumerate(args)]
    if value["name"] == "setDowntime" and (len(args) != 1 or not args[0].isdigit()):
        raise _fail(field + ".params", "setDowntime takes one downtime in ms", value.get("params"))
    return {"name": value["name"], "params": args}


def _schedule(field: str, value):
    """convergenceSchedule: a policy name ([migration] convergence_schedule's) or VDSM's object."""
    if isinstance(value, str):
        if value not in migration_policy.SCHEDULES:
            raise _fail(field, "must be one of %s, or an object {init, stalling}"
                        % ", ".join(migration_policy.SCHEDULES), value)
        return value
    if not isinstance(value, dict) or set(value) - {"init", "stalling"}:
        raise _fail(field, "must be a schedule name or an object {init, stalling}", value)
    init, stalling = value.get("init", []), value.get("stalling", [])
    for key, items in (("init", init), ("stalling", stalling)):
        if not isinstance(items, list) or len(items) > 32:
            raise _fail("%s.%s" % (field, key), "must be a list of at most 32 items", items)
    steps = []
    for i, item in enumerate(stalling):
        where = "%s.stalling[%d]" % (field, i)
        if not isinstance(item, dict) or set(item) != {"limit", "action"}:
            raise _fail(where, "must be an object {limit, action}", item)
        steps.append({"limit": _int(where + ".limit", item["limit"], -1, 10**6),
                      "action": _action(where + ".action", item["action"])})
    return {"init": [_action("%s.init[%d]" % (field, i), a) for i, a in enumerate(init)],
            "stalling": steps}


MIGRATE_PARAMS = {
    "maxBandwidth": lambda f, v: _int(f, v, 0, 10**6),  # MiB/s; 0: VDSM's migration_max_bandwidth
    "convergenceSchedule": _schedule,
    "autoConverge": _flag, "compressed": _flag, "encrypted": _flag, "abortOnError": _flag,
    "enableGuestEvents": _flag, "tunneled": _flag,
    "incomingLimit": lambda f, v: _int(f, v, 1, 100), "outgoingLimit": lambda f, v: _int(f, v, 1, 100),
    "dstqemu": _address, "cpusets": _sets, "numaNodesets": _sets,
    "downtime": lambda f, v: _int(f, v, 1, 600000),  # ms, for a legacy schedule only
    "parallel": lambda f, v: _int(f, v, 0, 255),
    "consoleAddress": lambda f, v: _string(f, v, None, "a graphics address"),
}


def migrate_params(field: str, value) -> Optional[dict]:
    """SRIOV.migrate's ``params``: MigrateParams keys to send instead of ``[migration]``'s."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(field, "must be an object of VDSM MigrateParams", value)
    for key in value:
        if key not in MIGRATE_PARAMS:
            raise _fail("%s.%s" % (field, clip(key)), "unknown key (known: %s)"
                        % ", ".join(sorted(MIGRATE_PARAMS)))
    return {key: MIGRATE_PARAMS[key]("%s.%s" % (field, key), v) for key, v in value.items()}


MAX_PARALLEL = 16


def _names(field: str, value) -> list:
    """A list of strings, or one comma-separated string (the CLI's ``dsts=B,C``)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_NICS:
        raise _fail(field, "must be a list (or comma-separated string) of 1..%d items" % MAX_NICS, value)
    return value


def _unique(field: str, items: list, key=lambda x: x) -> list:
    seen = {}
    for i, item in enumerate(items):
        if key(item) in seen:
            raise _fail("%s[%d]" % (field, i), "duplicates %s[%d]" % (field, seen[key(item)]),
                        key(item))
        seen[key(item)] = i
    return items


def destinations(field: str, value) -> list:
    """SRIOV.evacuate's ``dsts``: ``host`` or ``host:port`` each, as ``(host, port or None)``."""
    out = []
    for i, item in enumerate(_names(field, value)):
        where = "%s[%d]" % (field, i)
        name, port_text = item, None
        if isinstance(item, str) and ("]:" in item if item.startswith("[") else item.count(":") == 1):
            name, _, port_text = item.rpartition(":")  # host:port, [v6]:port
        out.append((host(where, name), None if port_text is None else port(
            where, int(port_text) if port_text.isdigit() else port_text)))
    return _unique(field, out, key=lambda d: "%s:%s" % d)


def vm_ids(field: str, value) -> Optional[list]:
    if value is None:
        return None
    return _unique(field, [vm_id("%s[%d]" % (field, i), v) for i, v in enumerate(_names(field, value))])


def max_parallel(field: str, value) -> int:
    return _int(field, int(value) if isinstance(value, str) and value.isdigit() else value,
                1, MAX_PARALLEL)


VM_ONLY = (Param("vmID", vm_id),)

SPECS = {
    "ping": (),
    "listVfs": (Param("pf", pf, None),),
    "listVms": (),
    "reserveVfs": (Param("vmID", vm_id), Param("nics", nics), Param("ttl", ttl, None),
                   Param("numa_nodes", numa_nodes, None), Param("cpus", cpus, None)),
    "releaseVfs": VM_ONLY,
    "getReservation": VM_ONLY,
    "migrationStatus": VM_ONLY,
    "restoreNics": VM_ONLY,
    "announce": VM_ONLY,
    "migrate": (Param("vmID", vm_id), Param("dst", host), Param("port", port, 54325),
                Param("timeout", timeout, None), Param("params", migrate_params, None)),
    "evacuate": (Param("dsts", destinations), Param("max_parallel", max_parallel, 2),
                 Param("dry_run", _flag, False), Param("vms", vm_ids, None),
                 Param("port", port, 54325)),
    "evacuateStatus": (),
    "recentMigrations": (),
}
