"""Lab fixtures: two real libvirtd hosts and a tiny real guest (see sriov_lab.fixtures)."""

from sriov_lab.fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    lab,
    lab_conns,
    lab_guest,
    lab_hook_runners,
    lab_hosts,
    lab_vms,
)
