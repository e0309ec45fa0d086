"""The client session against a real in-process federator: paged catch-up, observers and their
reports, identities sharing one model, refusals, reconnect limits and backoff, a resumed
checkpoint checked against the run, a model that is not the observed one, an update that is not
finite."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_federator import FAST, FakeTrainer, federation, make_config, read_metrics, run

from cyber0.client.session import (
    Backoff,
    LocalModel,
    Session,
    SessionConfig,
    SessionError,
    Trainer,
)
from cyber0.client.trainer import ColludingTrainer, ZOTrainer
from cyber0.common.hf import ModelUnavailableError
from cyber0.common.weights import read_metadata
from cyber0.server import engine as engine_module
from cyber0.server.app import Federator
from cyber0.server.config import build_config

CPU = torch.device("cpu")


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


def watcher(address: str, trainer: Trainer, client_id: str = "observer") -> Session:
    """An observer session that reports only at the end (its evaluation: a constant)."""
    config = SessionConfig(address, client_id, role="observer", eval_every=100, backoff=FAST)
    return Session(config, trainer, evaluate=lambda: (0.5, 1.0))


def test_a_checkpoint_resumes_only_against_the_run_it_was_saved_in(tmp_path: Path) -> None:
    """A checkpoint of round 5 resumes against its own run's federator, restarted from its log,
    and ends on the model of a party that never stopped; against a fresh federator of the same
    plan (other aggregates) it is refused, naming the file, before a round is applied."""
    db, ckpt = tmp_path / "fed.db", tmp_path / "observer.safetensors"
    plan = {"n": 2, "f": 0, "aggregator": "mean", "rounds": 8}

    async def main() -> None:
        first = Federator(make_config(**plan, log_db=str(db)))
        await first.start()
        writer = ZOTrainer(device=CPU, checkpoint=str(ckpt), save_every=3)
        _, sessions = trainers_sessions(first.address, 2)
        await asyncio.gather(watcher(first.address, writer).run(), *(s.run() for s in sessions))
        port = first.port
        await first.stop(grace=0.1)
        assert read_metadata(ckpt)["round"] == "5"

        async with federation(make_config(**plan, log_db=str(db), port=port)) as same:
            resumed = ZOTrainer(device=CPU, checkpoint=str(ckpt), resume=True)
            result = await watcher(same.address, resumed).run()
            assert result.applied_round == 7 and result.digest == writer.digest()
            assert resumed.rounds_applied == 2

        async with federation(make_config(**plan)) as other:
            strangers = [FakeTrainer(seed=90 + i) for i in range(2)]
            await asyncio.gather(
                *(
                    Session(SessionConfig(other.address, f"c{i}"), t).run()
                    for i, t in enumerate(strangers)
                )
            )
            stranger = ZOTrainer(device=CPU, checkpoint=str(ckpt), resume=True)
            message = f"{ckpt} holds round 5 of another run of this plan (its aggregates differ"
            with pytest.raises(SessionError, match=re.escape(message)):
                await watcher(other.address, stranger).run()
            assert stranger.applied_round == 5 and read_metadata(ckpt)["round"] == "5"

    run(main())


class ForeignTrainer(FakeTrainer):
    """A model that is not the federation's: it applies the aggregates, but its digest is no
    one else's."""

    def digest(self) -> str:
        return "f" * 32


def test_a_model_unlike_the_observed_one_is_reported_at_the_observed_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A party joining late whose model differs from the one an observer reported
    (JoinResponse) warns when its catch-up reaches that round (before, the digest was compared
    only if catch-up ended on it, which a late joiner's rarely does), and goes on."""
    config = make_config(n=1, f=0, aggregator="mean", rounds=16)

    async def main() -> None:
        async with federation(config) as fed:
            assert fed.engine is not None
            seen = FakeTrainer(seed=0)
            everyone = asyncio.gather(
                observer(fed.address, seen, every=2).run(),
                Session(SessionConfig(fed.address, "c0", backoff=FAST), SlowTrainer(0)).run(),
            )
            while fed.engine.completed_rounds < 8:
                await asyncio.sleep(0.01)
            foreign = ForeignTrainer(seed=0)
            await watcher(fed.address, foreign, "late").run()
            assert foreign.applied_round == config.plan.rounds - 1
            await everyone

    with caplog.at_level(logging.WARNING, logger="cyber0.client"):
        run(main())
    warned = [m for m in caplog.messages if re.search(r"late: model digest after round", m)]
    assert len(warned) == 1 and re.search(
        r"is f{32}; the observer reported [0-9a-f]{32}", warned[0]
    )


class NaNTrainer(FakeTrainer):
    """A client without the finiteness check, whose loss is not finite."""

    def compute_update(self, round: int) -> Sequence[float]:
        return [math.nan] * self.m


def test_an_update_that_is_not_finite_stops_the_party(tmp_path: Path) -> None:
    """An honest client whose examples make every scalar NaN (finite but huge features) stops
    at its first round with the reason, naming its file, instead of sending what the federator
    must refuse; a client that sends one anyway stops at the refusal (INVALID_ARGUMENT), not
    retrying. A colluding daemon's vectors are left as they are."""
    data = tmp_path / "huge.npz"
    np.savez(data, x=np.full((20, 40), 1e38, np.float32), y=np.arange(20) % 3)
    config = build_config(
        {
            "seed": 8,
            "model": "logreg?inputs=40",
            "dataset": "local?classes=3",
            "n_clients": 2,
            "f": 0,
            "aggregator": "mean",
            "rounds": 3,
            "zo": {"nu": 4, "batch_size": 8},
            "federator": {"port": 0, "round_timeout": 5.0, "linger": 0.0},
        }
    )

    async def main() -> None:
        async with federation(config) as fed:
            honest = asyncio.ensure_future(
                Session(SessionConfig(fed.address, "c0", backoff=FAST), FakeTrainer(0)).run()
            )
            huge = Session(
                SessionConfig(fed.address, "c1", backoff=FAST), ZOTrainer(CPU, data=str(data))
            )
            message = "c1: round 0: the loss is not finite (the update holds NaN or infinite "
            message += f"values): this party's examples (--data {data}) are out of range"
            with pytest.raises(SessionError, match=re.escape(message)):
                await huge.run()
            assert huge.reconnects == 0
            sloppy = Session(SessionConfig(fed.address, "c1", backoff=FAST), NaNTrainer(1))
            with pytest.raises(
                SessionError,
                match="c1: the federator refused this party's message: INVALID_ARGUMENT: "
                "update for round 0 has a non-finite value",
            ):
                await sloppy.run()
            assert sloppy.reconnects == 0
            honest.cancel()

    run(main())
    colluding = ColludingTrainer(CPU, data=str(data), flip_labels=True, attack="lf")
    colluding.setup(config.plan, 0, "b1")
    assert not all(math.isfinite(v) for v in colluding.compute_update(0))


@pytest.mark.parametrize(
    ("attack", "params", "huge", "message"),
    [
        ("mimic", {"target": 2}, False, "mimic: target=2 but only h=2 honest rows"),
        ("alie", {}, True, "alie: the honest vectors must be finite"),
    ],
)
def test_a_colluding_daemon_whose_attack_cannot_craft_its_rows_stops_saying_why(
    tmp_path: Path, attack: str, params: dict[str, Any], huge: bool, message: str
) -> None:
    """Rows the attack refuses to craft from the daemon's own vectors (``mimic`` copying an
    identity it does not hold; vectors that are not finite) stop the session with the attack's
    reason (they were a ValueError traceback)."""
    data = tmp_path / "{id}.npz"
    for i in (1, 2):
        x = np.random.default_rng(i).normal(size=(20, 40)) * (1e37 if huge else 1.0)
        np.savez(tmp_path / f"b{i}.npz", x=x.astype(np.float32), y=np.arange(20) % 3)
    config = build_config(
        {
            "seed": 8,
            "model": "logreg?inputs=40",
            "dataset": "local?classes=3",
            "n_clients": 5,
            "f": 2,
            "aggregator": "mean",
            "rounds": 2,
            "zo": {"nu": 4, "batch_size": 8},
            "federator": {"port": 0, "round_timeout": 5.0, "linger": 0.0, "quorum": 2},
        }
    )
    trainer = ColludingTrainer(CPU, data=str(data), attack=attack, attack_params=params)
    model = LocalModel(trainer)

    async def main() -> None:
        async with federation(config) as fed:
            sessions = [
                Session(SessionConfig(fed.address, f"b{i}", backoff=FAST), model) for i in (1, 2)
            ]
            with pytest.raises(SessionError, match=re.escape(message)) as stopped:
                await asyncio.gather(*(s.run() for s in sessions))
            found = f"round \\d+: attack {attack} cannot craft the rows of 2 identities: "
            assert re.search(found, str(stopped.value))

    run(main())
