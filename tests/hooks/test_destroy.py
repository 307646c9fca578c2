"""after_vm_destroy / after_vm_migrate_source release the finished instance's VFs only.

After A->B, VDSM destroys the old instance on A; a reservation already
made on A for a migration back (B->A) belongs to the coming instance and
must survive. It expires by itself if nobody comes.
"""

from __future__ import annotations

import pytest
from helpers.corpus import read_domain

from sriov_host import inventory
from sriov_host.ledger import IN_USE, UNPLUGGED, Ledger
from vdsm_hooks.hook import main

VM = "4f1c3a52-8d6e-4b8e-9a0e-3c2f9d0e7a11"


def _hold(host, macs_states):
    inv = inventory.load_nodedev_file(str(host.inventory))
    vfs = inv.vfs
    with Ledger(str(host.ledger)) as ledger:
        for i, (mac, state) in enumerate(macs_states):
            if state == "reserved":
                ledger.reserve(VM, [{"mac": mac}], inv, frozenset(v.address for v in vfs[:i + 2]), ttl=60)
            else:
                ledger.hold(VM, [{"vf": vfs[i], "mac": mac, "alias": "ua-%d" % i}], state)


@pytest.mark.parametrize("point", ["after_vm_destroy", "after_vm_migrate_source"])
def test_finished_instance_should_release_its_vfs_but_keep_a_reservation_for_a_coming_one(
        host, hook_env, capsys, point):
    _hold(host, [("56:6f:1a:2b:00:01", IN_USE), ("56:6f:1a:2b:00:02", UNPLUGGED)])
    _hold(host, [("56:6f:1a:2b:00:03", "reserved")])
    env, _ = hook_env(read_domain("one_vf_vlan"))
    rc = main(["--point", point], env=env)
    err = capsys.readouterr().err
    assert rc == 0 and "released 2" in err
    assert [(c.mac, c.state) for c in host.claims(VM)] == [("56:6f:1a:2b:00:03", "reserved")]
