"""Shared fixtures for the unit tests: the domain XML corpus."""

from __future__ import annotations

import pytest
from helpers.corpus import read_domain


@pytest.fixture
def domain_bytes():
    return read_domain
