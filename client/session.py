"""The network half of a client daemon: the federation protocol driven for a model-agnostic
:class:`Trainer`.

A :class:`Session` is one identity (client id) talking to one federator:
Join → ``trainer.setup(plan, shard, id)`` (first join only) → catch up with GetAggregates pages →
Train stream (Hello; on Aggregate(t): ``apply_aggregate`` in order, catching up first on a gap;
on RoundStart(t), or an Aggregate(t−1) with ``next_open``: ``compute_update(t)`` in a worker
thread and send the Update) → after the
last round's aggregate, a final Report with the model digest, half-close, done. On a lost
connection it reconnects with capped exponential backoff, jittered by a seeded RNG. A trainer
resumed from a checkpoint (:class:`Resumable`) is checked against the federator's aggregates of
the checkpoint's rounds before anything else (a file of another run stops the session), and the
model is compared with the digest an observer reported (JoinResponse) when catch-up reaches its
round (a warning). An update of this party's that the federator refuses as invalid stops the
session.

Several sessions may run concurrently in one process, e.g. the identities of a colluding
Byzantine daemon sharing one trainer: give them one :class:`LocalModel`, which serializes the
trainer's calls and applies each round's aggregate once whichever session receives it first.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import grpc

from cyber0 import wire
from cyber0.common.data import DataUnavailableError
from cyber0.common.hf import ModelUnavailableError
from cyber0.common.plan import PlanError, TrainingPlan
from cyber0.common.weights import CHAIN_START, chain_aggregate
from cyber0.v1 import federation_pb2 as pb
from cyber0.v1 import federation_pb2_grpc as pb_grpc

Role = Literal["train", "observer"]
ChannelFactory = Callable[[str], grpc.aio.Channel]
Evaluate = Callable[[], tuple[float, float]]
"""An observer's evaluation of the current model: (accuracy in [0, 1], loss). Blocking."""
FetchPage = Callable[[int, int], Awaitable[Sequence[pb.Aggregate]]]
"""``fetch(start, until)``: the federator's next page of aggregates, rounds ``start …`` before
``until`` in order (at least one)."""

T = TypeVar("T")

_log = logging.getLogger("cyber0.client")

_FATAL_AT_JOIN = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


#: What ``Trainer.setup`` raises when this party cannot follow the plan: a bad data file, a
#: checkpoint of another plan, a missing dataset package or model folder. The session stops
#: with the message (the daemon exits 1); anything else is a bug and keeps its traceback.
SETUP_ERRORS = (ValueError, DataUnavailableError, ModelUnavailableError)


class UpdateError(Exception):
    """What ``Trainer.compute_update`` raises when this party cannot compute a valid update (a
    loss that is not finite): the session stops with the message (the daemon exits 1)."""


class Trainer(Protocol):
    """What a session needs from the model side (implemented in ``cyber0.client.trainer``).

    Calls are blocking and run in worker threads, never two at a time on one trainer.
    """

    def setup(self, plan: TrainingPlan, shard_index: int, client_id: str) -> None:
        """Load data and model for ``plan``; ``shard_index`` is −1 for an observer, ``client_id``
        the identity the federator gave it to. Called once per session (so once per identity
        when sessions share the trainer). Raises one of
        :data:`SETUP_ERRORS` when this party cannot follow the plan."""
        ...

    @property
    def applied_round(self) -> int:
        """Last round whose aggregate was applied (−1: none)."""
        ...

    def compute_update(self, round: int) -> Sequence[float]:
        """The m scalars of this party for ``round`` (model at ``round − 1`` applied); may raise
        :class:`UpdateError`."""
        ...

    def apply_aggregate(self, round: int, values: Sequence[float]) -> None:
        """Apply the aggregate of ``round`` (always ``applied_round + 1``)."""
        ...

    def digest(self) -> str:
        """Lowercase hex digest (≤ 128 characters) of the current model."""
        ...


@runtime_checkable
class Resumable(Protocol):
    """A trainer that may start from a checkpoint, trusted once its aggregates are checked."""

    @property
    def unverified_round(self) -> int:
        """The round of the checkpoint loaded at setup, until :meth:`check_history` accepts it
        (−1: nothing to check)."""
        ...

    def check_history(self, chain: bytes) -> None:
        """Accept the checkpoint if ``chain`` is the federator's aggregate chain
        (:func:`~cyber0.common.weights.chain_aggregate`) of rounds ``0 … unverified_round``;
        ValueError naming the file otherwise."""
        ...


def _chain_page(chain: bytes, page: Sequence[pb.Aggregate]) -> bytes:
    """``chain`` extended by the aggregates of ``page``, in order."""
    for agg in page:
        chain = chain_aggregate(chain, agg.round, agg.values)
    return chain


class SessionError(RuntimeError):
    """The session cannot go on (refused at Join, plan changed, federator lost its log, ...)."""


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: attempt k waits U(d/2, d) seconds, d = min(maximum, initial·factor^k)."""

    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before reconnect ``attempt`` (0-based)."""
        d = min(self.maximum, self.initial * self.factor**attempt)
        return rng.uniform(d / 2, d)


@dataclass(frozen=True)
class SessionConfig:
    """One identity's connection settings.

    ``call_timeout``: seconds for each unary call. ``eval_every``: an observer evaluates and
    reports after every E-th round (and after the last). ``max_retries``: consecutive failed
    attempts before giving up (None: never). ``jitter_seed``: seeds the backoff jitter (default:
    CRC-32 of the client id, so the identities of one process do not reconnect in lockstep).
    """

    target: str
    client_id: str
    token: str = ""
    role: Role = "train"
    call_timeout: float = 10.0
    eval_every: int = 10
    backoff: Backoff = field(default_factory=Backoff)
    max_retries: int | None = None
    jitter_seed: int | None = None


@dataclass(frozen=True)
class SessionResult:
    """How a finished session ended."""

    client_id: str
    applied_round: int
    digest: str
    reconnects: int


class LocalModel:
    """A trainer plus the lock that serializes its (blocking, threaded) calls.

    Share one instance between the sessions of one process that drive the same model.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._lock = asyncio.Lock()
        self._running: asyncio.Future[Any] | None = None

    @property
    def applied_round(self) -> int:
        """The trainer's last applied round."""
        return self.trainer.applied_round

    async def _thread(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a worker thread, which a cancelled caller leaves to finish
        (:meth:`idle`)."""
        running = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._running = running
        return await asyncio.shield(running)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        async with self._lock:
            return await self._thread(fn, *args)

    async def idle(self) -> None:
        """Return once no trainer call is running. A call whose session was cancelled still
        runs to its end in its worker thread (a thread cannot be stopped), and the weights are
        the global model's again only then: a local round restores them, an update completes."""
        running = self._running
        if running is not None:
            await asyncio.wait([running])
            if not running.cancelled():
                running.exception()  # retrieved: a stopped session has no one to raise it to

    async def setup(self, plan: TrainingPlan, shard_index: int, client_id: str) -> None:
        """``trainer.setup`` in a worker thread."""
        await self._call(self.trainer.setup, plan, shard_index, client_id)

    async def compute(self, round: int) -> Sequence[float]:
        """``trainer.compute_update(round)`` in a worker thread."""
        return await self._call(self.trainer.compute_update, round)

    async def apply(self, round: int, values: Sequence[float]) -> bool:
        """Apply ``round`` if it is the next one; False if it was already applied.
        Raises :class:`SessionError` on a gap (a bug: callers catch up first)."""
        async with self._lock:
            applied = self.trainer.applied_round
            if round <= applied:
                return False
            if round != applied + 1:
                raise SessionError(f"aggregate {round} cannot follow applied round {applied}")
            await self._thread(self.trainer.apply_aggregate, round, values)
            return True

    async def digest(self) -> str:
        """``trainer.digest()`` in a worker thread."""
        return await self._call(self.trainer.digest)

    async def check_resumed(self, fetch: FetchPage) -> None:
        """If the trainer loaded a checkpoint not checked yet (:class:`Resumable`), chain the
        federator's aggregates of its rounds, fetched with ``fetch``, and let the trainer check
        them (ValueError when they are another run's). Holds the lock throughout, so no session
        of this model applies a round or computes on the checkpoint meanwhile."""
        trainer = self.trainer
        if not isinstance(trainer, Resumable):
            return
        async with self._lock:
            last = trainer.unverified_round
            if last < 0:
                return
            chain, start = CHAIN_START, 0
            while start <= last:
                page = await fetch(start, last + 1)
                chain = await self._thread(_chain_page, chain, page)
                start += len(page)
            await self._thread(trainer.check_history, chain)

    async def evaluate(self, evaluate: Evaluate) -> tuple[float, float]:
        """``evaluate()`` in a worker thread, with no trainer call running."""
        return await self._call(evaluate)


DEFAULT_KEEPALIVE = 20.0
"""Seconds between a client's HTTP/2 pings while its stream is open (≥ 1: the federator refuses
faster pings)."""


def channel_options(keepalive: float = DEFAULT_KEEPALIVE) -> list[tuple[str, int]]:
    """Channel options: keepalive while a call is open (a federator that stops answering pings
    for ``keepalive / 2`` seconds fails the stream with UNAVAILABLE, and the session
    reconnects) and a connection of its own."""
    if keepalive < 1.0:
        raise ValueError(f"keepalive must be >= 1 second; got {keepalive}")
    keepalive_ms = int(keepalive * 1000)
    return [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", keepalive_ms // 2),
        ("grpc.http2.ping_timeout_ms", keepalive_ms // 2),  # else 1 min, whatever keepalive says
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        # One TCP connection per channel, so per identity: gRPC would otherwise share one
        # connection between the sessions of a process (and its 16-stream cap, and its fate).
        ("grpc.use_local_subchannel_pool", 1),
    ]


def insecure_channel(target: str) -> grpc.aio.Channel:
    """The default channel factory: plaintext with keepalive (loopback and tests)."""
    return grpc.aio.insecure_channel(target, options=channel_options())


@dataclass(frozen=True)
class TLSFiles:
    """A client's TLS material: the CA that signed the federator's certificate, and for mutual
    TLS the client's own certificate and key. ``server_name`` overrides the name checked
    against the federator's certificate (default: the host of the target)."""

    ca: str
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials from the files (OSError when one cannot be read)."""
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate and its key go together")
        with open(self.ca, "rb") as ca:
            root = ca.read()
        chain = key = None
        if self.cert is not None and self.key is not None:
            with open(self.cert, "rb") as cert_file, open(self.key, "rb") as key_file:
                chain, key = cert_file.read(), key_file.read()
        return grpc.ssl_channel_credentials(root, key, chain)


def channel_factory(
    tls: TLSFiles | None = None, keepalive: float = DEFAULT_KEEPALIVE
) -> ChannelFactory:
    """A factory of plaintext (``tls`` None) or TLS channels with keepalive; the files are read
    once, here."""
    options: list[tuple[str, int | str]] = list(channel_options(keepalive))
    if tls is None:
        return lambda target: grpc.aio.insecure_channel(target, options=options)
    credentials = tls.credentials()
    if tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return lambda target: grpc.aio.secure_channel(target, credentials, options=options)


class _Retryable(Exception):
    """Internal: this attempt failed in a way a reconnect may fix."""


class Session:
    """Drives one identity through the federation until the plan's rounds are done.

    ``model``: a :class:`Trainer` or a :class:`LocalModel` shared with other sessions.
    ``evaluate``: an observer's evaluation hook (required for ``role="observer"``).
    ``channel_factory``: builds a fresh channel for every connection attempt.
    ``read_counters``: called once the last round's aggregate is in, before the final report
    (the federator may close the connection right after it), and before each channel is closed:
    where the daemon reads its connections' byte counters, while they are still open.
    """

    def __init__(
        self,
        config: SessionConfig,
        model: Trainer | LocalModel,
        *,
        evaluate: Evaluate | None = None,
        channel_factory: ChannelFactory = insecure_channel,
        read_counters: Callable[[], None] | None = None,
    ) -> None:
        if config.role not in ("train", "observer"):
            raise ValueError(f"role must be 'train' or 'observer'; got {config.role!r}")
        if config.role == "observer" and evaluate is None:
            raise ValueError("an observer session needs an evaluate hook")
        if config.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1; got {config.eval_every}")
        self.config = config
        self.model = model if isinstance(model, LocalModel) else LocalModel(model)
        self._evaluate = evaluate
        self._channel_factory = channel_factory
        self._read_counters = read_counters
        seed = config.jitter_seed
        self._rng = random.Random(zlib.crc32(config.client_id.encode()) if seed is None else seed)
        self._credentials = pb.Credentials(client_id=config.client_id, token=config.token)
        self.plan: TrainingPlan | None = None
        self.shard_index: int | None = None
        self.reconnects = 0
        self._finished: grpc.aio.StreamStreamCall | None = None  # the stream already half-closed

    async def run(self) -> SessionResult:
        """Take part until the last round is applied and reported; raise :class:`SessionError`
        when refused at Join, on an inconsistent federator, or after ``max_retries``."""
        failures = 0
        while True:
            before = self.model.applied_round
            channel = self._channel_factory(self.config.target)
            try:
                await self._attempt(pb_grpc.FederationStub(channel))
                return SessionResult(
                    self.config.client_id,
                    self.model.applied_round,
                    await self.model.digest(),
                    self.reconnects,
                )
            except grpc.aio.AioRpcError as exc:
                self._fatal_if_invalid(exc.code(), exc.details())
                _log.warning("%s: %s: %s", self.config.client_id, exc.code().name, exc.details())
            except _Retryable as exc:
                _log.warning("%s: %s", self.config.client_id, exc)
            finally:
                if self._read_counters is not None:
                    self._read_counters()
                await channel.close()
            failures = 0 if self.model.applied_round > before else failures + 1
            if self.config.max_retries is not None and failures > self.config.max_retries:
                raise SessionError(
                    f"{self.config.client_id}: gave up after {failures} failed attempts"
                )
            self.reconnects += 1
            await asyncio.sleep(self.config.backoff.delay(max(failures - 1, 0), self._rng))

    def _fatal_if_invalid(self, code: grpc.StatusCode, details: str | None) -> None:
        """SessionError for an INVALID_ARGUMENT refusal: the federator found this party's
        message (its update, its report) invalid, and sending it again cannot help."""
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise SessionError(
                f"{self.config.client_id}: the federator refused this party's message: "
                f"{code.name}: {details}"
            )

    async def _attempt(self, stub: pb_grpc.FederationStub) -> None:
        joined = await self._join(stub)
        plan = self._require_plan()
        try:
            await self.model.check_resumed(lambda start, until: self._fetch(stub, start, until))
        except ValueError as exc:
            raise SessionError(f"{self.config.client_id}: {exc}") from exc
        observed = (joined.model_digest_round, joined.model_digest) if joined.model_digest else None
        await self._check_digest(observed)
        await self._catch_up(stub, joined.current_round, observed)
        call = stub.Train()
        try:
            await call.write(pb.ClientMessage(hello=pb.Hello(credentials=self._credentials)))
            if self.model.applied_round == plan.rounds - 1:
                await self._finish(call, plan.rounds - 1)
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    break
                await self._handle(stub, call, msg)
        except asyncio.InvalidStateError:  # wrote to a stream the federator had ended
            code, details = await call.code(), await call.details()
            self._fatal_if_invalid(code, details)
            raise _Retryable(f"stream ended: {code.name}: {details}") from None
        finally:
            call.cancel()
        if self.model.applied_round < plan.rounds - 1:
            raise _Retryable("the federator ended the stream before the last round")

    async def _join(self, stub: pb_grpc.FederationStub) -> pb.JoinResponse:
        role = pb.ROLE_OBSERVER if self.config.role == "observer" else pb.ROLE_TRAIN
        request = pb.JoinRequest(
            credentials=self._credentials, role=role, protocol_version=wire.PROTOCOL_VERSION
        )
        try:
            joined: pb.JoinResponse = await stub.Join(request, timeout=self.config.call_timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _FATAL_AT_JOIN:
                raise SessionError(
                    f"{self.config.client_id}: Join refused: {exc.code().name}: {exc.details()}"
                ) from exc
            raise
        try:
            plan = wire.plan_from_proto(joined.plan)
        except PlanError as exc:
            raise SessionError(f"the federator sent an invalid plan: {exc}") from exc
        shard = joined.shard_index if self.config.role == "train" else -1
        if self.plan is None:
            try:
                await self.model.setup(plan, shard, self.config.client_id)
            except SETUP_ERRORS as exc:
                raise SessionError(f"{self.config.client_id}: {exc}") from exc
            self.plan, self.shard_index = plan, shard
        elif plan != self.plan or shard != self.shard_index:
            raise SessionError(
                f"{self.config.client_id}: the federator now serves another plan or shard "
                f"(shard {shard}, was {self.shard_index}); restart the client"
            )
        if self.model.applied_round >= joined.current_round:
            raise SessionError(
                f"{self.config.client_id}: this model applied round {self.model.applied_round} "
                f"but the federator has completed only {joined.current_round} rounds "
                "(its log was lost or belongs to another run)"
            )
        return joined

    def _require_plan(self) -> TrainingPlan:
        if self.plan is None:
            raise SessionError("no plan: Join first")
        return self.plan

    async def _fetch(
        self, stub: pb_grpc.FederationStub, start: int, until: int
    ) -> Sequence[pb.Aggregate]:
        """One page of the federator's aggregates: rounds ``start …`` before ``until``, checked
        to be in order and not empty."""
        request = pb.GetAggregatesRequest(
            credentials=self._credentials, from_round=start, to_round=until
        )
        page: pb.GetAggregatesResponse = await stub.GetAggregates(
            request, timeout=self.config.call_timeout
        )
        if not page.aggregates:
            raise _Retryable(f"no aggregate for round {start} ({page.completed_rounds} completed)")
        for expected, agg in enumerate(page.aggregates, start):
            if agg.round != expected:
                raise SessionError(f"aggregates page has round {agg.round}; wanted {expected}")
        return page.aggregates

    async def _catch_up(
        self,
        stub: pb_grpc.FederationStub,
        until: int,
        observed: tuple[int, str] | None = None,
    ) -> None:
        """Apply the aggregates of every completed round before ``until``, checking the model
        against ``observed`` (an observer's (round, digest)) once that round is applied."""
        while self.model.applied_round < until - 1:
            start = self.model.applied_round + 1
            for agg in await self._fetch(stub, start, until):
                await self.model.apply(agg.round, list(agg.values))
                if observed is not None and agg.round == observed[0]:
                    await self._check_digest(observed)

    async def _check_digest(self, observed: tuple[int, str] | None) -> None:
        """Warn when the model, at the round of ``observed`` (an observer's (round, digest)
        from Join), is not the one the observer reported. A warning, not an error: an observer
        on another kind of device may differ in the last bits (Gaussian directions on a GPU),
        and one observer must not be able to stop every party that catches up."""
        if observed is None or self.model.applied_round != observed[0]:
            return
        round, theirs = observed
        mine = await self.model.digest()
        if mine != theirs:
            _log.warning(
                "%s: model digest after round %d is %s; the observer reported %s",
                self.config.client_id,
                round,
                mine,
                theirs,
            )

    async def _handle(
        self,
        stub: pb_grpc.FederationStub,
        call: grpc.aio.StreamStreamCall,
        msg: pb.ServerMessage,
    ) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "round_start":
            await self._start_round(stub, call, msg.round_start.round)
        elif kind == "aggregate":
            t = msg.aggregate.round
            await self._catch_up(stub, t)
            await self.model.apply(t, list(msg.aggregate.values))
            await self._after_round(call, t)
            if msg.aggregate.next_open:
                await self._start_round(stub, call, t + 1)

    async def _start_round(
        self, stub: pb_grpc.FederationStub, call: grpc.aio.StreamStreamCall, t: int
    ) -> None:
        """Round ``t`` is open: a training client catches up and sends its update."""
        if self.config.role != "train":
            return
        await self._catch_up(stub, t)
        # A model shared with faster sessions may already be past t: nothing to compute.
        if self.model.applied_round == t - 1:
            try:
                values = await self.model.compute(t)
            except UpdateError as exc:
                raise SessionError(f"{self.config.client_id}: {exc}") from exc
            await call.write(wire.update_message(t, values))

    async def _after_round(self, call: grpc.aio.StreamStreamCall, t: int) -> None:
        plan = self._require_plan()
        if t == plan.rounds - 1:
            await self._finish(call, t)
        elif self.config.role == "observer" and (t + 1) % self.config.eval_every == 0:
            await call.write(await self._report(t))

    async def _report(self, t: int) -> pb.ClientMessage:
        report = pb.Report(round=t, digest=await self.model.digest())
        if self.config.role == "observer" and self._evaluate is not None:
            report.accuracy, report.loss = await self.model.evaluate(self._evaluate)
        return pb.ClientMessage(report=report)

    async def _finish(self, call: grpc.aio.StreamStreamCall, t: int) -> None:
        """Report the final model, then half-close: the federator ends the stream with OK. Once
        per stream (a stream opened after the end also gets the last Aggregate)."""
        if self._finished is call:
            return
        self._finished = call
        if self._read_counters is not None:
            self._read_counters()
        await call.write(await self._report(t))
        await call.done_writing()
