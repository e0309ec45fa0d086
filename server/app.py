"""Assembly of a running federator: log, engine, gRPC server, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cyber0 import wire
from cyber0.common.config import ConfigError
from cyber0.common.tcpinfo import PortTraffic
from cyber0.v1 import federation_pb2 as pb

from .auth import Authenticator, ClaimedIdentity, build_authenticator, server_credentials
from .config import FederatorConfig, FederatorSettings, max_receive_bytes
from .engine import RoundEngine
from .log import DurableLog
from .servicer import FederationServicer, add_federation_to_server

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Federation"].full_name
"""``cyber0.v1.Federation``, as health checking and reflection name it."""

_log = logging.getLogger("cyber0.federator")
#: After the last round, the federator exits once no stream has been open for this long: longer
#: than a client's default maximum reconnect backoff (10 s), so a party that is reconnecting
#: still gets the last aggregates.
IDLE_QUIET_SECONDS = 12.0


class MetricsFile:
    """Appends one JSON object per line to the file of setting ``federator.metrics``, flushed
    after each line. A file that cannot be opened is a :class:`ConfigError` naming the setting;
    one that cannot be written later (disk full, I/O error) costs its lines, never the training:
    the first failure is logged as a warning, later ones are not, and each line is tried again."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._failed = False
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 (see close())
        except OSError as exc:
            raise ConfigError(f"federator.metrics: cannot open {path}: {exc}") from exc

    def __call__(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line."""
        try:
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
            self._file.flush()
        except OSError as exc:
            self._warn(exc)

    def close(self) -> None:
        """Close the file."""
        try:
            self._file.close()
        except OSError as exc:
            self._warn(exc)

    def _warn(self, exc: OSError) -> None:
        if not self._failed:
            self._failed = True
            _log.warning(
                "federator.metrics: cannot write %s: %s; metrics lines are dropped while it "
                "fails, the rounds go on",
                self._path,
                exc,
            )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


MAX_STREAMS_PER_CONNECTION = 16
"""HTTP/2 concurrent streams per connection (a client uses one Train stream and short calls)."""
MAX_METADATA_BYTES = 8192
"""Largest request metadata (headers) accepted; larger is RESOURCE_EXHAUSTED."""
MIN_CLIENT_PING_INTERVAL_MS = 1000
"""Clients may ping this often (their keepalive must be ≥ 1 s); faster pings earn a GOAWAY."""


def server_options(config: FederatorConfig) -> list[tuple[str, int]]:
    """gRPC core options: the receive limit from the plan, keepalive (a dead peer's connection
    and streams are dropped within 1.5 × ``keepalive``), the handshake deadline (a connection
    that does not finish TLS/HTTP/2 within ``hello_timeout`` is closed), the stream cap and the
    metadata cap."""
    settings: FederatorSettings = config.settings
    keepalive_ms = int(settings.keepalive * 1000)
    return [
        ("grpc.max_receive_message_length", max_receive_bytes(config.plan)),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", keepalive_ms // 2),
        ("grpc.http2.ping_timeout_ms", keepalive_ms // 2),  # else 1 min, whatever keepalive says
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.server_handshake_timeout_ms", int(settings.hello_timeout * 1000)),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # Refuse metadata over 8 KiB every time (between a soft and a hard limit gRPC refuses
        # at random); the protocol's clients send a few hundred bytes.
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    ]


class Federator:
    """A federator serving ``config`` on a grpc.aio server.

    ``await start()`` opens the log (raising :class:`~cyber0.server.log.LogError` on a plan
    mismatch), binds the port and reports SERVING; ``await stop()`` shuts down gracefully.
    Also an async context manager.
    """

    def __init__(self, config: FederatorConfig, authenticator: Authenticator | None = None) -> None:
        self.config = config
        self._auth = authenticator
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._log: DurableLog | None = None
        self._metrics: MetricsFile | None = None
        self.engine: RoundEngine | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``host:port`` actually bound (after :meth:`start`)."""
        return _address(self.config.settings.host, self.port)

    async def start(self) -> None:
        """Read the TLS and authentication files and open the metrics file
        (:class:`ConfigError` if they are unusable), open the log, start the rounds and serve."""
        config, settings = self.config, self.config.settings
        credentials = server_credentials(settings)
        authenticator = self._auth or build_authenticator(settings)
        aggregator = config.aggregator()
        self._log = await asyncio.to_thread(DurableLog.open, settings.log_db, config.plan)
        if settings.metrics is not None:
            self._metrics = MetricsFile(settings.metrics)
        server = grpc.aio.server(options=server_options(config))
        self._server = server
        address = _address(settings.host, settings.port)
        try:
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:  # grpc's way of saying the address is taken or invalid
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        self.engine = RoundEngine(
            config.plan,
            aggregator,
            self._log,
            round_timeout=settings.round_timeout,
            quorum=config.quorum,
            enrolment=settings.enrolment,
            metrics=self._metrics,
            traffic=PortTraffic(self.port).sample if settings.wire_metrics else None,
        )
        add_federation_to_server(
            FederationServicer(self.engine, authenticator, hello_timeout=settings.hello_timeout),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        await server.start()
        self.engine.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if settings.log_db is None:
            _log.warning("no log file: completed rounds are not durable")
        if not wire.is_loopback(settings.host):
            if credentials is None:
                _log.warning("serving %s in plaintext (insecure: true)", self.address)
            if isinstance(authenticator, ClaimedIdentity):
                _log.warning(
                    "no client authentication: anyone reaching %s may claim any id", self.address
                )
        _log.info(
            "serving %s: %d rounds, %d completed",
            self.address,
            config.plan.rounds,
            self.engine.completed_rounds,
        )

    async def stop(self, grace: float = 1.0) -> None:
        """NOT_SERVING, finish the round being committed, end the streams, stop the server
        (``grace`` seconds for calls in flight), close the log and the metrics file."""
        await self._health.enter_graceful_shutdown()
        if self.engine is not None:
            await self.engine.close()
        if self._server is not None:
            await self._server.stop(grace)
        if self._log is not None:
            self._log.close()
        if self._metrics is not None:
            self._metrics.close()

    async def __aenter__(self) -> Federator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


GC_THRESHOLDS = (20_000, 50, 100)
"""The federator process's cyclic-GC thresholds (Python's default: 700, 10, 10)."""


def tune_gc() -> None:
    """Make Python's cyclic garbage collector cheap for a long-running federator: freeze what
    start-up allocated (modules, torch, the plan) out of every future collection and collect the
    young generation every 20,000 net allocations rather than 700. grpc.aio allocates several
    objects per message, so with the defaults collections ran every few messages and took about
    a quarter of the federator's CPU with 2,000 clients (``bench/scale.py``, BENCHMARKS.md)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def log_final_digests(digests: Mapping[str, str]) -> None:
    """One line on the final model: how many parties reported it, and whether they hold the
    same weights (a party whose digest differs follows another model: other code, another
    plan, or corrupted state). Digests that differ are listed with their holders, the most
    held first."""
    holders: dict[str, list[str]] = {}
    for client, digest in sorted(digests.items()):
        holders.setdefault(digest, []).append(client)
    if len(holders) == 1:
        [(digest, clients)] = holders.items()
        _log.info("final model: %d parties reported digest %s", len(clients), digest[:16])
    elif holders:
        majority_first = sorted(holders.items(), key=lambda held: (-len(held[1]), held[1]))
        _log.warning(
            "final model: %d parties reported %d different digests: %s",
            len(digests),
            len(holders),
            "; ".join(f"{d[:16]} ({', '.join(c)})" for d, c in majority_first),
        )


async def serve(config: FederatorConfig, ready: Callable[[str], None]) -> int:
    """Run a federator until its rounds are done and every stream has closed (serving at most
    ``linger`` more seconds for parties still catching up) or until SIGTERM/SIGINT;
    ``ready(address)`` is called once it serves. Returns the exit code."""
    federator = Federator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await federator.start()
        assert federator.engine is not None
        tune_gc()
        ready(federator.address)
        rounds = asyncio.ensure_future(federator.engine.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({rounds, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            _log.info("signal received: shutting down")
        code = 0
        if rounds.done():
            if rounds.exception() is not None:
                _log.error("rounds stopped, the federator exits: %s", rounds.exception())
                code = 1
            else:
                _log.info(
                    "all rounds done; serving until every stream has closed (at most %g s)",
                    config.settings.linger,
                )
                idle = asyncio.ensure_future(
                    federator.engine.wait_idle(IDLE_QUIET_SECONDS, config.settings.linger)
                )
                await asyncio.wait({idle, stopped}, return_when=asyncio.FIRST_COMPLETED)
                idle.cancel()
                log_final_digests(federator.engine.final_digests())
        rounds.cancel()
        stopped.cancel()
        return code
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await federator.stop()
