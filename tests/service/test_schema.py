"""jsonrpc_plugin/vdsm-api.yml describes exactly the verbs the server registers."""

from __future__ import annotations

import os

import yaml

import jsonrpc_plugin
from jsonrpc_plugin import params
from jsonrpc_plugin.verbs import Verbs

SCHEMA = os.path.join(os.path.dirname(jsonrpc_plugin.__file__), "vdsm-api.yml")


def load():
    with open(SCHEMA, encoding="utf-8") as f:
        return yaml.safe_load(f)


class _Host:
    cfg = None


def test_schema_should_list_exactly_the_registered_verbs():
    doc = load()
    verbs = {k for k in doc if k != "types"}
    assert verbs == set(Verbs(_Host()).registered())


def test_schema_params_should_match_the_validators_in_order():
    doc = load()
    for name, spec in params.SPECS.items():
        entry = doc["SRIOV.%s" % name]
        assert entry["description"] and entry["added"]
        assert "return" in entry
        documented = [p["name"] for p in entry.get("params", [])]
        assert documented == [p.name for p in spec], name
        for p, doc_p in zip(spec, entry.get("params", [])):
            assert ("defaultvalue" in doc_p) == (not p.required), (name, p.name)


def test_example_config_should_load_with_the_defaults():
    from sriov_host import config

    path = os.path.join(os.path.dirname(jsonrpc_plugin.__file__), "data", "sriov-migration.conf")
    cfg = config.load(path, required=True)
    assert cfg.port == 54325 and cfg.tls and cfg.rollback_grace == 45
    assert cfg.cert == config.VDSM_CERT and cfg.listen_address == "0.0.0.0"


def test_unit_file_should_run_as_vdsm_without_capabilities():
    import configparser

    path = os.path.join(os.path.dirname(jsonrpc_plugin.__file__), "data", "sriov-migrationd.service")
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str
    unit.read(path)
    svc = unit["Service"]
    assert svc["User"] == "vdsm" and svc["CapabilityBoundingSet"] == "CAP_NET_ADMIN CAP_NET_RAW"
    assert svc["AmbientCapabilities"] == svc["CapabilityBoundingSet"]
    assert "AF_PACKET" in svc["RestrictAddressFamilies"]
    assert svc["ExecStart"].endswith("sriov-migrationd") and svc["NoNewPrivileges"] == "yes"


def test_schema_should_describe_the_numa_params_and_outcome_the_code_uses():
    from sriov_host import allocation
    from sriov_host.inventory import Vf

    doc = load()
    params_doc = {p["name"]: p for p in doc["SRIOV.reserveVfs"]["params"]}
    for name in ("numa_nodes", "cpus"):
        assert params_doc[name]["type"] == ["uint"] and params_doc[name]["defaultvalue"] is None
    vf = Vf(name="v", address="0000:05:00.1", pf="p", pf_address="0000:04:00.0", index=0, numa_node=1)
    report = allocation.numa_report(allocation.NumaPreference((0,), "numa_nodes"), [("m", vf)])
    outcome = doc["types"]["NumaOutcome"]
    assert [p["name"] for p in outcome["properties"]] == list(report)
    off_node = doc["types"]["VfOffNode"]
    assert [p["name"] for p in off_node["properties"]] == list(report["vfs_off_node"][0])
    reservation = doc["types"]["Reservation"]
    assert reservation["properties"][-1]["name"] == "numa"
    assert reservation["properties"][-1]["type"] == outcome
