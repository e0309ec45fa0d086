"""Assembly of a running federator: log, engine, gRPC server, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cyber0.v1 import federation_pb2 as pb
from cyber0.v1 import federation_pb2_grpc as pb_grpc

from .auth import Authenticator, ClaimedIdentity
from .config import FederatorConfig, max_receive_bytes
from .engine import RoundEngine
from .log import DurableLog
from .servicer import FederationServicer

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Federation"].full_name
"""``cyber0.v1.Federation``, as health checking and reflection name it."""

_log = logging.getLogger("cyber0.federator")


class MetricsFile:
    """Appends one JSON object per line to a file, flushed after each line."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def __call__(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line."""
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Federator:
    """A federator serving ``config`` on a grpc.aio server.

    ``await start()`` opens the log (raising :class:`~cyber0.server.log.LogError` on a plan
    mismatch), binds the port and reports SERVING; ``await stop()`` shuts down gracefully.
    Also an async context manager.
    """

    def __init__(self, config: FederatorConfig, authenticator: Authenticator | None = None) -> None:
        self.config = config
        self._auth = authenticator or ClaimedIdentity()
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
        """Open the log, start the rounds and serve."""
        config, settings = self.config, self.config.settings
        aggregator = config.aggregator()
        self._log = await asyncio.to_thread(DurableLog.open, settings.log_db, config.plan)
        if settings.metrics is not None:
            self._metrics = MetricsFile(settings.metrics)
        self.engine = RoundEngine(
            config.plan,
            aggregator,
            self._log,
            round_timeout=settings.round_timeout,
            quorum=config.quorum,
            enrolment=settings.enrolment,
            metrics=self._metrics,
        )
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_receive_bytes(config.plan)),
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_FederationServicer_to_server(
            FederationServicer(self.engine, self._auth, hello_timeout=settings.hello_timeout),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self._server = server
        address = _address(settings.host, settings.port)
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc's way of saying the address is taken or invalid
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        await server.start()
        self.engine.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if settings.log_db is None:
            _log.warning("no log file: completed rounds are not durable")
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
        ready(federator.address)
        rounds = asyncio.ensure_future(federator.engine.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({rounds, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            _log.info("signal received: shutting down")
        code = 0
        if rounds.done():
            if rounds.exception() is not None:
                _log.error("rounds stopped: %s", rounds.exception())
                code = 1
            else:
                _log.info(
                    "all rounds done; serving until every stream has closed (at most %g s)",
                    config.settings.linger,
                )
                idle = asyncio.ensure_future(
                    federator.engine.wait_streams_closed(config.settings.linger)
                )
                await asyncio.wait({idle, stopped}, return_when=asyncio.FIRST_COMPLETED)
                idle.cancel()
        rounds.cancel()
        stopped.cancel()
        return code
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await federator.stop()
