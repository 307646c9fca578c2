"""Property-based fuzzing of every verb's params through the server's dispatcher.

The answer is always a JSON-RPC result or an application/params error,
never an internal error (-32603), and a rejected call leaves the ledger
as it was.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jsonrpc_plugin import params as params_mod

ALLOWED_ERRORS = {-32602, 2001, 2002, 2003, 2004}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
uuids = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), json_values)
macs = st.one_of(st.binary(min_size=6, max_size=6).map(lambda b: ":".join("%02x" % c for c in b)),
                 st.sampled_from(["00:1a:4a:16:01:51", "00:1A:4A:16:01:51", "00:1a:4a:16:01"]),
                 json_values)
vlans = st.one_of(st.integers(-5, 5000), json_values)
known_nic = st.fixed_dictionaries({}, optional={
    "mac": macs, "alias": st.one_of(st.sampled_from(["ua-a", "ua-b", "nope"]), json_values),
    "vlan": vlans, "network": st.one_of(st.sampled_from(["blue", "red", "green"]), json_values),
    "pf": st.one_of(st.sampled_from(["ens1f0", "ens1f1", "eth9"]), json_values)})
nic = st.one_of(known_nic, st.builds(lambda n, extra: dict(n, **extra), known_nic,
                                     st.dictionaries(st.text(max_size=6), json_values, max_size=2)),
                json_values)
nics = st.one_of(st.lists(nic, max_size=4), json_values)
ttls = st.one_of(st.integers(-10, 10**7), json_values)
VALUES = {"vmID": uuids, "nics": nics, "ttl": ttls, "pf": st.one_of(st.sampled_from(["ens1f0"]), json_values),
          "dst": st.one_of(st.sampled_from(["host-b.example", "127.0.0.1", "-bad", ""]), json_values),
          "port": st.one_of(st.integers(-1, 70000), json_values),
          # SRIOV.evacuate: loopback or invalid names only (a DNS lookup could hang the test)
          "dsts": st.one_of(st.sampled_from(["127.0.0.1:1", "127.0.0.1,127.0.0.1", "-bad", "",
                                             "[::1]:x"]),
                            st.lists(st.sampled_from(["127.0.0.1:2", "bad host"]), max_size=3), json_values),
          "max_parallel": st.one_of(st.integers(-1, 20), json_values),
          "dry_run": st.one_of(st.booleans(), st.sampled_from(["true", "no"]), json_values),
          "vms": st.one_of(st.lists(uuids, max_size=2), json_values),
          "timeout": st.one_of(st.integers(-1, 10**6), json_values),
          "numa_nodes": st.one_of(st.lists(st.integers(-2, 1100), max_size=4), json_values),
          "cpus": st.one_of(st.lists(st.integers(-2, 9000), max_size=4), json_values),
          "params": st.one_of(st.fixed_dictionaries({}, optional={  # SRIOV.migrate's MigrateParams
              "maxBandwidth": st.one_of(st.integers(-1, 10**7), json_values),
              "convergenceSchedule": st.one_of(st.sampled_from(["minimal-downtime", "legacy", "x"]),
                                               json_values),
              "autoConverge": st.one_of(st.booleans(), st.sampled_from(["true", "False", "yes"]),
                                        json_values),
              "cpusets": st.one_of(st.lists(st.sampled_from(["1", "2-3", "x"]), max_size=3), json_values),
              "dstqemu": st.one_of(st.sampled_from(["10.0.0.1", "[fd00::1]", "bad host"]), json_values)}),
              json_values)}


def params_for(verb):
    spec = params_mod.SPECS[verb]
    named = st.fixed_dictionaries({}, optional={p.name: VALUES[p.name] for p in spec})
    extra = st.dictionaries(st.text(max_size=8), json_values, max_size=2)
    positional = st.lists(st.one_of(*[VALUES[p.name] for p in spec], json_values), max_size=len(spec) + 1) \
        if spec else st.lists(json_values, max_size=1)
    return st.one_of(named, st.builds(lambda a, b: dict(b, **a), named, extra), positional)


verbs_and_params = st.sampled_from(sorted(params_mod.SPECS)).flatmap(
    lambda verb: st.tuples(st.just(verb), params_for(verb)))


def snapshot(ledger):
    db = ledger._ledger._db
    with ledger._lock:
        return [sorted(map(tuple, db.execute("SELECT * FROM %s" % t).fetchall()))
                for t in ("claims", "vm_status", "vnic_status", "expired")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=verbs_and_params)
def test_any_params_should_give_a_result_or_a_clean_error(service, call):
    verb, params = call
    server = service._server_thread.server
    before = snapshot(service.ledger)
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "SRIOV." + verb, "params": params})
    answer = json.loads(server._marshaled_dispatch(body))
    assert answer["id"] == 7
    if "error" in answer:
        assert answer["error"]["code"] in ALLOWED_ERRORS, answer
        assert snapshot(service.ledger) == before
        if answer["error"]["code"] == -32602:
            assert "field" in answer["error"]["data"]
    else:
        assert "result" in answer
