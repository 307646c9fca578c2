"""SRIOV.listVms over the wire: the VMs with SR-IOV vNICs and the policy's plan, nothing else."""

from __future__ import annotations

from .conftest import BUSY_DOMAIN, BUSY_VF, VM_BUSY, hostdev_domain, raw_post, rpc_body

VM_OK = "cccccccc-0000-4000-8000-000000000003"
MAC_OK = "00:1a:4a:16:02:01"
MIGRATABLE = ("<ovirt-vm:vm xmlns:ovirt-vm='http://ovirt.org/vm/1.0'>"
              "<ovirt-vm:device mac_address='%s'><ovirt-vm:custom>"
              "<ovirt-vm:sriov_migratable>true</ovirt-vm:sriov_migratable>"
              "</ovirt-vm:custom></ovirt-vm:device></ovirt-vm:vm>" % MAC_OK)
OK_DOMAIN = hostdev_domain("ok", VM_OK, "0000:3c:00.1", MAC_OK, "ua-ok", MIGRATABLE)
PLAIN_DOMAIN = ("<domain type='test'><name>plain</name><uuid>dddddddd-0000-4000-8000-000000000004</uuid>"
                "<memory>1048576</memory><os><type>hvm</type></os><devices/></domain>")


def _call(svc, pki, params=None):
    status, answer, _ = raw_post(svc, pki, rpc_body("SRIOV.listVms", params))
    assert status == 200
    return answer


def test_listvms_should_give_each_sriov_vm_the_dry_runs_verdict(make_service, pki):
    svc = make_service(domains=(BUSY_DOMAIN, OK_DOMAIN, PLAIN_DOMAIN))
    rows = _call(svc, pki)["result"]
    assert [r["vmID"] for r in rows] == [VM_BUSY, VM_OK]  # by name: busy, ok; plain has no SR-IOV vNIC
    busy, ok = rows
    assert busy["plan"]["verdict"] == "refuse" and "00:1a:4a:16:99:01" in busy["plan"]["reason"]
    assert busy["plan"]["vnics"] == [{"mac": "00:1a:4a:16:99:01", "alias": "ua-busy", "vf_address": BUSY_VF,
                                      "vlan": None, "migratable": False, "teaming": None}]
    assert ok["name"] == "ok" and ok["plan"]["verdict"] == "migrate"
    assert ok["plan"]["vnics"][0]["migratable"] is True
    assert ok["phase"] == "idle" and ok["recorded"] == [] and ok["migration"] is None


def test_listvms_should_refuse_params_naming_them(make_service, pki):
    svc = make_service()
    answer = _call(svc, pki, {"vmID": VM_BUSY})
    assert answer["error"]["code"] == -32602 and "vmID" in answer["error"]["message"]
