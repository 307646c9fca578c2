"""Test and benchmark helpers that do not depend on sriov_host."""
