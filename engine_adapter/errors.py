"""Adapter errors: one line for the admin, and the exit code to leave with.

Exit codes follow grep: 0 yes/done, 1 the VM is not migratable (a verdict,
not a fault), 2 anything went wrong (usage, engine, host service), 130 on
Ctrl-C.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOT_MIGRATABLE = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class AdapterError(Exception):
    """An expected failure, reported as one line without a traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotMigratable(AdapterError):
    exit_code = EXIT_NOT_MIGRATABLE


class EngineFault(AdapterError):
    """The engine answered with a ``<fault>``; its words are kept verbatim."""

    def __init__(self, what: str, reason: str, detail: str, status=None):
        text = "engine refused to %s: %s" % (what, reason or "(no reason)")
        if detail:
            text += ": %s" % detail
        if status:
            text += " (HTTP %s)" % status
        super().__init__(text)
        self.reason = reason
        self.detail = detail
        self.status = status
