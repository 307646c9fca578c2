"""Shared fixtures for the unit tests: the domain XML corpus and helpers."""

from __future__ import annotations

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS_DIR = os.path.join(TESTS_DIR, "data", "domains")

if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)  # for tests/helpers


def read_domain(name: str) -> bytes:
    """The bytes of ``tests/data/domains/<name>.xml``."""
    with open(os.path.join(DOMAINS_DIR, name + ".xml"), "rb") as f:
        return f.read()


@pytest.fixture
def domain_bytes():
    return read_domain
