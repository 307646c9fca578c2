"""Reserving VFs on the destination host's ``sriov-migrationd``.

``migrate`` needs only the two verbs below, behind a small protocol, so
tests hand in a fake and the JSON-RPC client (``jsonrpc_plugin.client``)
is imported only when a real reservation is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

from .errors import AdapterError


class ServiceError(AdapterError):
    """The host service answered with a JSON-RPC error; ``code`` is its code."""

    def __init__(self, message: str, code=None):
        super().__init__(message)
        self.code = code


class Reserver(Protocol):
    """The destination's reservation service, as ``migrate`` sees it."""

    def reserve(self, vm_id: str, nics: list, ttl: int) -> dict: ...

    def release(self, vm_id: str) -> dict: ...


@dataclass
class ServiceTls:
    cert: Optional[str]
    key: Optional[str]
    ca: Optional[str]
    insecure: bool = False


class RpcReserver:
    """``SRIOV.reserveVfs``/``releaseVfs`` over mutual TLS."""

    def __init__(self, host: str, port: int, tls: ServiceTls, timeout: float):
        self.where = "sriov-migrationd at %s:%d" % (host, port)
        try:
            from jsonrpc_plugin import client
        except ImportError as e:
            raise AdapterError("cannot load the host service client (jsonrpc_plugin.client): %s"
                               % e) from None
        self._client_mod = client
        try:
            self._client = client.RpcClient(host, port, cert=tls.cert, key=tls.key, ca=tls.ca,
                                            insecure=tls.insecure, timeout=timeout)
        except client.RpcUnavailable as e:  # e.g. no VDSM PKI on this machine
            raise AdapterError("%s: %s (see --service-cert/--service-key/--service-ca)"
                               % (self.where, e)) from None

    def _call(self, method: str, params: dict) -> dict:
        mod = self._client_mod
        try:
            return self._client.call(method, params)
        except mod.RpcError as e:
            raise ServiceError("%s refused %s: [%s] %s%s" % (
                self.where, method, e.code, e.message, _data_text(getattr(e, "data", None))),
                e.code) from None
        except mod.RpcUnavailable as e:
            raise AdapterError("%s unreachable: %s" % (self.where, e)) from None

    def reserve(self, vm_id: str, nics: list, ttl: int) -> dict:
        return self._call("SRIOV.reserveVfs", {"vmID": vm_id, "nics": nics, "ttl": ttl})

    def release(self, vm_id: str) -> dict:
        return self._call("SRIOV.releaseVfs", {"vmID": vm_id})


def _data_text(data) -> str:
    if not data or not isinstance(data, dict):
        return ""
    return " (%s)" % ", ".join("%s=%s" % (k, data[k]) for k in sorted(data))


def reserved_vfs_text(result: dict) -> str:
    """``mac->VF`` pairs from a reserveVfs answer, for the step line."""
    pairs = []
    for nic in (result or {}).get("nics", []):
        vf = nic.get("vf") or {}
        pairs.append("%s->%s" % (nic.get("mac"), vf.get("address") or vf.get("name") or "?"))
    return ", ".join(pairs) or "nothing"
