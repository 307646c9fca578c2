"""The two ways a call to the service fails: an error answer, or no answer.

Apart from the client (:mod:`jsonrpc_plugin.client`) so the modules that
format its output (the drain's progress lines) need not import it back.
"""

from __future__ import annotations

from typing import Any


class RpcError(Exception):
    """The service answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__("(code=%s, message=%s)" % (code, message))
        self.code = code
        self.message = message
        self.data = data


class RpcUnavailable(Exception):
    """No answer: connection refused, TLS failure, timeout, or garbage."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def one_line(e) -> str:
    """One line; with the JSON-RPC code where the peer answered with one (2001 no free VF...)."""
    text = " ".join(str(getattr(e, "message", None) or e).split()) or type(e).__name__
    code = getattr(e, "code", None)
    return "%s (code %s)" % (text, code) if isinstance(code, int) else text
