"""The one exception the federator's logic raises at a caller: a refusal with its gRPC status."""

from __future__ import annotations

import grpc


class Refusal(Exception):
    """A request is refused; the servicer answers it with ``code`` and ``message`` verbatim.

    ``message`` says exactly what was wrong, with the offending values.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
