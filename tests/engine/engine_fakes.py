"""Test doubles and constants shared by the engine adapter tests.

A uniquely named module rather than ``conftest``, whose name other test
directories use too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_adapter.errors import AdapterError
from engine_adapter.reserve import ServiceError
from sriov_host.errors import NO_FREE_VF

PASSWORD = "s3cr3t-Pa55"
USER = "admin@internal"

MAC1 = "56:6f:00:00:00:01"
MAC2 = "56:6f:00:00:00:02"
MAC3 = "56:6f:00:00:00:03"


@dataclass
class Seed:
    """Ids of what ``seeded`` put in the simulator."""

    ids: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.ids[name]
        except KeyError:
            raise AttributeError(name) from None


class FakeReserver:
    """The destination's service: records calls; flags make it fail."""

    def __init__(self, fail_reserve: bool = False, on_reserve=None, fail_release: bool = False):
        self.calls = []
        self.fail_reserve = fail_reserve
        self.fail_release = fail_release
        self.on_reserve = on_reserve
        self.endpoint = None

    def reserve(self, vm_id, nics, ttl):
        self.calls.append(("reserve", vm_id, nics, ttl))
        if self.fail_reserve:
            raise ServiceError("sriov-migrationd refused SRIOV.reserveVfs: [2001] no free VF", NO_FREE_VF)
        if self.on_reserve:
            self.on_reserve()
        return {"vmID": vm_id, "expires": 0, "nics": [
            {"mac": n["mac"], "alias": n["alias"], "vf": {"address": "0000:05:10.%d" % i}}
            for i, n in enumerate(nics)]}

    def release(self, vm_id):
        self.calls.append(("release", vm_id))
        if self.fail_release:
            raise AdapterError("sriov-migrationd at %s:%d unreachable: timed out" % self.endpoint)
        return {"released": 1}

    def factory(self, host, port):
        self.endpoint = (host, port)
        return self
