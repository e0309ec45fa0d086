"""Who is calling: the place where authentication plugs in.

Until mutual TLS and tokens land (issue 6), :class:`ClaimedIdentity` takes the client id from the
message on trust, after checking its format. A real authenticator derives the id from the verified
peer certificate in ``context.auth_context()`` or checks the token in constant time.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from cyber0 import wire
from cyber0.v1 import federation_pb2 as pb

from .errors import Refusal


class Authenticator(Protocol):
    """Maps a call's credentials (and its transport context) to a verified client id."""

    def authenticate(self, credentials: pb.Credentials, context: grpc.aio.ServicerContext) -> str:
        """The verified client id; raises :class:`Refusal` (UNAUTHENTICATED, PERMISSION_DENIED,
        INVALID_ARGUMENT) when the caller may not act as anyone."""
        ...


class ClaimedIdentity:
    """Trusts the claimed id (no token check): for loopback runs and tests only."""

    def authenticate(self, credentials: pb.Credentials, context: grpc.aio.ServicerContext) -> str:
        """The claimed id if it matches ``[A-Za-z0-9._-]{1,128}`` and the token is bounded."""
        client_id = credentials.client_id
        if not wire.CLIENT_ID_PATTERN.fullmatch(client_id):
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"client_id must be 1..{wire.MAX_CLIENT_ID_CHARS} characters of [A-Za-z0-9._-]; "
                f"got {client_id[: wire.MAX_CLIENT_ID_CHARS]!r}",
            )
        if len(credentials.token) > wire.MAX_TOKEN_CHARS:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"token must be at most {wire.MAX_TOKEN_CHARS} characters; "
                f"got {len(credentials.token)}",
            )
        return client_id
