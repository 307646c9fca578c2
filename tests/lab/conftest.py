"""Lab tests: their fixtures (sriov_lab.fixtures) are registered in tests/conftest.py."""
