"""The federator over real gRPC on 127.0.0.1: rounds, deadline and quorum, refusals, the durable
log, metrics, health and reflection. Also the helpers the client-session tests reuse."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
import torch
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cyber0 import wire
from cyber0.client.session import Backoff, Session, SessionConfig
from cyber0.common.aggregators import get_aggregator
from cyber0.common.plan import TrainingPlan
from cyber0.server.app import SERVICE_NAME, Federator
from cyber0.server.config import FederatorConfig, build_config, max_receive_bytes
from cyber0.server.log import DurableLog, LogError
from cyber0.v1 import federation_pb2 as pb
from cyber0.v1 import federation_pb2_grpc as pb_grpc

T = TypeVar("T")
TIMEOUT = 20.0
FAST = Backoff(initial=0.05, maximum=0.2)


def run(coro: Awaitable[T]) -> T:
    """Run ``coro`` on a fresh uvloop loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, TIMEOUT)

    return uvloop.run(bounded())


def make_config(
    *,
    n: int = 4,
    f: int = 1,
    nu: int = 4,
    rounds: int = 3,
    aggregator: str = "cwtm",
    timeout: float = 5.0,
    seed: int = 7,
    **settings: Any,
) -> FederatorConfig:
    """A small plan on a free loopback port."""
    return build_config(
        {
            "seed": seed,
            "zo": {"nu": nu},
            "n_clients": n,
            "f": f,
            "aggregator": aggregator,
            "rounds": rounds,
            "federator": {"port": 0, "round_timeout": timeout, "linger": 0.0, **settings},
        }
    )


class FakeTrainer:
    """Sends a seeded Gaussian vector per round and records what it sent and applied."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.m = 0
        self.shard = -2
        self.setups = 0
        self.sent: dict[int, np.ndarray] = {}
        self.applied: list[np.ndarray] = []

    def setup(self, plan: TrainingPlan, shard_index: int, client_id: str) -> None:
        self.m = plan.zo.scalars_per_round
        self.shard = shard_index
        self.setups += 1

    @property
    def applied_round(self) -> int:
        return len(self.applied) - 1

    def compute_update(self, round: int) -> Sequence[float]:
        vector = np.random.default_rng([self.seed, round]).standard_normal(self.m)
        self.sent[round] = vector.astype(np.float32)
        return self.sent[round].tolist()

    def apply_aggregate(self, round: int, values: Sequence[float]) -> None:
        assert round == len(self.applied)
        self.applied.append(np.asarray(values, dtype=np.float32))

    def digest(self) -> str:
        return hashlib.sha256(b"".join(a.tobytes() for a in self.applied)).hexdigest()[:32]


@asynccontextmanager
async def federation(config: FederatorConfig) -> AsyncIterator[Federator]:
    """A started federator, stopped on exit."""
    federator = Federator(config)
    await federator.start()
    try:
        yield federator
    finally:
        await federator.stop(grace=0.5)


@asynccontextmanager
async def stub_for(address: str) -> AsyncIterator[pb_grpc.FederationStub]:
    # A local subchannel pool: grpc otherwise shares subchannels between channels of a process,
    # and a fresh stub would inherit the connect backoff of sessions whose federator went away.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        yield pb_grpc.FederationStub(channel)


def creds(client_id: str) -> pb.Credentials:
    return pb.Credentials(client_id=client_id)


async def join(
    stub: pb_grpc.FederationStub, client_id: str, role: pb.Role = pb.ROLE_TRAIN
) -> pb.JoinResponse:
    request = pb.JoinRequest(
        credentials=creds(client_id), role=role, protocol_version=wire.PROTOCOL_VERSION
    )
    response: pb.JoinResponse = await stub.Join(request, timeout=5)
    return response


async def open_stream(stub: pb_grpc.FederationStub, client_id: str) -> grpc.aio.StreamStreamCall:
    """A Train stream that has sent its Hello."""
    call = stub.Train()
    await call.write(pb.ClientMessage(hello=pb.Hello(credentials=creds(client_id))))
    return call


async def read(call: grpc.aio.StreamStreamCall) -> pb.ServerMessage:
    msg = await asyncio.wait_for(call.read(), 10)
    assert msg is not grpc.aio.EOF
    return msg


def sessions_for(address: str, trainers: Sequence[FakeTrainer], prefix: str = "c") -> list[Session]:
    return [
        Session(SessionConfig(address, f"{prefix}{i}", backoff=FAST, max_retries=50), trainer)
        for i, trainer in enumerate(trainers)
    ]


def update_size(round: int, m: int) -> int:
    return wire.update_message(round, [0.0] * m).ByteSize()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- full run
def test_full_run_every_party_gets_the_rule_applied_to_what_was_sent(tmp_path: Path) -> None:
    """n = 5 fake trainers, CWTM(f=1), 3 rounds: identical aggregates everywhere, each equal to
    CWTM on the float32 vectors sent (rows in shard order); metrics count the schema's bytes."""
    metrics = tmp_path / "metrics.jsonl"
    config = make_config(n=5, f=1, rounds=3, metrics=str(metrics))
    trainers = [FakeTrainer(seed=100 + i) for i in range(5)]

    async def main() -> None:
        async with federation(config) as fed:
            sessions = sessions_for(fed.address, trainers)
            results = await asyncio.gather(*(s.run() for s in sessions))
            assert fed.engine is not None
            await fed.engine.wait()
            assert {r.digest for r in results} == {trainers[0].digest()}

    run(main())
    rule = get_aggregator("cwtm", f=1)
    by_shard = sorted(trainers, key=lambda t: t.shard)
    assert [t.shard for t in by_shard] == list(range(5))
    for t in range(3):
        x = torch.from_numpy(np.stack([tr.sent[t] for tr in by_shard]))
        expected = rule(x).to(torch.float32).numpy()
        for trainer in trainers:
            assert trainer.applied[t].tobytes() == expected.tobytes()

    records = read_metrics(metrics)
    rounds = [r for r in records if r["event"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    m = config.plan.zo.scalars_per_round
    for r in rounds:
        assert set(r) >= {
            "round",
            "participants",
            "rejected",
            "uplink_payload_bytes",
            "downlink_payload_bytes",
            "aggregate_ms",
            "round_ms",
        }
        assert sorted(r["participants"]) == [f"c{i}" for i in range(5)]
        assert r["rejected"] == []
        assert r["uplink_payload_bytes"] == 5 * update_size(r["round"], m)
        # Rounds 0 and 1 open the next round on their aggregate (next_open: 2 more bytes).
        aggregate_msg = pb.ServerMessage(
            aggregate=pb.Aggregate(round=r["round"], values=[0.0] * m, next_open=r["round"] < 2)
        )
        assert r["downlink_payload_bytes"] == 5 * aggregate_msg.ByteSize()
    reports = [r for r in records if r["event"] == "report"]
    assert {r["client"] for r in reports} == {f"c{i}" for i in range(5)}
    assert {r["digest"] for r in reports} == {trainers[0].digest()}


def test_health_and_reflection_answer() -> None:
    async def main() -> None:
        async with (
            federation(make_config()) as fed,
            grpc.aio.insecure_channel(fed.address) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_NAME):
                answer = await health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=5
                )
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for response in refl.ServerReflectionInfo(iter([request]), timeout=5):
                names = {s.name for s in response.list_services_response.service}
                assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names

    run(main())


# --------------------------------------------------------------------- deadline, quorum
def test_silent_client_is_left_out_at_the_deadline_and_still_gets_the_aggregate(
    tmp_path: Path,
) -> None:
    metrics = tmp_path / "metrics.jsonl"
    config = make_config(n=4, f=1, rounds=1, timeout=0.5, metrics=str(metrics))
    trainers = [FakeTrainer(seed=i) for i in range(3)]

    async def main() -> None:
        async with federation(config) as fed, stub_for(fed.address) as stub:
            await join(stub, "silent")
            call = await open_stream(stub, "silent")
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await asyncio.gather(*(s.run() for s in sessions_for(fed.address, trainers)))
            first = await read(call)
            assert first.WhichOneof("kind") == "round_start"
            second = await read(call)
            assert second.aggregate.round == 0
            assert list(second.aggregate.values) == trainers[0].applied[0].tolist()
            assert loop.time() - started >= 0.4
            assert all(r.applied_round == 0 for r in results)
            call.cancel()

    run(main())
    (line,) = [r for r in read_metrics(metrics) if r["event"] == "round"]
    assert sorted(line["participants"]) == ["c0", "c1", "c2"]
    assert line["recipients"] == 4


# ------------------------------------------------------------------------- bad inputs
M = 4  # nu = 4, K = 1, unbiased


def good(round: int, seed: int) -> pb.ClientMessage:
    values = np.random.default_rng([seed, round]).standard_normal(M).astype(np.float32)
    return wire.update_message(round, values)


BAD_UPDATES: dict[str, tuple[list[pb.ClientMessage], grpc.StatusCode, str]] = {
    "short": (
        [wire.update_message(0, [1.0] * (M - 1))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "has 3 values; the plan needs m=4",
    ),
    "long": (
        [wire.update_message(0, [1.0] * (M + 1))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "has 5 values; the plan needs m=4",
    ),
    "empty": (
        [wire.update_message(0, [])],
        grpc.StatusCode.INVALID_ARGUMENT,
        "has 0 values",
    ),
    "nan": (
        [wire.update_message(0, [0.0, math.nan, 0.0, 0.0])],
        grpc.StatusCode.INVALID_ARGUMENT,
        "non-finite value at index 1: nan",
    ),
    "inf": (
        [wire.update_message(0, [0.0, 0.0, 0.0, -math.inf])],
        grpc.StatusCode.INVALID_ARGUMENT,
        "non-finite value at index 3: -inf",
    ),
    "future": (
        [good(1, 9)],
        grpc.StatusCode.FAILED_PRECONDITION,
        "update for round 1 but round 0 is open",
    ),
    "duplicate": (
        [good(0, 9), good(0, 9)],
        grpc.StatusCode.FAILED_PRECONDITION,
        "already sent its update for round 0",
    ),
    "hello_twice": (
        [pb.ClientMessage(hello=pb.Hello(credentials=creds("bad")))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "Hello is allowed only as the first message",
    ),
    "oversized": (
        [wire.update_message(0, [1.0] * 400)],
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_UPDATES))
def test_bad_update_is_refused_and_the_round_completes(case: str, tmp_path: Path) -> None:
    """Client "bad" sends the case's messages in round 0: its stream ends with the status and a
    message saying what was wrong; the two good clients get round 0's aggregate."""
    messages, code, text = BAD_UPDATES[case]
    metrics = tmp_path / "metrics.jsonl"
    config = make_config(
        n=3, f=0, aggregator="mean", rounds=1, timeout=1.0, quorum=2, metrics=str(metrics)
    )
    if case == "oversized":
        assert messages[0].ByteSize() > max_receive_bytes(config.plan) == 1024

    async def main() -> None:
        async with federation(config) as fed, stub_for(fed.address) as stub:
            calls = {}
            for cid in ("good0", "bad", "good1"):
                await join(stub, cid)
                calls[cid] = await open_stream(stub, cid)
            for call in calls.values():
                assert (await read(call)).round_start.round == 0
            for msg in messages:
                await calls["bad"].write(msg)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await read(calls["bad"])
            assert refused.value.code() == code
            assert text in (refused.value.details() or "")
            for i, cid in enumerate(("good0", "good1")):
                await calls[cid].write(good(0, i))
            for cid in ("good0", "good1"):
                assert (await read(calls[cid])).aggregate.round == 0
                calls[cid].cancel()

    run(main())
    (line,) = [r for r in read_metrics(metrics) if r["event"] == "round"]
    if case == "oversized":  # refused by gRPC itself: the federator never saw it
        assert sorted(line["participants"]) == ["good0", "good1"]
        assert line["rejected"] == []
    else:
        assert "good0" in line["participants"] and "good1" in line["participants"]
        assert [r["client"] for r in line["rejected"]] == ["bad"]
        assert text in line["rejected"][0]["reason"]


def test_stale_update_observer_update_and_protocol_misuse_are_refused() -> None:
    config = make_config(n=2, f=0, aggregator="mean", rounds=2, timeout=5.0)

    async def expect(call: grpc.aio.StreamStreamCall, code: grpc.StatusCode, text: str) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            while True:
                await read(call)
        assert refused.value.code() == code, refused.value.details()
        assert text in (refused.value.details() or "")

    async def main() -> None:
        async with federation(config) as fed, stub_for(fed.address) as stub:
            # Stream without Join; Update before Hello.
            await expect(
                await open_stream(stub, "nobody"),
                grpc.StatusCode.FAILED_PRECONDITION,
                "has not joined; call Join first",
            )
            early = stub.Train()
            await early.write(good(0, 0))
            await expect(early, grpc.StatusCode.INVALID_ARGUMENT, "first message")
            # Observer sending an update.
            await join(stub, "watcher", pb.ROLE_OBSERVER)
            watcher = await open_stream(stub, "watcher")
            await watcher.write(good(0, 0))
            await expect(watcher, grpc.StatusCode.PERMISSION_DENIED, "observers do not send")
            # Stale: a round-0 update while round 1 is open.
            calls = []
            for cid in ("a", "b"):
                await join(stub, cid)
                calls.append(await open_stream(stub, cid))
            for i, call in enumerate(calls):
                assert (await read(call)).round_start.round == 0
                await call.write(good(0, i))
            for call in calls:
                opened = (await read(call)).aggregate
                assert opened.round == 0 and opened.next_open  # round 1 opens with it
            await calls[0].write(good(0, 0))
            await expect(
                calls[0],
                grpc.StatusCode.FAILED_PRECONDITION,
                "update for round 0 but round 1 is open",
            )
            # The previous protocol version (its plans have no loss) and a bad role at Join.
            previous = wire.PROTOCOL_VERSION - 1
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Join(
                    pb.JoinRequest(
                        credentials=creds("x"), role=pb.ROLE_TRAIN, protocol_version=previous
                    ),
                    timeout=5,
                )
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert f"this federator speaks {wire.PROTOCOL_VERSION}" in str(refused.value.details())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Join(
                    pb.JoinRequest(credentials=creds("x"), protocol_version=wire.PROTOCOL_VERSION),
                    timeout=5,
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # A third training identity: the federation (n = 2) is full.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await join(stub, "c")
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            calls[1].cancel()

    run(main())


# ------------------------------------------------------------------------ durable log
def test_restart_from_the_log_resumes_at_the_next_round(tmp_path: Path) -> None:
    """Stop the federator after at least 2 of 40 rounds (rounds take milliseconds here); a new
    one on the same port and log resumes at the next round, serves identical aggregate bytes, and
    the clients reconnect and finish."""
    db = str(tmp_path / "log.db")
    config = make_config(n=3, f=0, aggregator="mean", rounds=40, log_db=db)
    trainers = [FakeTrainer(seed=i) for i in range(3)]

    async def fetch_all(address: str, count: int) -> list[bytes]:
        async with stub_for(address) as stub:
            await join(stub, "auditor", pb.ROLE_OBSERVER)
            page = await stub.GetAggregates(
                pb.GetAggregatesRequest(credentials=creds("auditor"), from_round=0, to_round=count),
                timeout=5,
            )
            return [a.SerializeToString() for a in page.aggregates]

    async def main() -> None:
        first = Federator(config)
        await first.start()
        assert first.engine is not None
        tasks = [asyncio.ensure_future(s.run()) for s in sessions_for(first.address, trainers)]
        while first.engine.completed_rounds < 2:
            await asyncio.sleep(0.01)
        port = first.port
        await first.stop(grace=0.1)
        logged = DurableLog.open(db, config.plan)
        done = len(logged.aggregates())
        logged.close()
        assert 2 <= done < 40
        second = Federator(
            make_config(n=3, f=0, aggregator="mean", rounds=40, log_db=db, port=port)
        )
        await second.start()
        try:
            assert second.engine is not None
            assert second.engine.completed_rounds == done
            before = await fetch_all(second.address, done)
            results = await asyncio.gather(*tasks)
            assert {r.applied_round for r in results} == {39}
            assert sum(r.reconnects for r in results) >= 3
            after = await fetch_all(second.address, 40)
            assert after[:done] == before
        finally:
            await second.stop(grace=0.1)

    run(main())
    digests = {t.digest() for t in trainers}
    assert len(digests) == 1
    for t in range(40):  # every round's aggregate is the mean of what was sent in that round
        sent = np.stack([tr.sent[t] for tr in sorted(trainers, key=lambda tr: tr.shard)])
        expected = get_aggregator("mean", f=0)(torch.from_numpy(sent)).numpy()
        assert trainers[0].applied[t].tobytes() == expected.astype(np.float32).tobytes()


def test_a_log_written_for_another_plan_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "log.db")
    DurableLog.open(db, make_config(seed=7).plan).close()

    async def main() -> None:
        federator = Federator(make_config(seed=8, nu=6, log_db=db))
        with pytest.raises(LogError) as error:
            await federator.start()
        await federator.stop()
        message = str(error.value)
        assert "seed: logged 7, configured 8" in message
        assert "zo.nu: logged 4, configured 6" in message

    run(main())


def test_a_log_written_before_the_loss_field_resumes_as_cross_entropy(tmp_path: Path) -> None:
    """A log whose plan has no ``loss`` (written before the field existed) trained the mean
    cross-entropy: it resumes under that plan and is refused under the balanced one."""
    db = str(tmp_path / "log.db")
    plan = make_config(seed=7).plan
    DurableLog.open(db, plan).close()
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute("SELECT value FROM meta WHERE key = 'plan'").fetchone()
        old = {k: v for k, v in json.loads(text).items() if k != "loss"}
        conn.execute("UPDATE meta SET value = ? WHERE key = 'plan'", (json.dumps(old),))
    conn.close()
    DurableLog.open(db, plan).close()
    with pytest.raises(LogError, match="loss: logged 'cross_entropy', configured 'balanced_"):
        DurableLog.open(db, dataclasses.replace(plan, loss="balanced_cross_entropy"))


def test_get_aggregates_validates_its_range() -> None:
    async def main() -> None:
        async with federation(make_config(rounds=2)) as fed, stub_for(fed.address) as stub:
            request = pb.GetAggregatesRequest(credentials=creds("o"), from_round=0, to_round=1)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetAggregates(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            await join(stub, "o", pb.ROLE_OBSERVER)
            page = await stub.GetAggregates(request, timeout=5)
            assert list(page.aggregates) == [] and page.completed_rounds == 0
            for lo, hi, code in ((1, 1, "INVALID_ARGUMENT"), (3, 4, "OUT_OF_RANGE")):
                bad = pb.GetAggregatesRequest(credentials=creds("o"), from_round=lo, to_round=hi)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.GetAggregates(bad, timeout=5)
                assert refused.value.code().name == code

    run(main())


# ---------------------------------------------------------------- joins racing the log
@asynccontextmanager
async def write_lock_held(db: str) -> AsyncIterator[None]:
    """Another connection holds the log's write lock (as a backup or an operator's sqlite3 shell
    would) until the block ends: the federator's shard writes wait for it (SQLite's 5 s busy
    timeout), so a Join is deterministically in flight while its row is being written."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
    try:
        yield
    finally:
        await asyncio.to_thread(conn.execute, "COMMIT")
        conn.close()


def join_request(client_id: str) -> pb.JoinRequest:
    return pb.JoinRequest(
        credentials=creds(client_id), role=pb.ROLE_TRAIN, protocol_version=wire.PROTOCOL_VERSION
    )


def logged_shards(db: str) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT client_id, shard FROM shards").fetchall())


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_a_join_cancelled_while_its_shard_is_written_keeps_the_shard(tmp_path: Path) -> None:
    """The client's deadline passes while the shard row waits for the write lock: the row
    still commits, and the federator's shards follow the log (before the fix memory forgot the
    shard, and every later Join of a new id failed UNAVAILABLE on the log's UNIQUE key)."""
    db = str(tmp_path / "log.db")
    config = make_config(n=3, f=0, aggregator="mean", log_db=db)

    async def main() -> None:
        async with federation(config) as fed, stub_for(fed.address) as stub:
            assert fed.engine is not None
            async with write_lock_held(db):
                with pytest.raises(grpc.aio.AioRpcError) as cancelled:
                    await stub.Join(join_request("alice"), timeout=0.3)
                assert cancelled.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(until(lambda: "alice" in fed.engine._shards), 10)
            assert (await join(stub, "alice")).shard_index == 0
            assert (await join(stub, "bob")).shard_index == 1
            assert (await join(stub, "carol")).shard_index == 2
            assert fed.engine._shards == logged_shards(db) == {"alice": 0, "bob": 1, "carol": 2}

    run(main())


def test_a_second_join_of_an_id_waits_for_the_shard_its_first_join_is_writing(
    tmp_path: Path,
) -> None:
    """Two Joins of a new id overlap and the first is cancelled while its shard row waits: the
    second gets the shard only once it is committed, and the client then trains. Before the fix
    the second got the shard at once, the cancelled first took it back from memory, and the
    client's update crashed the rounds (KeyError in the shard order): the federator stopped."""
    db = str(tmp_path / "log.db")
    config = make_config(n=1, f=0, aggregator="mean", rounds=1, log_db=db)

    async def main() -> None:
        async with federation(config) as fed, stub_for(fed.address) as stub:
            assert fed.engine is not None
            async with write_lock_held(db):
                first = asyncio.ensure_future(stub.Join(join_request("alice"), timeout=2.0))
                second = asyncio.ensure_future(stub.Join(join_request("alice"), timeout=15))
                with pytest.raises(grpc.aio.AioRpcError) as cancelled:
                    await first
                assert cancelled.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert not second.done()  # no shard is handed out before it is logged
            assert (await second).shard_index == 0
            call = await open_stream(stub, "alice")
            assert (await read(call)).round_start.round == 0
            await call.write(wire.update_message(0, [0.5] * 4))
            assert (await read(call)).aggregate.round == 0
            await asyncio.wait_for(fed.engine.wait(), 10)
            assert logged_shards(db) == {"alice": 0}

    run(main())


def test_joins_and_streams_during_shutdown_are_unavailable(tmp_path: Path) -> None:
    """Once the engine is closing (the log thread stopped) a Join needing a shard and a new
    stream get UNAVAILABLE "the federator is shutting down" (a Join got UNKNOWN before, from a
    RuntimeError of the stopped thread, and a stream was accepted only to hang)."""

    async def main() -> None:
        async with federation(make_config(log_db=str(tmp_path / "log.db"))) as fed:
            assert fed.engine is not None
            async with stub_for(fed.address) as stub:
                await join(stub, "early")
                await fed.engine.close()
                for client_id in ("late", "early"):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await join(stub, client_id)
                    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert refused.value.details() == "the federator is shutting down"
                call = await open_stream(stub, "early")
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await asyncio.wait_for(call.read(), 10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert refused.value.details() == "the federator is shutting down"

    run(main())


# ---------------------------------------------------------------------------- metrics
def test_a_metrics_file_that_cannot_be_written_costs_its_lines_not_the_rounds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``metrics: /dev/full`` (every write ENOSPC): all rounds run, the warning naming the
    setting and the error is logged once, and the federator stops cleanly (before the fix the
    first line's OSError ended the rounds, and closing the file raised again)."""
    config = make_config(n=2, f=0, aggregator="mean", rounds=4, metrics="/dev/full")
    trainers = [FakeTrainer(seed=i) for i in range(2)]

    async def main() -> None:
        async with federation(config) as fed:
            assert fed.engine is not None
            results = await asyncio.gather(*(s.run() for s in sessions_for(fed.address, trainers)))
            await fed.engine.wait()
            assert {r.applied_round for r in results} == {3}

    run(main())
    warnings = [r.getMessage() for r in caplog.records if "federator.metrics" in r.getMessage()]
    assert warnings == [
        "federator.metrics: cannot write /dev/full: [Errno 28] No space left on device; "
        "metrics lines are dropped while it fails, the rounds go on"
    ]
