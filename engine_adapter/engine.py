"""The engine's REST API through ovirtsdk4, turned into the model's views.

This is the only module that touches SDK types. Every call goes through
``_call``, which turns SDK and libcurl failures into one-line
``AdapterError``s and engine ``<fault>``s into ``EngineFault``s that keep
the engine's reason and detail verbatim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from sriov_host.policy import parse_bool

from .errors import AdapterError, EngineFault
from .model import HostDevice, LookupFailed, Profile, Vnic, looks_like_id, pick_profile, updated_custom
from .session import EngineOptions, connect, sdk_failure

log = logging.getLogger("sriov-engine")


@dataclass(frozen=True)
class Host:
    id: str
    name: str
    address: Optional[str]
    status: Optional[str]


@dataclass(frozen=True)
class Vm:
    id: str
    name: str
    status: Optional[str]
    host_id: Optional[str]


def _bool(value) -> Optional[bool]:
    """The engine's booleans may reach us as bools or as strings."""
    return None if value is None else parse_bool(value)


def _text(value) -> Optional[str]:
    return None if value is None else str(value)


class Engine:
    """A logged-in engine; use as a context manager so the token is revoked."""

    def __init__(self, opts: EngineOptions, connection=None):
        self.opts = opts
        self._conn = connection
        self._networks = None

    def __enter__(self):
        if self._conn is None:
            self._conn = connect(self.opts)
        return self

    def __exit__(self, *exc):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # logout is best effort; never mask the real outcome
                pass
            self._conn = None

    def _call(self, what: str, fn, *args, **kwargs):
        import ovirtsdk4 as sdk

        log.debug("engine: %s", what)
        try:
            return fn(*args, **kwargs)
        except sdk.Error as e:
            fault = getattr(e, "fault", None)
            if fault is not None:
                raise EngineFault(what, fault.reason, fault.detail, getattr(e, "code", None)) from None
            if isinstance(e, sdk.AuthError):
                raise AdapterError("engine refused to %s: not authorized (%s)"
                                   % (what, " ".join(str(e).split()))) from None
            raise sdk_failure(e, "engine %s (%s)" % (self.opts.origin, what), self.opts.timeout) from None

    @property
    def _system(self):
        return self._conn.system_service()

    def networks(self) -> dict:
        """id -> (name, vlan), read once per run."""
        if self._networks is None:
            found = self._call("list networks", self._system.networks_service().list)
            self._networks = {n.id: (n.name, n.vlan.id if n.vlan is not None else None)
                              for n in found}
        return self._networks

    def _profile(self, p) -> Profile:
        network_id = p.network.id if p.network is not None else None
        name, vlan = self.networks().get(network_id, (None, None))
        mode = p.pass_through.mode if p.pass_through is not None else None
        return Profile(
            id=p.id, name=p.name, passthrough=str(mode) == "enabled",
            migratable=_bool(p.migratable), network_id=network_id, network=name, vlan=vlan,
            failover_id=p.failover.id if p.failover is not None else None,
            custom={c.name: _text(c.value) for c in (p.custom_properties or [])},
        )

    def profiles(self) -> list:
        found = self._call("list vNIC profiles", self._system.vnic_profiles_service().list)
        return [self._profile(p) for p in found]

    def find_profile(self, key: str) -> Profile:
        try:
            return pick_profile(self.profiles(), key)
        except LookupFailed as e:
            raise AdapterError(str(e)) from None

    def set_migratable(self, profile: Profile, on: bool) -> Profile:
        """PUT the flag explicitly (the DB default is false) and the property."""
        import ovirtsdk4.types as t

        custom = updated_custom(profile.custom, on)
        body = t.VnicProfile(
            migratable=on,
            custom_properties=[t.CustomProperty(name=k, value=v) for k, v in custom.items()],
        )
        service = self._system.vnic_profiles_service().profile_service(profile.id)
        what = "update vNIC profile %s" % profile.name
        return self._profile(self._call(what, service.update, body))

    def find_vm(self, key: str) -> Vm:
        service = self._system.vms_service()
        return self._vm(self._find("VM", service, service.vm_service, key))

    def _find(self, kind: str, collection, item_service, key: str):
        """The one object *key* names: by id where it looks like one, else by exact name."""
        if looks_like_id(key):
            obj = self._get_or_none("get %s %s" % (kind, key), item_service(key).get)
            if obj is not None:
                return obj
        found = self._call("search %s %s" % (kind, key), collection.list, search=_search_name(key))
        matches = [o for o in found if o.name == key]
        if not matches:
            raise AdapterError("no %s named or with id %r on engine %s" % (kind, key, self.opts.origin))
        return matches[0]

    def _get_or_none(self, what, fn):
        try:
            return self._call(what, fn)
        except EngineFault as e:
            if e.status == 404:
                return None
            raise

    @staticmethod
    def _vm(vm) -> Vm:
        return Vm(id=vm.id, name=vm.name, status=_text(vm.status),
                  host_id=vm.host.id if vm.host is not None else None)

    def vm(self, vm_id: str) -> Vm:
        service = self._system.vms_service().vm_service(vm_id)
        return self._vm(self._call("get VM %s" % vm_id, service.get))

    def vnics(self, vm: Vm) -> list:
        """The VM's vNICs, each with its profile (and the profile's network)."""
        profiles = {p.id: p for p in self.profiles()}
        service = self._system.vms_service().vm_service(vm.id).nics_service()
        out = []
        for nic in self._call("list vNICs of VM %s" % vm.name, service.list):
            profile_id = nic.vnic_profile.id if nic.vnic_profile is not None else None
            out.append(Vnic(
                id=nic.id, name=nic.name,
                mac=nic.mac.address if nic.mac is not None else None,
                interface=_text(nic.interface), profile=profiles.get(profile_id),
                plugged=_bool(nic.plugged),
            ))
        return out

    def host_devices(self, vm: Vm) -> list:
        """Host devices attached to the VM itself; none where the engine lists none (404)."""
        service = self._system.vms_service().vm_service(vm.id).host_devices_service()
        found = self._get_or_none("list host devices of VM %s" % vm.name, service.list)
        return [HostDevice(name=d.name or d.id or "?", capability=_text(d.capability),
                           vf=d.physical_function is not None) for d in found or ()]

    def plug_vnic(self, vm: Vm, vnic: Vnic) -> Optional[bool]:
        """PUT ``plugged=true`` on one vNIC (the engine hot-plugs it); its plugged state after."""
        import ovirtsdk4.types as t

        service = self._system.vms_service().vm_service(vm.id).nics_service().nic_service(vnic.id)
        what = "plug vNIC %s of VM %s" % (vnic.name, vm.name)
        return _bool(self._call(what, service.update, t.Nic(plugged=True)).plugged)

    def find_host(self, key: str) -> Host:
        service = self._system.hosts_service()
        return self._host(self._find("host", service, service.host_service, key))

    @staticmethod
    def _host(h) -> Host:
        return Host(id=h.id, name=h.name, address=h.address, status=_text(h.status))

    def host_name(self, host_id: Optional[str]) -> str:
        if not host_id:
            return "-"
        service = self._system.hosts_service().host_service(host_id)
        host = self._get_or_none("get host %s" % host_id, service.get)
        return host.name if host is not None else host_id

    def migrate(self, vm: Vm, host: Host) -> None:
        import ovirtsdk4.types as t

        service = self._system.vms_service().vm_service(vm.id)
        self._call("migrate VM %s to %s" % (vm.name, host.name), service.migrate,
                   host=t.Host(id=host.id))

    def cancel_migration(self, vm: Vm) -> None:
        service = self._system.vms_service().vm_service(vm.id)
        self._call("cancel the migration of VM %s" % vm.name, service.cancel_migration)


def _search_name(name: str) -> str:
    """An engine search for an exact name; quote what the grammar would split."""
    if any(c in name for c in ' "\\*'):
        return 'name="%s"' % name.replace("\\", "\\\\").replace('"', '\\"')
    return "name=%s" % name
