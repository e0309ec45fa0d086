"""Round orchestration, without sockets: who may join, when a round opens and closes, what is
accepted, aggregation and the durable commit.

The servicer turns calls into :class:`RoundEngine` method calls and drains each :class:`Stream`'s
outbox onto its gRPC stream; tests drive the engine directly. All methods run on the event loop;
aggregation runs in a worker thread and log writes in the log's own thread.

Round state machine (round t, m = plan.zo.scalars_per_round, n = plan.n_clients, q = quorum):

* WAITING: round t opens once at least q training clients have a stream open.
* OPEN: RoundStart(t) goes to every connected training client (and to one that connects while t
  is open), unless t opened on the Aggregate of t−1 (see CLOSING). Updates are checked (role,
  round, one per client, length m, finite). A refused client is excluded from t. The round closes
  as soon as |received| ≥ q and every one of the n training clients has either sent an update or
  been excluded, or at the deadline (``round_timeout`` after opening) if |received| ≥ q; past the
  deadline it closes as soon as q updates are in (it never closes with fewer: the rule's
  guarantee assumes them).
* CLOSING: the rule runs on exactly the received vectors (rows in shard order), the round is
  committed to the log, then the Aggregate is broadcast to every open stream (training clients,
  late or not, and observers). When another round follows and q training clients are connected,
  round t+1 opens at once and the broadcast carries ``next_open``: for a training client it
  stands for RoundStart(t+1), so a round costs one write per client, not two. An update that
  arrives now for t from a client that was invited to t and did not answer is dropped silently
  (late, not an error).
* DONE (every round committed): a stream that opens now gets the last Aggregate, so a party that
  missed the last broadcast (it joined before the end and opened its stream after it) still
  learns that training is over.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypeAlias

import grpc
import numpy as np
import torch

from cyber0 import wire
from cyber0.common.aggregators import Aggregator
from cyber0.common.plan import TrainingPlan
from cyber0.common.tcpinfo import Traffic
from cyber0.v1 import federation_pb2 as pb

from .attribution import ConnectionOwners
from .errors import Refusal
from .log import DurableLog, LogError, RoundRecord

Role = Literal["train", "observer"]
MetricsSink = Callable[[dict[str, Any]], None]

PAGE_BYTES = 1 << 20
"""Target size of one GetAggregates page (well under a client's default 4 MiB receive limit)."""
MAX_PAGE_ROUNDS = 1024

_log = logging.getLogger("cyber0.federator")


@dataclass(frozen=True)
class Closing:
    """Outbox sentinel: end the stream with this status (OK: end it normally)."""

    code: grpc.StatusCode
    message: str


Outbound: TypeAlias = "pb.ServerMessage | Closing"


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end, without swallowing a cancellation of the caller
    (a failure of ``task`` is its owner's to report)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        pass


class Stream:
    """One client's open Train stream: the engine pushes messages into :attr:`outbox`.

    A client more than ``limit`` messages behind is not reading: its stream is closed with
    RESOURCE_EXHAUSTED rather than buffering without bound.
    """

    def __init__(self, client_id: str, role: Role, limit: int) -> None:
        self.client_id = client_id
        self.role = role
        self.outbox: asyncio.Queue[Outbound] = asyncio.Queue()
        self.closed = False
        self._limit = limit

    def push(self, msg: pb.ServerMessage) -> bool:
        """Queue ``msg``; False if the stream is closed or was just closed for lagging."""
        if self.closed:
            return False
        if self.outbox.qsize() >= self._limit:
            self.close(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"client {self.client_id} is {self._limit} messages behind; stream closed",
            )
            return False
        self.outbox.put_nowait(msg)
        return True

    def close(self, code: grpc.StatusCode, message: str) -> None:
        """End the stream after what is queued (idempotent)."""
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(Closing(code, message))


@dataclass(frozen=True)
class JoinInfo:
    """What a joining client learns (``shard_index`` is None for observers)."""

    plan: TrainingPlan
    shard_index: int | None
    current_round: int
    model_digest: str
    model_digest_round: int


@dataclass
class _Round:
    """Mutable state of the round that is open or opens next."""

    index: int
    received: dict[str, bytes] = field(default_factory=dict)
    uplink_bytes: int = 0
    excluded: dict[str, str] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    invited: set[str] = field(default_factory=set)
    opened_at: float = 0.0
    is_open: bool = False


class RoundEngine:
    """Runs ``plan.rounds`` rounds over whatever streams are connected.

    ``aggregator`` maps an (k, m) float32 tensor to (m,); ``log`` is already opened for ``plan``
    and is only touched from this engine's log thread; ``metrics`` receives one dict per round
    (``event: "round"``) and per report (``event: "report"``). ``traffic``, when given, is
    sampled as each round closes, and its counts since the previous sample join the round's
    metrics (``uplink_wire_bytes``, ``downlink_wire_bytes``, ``wire_connections``), also split by
    the client that authenticated on each connection (:meth:`authenticated`):
    ``wire_by_client``, ``wire_unattributed``.
    """

    def __init__(
        self,
        plan: TrainingPlan,
        aggregator: Aggregator,
        log: DurableLog,
        *,
        round_timeout: float,
        quorum: int,
        enrolment: Sequence[str] = (),
        metrics: MetricsSink | None = None,
        traffic: Callable[[], Traffic] | None = None,
        outbox_limit: int = 64,
    ) -> None:
        self.plan = plan
        self._m = plan.zo.scalars_per_round
        self._aggregator = aggregator
        self._log = log
        self._round_timeout = round_timeout
        self._quorum = quorum
        self._enrolled = bool(enrolment)
        self._metrics = metrics
        self._traffic = traffic
        self._owners = ConnectionOwners()
        self._outbox_limit = outbox_limit
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cyber0-log")
        self._aggregates = log.aggregates()
        self._resumed = bool(self._aggregates)
        self._shards = log.enrol(enrolment) if enrolment else log.shards()
        self._pending: dict[str, asyncio.Future[int | None]] = {}
        self._joined: dict[str, Role] = {}
        self._streams: dict[str, Stream] = {}
        self._round = _Round(len(self._aggregates))
        self._late: tuple[int, set[str]] = (-1, set())
        self._digest: tuple[int, str] = (0, "")
        self._reported: dict[str, int] = {}
        self._final_digests: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._finishing: asyncio.Future[None] | None = None
        self._closing = False

    # ----------------------------------------------------------------- queries
    @property
    def completed_rounds(self) -> int:
        """Rounds committed to the log (0 .. completed_rounds-1)."""
        return len(self._aggregates)

    @property
    def page_rounds(self) -> int:
        """Aggregates per GetAggregates page: ~1 MiB, between 1 and 1024."""
        return max(1, min(MAX_PAGE_ROUNDS, PAGE_BYTES // (4 * self._m + 16)))

    def aggregates(
        self, client_id: str, from_round: int, to_round: int
    ) -> tuple[list[pb.Aggregate], int]:
        """Aggregates of completed rounds in [from_round, to_round), one page at most, and the
        number of completed rounds."""
        self._require_joined(client_id)
        completed = self.completed_rounds
        if to_round <= from_round:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"to_round must be > from_round; got from_round={from_round}, to_round={to_round}",
            )
        if from_round > completed:
            raise Refusal(
                grpc.StatusCode.OUT_OF_RANGE,
                f"from_round={from_round} is beyond the {completed} completed rounds",
            )
        end = min(to_round, completed, from_round + self.page_rounds)
        page = [wire.aggregate(t, self._aggregates[t]) for t in range(from_round, end)]
        return page, completed

    # ------------------------------------------------------------ membership
    async def join(self, client_id: str, role: Role) -> JoinInfo:
        """Admit ``client_id`` in ``role``; a training client gets (and keeps) a shard index.
        Refused with UNAVAILABLE once :meth:`close` has begun."""
        self._check_open()
        previous = self._joined.get(client_id)
        if previous is None and role == "observer" and self._holds_shard(client_id):
            previous = "train"
        if previous is not None and previous != role:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"client {client_id} joined as {previous}; it cannot rejoin as {role}",
            )
        shard: int | None = None
        if role == "train":
            shard = await self._shard_of(client_id)
        if previous is None:
            where = "" if shard is None else f" on shard {shard}"
            _log.info("%s joined as %s%s", client_id, role, where)
        self._joined[client_id] = role
        digest_round, digest = self._digest
        return JoinInfo(self.plan, shard, self.completed_rounds, digest, digest_round)

    def _check_open(self) -> None:
        if self._closing:
            raise Refusal(grpc.StatusCode.UNAVAILABLE, "the federator is shutting down")

    def _holds_shard(self, client_id: str) -> bool:
        """``client_id`` holds a shard, or its shard is being written."""
        return client_id in self._shards or client_id in self._pending

    async def _shard_of(self, client_id: str) -> int:
        """The shard of training client ``client_id``; a new id gets the next one, handed out
        only once it is committed to the log. A reservation (:attr:`_pending`) holds its place
        while the row is written, so a second Join of the id waits for the same write, and the
        write, shielded, outlives a Join that is cancelled meanwhile: memory follows the log."""
        shard = self._shards.get(client_id)
        if shard is not None:
            return shard
        write = self._pending.get(client_id)
        if write is None:
            n = self.plan.n_clients
            if self._enrolled:
                raise Refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"client {client_id} is not on the enrolment list ({n} training clients)",
                )
            if len(self._shards) + len(self._pending) >= n:
                raise Refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the federation is full: n_clients={n} training clients have joined",
                )
            write = asyncio.ensure_future(self._assign_shard(client_id))
            self._pending[client_id] = write
        assigned = await asyncio.shield(write)
        if assigned is None:
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE, "the federator cannot write its log; try again later"
            )
        return assigned

    async def _assign_shard(self, client_id: str) -> int | None:
        """Commit the next shard for ``client_id`` and publish it in :attr:`_shards`; None
        (logged) when the log cannot be written, and then nothing was. The reservation ends
        either way."""
        loop = asyncio.get_running_loop()
        try:
            shard = await loop.run_in_executor(self._db, self._log.assign_shard, client_id)
        except LogError as exc:
            _log.error("%s", exc)
            return None
        finally:
            del self._pending[client_id]
        self._shards[client_id] = shard
        return shard

    def _require_joined(self, client_id: str) -> Role:
        role = self._joined.get(client_id)
        if role is None:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"client {client_id} has not joined; call Join first",
            )
        return role

    def authenticated(self, client_id: str, peer: str) -> None:
        """``client_id`` authenticated on the connection of gRPC peer ``peer``: its bytes on
        the wire count as the client's (kept only where ``traffic`` is sampled)."""
        if self._traffic is not None:
            self._owners.note(client_id, peer)

    def connect(self, client_id: str) -> Stream:
        """Open the stream of a joined client: it is invited to the open round (a training
        client that has not answered it), or, once training is over, gets the last Aggregate.
        While the client has another open stream the new one is refused (PERMISSION_DENIED):
        one identity, one stream. A stream the engine closed (refusal, lagging) no longer
        counts; one whose connection died counts until gRPC drops the connection (keepalive)
        and the servicer calls :meth:`disconnect`. Refused with UNAVAILABLE once :meth:`close`
        has begun."""
        self._check_open()
        role = self._require_joined(client_id)
        old = self._streams.get(client_id)
        if old is not None and not old.closed:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client {client_id} already has an open stream; a second concurrent stream "
                "is refused (a stream whose connection died is dropped once keepalive fails)",
            )
        stream = Stream(client_id, role, self._outbox_limit)
        self._streams[client_id] = stream
        r = self._round
        if role == "train" and r.is_open and client_id not in r.received | r.excluded:
            self._invite(stream)
        elif len(self._aggregates) == self.plan.rounds:
            # Training is over: the last broadcast went out before this stream existed (its
            # party joined before the end, or after it). The last Aggregate tells it so; it
            # catches up on the rest by pages and reports.
            last = self.plan.rounds - 1
            stream.push(pb.ServerMessage(aggregate=wire.aggregate(last, self._aggregates[last])))
        self._changed.set()
        return stream

    def disconnect(self, stream: Stream) -> None:
        """Forget ``stream`` (its client stays joined)."""
        stream.closed = True
        if self._streams.get(stream.client_id) is stream:
            del self._streams[stream.client_id]
        self._changed.set()

    def _invite(self, stream: Stream) -> None:
        r = self._round
        if stream.push(pb.ServerMessage(round_start=pb.RoundStart(round=r.index))):
            r.invited.add(stream.client_id)

    # ------------------------------------------------------------- messages
    def submit_update(
        self, stream: Stream, round: int, values: Sequence[float], payload_bytes: int
    ) -> None:
        """Accept one update (``payload_bytes``: its ClientMessage's serialized size) or raise
        :class:`Refusal`; a refused training client is left out of the current round."""
        client = stream.client_id
        late_round, late_ids = self._late
        if round == late_round and client in late_ids:
            late_ids.discard(client)
            _log.info("late update from %s for round %d dropped", client, round)
            return
        try:
            vector = self._check_update(stream, round, values)
        except Refusal as refusal:
            self.refuse(stream, refusal)
        r = self._round
        r.received[client] = vector
        r.uplink_bytes += payload_bytes
        self._changed.set()

    def _check_update(self, stream: Stream, round: int, values: Sequence[float]) -> bytes:
        client, r, m = stream.client_id, self._round, self._m
        if stream.role != "train":
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client {client} joined as an observer; observers do not send updates",
            )
        if r.index >= self.plan.rounds:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"update for round {round} but training is over ({self.plan.rounds} rounds)",
            )
        if not r.is_open:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"update for round {round} but no round is open (round {r.index} opens when "
                f"{self._quorum} training clients are connected)",
            )
        if round != r.index:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"update for round {round} but round {r.index} is open",
            )
        if client in r.received:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"client {client} already sent its update for round {round}",
            )
        if client in r.excluded:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"client {client} is excluded from round {round}: {r.excluded[client]}",
            )
        if len(values) != m:
            zo = self.plan.zo
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"update for round {round} has {len(values)} values; the plan needs m={m} "
                f"(variant={zo.variant}, nu={zo.nu}, local_steps={zo.local_steps})",
            )
        vector = np.asarray(values, dtype="<f4")
        finite = np.isfinite(vector)
        if not finite.all():
            index = int(np.argmin(finite))
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"update for round {round} has a non-finite value at index {index}: "
                f"{float(vector[index])}",
            )
        return vector.tobytes()

    def refuse(self, stream: Stream, refusal: Refusal) -> NoReturn:
        """Record that ``stream``'s client was refused (a training client is left out of the
        current round; only its first refusal in a round is recorded, so a client repeating bad
        messages cannot grow the round's record), then raise ``refusal``."""
        r, reason = self._round, refusal.message
        if all(client != stream.client_id for client, _ in r.rejected):
            r.rejected.append((stream.client_id, reason))
        if stream.role == "train":
            r.excluded.setdefault(stream.client_id, reason)
        _log.warning("refused %s: %s", stream.client_id, reason)
        self._changed.set()
        raise refusal

    def submit_report(
        self,
        stream: Stream,
        round: int,
        accuracy: float | None,
        loss: float | None,
        digest: str,
    ) -> None:
        """Record a client's evaluation of its model after round ``round``, or raise
        :class:`Refusal`. An observer's digest becomes the model digest handed out at Join.
        A report for a round the client already reported (or an earlier one) is checked, then
        dropped without a record: at most one metrics line per client and round."""
        try:
            self._check_report(round, accuracy, loss, digest)
        except Refusal as refusal:
            self.refuse(stream, refusal)
        if round <= self._reported.get(stream.client_id, -1):
            return
        self._reported[stream.client_id] = round
        if stream.role == "observer" and digest and round >= self._digest[0]:
            self._digest = (round, digest)
        if round == self.plan.rounds - 1 and digest:
            self._final_digests[stream.client_id] = digest
        self._emit(
            {
                "event": "report",
                "round": round,
                "client": stream.client_id,
                "role": stream.role,
                "accuracy": accuracy,
                "loss": loss,
                "digest": digest,
            }
        )

    def _check_report(
        self, round: int, accuracy: float | None, loss: float | None, digest: str
    ) -> None:
        completed = self.completed_rounds
        if round >= completed:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"report for round {round} but only {completed} rounds are completed",
            )
        if not wire.DIGEST_PATTERN.fullmatch(digest):
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"digest must be at most {wire.MAX_DIGEST_CHARS} lowercase hex characters; "
                f"got {digest[: wire.MAX_DIGEST_CHARS]!r}",
            )
        if accuracy is not None and not 0.0 <= accuracy <= 1.0:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT, f"accuracy must be in [0, 1]; got {accuracy}"
            )
        if loss is not None and not math.isfinite(loss):
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"loss must be finite; got {loss}")

    # --------------------------------------------------------------- rounds
    def start(self) -> None:
        """Start running rounds in a background task."""
        self._task = asyncio.create_task(self._run(), name="cyber0-rounds")

    async def wait(self) -> None:
        """Return when all rounds are done; raise what stopped the rounds if they failed."""
        assert self._task is not None, "start() first"
        await asyncio.shield(self._task)

    def final_digests(self) -> dict[str, str]:
        """The digest each party reported for the model after the last round (client id →
        digest), as this engine received them."""
        return dict(self._final_digests)

    async def wait_idle(self, quiet: float, timeout: float) -> None:
        """Return once no stream is open and every party has reported the last round (see
        :meth:`_everyone_reported`: none can still need the federator), or once no stream has
        been open for ``quiet`` seconds in a row (a party in reconnect backoff gets that long
        to come back), or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self._wait_until(lambda: not self._streams, deadline)
            if self._streams or self._everyone_reported():
                return
            await self._wait_until(
                lambda: bool(self._streams) or self._everyone_reported(),
                min(deadline, loop.time() + quiet),
            )
            if not self._streams:
                return

    def _everyone_reported(self) -> bool:
        """Every client that joined or holds a shard has reported the last round. Never true
        for an engine resumed from its log: observers of the earlier process hold no shard and
        may not have joined again yet."""
        if self._resumed:
            return False
        last = self.plan.rounds - 1
        parties = self._joined.keys() | self._shards.keys()
        return all(self._reported.get(c, -1) >= last for c in parties)

    async def _run(self) -> None:
        while self._round.index < self.plan.rounds:
            if not self._round.is_open:  # else it opened on the previous round's Aggregate
                await self._wait_until(lambda: self._trainers_connected() >= self._quorum)
                self._open_round()
            deadline = asyncio.get_running_loop().time() + self._round_timeout
            await self._wait_until(self._can_close_early, deadline)
            r = self._round
            if len(r.received) < self._quorum:
                _log.warning(
                    "round %d: deadline passed with %d of the %d updates needed; waiting",
                    r.index,
                    len(r.received),
                    self._quorum,
                )
                await self._wait_until(lambda: len(self._round.received) >= self._quorum)
            self._finishing = asyncio.ensure_future(self._finish(self._close_round()))
            await asyncio.shield(self._finishing)

    async def _wait_until(
        self, condition: Callable[[], bool], deadline: float | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        while not condition():
            self._changed.clear()
            timeout = None if deadline is None else deadline - loop.time()
            if timeout is not None and timeout <= 0:
                return
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                return

    def _trainers_connected(self) -> int:
        return sum(1 for s in self._streams.values() if s.role == "train" and not s.closed)

    def _can_close_early(self) -> bool:
        r = self._round
        return (
            len(r.received) >= self._quorum
            and len(r.received.keys() | r.excluded.keys()) >= self.plan.n_clients
        )

    def _open_round(self) -> None:
        r = self._round
        r.is_open, r.opened_at = True, time.perf_counter()
        for stream in list(self._streams.values()):
            if stream.role == "train" and stream.client_id not in r.excluded:
                self._invite(stream)
        _log.info("round %d open (%d invited)", r.index, len(r.invited))

    def _close_round(self) -> _Round:
        closed = self._round
        closed.is_open = False
        silent = closed.invited - closed.received.keys() - closed.excluded.keys()
        self._late = (closed.index, silent)
        self._round = _Round(closed.index + 1)
        return closed

    async def _finish(self, r: _Round) -> None:
        traffic = self._sample_traffic(r.index)
        order = sorted(r.received, key=lambda c: self._shards[c])
        rows = np.frombuffer(b"".join(r.received[c] for c in order), dtype="<f4")
        x = torch.from_numpy(rows.astype(np.float32).reshape(len(order), self._m))
        started = time.perf_counter()
        result = await asyncio.to_thread(self._aggregator, x)
        aggregate_ms = (time.perf_counter() - started) * 1e3
        values = result.detach().to(torch.float32).cpu().numpy()
        if values.shape != (self._m,) or not np.isfinite(values).all():
            raise RuntimeError(
                f"aggregator {self.plan.aggregator!r} returned shape {values.shape} "
                f"(finite: {bool(np.isfinite(values).all())}) for {len(order)} x {self._m} input"
            )
        data = wire.float32_bytes(values)
        record = RoundRecord(r.index, data, tuple(order), tuple(r.rejected))
        await asyncio.get_running_loop().run_in_executor(self._db, self._log.append_round, record)
        self._aggregates.append(data)
        recipients, downlink_bytes = self._broadcast(r.index, data)
        round_ms = (time.perf_counter() - r.opened_at) * 1e3
        _log.info(
            "round %d closed: %d updates, %d refused, %.1f ms",
            r.index,
            len(order),
            len(r.rejected),
            round_ms,
        )
        line: dict[str, Any] = {
            "event": "round",
            "round": r.index,
            "participants": list(order),
            "rejected": [{"client": c, "reason": why} for c, why in r.rejected],
            "uplink_payload_bytes": r.uplink_bytes,
            "downlink_payload_bytes": downlink_bytes,
            "recipients": recipients,
            "aggregate_ms": round(aggregate_ms, 3),
            "round_ms": round(round_ms, 3),
        }
        if traffic is not None:
            line["uplink_wire_bytes"] = traffic.received
            line["downlink_wire_bytes"] = traffic.sent
            line["wire_connections"] = traffic.connections
            split = self._owners.split(traffic)
            line["wire_by_client"] = {
                c: {"uplink": r, "downlink": s} for c, (r, s) in sorted(split.by_client.items())
            }
            up, down = split.unattributed
            line["wire_unattributed"] = {"uplink": up, "downlink": down}
        self._emit(line)

    def _sample_traffic(self, round: int) -> Traffic | None:
        """The wire counts since the previous sample, taken between ``round``'s last update
        and its aggregate, when the connections are quiet; ``None`` without ``traffic`` or when
        the counters cannot be read (logged: the round goes on without them)."""
        if self._traffic is None:
            return None
        try:
            return self._traffic()
        except OSError as exc:
            _log.warning("round %d: bytes on the wire not counted: %s", round, exc)
            return None

    def _broadcast(self, index: int, data: bytes) -> tuple[int, int]:
        """Push the Aggregate of round ``index`` to every open stream, opening round
        ``index + 1`` with it when that round exists and a quorum is connected (``next_open``;
        a training client already refused from that round gets the plain Aggregate).
        Returns (recipients, payload bytes pushed)."""
        nxt = self._round
        opens = nxt.index < self.plan.rounds and self._trainers_connected() >= self._quorum
        plain = pb.ServerMessage(aggregate=wire.aggregate(index, data))
        opening = pb.ServerMessage(aggregate=wire.aggregate(index, data, next_open=True))
        if opens:
            nxt.is_open, nxt.opened_at = True, time.perf_counter()
        size = {False: plain.ByteSize(), True: opening.ByteSize()}
        recipients = downlink_bytes = 0
        for stream in list(self._streams.values()):
            invite = opens and stream.client_id not in nxt.excluded
            if stream.push(opening if invite else plain):
                recipients += 1
                downlink_bytes += size[invite]
                if invite and stream.role == "train":
                    nxt.invited.add(stream.client_id)
        if opens:
            _log.info("round %d open on the aggregate (%d invited)", nxt.index, len(nxt.invited))
        return recipients, downlink_bytes

    def _emit(self, record: dict[str, Any]) -> None:
        if self._metrics is not None:
            self._metrics({**record, "time": round(time.time(), 3)})

    async def close(self) -> None:
        """Stop running rounds; a round being committed and the shards being written are
        finished first. Every stream is then ended with UNAVAILABLE and the log thread is
        stopped (the log stays open). From the start, Join and new streams are refused with
        UNAVAILABLE."""
        self._closing = True
        if self._pending:
            await asyncio.wait(list(self._pending.values()))
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._finishing is not None and not self._finishing.done():
            try:
                await self._finishing
            except Exception:
                _log.exception("round %d could not be committed", self._round.index - 1)
        for stream in list(self._streams.values()):
            stream.close(grpc.StatusCode.UNAVAILABLE, "the federator is shutting down")
        self._db.shutdown(wait=True)
