"""Hostile input against a running federator (grpc.aio over real 127.0.0.1 sockets).

The battery: each case is one bad input (malformed bytes, wrong lengths, non-finite values,
rounds out of place, protocol misuse, oversized metadata, streams that never speak, ...) sent by
a client "bad" while two good clients hold streams in a 2-round plan. For each: the status code
and message, then the good clients complete every round, health checking still answers SERVING
and each round's participants include both good clients. Inputs that are legal though odd
(denormals, FLT_MAX, unknown fields, a huge GetAggregates range, repeated reports) are accepted,
and the test says so. Then: memory stays bounded under a flood of bad calls, a client that stops
reading is cut off without buffering, and hypothesis fuzzes the message handlers.

Denormals are finite floats: they are accepted like any other value (only NaN and ±Inf are
refused); the aggregators compute in float64, so neither denormals nor FLT_MAX overflow.

Fuzzing budget: 200 examples per property in CI; ``CYBER0_FUZZ_EXAMPLES=20000 pytest
tests/test_hostile.py -k fuzz`` runs a longer campaign.
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_federator import (
    federation,
    good,
    join,
    make_config,
    open_stream,
    read,
    read_metrics,
    run,
)
from test_federator_engine import until

from cyber0 import wire
from cyber0.common.aggregators import get_aggregator
from cyber0.server.app import Federator
from cyber0.server.auth import ClaimedIdentity
from cyber0.server.engine import RoundEngine, Stream
from cyber0.server.errors import Refusal
from cyber0.server.log import DurableLog
from cyber0.server.servicer import FederationServicer, Malformed, decoder
from cyber0.v1 import federation_pb2 as pb
from cyber0.v1 import federation_pb2_grpc as pb_grpc

M = 4  # nu = 4, K = 1
ROUNDS = 2
SERVICE = "/cyber0.v1.Federation/"
HELLO_TIMEOUT = 0.5
FLOAT32_MAX = float(np.finfo(np.float32).max)
FUZZ_EXAMPLES = int(os.environ.get("CYBER0_FUZZ_EXAMPLES", "200"))
Code = grpc.StatusCode


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_update(round: int, words: list[int]) -> bytes:
    """A ClientMessage{update{round, values}} with the floats given as raw IEEE-754 words."""
    packed = struct.pack(f"<{len(words)}I", *words)
    body = (b"\x08" + varint(round) if round else b"") + b"\x12" + varint(len(packed)) + packed
    return b"\x12" + varint(len(body)) + body


def ser(msg: pb.ClientMessage) -> bytes:
    return msg.SerializeToString()


def hello(client_id: str = "bad") -> bytes:
    return ser(pb.ClientMessage(hello=pb.Hello(credentials=pb.Credentials(client_id=client_id))))


def report(round: int, digest: str = "ab", **fields: float) -> bytes:
    return ser(pb.ClientMessage(report=pb.Report(round=round, digest=digest, **fields)))


def join_bytes(
    client_id: str = "bad",
    role: int = pb.ROLE_TRAIN,
    version: int = wire.PROTOCOL_VERSION,
    **kw: str,
) -> bytes:
    credentials = pb.Credentials(client_id=client_id, **kw)
    request = pb.JoinRequest(credentials=credentials, role=role, protocol_version=version)
    return request.SerializeToString()


@dataclass
class Arena:
    """A running federator (n = 3, quorum 2, mean, 2 rounds) with good0 and good1 streaming."""

    fed: Federator
    channel: grpc.aio.Channel
    metrics: Path
    goods: list[grpc.aio.StreamStreamCall] = field(default_factory=list)
    next_round: int = 0
    sent: dict[int, list[np.ndarray]] = field(default_factory=dict)

    @property
    def stub(self) -> pb_grpc.FederationStub:
        return pb_grpc.FederationStub(self.channel)

    def unary(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
        """A raw (bytes in, bytes out) unary method, known to the service or not."""
        return self.channel.unary_unary(SERVICE + method)

    def raw_stream(self, **kw: Any) -> grpc.aio.StreamStreamCall:
        return self.channel.stream_stream(SERVICE + "Train")(**kw)

    async def bad_stream(self, role: int = pb.ROLE_TRAIN) -> grpc.aio.StreamStreamCall:
        """Join as "bad" and open a raw stream with its Hello written."""
        await join(self.stub, "bad", role)
        call = self.raw_stream()
        await call.write(hello())
        return call

    async def finish_round(self) -> None:
        """good0 and good1 answer the open round and read its aggregate (which opens the next
        round, if any)."""
        t = self.next_round
        for i, call in enumerate(self.goods):
            msg = good(t, i)
            self.sent.setdefault(t, []).append(np.asarray(msg.update.values, dtype=np.float32))
            await call.write(msg)
        for call in self.goods:
            aggregate = (await read(call)).aggregate
            assert (aggregate.round, aggregate.next_open) == (t, t + 1 < ROUNDS)
        self.next_round += 1


async def refusal(call: Awaitable[Any] | grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:
    """How a unary call or a stream ended (a stream's messages before the error are skipped)."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        if isinstance(call, grpc.aio.StreamStreamCall):
            while True:
                message = await asyncio.wait_for(call.read(), 10)
                assert message is not grpc.aio.EOF, "the stream ended with OK"
        else:
            await call
    return error.value


Attack = Callable[[Arena], Awaitable[grpc.aio.AioRpcError | None]]


def unary(method: str, data: bytes, **kw: Any) -> Attack:
    async def attack(arena: Arena) -> grpc.aio.AioRpcError:
        return await refusal(arena.unary(method)(data, timeout=5, **kw))

    return attack


def after_join(method: str, data: bytes) -> Attack:
    async def attack(arena: Arena) -> grpc.aio.AioRpcError:
        await join(arena.stub, "bad")
        return await refusal(arena.unary(method)(data, timeout=5))

    return attack


def stream_first(*messages: bytes, half_close: bool = False) -> Attack:
    """A stream whose first messages are ``messages`` (no Join, no Hello of its own)."""

    async def attack(arena: Arena) -> grpc.aio.AioRpcError:
        call = arena.raw_stream()
        for data in messages:
            await call.write(data)
        if half_close:
            await call.done_writing()
        return await refusal(call)

    return attack


def after_hello(*messages: bytes, role: int = pb.ROLE_TRAIN, rounds_first: int = 0) -> Attack:
    """ "bad" joins (in ``role``) after the good clients finished ``rounds_first`` rounds,
    sends its Hello, then ``messages``."""

    async def attack(arena: Arena) -> grpc.aio.AioRpcError:
        for _ in range(rounds_first):
            await arena.finish_round()
        call = await arena.bad_stream(role)
        for data in messages:
            await call.write(data)
        return await refusal(call)

    return attack


def accepted(*messages: bytes, rows: list[list[float]] | None = None) -> Attack:
    """ "bad" sends ``messages`` after its Hello and they are accepted: round 0 (quorum 3 here)
    closes with its vector in it, the aggregate is exactly the mean of the three rows."""

    async def attack(arena: Arena) -> None:
        call = await arena.bad_stream()
        assert pb.ServerMessage.FromString(await call.read()).round_start.round == 0
        for data in messages:
            await call.write(data)
        await arena.finish_round()
        aggregate = pb.ServerMessage.FromString(await call.read()).aggregate
        assert aggregate.round == 0 and aggregate.next_open
        await call.write(upd([0.5] * M, 1))  # so that round 1 closes early too
        if rows is not None:
            x = torch.from_numpy(np.stack([*arena.sent[0], np.asarray(rows[0], np.float32)]))
            expected = get_aggregator("mean", f=0)(x).numpy()
            got = np.asarray(aggregate.values, dtype=np.float32)
            assert np.isfinite(got).all() and got.tobytes() == expected.tobytes()
        return None

    return attack


async def get_huge_range(arena: Arena) -> None:
    await arena.finish_round()
    await join(arena.stub, "bad", pb.ROLE_OBSERVER)
    request = pb.GetAggregatesRequest(
        credentials=pb.Credentials(client_id="bad"), from_round=0, to_round=2**32 - 1
    )
    page = await arena.stub.GetAggregates(request, timeout=5)
    assert [a.round for a in page.aggregates] == [0] and page.completed_rounds == 1
    return None


async def report_flood(arena: Arena) -> None:
    """An observer repeats a valid report 300 times: one metrics line, no error."""
    await arena.finish_round()
    call = await arena.bad_stream(pb.ROLE_OBSERVER)
    for _ in range(300):
        await call.write(report(0, accuracy=0.5))
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == Code.OK
    lines = [r for r in read_metrics(arena.metrics) if r["event"] == "report"]
    assert [(r["client"], r["round"]) for r in lines] == [("bad", 0)]
    return None


async def slowloris(arena: Arena) -> grpc.aio.AioRpcError:
    """20 connections, each opening a stream that never sends anything: each stream ends at the
    Hello deadline."""
    own_connection = [("grpc.use_local_subchannel_pool", 1)]  # else channels share one
    channels = [
        grpc.aio.insecure_channel(arena.fed.address, options=own_connection) for _ in range(20)
    ]
    try:
        calls = [ch.stream_stream(SERVICE + "Train")() for ch in channels]
        errors = await asyncio.gather(*(refusal(call) for call in calls))
    finally:
        for channel in channels:
            await channel.close()
    assert {e.code() for e in errors} == {Code.DEADLINE_EXCEEDED}
    return errors[0]


async def silent_sockets(arena: Arena) -> None:
    """20 TCP connections that never send the HTTP/2 preface: the federator closes each at its
    handshake deadline (hello_timeout), with no gRPC status to give."""
    conns = [await asyncio.open_connection("127.0.0.1", arena.fed.port) for _ in range(20)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for reader, _ in conns:
            while await asyncio.wait_for(reader.read(4096), HELLO_TIMEOUT + 5):
                pass  # the server's SETTINGS frame, then EOF when it gives up on us
        assert loop.time() - started >= HELLO_TIMEOUT * 0.8
    finally:
        for _, writer in conns:
            writer.close()
    return None


async def big_metadata_stream(arena: Arena) -> grpc.aio.AioRpcError:
    call = arena.raw_stream(metadata=(("x-pad", "a" * 10_000),))
    await call.write(hello())
    return await refusal(call)


async def second_stream(arena: Arena) -> grpc.aio.AioRpcError:
    await arena.bad_stream()
    second = arena.raw_stream()
    await second.write(hello())
    return await refusal(second)


async def rejoin_as_observer(arena: Arena) -> grpc.aio.AioRpcError:
    await join(arena.stub, "bad")
    return await refusal(arena.unary("Join")(join_bytes(role=pb.ROLE_OBSERVER), timeout=5))


async def federation_full(arena: Arena) -> grpc.aio.AioRpcError:
    await join(arena.stub, "bad")
    return await refusal(arena.unary("Join")(join_bytes("extra"), timeout=5))


WAIT_FOR_ALL = {"timeout": 5.0}  # round 0 closes early only once all three answered


@dataclass(frozen=True)
class Case:
    attack: Attack
    code: grpc.StatusCode | None  # None: accepted
    text: str = ""
    config: dict[str, Any] = field(default_factory=dict)


NAN_WORDS = [0x7FA00000, 0, 0, 0]  # a signalling NaN with a payload, as raw bits
UNKNOWN_FIELD = b"\xf8\x06\x01"  # field 111, varint 1: unknown to ClientMessage
DENORMALS = [1e-45, -1e-40, 1.2e-38, 0.0]

INVALID, PRECONDITION = Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION
DENIED, EXHAUSTED = Code.PERMISSION_DENIED, Code.RESOURCE_EXHAUSTED


def upd(values: list[float], round: int = 0) -> bytes:
    return ser(wire.update_message(round, values))


def get_req(from_round: int, to_round: int) -> bytes:
    credentials = pb.Credentials(client_id="bad")
    request = pb.GetAggregatesRequest(
        credentials=credentials, from_round=from_round, to_round=to_round
    )
    return request.SerializeToString()


BATTERY: dict[str, Case] = {
    # Join
    "join: truncated bytes": Case(unary("Join", b"\x0a\xff"), INVALID, "malformed JoinRequest"),
    "join: invalid wire type": Case(unary("Join", b"\x0f"), INVALID, "malformed JoinRequest"),
    "join: invalid UTF-8 id": Case(unary("Join", b"\x0a\x04\x0a\x02\xff\xfe"), INVALID, "UTF-8"),
    "join: zero bytes": Case(unary("Join", b""), PRECONDITION, "protocol_version 0 is not"),
    "join: protocol 1": Case(unary("Join", join_bytes(version=1)), PRECONDITION, "version 1"),
    "join: role unspecified": Case(unary("Join", join_bytes(role=0)), INVALID, "role must be"),
    "join: role 7": Case(unary("Join", join_bytes(role=7)), INVALID, "got 7"),
    "join: empty id": Case(unary("Join", join_bytes("")), INVALID, "client_id must be"),
    "join: path in id": Case(unary("Join", join_bytes("../etc")), INVALID, "got '../etc'"),
    "join: NUL in id": Case(unary("Join", join_bytes("a\x00b")), INVALID, "client_id must"),
    "join: 129-char id": Case(unary("Join", join_bytes("x" * 129)), INVALID, "1..128"),
    "join: 257-char token": Case(unary("Join", join_bytes(token="t" * 257)), INVALID, "got 257"),
    "join: over the receive limit": Case(
        unary("Join", join_bytes(token="t" * 2000)), EXHAUSTED, "larger than max"
    ),
    "join: 10 KiB of metadata": Case(
        unary("Join", join_bytes(), metadata=(("x-pad", "a" * 10_000),)),
        EXHAUSTED,
        "metadata size exceeds",
    ),
    "join: 1000 metadata entries": Case(
        unary("Join", join_bytes(), metadata=tuple((f"x-{i}", "v") for i in range(1000))),
        EXHAUSTED,
    ),
    "join: as observer after train": Case(rejoin_as_observer, PRECONDITION, "cannot rejoin"),
    "join: one id too many": Case(federation_full, DENIED, "the federation is full"),
    "unknown method": Case(unary("Steal", b""), Code.UNIMPLEMENTED),
    # GetAggregates
    "get: before join": Case(unary("GetAggregates", get_req(0, 1)), PRECONDITION, "Join first"),
    "get: malformed": Case(unary("GetAggregates", b"\x0a\x05\x0a"), INVALID, "malformed Get"),
    "get: empty range": Case(after_join("GetAggregates", get_req(1, 1)), INVALID, "to_round must"),
    "get: beyond completed": Case(
        after_join("GetAggregates", get_req(9, 10)), Code.OUT_OF_RANGE, "beyond the 0 completed"
    ),
    "get: to_round 2^32-1 (accepted, one page)": Case(get_huge_range, None),
    # Train stream, before the Hello
    "stream: malformed first": Case(stream_first(b"\x12\xff\xff"), INVALID, "malformed Client"),
    "stream: update first": Case(stream_first(upd([1.0] * M)), INVALID, "first message"),
    "stream: empty message first": Case(stream_first(b""), INVALID, "first message"),
    "stream: half-closed at once": Case(stream_first(half_close=True), INVALID, "first message"),
    "stream: hello before join": Case(stream_first(hello("x")), PRECONDITION, "has not joined"),
    "stream: hello with bad id": Case(stream_first(hello("a b")), INVALID, "client_id must be"),
    "stream: 10 KiB of metadata": Case(big_metadata_stream, EXHAUSTED, "metadata size exceeds"),
    "stream: slowloris x20": Case(slowloris, Code.DEADLINE_EXCEEDED, "no Hello within 0.5 s"),
    "tcp: silent connections x20 (closed at the handshake deadline)": Case(silent_sockets, None),
    "stream: second concurrent": Case(second_stream, DENIED, "already has an open stream"),
    # After the Hello
    "hello twice": Case(after_hello(hello()), INVALID, "Hello is allowed only"),
    "empty message": Case(after_hello(b""), INVALID, "empty ClientMessage"),
    "malformed message": Case(after_hello(b"\x12\x05\x12\x03"), INVALID, "malformed Client"),
    "update: 0 values": Case(after_hello(upd([])), INVALID, "has 0 values"),
    "update: m-1 values": Case(after_hello(upd([1.0] * (M - 1))), INVALID, "has 3 values"),
    "update: m+1 values": Case(after_hello(upd([1.0] * (M + 1))), INVALID, "has 5 values"),
    "update: 100k values": Case(after_hello(upd([1.0] * 100_000)), EXHAUSTED, "larger than max"),
    "update: NaN": Case(after_hello(upd([0, math.nan, 0, 0])), INVALID, "index 1: nan"),
    "update: +Inf": Case(after_hello(upd([math.inf, 0, 0, 0])), INVALID, "index 0: inf"),
    "update: -Inf": Case(after_hello(upd([0, 0, 0, -math.inf])), INVALID, "index 3: -inf"),
    "update: signalling NaN bits": Case(
        after_hello(raw_update(0, NAN_WORDS)), INVALID, "non-finite value at index 0: nan"
    ),
    "update: future round": Case(
        after_hello(upd([1.0] * M, 1)), PRECONDITION, "update for round 1 but round 0 is open"
    ),
    "update: round 2^32-1": Case(
        after_hello(upd([1.0] * M, 2**32 - 1)), PRECONDITION, "round 4294967295"
    ),
    "update: stale round": Case(
        after_hello(upd([1.0] * M, 0), rounds_first=1),
        PRECONDITION,
        "update for round 0 but round 1 is open",
    ),
    "update: duplicate": Case(
        after_hello(upd([1.0] * M), upd([1.0] * M)), PRECONDITION, "already sent"
    ),
    "update: after training": Case(
        after_hello(upd([1.0] * M, 2), rounds_first=2), PRECONDITION, "training is over"
    ),
    "update: from an observer": Case(
        after_hello(upd([1.0] * M), role=pb.ROLE_OBSERVER), DENIED, "observers do not send"
    ),
    "update: denormals (accepted)": Case(
        accepted(upd(DENORMALS), rows=[DENORMALS]), None, config=WAIT_FOR_ALL
    ),
    "update: FLT_MAX (accepted, no overflow)": Case(
        accepted(upd([FLOAT32_MAX] * M), rows=[[FLOAT32_MAX] * M]), None, config=WAIT_FOR_ALL
    ),
    "update: unknown field (accepted)": Case(
        accepted(upd([1.0] * M) + UNKNOWN_FIELD), None, config=WAIT_FOR_ALL
    ),
    # Reports
    "report: future round": Case(after_hello(report(5)), PRECONDITION, "only 0 rounds are"),
    "report: NaN accuracy": Case(
        after_hello(report(0, accuracy=math.nan), rounds_first=1), INVALID, "got nan"
    ),
    "report: infinite loss": Case(
        after_hello(report(0, loss=math.inf), rounds_first=1), INVALID, "loss must be finite"
    ),
    "report: uppercase digest": Case(
        after_hello(report(0, digest="ABCD"), rounds_first=1), INVALID, "lowercase hex"
    ),
    "report: 129-char digest": Case(
        after_hello(report(0, digest="a" * 129), rounds_first=1), INVALID, "at most 128"
    ),
    "report: flood of repeats (accepted, recorded once)": Case(report_flood, None),
}


def arena_config(metrics: Path, **overrides: Any) -> Any:
    base = dict(n=3, f=0, nu=M, aggregator="mean", rounds=ROUNDS, timeout=0.05, quorum=2)
    return make_config(
        **{**base, "hello_timeout": HELLO_TIMEOUT, "metrics": str(metrics), **overrides}
    )


async def open_arena(fed: Federator, channel: grpc.aio.Channel, metrics: Path) -> Arena:
    arena = Arena(fed, channel, metrics)
    for cid in ("good0", "good1"):
        await join(arena.stub, cid)
        arena.goods.append(await open_stream(arena.stub, cid))
    for call in arena.goods:
        assert (await read(call)).round_start.round == 0
    return arena


@pytest.mark.parametrize("name", list(BATTERY))
def test_battery(name: str, tmp_path: Path) -> None:
    case = BATTERY[name]
    metrics = tmp_path / "metrics.jsonl"

    async def main() -> None:
        async with (
            federation(arena_config(metrics, **case.config)) as fed,
            grpc.aio.insecure_channel(fed.address) as channel,
        ):
            arena = await open_arena(fed, channel, metrics)
            error = await case.attack(arena)
            if case.code is None:
                assert error is None
            else:
                assert error is not None and error.code() == case.code, error
                assert case.text in (error.details() or ""), error.details()
            while arena.next_round < ROUNDS:
                await arena.finish_round()
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            for call in arena.goods:
                call.cancel()

    run(main())
    rounds = [r for r in read_metrics(metrics) if r["event"] == "round"]
    assert [r["round"] for r in rounds] == list(range(ROUNDS))
    for r in rounds:
        assert {"good0", "good1"} <= set(r["participants"])


def test_the_battery_holds_thirty_distinct_refusals() -> None:
    refused = {name for name, case in BATTERY.items() if case.code is not None}
    assert len(refused) >= 30
    assert len(BATTERY) >= 40


def run_long(coro: Awaitable[None], timeout: float = 120.0) -> None:
    """Like ``test_federator.run`` with a longer bound."""
    import uvloop

    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)

    uvloop.run(bounded())


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_bounded_under_a_flood_of_bad_calls(tmp_path: Path) -> None:
    """3,000 bad calls (malformed Joins, refused streams, bad updates from one joined client on
    a new stream each time) while round 0 is open: RSS after the flood stays within 8 MiB of
    RSS after a 600-call warm-up, the round's record holds "bad" once, and the round completes."""
    metrics = tmp_path / "metrics.jsonl"
    bad_calls = [
        lambda a: a.unary("Join")(b"\x0a\xff", timeout=5),
        lambda a: a.unary("Join")(join_bytes("x" * 200), timeout=5),
        lambda a: a.unary("GetAggregates")(b"", timeout=5),
    ]

    async def bad_stream(arena: Arena, i: int) -> None:
        call = arena.raw_stream()
        await call.write(hello())
        await call.write(ser(wire.update_message(0, [math.nan] * M if i % 2 else [1.0])))
        error = await refusal(call)  # the first refusal excludes "bad" from round 0
        assert error.code() in (INVALID, PRECONDITION)

    async def flood(arena: Arena, calls: int) -> None:
        for i in range(calls // 4):
            for make in bad_calls:
                with pytest.raises(grpc.aio.AioRpcError):
                    await make(arena)
            await bad_stream(arena, i)

    async def main() -> None:
        async with (
            federation(arena_config(metrics)) as fed,
            grpc.aio.insecure_channel(fed.address) as channel,
        ):
            arena = await open_arena(fed, channel, metrics)
            await join(arena.stub, "bad")
            await flood(arena, 600)
            before = rss_bytes()
            await flood(arena, 3000)
            growth = rss_bytes() - before
            assert growth < 8 << 20, f"RSS grew by {growth / 2**20:.1f} MiB"
            await arena.finish_round()
            await arena.finish_round()
            for call in arena.goods:
                call.cancel()

    run_long(main())
    first = next(r for r in read_metrics(metrics) if r["event"] == "round")
    assert [r["client"] for r in first["rejected"]] == ["bad"]


@pytest.mark.slow
def test_a_client_that_stops_reading_is_cut_off_not_buffered(tmp_path: Path) -> None:
    """With 64 KiB aggregates (m = 16,384), a client that never reads fills the transport's
    windows and buffers; the federator then queues at most 64 messages for it, closes its stream
    (it is no longer counted as connected) and keeps running rounds for the others. When the
    laggard finally reads, it gets what was queued, then RESOURCE_EXHAUSTED."""
    m = 16_384
    rounds = 400
    metrics = tmp_path / "metrics.jsonl"
    config = make_config(
        n=3, f=0, nu=m, aggregator="mean", rounds=rounds, timeout=0.05, quorum=2,
        metrics=str(metrics),
    )  # fmt: skip
    update = np.arange(m, dtype=np.float32)

    def recipients() -> list[int]:
        return [r["recipients"] for r in read_metrics(metrics) if r["event"] == "round"]

    async def main() -> None:
        async with federation(config) as fed, grpc.aio.insecure_channel(fed.address) as channel:
            stub = pb_grpc.FederationStub(channel)
            await join(stub, "laggard")
            laggard = await open_stream(stub, "laggard")
            goods = []
            for cid in ("good0", "good1"):
                await join(stub, cid)
                goods.append(await open_stream(stub, cid))
            for t in range(rounds):
                for call in goods:
                    msg = await read(call)
                    opened = msg.round_start.round if t == 0 else msg.aggregate.round + 1
                    assert opened == t and (t == 0 or msg.aggregate.next_open)
                    await call.write(wire.update_message(t, update))
                if t % 10 == 9 and recipients()[-1] == 2:
                    break
            sent_to = recipients()
            assert sent_to[-1] == 2, "the laggard was never cut off"
            cut = sent_to.index(2)
            assert set(sent_to[:cut]) == {3} and set(sent_to[cut:]) == {2}
            for call in goods:
                call.cancel()
            received = 0
            with pytest.raises(grpc.aio.AioRpcError) as error:
                while True:
                    msg = await asyncio.wait_for(laggard.read(), 10)
                    assert msg is not grpc.aio.EOF
                    received += 1
            assert error.value.code() == Code.RESOURCE_EXHAUSTED
            assert "64 messages behind" in (error.value.details() or "")
            # Everything it was sent before the cut, and no more: 2 messages per round.
            assert received <= 2 * cut + 1

    run_long(main())


# ----------------------------------------------------------------------------- fuzzing
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_decoders_never_raise(data: bytes) -> None:
    for cls in (pb.JoinRequest, pb.ClientMessage, pb.GetAggregatesRequest):
        decoded = decoder(cls)(data)
        assert isinstance(decoded, cls | Malformed)
        if isinstance(decoded, Malformed):
            assert decoded.refusal().code == Code.INVALID_ARGUMENT


floats = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
rounds_st = st.one_of(st.integers(0, 3), st.just(2**32 - 1))
update_st = st.builds(
    lambda r, v: pb.ClientMessage(update=pb.Update(round=r, values=v)),
    rounds_st,
    st.one_of(st.lists(floats, min_size=M, max_size=M), st.lists(floats, max_size=2 * M)),
)
report_st = st.builds(
    lambda r, acc, loss, d: pb.ClientMessage(
        report=pb.Report(round=r, accuracy=acc, loss=loss, digest=d)
    ),
    rounds_st,
    floats,
    floats,
    st.text(alphabet="0123456789abcdefABX", max_size=130),
)
message_st = st.one_of(
    update_st,
    report_st,
    st.just(pb.ClientMessage()),
    st.binary(max_size=64).map(decoder(pb.ClientMessage)),
)
op_st = st.tuples(st.sampled_from(["a", "b", "c", "obs"]), message_st)
ALLOWED = {Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.PERMISSION_DENIED}


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(op_st, max_size=40))
def test_fuzz_message_handlers_refuse_cleanly_and_keep_state_sane(
    ops: list[tuple[str, pb.ClientMessage | Malformed]],
) -> None:
    """Any sequence of messages from three training clients and an observer: every handler call
    either succeeds or raises a Refusal with an allowed code; accepted vectors are exactly m
    finite float32s; each client is recorded at most once per round; rounds keep closing."""

    async def main() -> None:
        config = make_config(n=3, f=0, nu=M, aggregator="mean", rounds=3, timeout=0.01, quorum=2)
        engine = RoundEngine(
            config.plan,
            get_aggregator("mean", f=0),
            DurableLog.open(None, config.plan),
            round_timeout=0.01,
            quorum=2,
        )
        servicer = FederationServicer(engine, ClaimedIdentity(), hello_timeout=1.0)
        streams: dict[str, Stream] = {}
        try:
            for cid in ("a", "b", "c", "obs"):
                await engine.join(cid, "observer" if cid == "obs" else "train")
                streams[cid] = engine.connect(cid)
            engine.start()
            for cid, msg in ops:
                stream = streams[cid]
                if stream.closed:  # refused: the client reconnects, as the servicer allows
                    engine.disconnect(stream)
                    stream = streams[cid] = engine.connect(cid)
                try:
                    servicer.dispatch(stream, msg)
                except Refusal as refusal:
                    assert refusal.code in ALLOWED, refusal.message
                    stream.close(refusal.code, refusal.message)
                r = engine._round
                for vector in r.received.values():
                    row = np.frombuffer(vector, dtype="<f4")
                    assert row.shape == (M,) and np.isfinite(row).all()
                recorded = [c for c, _ in r.rejected]
                assert len(recorded) == len(set(recorded))
                await asyncio.sleep(0)
            # The engine still runs rounds: the clients not left out answer the open round.
            for cid in ("a", "b", "c"):
                if streams[cid].closed:
                    engine.disconnect(streams[cid])
                    streams[cid] = engine.connect(cid)
            rounds = config.plan.rounds
            await until(lambda: engine._round.is_open or engine._round.index >= rounds)
            r = engine._round
            if r.index < rounds:
                for cid in sorted({"a", "b", "c"} - r.received.keys() - r.excluded.keys()):
                    servicer.dispatch(streams[cid], wire.update_message(r.index, [0.5] * M))
                if len(r.received) >= 2:
                    await until(lambda: engine.completed_rounds > r.index)
        finally:
            await engine.close()
            engine._log.close()

    run(main())
