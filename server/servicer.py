"""The gRPC face of the federator: decode, authenticate, call the engine, answer.

No round logic here: every decision is :class:`~cyber0.server.engine.RoundEngine`'s, and every
refusal becomes ``context.abort(code, message)`` with the engine's message.

Requests are decoded here rather than by gRPC (:func:`add_federation_to_server`): gRPC answers
a message it cannot parse with UNKNOWN and the parser's exception, where the protocol promises
INVALID_ARGUMENT and a plain message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped]

from cyber0 import wire
from cyber0.v1 import federation_pb2 as pb
from cyber0.v1 import federation_pb2_grpc as pb_grpc

from .auth import Authenticator
from .engine import Closing, Role, RoundEngine, Stream, cancel_and_wait
from .errors import Refusal

_log = logging.getLogger("cyber0.federator")

_ROLES: dict[int, Role] = {pb.ROLE_TRAIN: "train", pb.ROLE_OBSERVER: "observer"}

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Malformed:
    """Bytes that do not parse as the expected message: what they should have been and why."""

    expected: str
    reason: str

    def refusal(self) -> Refusal:
        """INVALID_ARGUMENT naming the message type and the parser's complaint."""
        return Refusal(
            grpc.StatusCode.INVALID_ARGUMENT, f"malformed {self.expected}: {self.reason}"
        )


def decoder(cls: type[M]) -> Callable[[bytes], M | Malformed]:
    """A request deserializer that returns :class:`Malformed` instead of raising."""
    name = cls.DESCRIPTOR.name
    prefix = f"Error parsing message with type '{cls.DESCRIPTOR.full_name}': "

    def decode(data: bytes) -> M | Malformed:
        msg = cls()
        try:
            msg.ParseFromString(data)
        except DecodeError as exc:
            return Malformed(name, str(exc).removeprefix(prefix))
        return msg

    return decode


def add_federation_to_server(servicer: FederationServicer, server: grpc.aio.Server) -> None:
    """Register ``cyber0.v1.Federation`` with :func:`decoder` deserializers (what
    ``federation_pb2_grpc.add_FederationServicer_to_server`` does with strict ones)."""
    handlers = {
        "Join": grpc.unary_unary_rpc_method_handler(
            servicer.Join,
            request_deserializer=decoder(pb.JoinRequest),
            response_serializer=pb.JoinResponse.SerializeToString,
        ),
        "Train": grpc.stream_stream_rpc_method_handler(
            servicer.Train,
            request_deserializer=decoder(pb.ClientMessage),
            response_serializer=pb.ServerMessage.SerializeToString,
        ),
        "GetAggregates": grpc.unary_unary_rpc_method_handler(
            servicer.GetAggregates,
            request_deserializer=decoder(pb.GetAggregatesRequest),
            response_serializer=pb.GetAggregatesResponse.SerializeToString,
        ),
    }
    name = pb.DESCRIPTOR.services_by_name["Federation"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


async def _abort(context: grpc.aio.ServicerContext, refusal: Refusal) -> NoReturn:
    await context.abort(refusal.code, refusal.message)
    raise AssertionError("unreachable: abort raises")


class FederationServicer(pb_grpc.FederationServicer):
    """Implements ``cyber0.v1.Federation`` over a :class:`RoundEngine`."""

    def __init__(
        self, engine: RoundEngine, authenticator: Authenticator, *, hello_timeout: float
    ) -> None:
        self._engine = engine
        self._auth = authenticator
        self._hello_timeout = hello_timeout

    def _identify(self, credentials: pb.Credentials, context: grpc.aio.ServicerContext) -> str:
        """The caller's verified client id (:class:`Refusal` otherwise), noted as the owner of
        the connection the call came on."""
        client_id = self._auth.authenticate(credentials, context)
        self._engine.authenticated(client_id, context.peer())
        return client_id

    async def Join(
        self, request: pb.JoinRequest | Malformed, context: grpc.aio.ServicerContext
    ) -> pb.JoinResponse:
        """Admit the caller and hand it the plan, its shard and the current round."""
        try:
            if isinstance(request, Malformed):
                raise request.refusal()
            if request.protocol_version != wire.PROTOCOL_VERSION:
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"protocol_version {request.protocol_version} is not supported; "
                    f"this federator speaks {wire.PROTOCOL_VERSION}",
                )
            role = _ROLES.get(request.role)
            if role is None:
                raise Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"role must be ROLE_TRAIN or ROLE_OBSERVER; got {request.role}",
                )
            client_id = self._identify(request.credentials, context)
            info = await self._engine.join(client_id, role)
        except Refusal as refusal:
            await _abort(context, refusal)
        return pb.JoinResponse(
            plan=wire.plan_to_proto(info.plan),
            shard_index=info.shard_index or 0,
            current_round=info.current_round,
            model_digest=info.model_digest,
            model_digest_round=info.model_digest_round,
            protocol_version=wire.PROTOCOL_VERSION,
        )

    async def GetAggregates(
        self, request: pb.GetAggregatesRequest | Malformed, context: grpc.aio.ServicerContext
    ) -> pb.GetAggregatesResponse:
        """One page of completed rounds' aggregates."""
        try:
            if isinstance(request, Malformed):
                raise request.refusal()
            client_id = self._identify(request.credentials, context)
            page, completed = self._engine.aggregates(
                client_id, request.from_round, request.to_round
            )
        except Refusal as refusal:
            await _abort(context, refusal)
        return pb.GetAggregatesResponse(aggregates=page, completed_rounds=completed)

    async def Train(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        """Hello, then updates and reports in; round starts and aggregates out."""
        try:
            stream = await self._open(context)
        except Refusal as refusal:
            await _abort(context, refusal)
        reader = asyncio.create_task(self._read(context, stream))
        try:
            while True:
                item = await stream.outbox.get()
                if isinstance(item, Closing):
                    if item.code != grpc.StatusCode.OK:
                        await context.abort(item.code, item.message)
                    return
                await context.write(item)
        finally:
            try:  # cancelled by gRPC while the reader waits: its cancellation is re-raised here
                await cancel_and_wait(reader)
            finally:
                self._engine.disconnect(stream)

    async def _open(self, context: grpc.aio.ServicerContext) -> Stream:
        try:
            async with asyncio.timeout(self._hello_timeout):
                first = await context.read()
        except TimeoutError:
            raise Refusal(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no Hello within {self._hello_timeout:g} s of opening the stream",
            ) from None
        if isinstance(first, Malformed):
            raise first.refusal()
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "hello":
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message of a stream must be Hello"
            )
        client_id = self._identify(first.hello.credentials, context)
        return self._engine.connect(client_id)

    async def _read(self, context: grpc.aio.ServicerContext, stream: Stream) -> None:
        """Feed the client's messages to the engine until EOF or the first refusal."""
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF:
                    stream.close(grpc.StatusCode.OK, "")
                    return
                self.dispatch(stream, msg)
        except Refusal as refusal:
            stream.close(refusal.code, refusal.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            if stream.closed:  # the read was cut short by our own abort
                return
            _log.exception("stream of %s failed", stream.client_id)
            stream.close(grpc.StatusCode.INTERNAL, "internal error while reading the stream")

    def dispatch(self, stream: Stream, msg: pb.ClientMessage | Malformed) -> None:
        """Hand one message read after the Hello to the engine; raises :class:`Refusal` (the
        stream then ends with its status). The fuzzing target of tests/test_hostile.py."""
        if isinstance(msg, Malformed):
            self._engine.refuse(stream, msg.refusal())
        kind = msg.WhichOneof("kind")
        if kind == "update":
            update = msg.update
            self._engine.submit_update(stream, update.round, update.values, msg.ByteSize())
        elif kind == "report":
            report = msg.report
            self._engine.submit_report(
                stream,
                report.round,
                report.accuracy if report.HasField("accuracy") else None,
                report.loss if report.HasField("loss") else None,
                report.digest,
            )
        else:
            what = "Hello is allowed only as the first message" if kind else "empty ClientMessage"
            self._engine.refuse(stream, Refusal(grpc.StatusCode.INVALID_ARGUMENT, what))
