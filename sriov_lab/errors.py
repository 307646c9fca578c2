"""Errors of the lab itself (not of the product under test)."""

from __future__ import annotations


class LabError(Exception):
    """The lab could not be set up or torn down; the message says why."""
