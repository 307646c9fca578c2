"""Over the wire: a VF a VM leaves gets its own settings back before anyone else gets it (issue 20 item 7).

The PFs are a fake netlink (this machine has no SR-IOV); everything else
is the service as deployed: TLS JSON-RPC, the sqlite ledger, the reconciler.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from helpers import nodedev

from sriov_host import netlink
from sriov_host.ledger import Ledger
from sriov_host.vfsettings import from_text

from .conftest import raw_post, rpc_body

VM_A = "aaaaaaaa-0000-4000-8000-000000000001"
VM_B = "bbbbbbbb-0000-4000-8000-000000000002"
MAC_A, MAC_B = "00:1a:4a:16:01:51", "00:1a:4a:16:01:52"
OWN = "spoofchk=on,trust=off,link_state=auto,min_tx_rate=0,max_tx_rate=0,query_rss=off"
# Two VFs a PF (vfs=2): ens1f0's first is held by the busy domain, so its only free one is:
VF = "0000:3c:00.1"
OTHER_PF_VF = "0000:3e:00.0"


class FakePfs:
    """Each VF's settings and VLAN as its PF holds them; the driver refuses what *refuse* names."""

    def __init__(self):
        self.where = {addr: (pf.name, i) for pf in nodedev.layout(pfs=2, vfs=2)
                      for i, addr in enumerate(pf.vfs)}
        self.settings = {key: from_text(OWN) for key in self.where.values()}
        self.vlan = dict.fromkeys(self.where.values(), 0)
        self.refuse = set()

    def vf_index(self, pf, address):
        key = self.where.get(address)
        return key[1] if key and key[0] == pf else None

    def read(self, pf, index):
        return self.settings[(pf, index)]

    def mac_vlan(self, pf, index):
        return None, self.vlan[(pf, index)] or None  # netlink reads no VLAN as None

    def apply(self, pf, index, changes):
        refused = {}
        for name, value in changes:
            if name in self.refuse:
                refused[name] = "Operation not supported"
            elif name == "vlan":
                self.vlan[(pf, index)] = value
            else:
                values = ({"min_tx_rate": value[0], "max_tx_rate": value[1]} if name == "rate"
                          else {name: value})
                self.settings[(pf, index)] = replace(self.settings[(pf, index)], **values)
        return refused

    def shows(self, address) -> tuple:
        key = self.where[address]
        return self.settings[key].to_text(), self.vlan[key]


@pytest.fixture
def pfs(monkeypatch):
    fake = FakePfs()
    monkeypatch.setattr(netlink, "vf_index", fake.vf_index)
    monkeypatch.setattr(netlink, "read_vf_settings", fake.read)
    monkeypatch.setattr(netlink, "vf_settings", fake.mac_vlan)
    monkeypatch.setattr(netlink, "apply_vf_settings", fake.apply)
    return fake


def call(svc, pki, method, params):
    status, answer, _ = raw_post(svc, pki, rpc_body(method, params))
    assert status == 200
    return answer


def ok(answer):
    assert "error" not in answer, answer
    return answer["result"]


def reserve(svc, pki, vm, mac, **nic):
    return call(svc, pki, "SRIOV.reserveVfs", {"vmID": vm, "nics": [dict(nic, mac=mac)]})


def use_and_leave(svc, pki, pfs):
    """VM A gets the VF with trust on, spoofchk off, a rate limit and VLAN 42, then leaves it."""
    res = ok(reserve(svc, pki, VM_A, MAC_A, pf="ens1f0", vlan=42,
                     vf_settings="trust=on,spoofchk=off,max_tx_rate=100"))
    assert res["nics"][0]["vf"]["address"] == VF and res["nics"][0]["vf_settings"]["refused"] == {}
    pfs.vlan[pfs.where[VF]] = 42  # the plug: libvirt puts the vNIC's VLAN on the VF
    assert pfs.shows(VF) == ("spoofchk=off,trust=on,link_state=auto,min_tx_rate=0,"
                             "max_tx_rate=100,query_rss=off", 42)
    assert ok(call(svc, pki, "SRIOV.releaseVfs", {"vmID": VM_A})) == {"released": 1}


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_next_reservation_should_get_the_vf_with_its_own_settings_back(make_service, pki, pfs):
    svc = make_service(vfs=2)
    svc.reconciler.stop()  # reserveVfs alone must clean it
    use_and_leave(svc, pki, pfs)
    assert pfs.shows(VF) != (OWN, 0)

    res = ok(reserve(svc, pki, VM_B, MAC_B, pf="ens1f0"))
    assert res["nics"][0]["vf"]["address"] == VF
    assert pfs.shows(VF) == (OWN, 0)
    assert svc.ledger.originals(unheld_only=False) == []


def test_reconciler_should_put_back_a_released_vfs_own_settings(make_service, pki, pfs):
    svc = make_service(vfs=2)
    use_and_leave(svc, pki, pfs)

    assert wait_for(lambda: pfs.shows(VF) == (OWN, 0)), pfs.shows(VF)
    assert wait_for(lambda: svc.ledger.originals(unheld_only=False) == [])


def test_vf_whose_restore_fails_should_not_be_handed_out_even_after_a_restart(make_service, pki,
                                                                                pfs):
    svc = make_service(vfs=2)
    use_and_leave(svc, pki, pfs)
    pfs.refuse = {"trust"}  # the driver will not put trust back

    e = reserve(svc, pki, VM_B, MAC_B, pf="ens1f0")["error"]
    assert e["code"] == 2001 and e["data"]["awaiting_restore"] == 1, e
    assert ok(reserve(svc, pki, VM_B, MAC_B))["nics"][0]["vf"]["address"] == OTHER_PF_VF
    [row] = svc.ledger.originals()
    assert "refused trust" in row.last_error
    svc.stop()

    with Ledger(svc.cfg.ledger_path) as led:  # the record outlives the service
        assert [(r.vf_address, r.settings, r.vlan) for r in led.originals()] == [(VF, OWN, 0)]
    pfs.refuse = set()
    svc = make_service(vfs=2)
    svc.reconciler.stop()
    assert ok(reserve(svc, pki, VM_A, MAC_A, pf="ens1f0"))["nics"][0]["vf"]["address"] == VF
    assert pfs.shows(VF) == (OWN, 0)
