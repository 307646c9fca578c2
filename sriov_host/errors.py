"""Errors with stable numeric codes shared by hooks, service and CLI.

The codes are the JSON-RPC ones of DESIGN.md; ``expected`` errors are
user or environment problems that are logged without a traceback.
"""

from __future__ import annotations

INVALID_PARAMS = -32602
NO_FREE_VF = 2001
NO_SUCH_VM = 2002
LIBVIRT_FAILURE = 2003
RESERVATION_EXPIRED = 2004

SHOWN_CHARS = 64  # of a value echoed from untrusted input
LINE_CHARS = 1000  # of a whole message line (stderr, vdsm.log, a JSON-RPC error)


def clip(text, limit: int = SHOWN_CHARS) -> str:
    """*text* cut to *limit* characters, saying how long it was: names inside a message."""
    text = str(text)
    return text if len(text) <= limit else "%s...(%d chars)" % (text[:limit], len(text))


def shown(value, limit: int = SHOWN_CHARS) -> str:
    """An echoed value as repr, cut to *limit* characters: a 1 MB attribute stays short."""
    if isinstance(value, str) and len(value) > limit:
        return "%r...(%d chars)" % (value[:limit], len(value))
    return clip(repr(value), limit)


def one_line(text, limit: int = LINE_CHARS) -> str:
    """*text* as one line of at most about *limit* characters, for logs an admin reads."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else "%s...(%d chars)" % (line[:limit], len(line))


class SriovError(Exception):
    code = 2000
    expected = True

    def __init__(self, message: str, data: dict | None = None):
        super().__init__(message)
        self.message = message
        self.data = data or {}


class InvalidParams(SriovError):
    code = INVALID_PARAMS


class NoFreeVf(SriovError):
    code = NO_FREE_VF


class NoSuchVm(SriovError):
    code = NO_SUCH_VM


class LibvirtFailure(SriovError):
    code = LIBVIRT_FAILURE
    expected = False


class ReservationExpired(SriovError):
    code = RESERVATION_EXPIRED


class BadDomainXml(SriovError):
    """The domain XML handed to us is malformed or hostile."""


class ConfigError(SriovError):
    """The configuration file is unreadable or holds a bad value."""


class InventoryError(SriovError):
    """The VF inventory source cannot be read."""


NOT_MIGRATABLE = 2006
MIGRATION_IN_PROGRESS = 2007


class NotMigratable(SriovError):
    """The VM's policy, or a device no migration can carry, refuses the migration."""

    code = NOT_MIGRATABLE


class MigrationInProgress(SriovError):
    """A migration of this VM is already being driven or run."""

    code = MIGRATION_IN_PROGRESS
