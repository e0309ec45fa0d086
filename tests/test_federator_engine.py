"""The round engine driven directly, without sockets: close conditions, the late-update rule,
exclusion after a refusal, shard assignment that survives a restart, page sizes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_federator import logged_shards, make_config, run, write_lock_held

from cyber0 import wire
from cyber0.common.aggregators import get_aggregator
from cyber0.common.tcpinfo import Traffic
from cyber0.server import engine as engine_module
from cyber0.server.auth import ClaimedIdentity
from cyber0.server.engine import Closing, JoinInfo, RoundEngine, Stream
from cyber0.server.errors import Refusal
from cyber0.server.log import DurableLog, LogError, RoundRecord
from cyber0.server.servicer import FederationServicer
from cyber0.v1 import federation_pb2 as pb


def make_engine(
    log_db: str | None = None,
    metrics: list[dict[str, Any]] | None = None,
    traffic: Callable[[], Traffic] | None = None,
    **kwargs: Any,
) -> RoundEngine:
    config = make_config(**kwargs)
    return RoundEngine(
        config.plan,
        get_aggregator(config.plan.aggregator, f=config.plan.f),
        DurableLog.open(log_db, config.plan),
        round_timeout=config.settings.round_timeout,
        quorum=config.quorum,
        metrics=None if metrics is None else metrics.append,
        traffic=traffic,
    )


def drain(stream: Stream) -> list[pb.ServerMessage | Closing]:
    items = []
    while not stream.outbox.empty():
        items.append(stream.outbox.get_nowait())
    return items


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def with_engine(body: Callable[[RoundEngine], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        engine = make_engine(**kwargs)
        try:
            await body(engine)
        finally:
            await engine.close()
            engine._log.close()

    run(main())


def test_round_closes_once_everyone_answered_and_late_updates_are_dropped() -> None:
    metrics: list[dict[str, Any]] = []

    async def body(engine: RoundEngine) -> None:
        streams = []
        for cid in ("a", "b", "c"):
            await engine.join(cid, "train")
            streams.append(engine.connect(cid))
        engine.start()
        await until(lambda: all(not s.outbox.empty() for s in streams))
        for s in streams:
            (start,) = drain(s)
            assert isinstance(start, pb.ServerMessage) and start.round_start.round == 0
        a, b, c = streams
        engine.submit_update(a, 0, [1.0] * 4, 10)
        engine.submit_update(b, 0, [3.0] * 4, 10)
        with pytest.raises(Refusal) as refused:
            engine.submit_update(b, 0, [3.0] * 4, 10)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        # b is now both received and excluded; c is still missing: the round stays open.
        await asyncio.sleep(0.05)
        assert engine.completed_rounds == 0
        engine.submit_update(c, 0, [5.0] * 4, 10)
        await until(lambda: engine.completed_rounds == 1)
        # c was invited and answered; a late copy from an invited silent client would be
        # dropped without error, but a's second update is a refusal (round 1 now open).
        with pytest.raises(Refusal):
            engine.submit_update(a, 0, [1.0] * 4, 10)

    with_engine(body, n=3, f=0, aggregator="mean", rounds=2, metrics=metrics)
    (line,) = [r for r in metrics if r["event"] == "round"]
    assert line["participants"] == ["a", "b", "c"]
    assert [r["client"] for r in line["rejected"]] == ["b"]
    assert line["uplink_payload_bytes"] == 30


def test_counters_that_cannot_be_read_leave_the_rounds_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wire sample raising OSError (say /proc gone) costs its round's counts, not the round:
    every round commits, the lines whose sample failed carry no wire fields, and the others
    carry what the sampler returned."""
    metrics: list[dict[str, Any]] = []
    samples = iter([OSError("no /proc/self/fd"), Traffic(7, 9, 2), OSError("gone again")])

    def traffic() -> Traffic:
        sample = next(samples)
        if isinstance(sample, OSError):
            raise sample
        return sample

    async def body(engine: RoundEngine) -> None:
        streams = []
        for cid in ("a", "b"):
            await engine.join(cid, "train")
            streams.append(engine.connect(cid))
        engine.start()
        for t in range(3):
            await until(lambda: all(not s.outbox.empty() for s in streams))
            for s in streams:
                drain(s)
                engine.submit_update(s, t, [1.0] * 4, 10)
        await until(lambda: engine.completed_rounds == 3)

    with_engine(body, n=2, f=0, aggregator="mean", rounds=3, metrics=metrics, traffic=traffic)
    lines = [r for r in metrics if r["event"] == "round"]
    assert [r["round"] for r in lines] == [0, 1, 2]
    assert [r.get("uplink_wire_bytes") for r in lines] == [None, 7, None]
    assert (lines[1]["downlink_wire_bytes"], lines[1]["wire_connections"]) == (9, 2)
    assert "round 0: bytes on the wire not counted: no /proc/self/fd" in caplog.text


def test_an_update_after_the_deadline_from_an_invited_client_is_late_not_wrong() -> None:
    async def body(engine: RoundEngine) -> None:
        streams = {}
        for cid in ("a", "b", "slow"):
            await engine.join(cid, "train")
            streams[cid] = engine.connect(cid)
        engine.start()
        await until(lambda: not streams["slow"].outbox.empty())
        engine.submit_update(streams["a"], 0, [1.0] * 4, 10)
        engine.submit_update(streams["b"], 0, [2.0] * 4, 10)
        await until(lambda: engine.completed_rounds == 1)  # at the 0.2 s deadline
        engine.submit_update(streams["slow"], 0, [9.0] * 4, 10)  # late: silently dropped
        with pytest.raises(Refusal):  # but only once
            engine.submit_update(streams["slow"], 0, [9.0] * 4, 10)
        (_start, aggregate) = drain(streams["slow"])
        assert isinstance(aggregate, pb.ServerMessage)
        assert list(aggregate.aggregate.values) == [1.5] * 4
        assert aggregate.aggregate.next_open  # round 1 opened with it, for "slow" too

    with_engine(body, n=3, f=0, aggregator="mean", rounds=2, timeout=0.2, quorum=2)


def test_the_aggregate_opens_the_next_round_only_with_a_quorum_connected() -> None:
    """Round 0's aggregate opens round 1 (``next_open``, no RoundStart) while the quorum is
    connected; round 1's does not once a client has left, and round 2 then opens with a
    RoundStart when the quorum is back. The last round's aggregate never opens one."""

    async def body(engine: RoundEngine) -> None:
        streams = {}
        for cid in ("a", "b"):
            await engine.join(cid, "train")
            streams[cid] = engine.connect(cid)
        engine.start()
        await until(lambda: not streams["a"].outbox.empty())
        for s in streams.values():
            (start,) = drain(s)
            assert start.round_start.round == 0
            engine.submit_update(s, 0, [1.0] * 4, 10)
        await until(lambda: engine.completed_rounds == 1)
        for s in streams.values():
            (opened,) = drain(s)
            assert (opened.aggregate.round, opened.aggregate.next_open) == (0, True)
            engine.submit_update(s, 1, [2.0] * 4, 10)
        engine.disconnect(streams["b"])  # below the quorum of 2 when round 1 closes
        await until(lambda: engine.completed_rounds == 2)
        (closed,) = drain(streams["a"])
        assert (closed.aggregate.round, closed.aggregate.next_open) == (1, False)
        streams["b"] = engine.connect("b")
        await until(lambda: not streams["a"].outbox.empty())
        for s in streams.values():
            (start,) = drain(s)
            assert start.round_start.round == 2
            engine.submit_update(s, 2, [3.0] * 4, 10)
        await until(lambda: engine.completed_rounds == 3)
        for s in streams.values():
            (last,) = drain(s)
            assert (last.aggregate.round, last.aggregate.next_open) == (2, False)

    with_engine(body, n=2, f=0, aggregator="mean", rounds=3, quorum=2)


def test_deadline_without_quorum_keeps_the_round_open() -> None:
    async def body(engine: RoundEngine) -> None:
        streams = {}
        for cid in ("a", "b", "c"):
            await engine.join(cid, "train")
            streams[cid] = engine.connect(cid)
        engine.start()
        await until(lambda: not streams["a"].outbox.empty())
        engine.submit_update(streams["a"], 0, [1.0] * 4, 10)
        await asyncio.sleep(0.3)  # deadline 0.1 s passed with 1 of 2
        assert engine.completed_rounds == 0
        engine.submit_update(streams["b"], 0, [3.0] * 4, 10)
        await until(lambda: engine.completed_rounds == 1)

    with_engine(body, n=3, f=0, aggregator="mean", rounds=1, timeout=0.1, quorum=2)


def test_shards_persist_and_the_federation_fills_up(tmp_path: Path) -> None:
    db = str(tmp_path / "log.db")

    async def first(engine: RoundEngine) -> None:
        assert (await engine.join("x", "train")).shard_index == 0
        assert (await engine.join("y", "train")).shard_index == 1
        assert (await engine.join("x", "train")).shard_index == 0
        assert (await engine.join("o", "observer")).shard_index is None
        with pytest.raises(Refusal) as refused:
            await engine.join("z", "train")
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(Refusal) as refused:
            await engine.join("x", "observer")
        assert "joined as train" in refused.value.message

    async def second(engine: RoundEngine) -> None:
        assert (await engine.join("y", "train")).shard_index == 1

    with_engine(first, n=2, f=0, aggregator="mean", log_db=db)
    with_engine(second, n=2, f=0, aggregator="mean", log_db=db)


def test_a_stream_that_stops_reading_is_closed_not_buffered() -> None:
    stream = Stream("slow", "train", limit=2)
    msg = pb.ServerMessage(round_start=pb.RoundStart(round=1))
    assert stream.push(msg) and stream.push(msg)
    assert not stream.push(msg)
    *_, closing = drain(stream)
    assert isinstance(closing, Closing)
    assert closing.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_reports_are_checked_and_recorded() -> None:
    metrics: list[dict[str, Any]] = []

    async def body(engine: RoundEngine) -> None:
        await engine.join("o", "observer")
        stream = engine.connect("o")
        engine._aggregates.append(wire.float32_bytes([0.0] * 4))  # one completed round
        engine.submit_report(stream, 0, 0.5, 1.25, "ab12")
        assert (await engine.join("late", "observer")).model_digest == "ab12"
        for args, text in [
            ((1, None, None, ""), "only 1 rounds are completed"),
            ((0, 1.5, None, ""), "accuracy must be in [0, 1]"),
            ((0, None, float("inf"), ""), "loss must be finite"),
            ((0, None, None, "XYZ"), "lowercase hex"),
        ]:
            with pytest.raises(Refusal) as refused:
                engine.submit_report(stream, *args)
            assert text in refused.value.message

    with_engine(body, metrics=metrics)
    (report,) = [r for r in metrics if r["event"] == "report"]
    assert (report["client"], report["accuracy"], report["loss"]) == ("o", 0.5, 1.25)


def test_after_the_last_round_the_engine_idles_until_every_party_has_reported_it() -> None:
    """No quiet period once every party that joined has reported the last round and closed its
    stream; while one has not, the quiet period (a party in backoff may come back) holds."""

    async def body(engine: RoundEngine) -> None:
        last = engine.plan.rounds - 1
        for _ in range(engine.plan.rounds):
            engine._aggregates.append(wire.float32_bytes([0.0] * 4))
        for client, role in [("a", "train"), ("b", "train"), ("o", "observer")]:
            await engine.join(client, role)
        for client in ("a", "o"):
            stream = engine.connect(client)
            engine.submit_report(stream, last, 0.5 if client == "o" else None, None, "ab12")
            engine.disconnect(stream)
        idle = asyncio.ensure_future(engine.wait_idle(quiet=30.0, timeout=60.0))
        await asyncio.sleep(0.3)
        assert not idle.done()  # b joined and has not reported the last round
        stream = engine.connect("b")
        engine.submit_report(stream, last - 1, None, None, "ab12")
        engine.disconnect(stream)
        await asyncio.sleep(0.3)
        assert not idle.done()  # an earlier round is not the last
        stream = engine.connect("b")
        engine.submit_report(stream, last, None, None, "ab12")
        engine.disconnect(stream)
        await asyncio.wait_for(idle, timeout=2.0)

    with_engine(body)


def test_an_engine_resumed_from_its_log_keeps_the_quiet_period(tmp_path: Path) -> None:
    """After a restart the observers of the earlier process are unknown (they hold no shard):
    reports from everyone who joined again do not end the quiet period one may be backing off in."""
    db = str(tmp_path / "log.db")
    config = make_config()
    log = DurableLog.open(db, config.plan)
    for t in range(config.plan.rounds):
        log.append_round(RoundRecord(t, wire.float32_bytes([0.0] * 4), ("a",), ()))
    log.close()

    async def body(engine: RoundEngine) -> None:
        await engine.join("a", "train")
        stream = engine.connect("a")
        engine.submit_report(stream, engine.plan.rounds - 1, None, None, "ab12")
        engine.disconnect(stream)
        idle = asyncio.ensure_future(engine.wait_idle(quiet=0.5, timeout=60.0))
        await asyncio.sleep(0.3)
        assert not idle.done()
        await asyncio.wait_for(idle, timeout=2.0)  # the quiet period, then done

    with_engine(body, log_db=db)


def test_pages_hold_about_a_mebibyte(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(engine: RoundEngine) -> None:
        assert engine.page_rounds == engine_module.MAX_PAGE_ROUNDS
        monkeypatch.setattr(engine_module, "MAX_PAGE_ROUNDS", 2)
        assert engine.page_rounds == 2

    async def big(engine: RoundEngine) -> None:
        assert engine.page_rounds == (1 << 20) // (4 * 64 * 1024 + 16)

    with_engine(big, nu=64 * 1024, n=4, f=1)
    with_engine(body)


class SilentClient:
    """The part of a ``grpc.aio.ServicerContext`` that ``Train`` uses, for a client that sends
    its Hello and then nothing: its next read never completes."""

    def __init__(self, client_id: str) -> None:
        hello = pb.Hello(credentials=pb.Credentials(client_id=client_id))
        self._hello: pb.ClientMessage | None = pb.ClientMessage(hello=hello)
        self.written: list[pb.ServerMessage] = []

    async def read(self) -> pb.ClientMessage:
        if self._hello is None:
            await asyncio.Event().wait()
        hello, self._hello = self._hello, None
        assert hello is not None
        return hello

    async def write(self, message: pb.ServerMessage) -> None:
        self.written.append(message)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"


def test_a_cancelled_train_call_frees_its_identity() -> None:
    """gRPC cancels the ``Train`` handler when its client cancels the call or its connection
    drops. Cancelled while its reader still waited on the stream, the handler re-raised the
    cancellation from the reader's before ``disconnect`` ran: the identity stayed locked (a
    restarted client refused with PERMISSION_DENIED) for as long as the federator ran. Now the
    stream is let go whatever ends the handler."""

    async def body(engine: RoundEngine) -> None:
        await engine.join("a", "train")
        servicer = FederationServicer(engine, ClaimedIdentity(), hello_timeout=5.0)
        handler = asyncio.create_task(servicer.Train(None, SilentClient("a")))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        with pytest.raises(Refusal, match="already has an open stream"):
            engine.connect("a")
        handler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handler
        assert engine.connect("a").client_id == "a"

    with_engine(body, n=2, f=0, aggregator="mean")


def test_a_shard_write_that_fails_leaves_no_gap_in_the_shards(tmp_path: Path) -> None:
    """Two new ids join at once and the first one's row cannot be written (a trigger makes
    SQLite refuse it, as a full disk would): that Join gets UNAVAILABLE and nothing is kept for
    it, the second id gets shard 0, and later ids follow on (before, the second got shard 1 and
    every later new id collided with it: UNAVAILABLE until the federator restarted)."""
    db = str(tmp_path / "log.db")
    DurableLog.open(db, make_config(n=3, f=0, aggregator="mean").plan).close()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON shards WHEN NEW.client_id = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        conn.commit()

    async def body(engine: RoundEngine) -> None:
        bad, good = await asyncio.gather(
            engine.join("bad", "train"), engine.join("good", "train"), return_exceptions=True
        )
        assert isinstance(bad, Refusal) and bad.code == grpc.StatusCode.UNAVAILABLE
        assert isinstance(good, JoinInfo) and good.shard_index == 0
        assert (await engine.join("other", "train")).shard_index == 1
        assert logged_shards(db) == {"good": 0, "other": 1}

    with_engine(body, n=3, f=0, aggregator="mean", log_db=db)


def test_close_lets_a_shard_write_in_flight_commit_then_refuses_joins(tmp_path: Path) -> None:
    """A Join whose shard row is being written when the engine closes gets its shard (the log
    thread stops only after the write); a Join after that is UNAVAILABLE."""
    db = str(tmp_path / "log.db")

    async def body(engine: RoundEngine) -> None:
        async with write_lock_held(db):
            joining = asyncio.ensure_future(engine.join("x", "train"))
            await until(lambda: "x" in engine._pending)
            stopping = asyncio.ensure_future(engine.close())
            await asyncio.sleep(0.05)
            assert not stopping.done()
        assert (await joining).shard_index == 0
        await stopping
        assert logged_shards(db) == {"x": 0}
        with pytest.raises(Refusal) as refused:
            await engine.join("y", "train")
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        assert refused.value.message == "the federator is shutting down"

    with_engine(body, n=2, f=0, aggregator="mean", log_db=db)


def test_the_enrolment_is_logged_and_a_restart_may_not_contradict_it(tmp_path: Path) -> None:
    """An enrolled run records its assignment; a restart with another order, or with a list
    that moves a shard an earlier run's Join took, is a LogError naming the ids, and writes
    nothing."""
    db = str(tmp_path / "log.db")
    plan = make_config(n=3, f=0, aggregator="mean").plan
    log = DurableLog.open(db, plan)
    assert log.assign_shard("b") == 0
    with pytest.raises(LogError, match=r"contradicts \(b: logged 0, enrolled 1\)"):
        log.enrol(["a", "b", "c"])
    assert log.shards() == {"b": 0}
    assert log.enrol(["b", "a", "c"]) == {"b": 0, "a": 1, "c": 2}
    log.close()
    log = DurableLog.open(db, plan)
    assert log.shards() == {"b": 0, "a": 1, "c": 2}
    assert log.enrol(["b", "a", "c"]) == log.shards()
    with pytest.raises(LogError, match=r"b: logged 0, enrolled 2; a: logged 1, enrolled 0"):
        log.enrol(["a", "c", "b"])
    log.close()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("DELETE FROM meta WHERE key = 'plan'", r"is damaged: its plan cannot be read \(KeyError"),
        ("UPDATE meta SET value = '{nope' WHERE key = 'plan'", r"its plan cannot be read"),
        ("UPDATE rounds SET round = 5 WHERE round = 0", r"is damaged: 1 rounds, numbered 5 to 5"),
    ],
)
def test_a_damaged_log_is_a_log_error(tmp_path: Path, damage: str, message: str) -> None:
    db = str(tmp_path / "log.db")
    plan = make_config(n=3, f=0, aggregator="mean").plan
    log = DurableLog.open(db, plan)
    log.append_round(RoundRecord(0, b"\0" * 4 * plan.zo.scalars_per_round, ("a",), ()))
    log.close()
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(damage)
    with pytest.raises(LogError, match=message):
        DurableLog.open(db, plan)
