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
