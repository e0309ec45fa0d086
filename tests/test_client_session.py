"""The client session against a real in-process federator: paged catch-up, observers and their
reports, identities sharing one model, refusals, reconnect limits and backoff."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from test_federator import FAST, FakeTrainer, federation, make_config, read_metrics, run

from cyber0.client.session import (
    Backoff,
    LocalModel,
    Session,
    SessionConfig,
    SessionError,
)
from cyber0.common.hf import ModelUnavailableError
from cyber0.server import engine as engine_module
from cyber0.server.app import Federator


def observer(address: str, trainer: FakeTrainer, every: int = 2) -> Session:
    return Session(
        SessionConfig(address, "observer", role="observer", eval_every=every, backoff=FAST),
        trainer,
        evaluate=lambda: (0.25 + 0.01 * trainer.applied_round, 2.0),
    )


def trainers_sessions(address: str, count: int) -> tuple[list[FakeTrainer], list[Session]]:
    trainers = [FakeTrainer(seed=10 + i) for i in range(count)]
    sessions = [
        Session(SessionConfig(address, f"c{i}", backoff=FAST), t) for i, t in enumerate(trainers)
    ]
    return trainers, sessions


def test_observer_follows_the_run_and_a_late_one_catches_up_by_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "MAX_PAGE_ROUNDS", 2)
    metrics = tmp_path / "metrics.jsonl"
    config = make_config(n=3, f=0, aggregator="mean", rounds=5, metrics=str(metrics))
    live, late = FakeTrainer(seed=0), FakeTrainer(seed=0)
    pages: list[tuple[int, int]] = []

    async def main() -> None:
        async with federation(config) as fed:
            assert fed.engine is not None
            engine = fed.engine
            original = engine.aggregates

            def spy(client_id: str, lo: int, hi: int) -> Any:
                page, done = original(client_id, lo, hi)
                if client_id == "late":
                    pages.append((lo, len(page)))
                return page, done

            monkeypatch.setattr(engine, "aggregates", spy)
            trainers, sessions = trainers_sessions(fed.address, 3)
            results = await asyncio.gather(
                observer(fed.address, live).run(), *(s.run() for s in sessions)
            )
            assert {r.digest for r in results} == {trainers[0].digest()}
            late_session = Session(
                SessionConfig(fed.address, "late", role="observer", backoff=FAST),
                late,
                evaluate=lambda: (0.5, 1.0),
            )
            result = await late_session.run()
            assert result.digest == trainers[0].digest()
            assert late.setups == 1 and late.shard == -1

    run(main())
    assert pages == [(0, 2), (2, 2), (4, 1)]
    reports = [r for r in read_metrics(metrics) if r["event"] == "report"]
    by_observer = [(r["round"], r["accuracy"]) for r in reports if r["client"] == "observer"]
    assert by_observer == [(1, pytest.approx(0.26)), (3, pytest.approx(0.28)),
                           (4, pytest.approx(0.29))]  # fmt: skip
    assert [(r["round"], r["loss"]) for r in reports if r["client"] == "late"] == [(4, 1.0)]


class StalledTrainer(FakeTrainer):
    """An observer's model whose setup waits for ``release``: its session joins, then opens its
    stream only once the test lets it."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.entered = threading.Event()
        self.release = threading.Event()

    def setup(self, plan: Any, shard_index: int, client_id: str) -> None:
        self.entered.set()
        assert self.release.wait(30)
        super().setup(plan, shard_index, client_id)


def test_a_party_that_joined_before_the_end_and_connects_after_it_finishes() -> None:
    """The observer joins while rounds remain, but its stream opens after the last round's
    broadcast: the federator hands it the last Aggregate, and it catches up and reports."""
    config = make_config(n=3, f=0, aggregator="mean", rounds=4)
    stalled = StalledTrainer()

    async def main() -> None:
        async with federation(config) as fed:
            assert fed.engine is not None
            late = asyncio.create_task(observer(fed.address, stalled, every=10).run())
            assert await asyncio.to_thread(stalled.entered.wait, 10)
            assert fed.engine.completed_rounds == 0  # joined before the first round
            trainers, sessions = trainers_sessions(fed.address, 3)
            await asyncio.gather(*(s.run() for s in sessions))
            assert fed.engine.completed_rounds == 4
            stalled.release.set()
            result = await asyncio.wait_for(late, 20)
            assert result.applied_round == 3 and result.digest == trainers[0].digest()

    run(main())


class CountingTrainer(FakeTrainer):
    """A colluding attacker's shared model: counts calls; sends the same vector per round."""

    def __init__(self) -> None:
        super().__init__(seed=99)
        self.shards: list[int] = []
        self.computed: list[int] = []

    def setup(self, plan: Any, shard_index: int, client_id: str) -> None:
        super().setup(plan, shard_index, client_id)
        self.shards.append(shard_index)

    def compute_update(self, round: int) -> Sequence[float]:
        self.computed.append(round)
        return [-v for v in super().compute_update(round)]


def test_identities_sharing_one_model_apply_each_aggregate_once() -> None:
    config = make_config(n=4, f=2, aggregator="mean", rounds=3)
    shared = CountingTrainer()

    async def main() -> None:
        async with federation(config) as fed:
            trainers, sessions = trainers_sessions(fed.address, 2)
            model = LocalModel(shared)
            byzantine = [
                Session(SessionConfig(fed.address, f"byz{i}", backoff=FAST), model)
                for i in range(2)
            ]
            results = await asyncio.gather(*(s.run() for s in [*sessions, *byzantine]))
            assert {r.digest for r in results} == {trainers[0].digest()}

    run(main())
    assert len(shared.applied) == 3
    assert sorted(shared.shards) == sorted(set(shared.shards)) and len(shared.shards) == 2
    assert sorted(shared.computed) == [0, 0, 1, 1, 2, 2]


def test_a_refused_join_is_fatal() -> None:
    config = make_config(n=1, f=0, aggregator="mean", rounds=1)

    async def main() -> None:
        async with federation(config) as fed:
            await Session(SessionConfig(fed.address, "first"), FakeTrainer(0)).run()
            second = Session(SessionConfig(fed.address, "second"), FakeTrainer(1))
            with pytest.raises(SessionError, match="PERMISSION_DENIED: the federation is full"):
                await second.run()
            assert second.reconnects == 0

    run(main())


class MissingModelTrainer(FakeTrainer):
    def setup(self, plan: Any, shard_index: int, client_id: str) -> None:
        raise ModelUnavailableError("model id 'nope' has no local folder: 'nope' is not a folder")


class BrokenTrainer(FakeTrainer):
    def setup(self, plan: Any, shard_index: int, client_id: str) -> None:
        raise KeyError("a bug")


def test_a_party_that_cannot_follow_the_plan_stops_with_the_reason() -> None:
    """A missing model folder (or dataset package, or a bad data file) ends the session with a
    SessionError carrying the message, which the daemon prints before exiting 1; any other
    exception is a bug and propagates as it is."""
    config = make_config(n=2, f=0, aggregator="mean", rounds=1)

    async def main() -> None:
        async with federation(config) as fed:
            missing = Session(SessionConfig(fed.address, "a"), MissingModelTrainer(0))
            with pytest.raises(SessionError, match="a: model id 'nope' has no local folder"):
                await missing.run()
            broken = Session(SessionConfig(fed.address, "b"), BrokenTrainer(1))
            with pytest.raises(KeyError, match="a bug"):
                await broken.run()

    run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_session_gives_up_after_max_retries() -> None:
    config = SessionConfig(
        f"127.0.0.1:{free_port()}",
        "c0",
        backoff=Backoff(initial=0.01, maximum=0.02),
        max_retries=2,
        call_timeout=2.0,
    )
    session = Session(config, FakeTrainer(0))
    with pytest.raises(SessionError, match="gave up after 3 failed attempts"):
        run(session.run())
    assert session.reconnects == 2


def test_backoff_is_capped_jittered_and_reproducible() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, factor=2.0)
    delays = [backoff.delay(k, random.Random(7)) for k in range(8)]
    assert delays == [backoff.delay(k, random.Random(7)) for k in range(8)]
    for k, d in enumerate(delays):
        cap = min(1.0, 0.1 * 2**k)
        assert cap / 2 <= d <= cap


class SlowTrainer(FakeTrainer):
    def compute_update(self, round: int) -> Sequence[float]:
        time.sleep(0.05)
        return super().compute_update(round)


def test_a_federator_that_lost_its_log_is_detected() -> None:
    """The client applied rounds that a restarted federator without a log never ran."""
    config = make_config(n=1, f=0, aggregator="mean", rounds=50)

    async def main() -> None:
        first = Federator(config)
        await first.start()
        assert first.engine is not None
        session = Session(SessionConfig(first.address, "c0", backoff=FAST), SlowTrainer(0))
        task = asyncio.ensure_future(session.run())
        while first.engine.completed_rounds < 2:
            await asyncio.sleep(0.01)
        port = first.port
        await first.stop(grace=0.1)
        async with federation(make_config(n=1, f=0, aggregator="mean", rounds=50, port=port)):
            with pytest.raises(SessionError, match="has completed only 0 rounds"):
                await task

    run(main())


def test_counters_are_read_at_the_last_round_while_the_connection_is_open() -> None:
    """The federator may close a connection as soon as its last aggregate is out: a session
    reads its byte counters once it has applied the last round, before its final report, and
    again before closing its channel (so a daemon counts all its updates either way)."""
    config = make_config(n=3, f=0, aggregator="mean", rounds=4)
    reads: list[tuple[str, int]] = []

    async def main() -> None:
        async with federation(config) as fed:
            trainers = [FakeTrainer(seed=20 + i) for i in range(3)]
            sessions = [
                Session(
                    SessionConfig(fed.address, f"c{i}", backoff=FAST),
                    t,
                    read_counters=lambda i=i, t=t: reads.append((f"c{i}", t.applied_round)),
                )
                for i, t in enumerate(trainers)
            ]
            await asyncio.gather(*(s.run() for s in sessions))

    run(main())
    for client in ("c0", "c1", "c2"):
        assert [r for c, r in reads if c == client] == [3, 3]
