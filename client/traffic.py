"""A daemon's own bytes on the wire: the kernel's TCP counters of its connections to the
federator (:class:`~cyber0.common.tcpinfo.PortTraffic`), added up while it runs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cyber0.common import tcpinfo

_log = logging.getLogger("cyber0.client")

SAMPLE_SECONDS = 1.0
"""How often the counters are read, besides once each identity has the last round's aggregate
(the federator may close its connection right after) and before each of the daemon's
connections closes: a connection that drops (the peer or the network gone) loses at most what
it carried in its last interval."""


def target_port(target: str) -> int | None:
    """The port of a ``HOST:PORT`` target (``None`` when it names none)."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or host.endswith(":"):
        return None
    return int(port)


@dataclass
class WireTally:
    """TCP payload bytes the daemon sent (``up``) and received (``down``) on its connections
    to the federator's ``port``, handshakes, reconnections and every identity included."""

    port: int
    up: int = 0
    down: int = 0

    def __post_init__(self) -> None:
        self._traffic = tcpinfo.PortTraffic(self.port, end="remote")
        self._timer: asyncio.TimerHandle | None = None
        self.failed = ""

    @classmethod
    def for_target(cls, target: str) -> WireTally | None:
        """A tally for ``target``, or ``None`` where the counters cannot be read (not Linux,
        or a target without a port)."""
        port = target_port(target)
        return cls(port) if port is not None and tcpinfo.available() else None

    def sample(self) -> None:
        """Add what crossed since the previous sample. Counters that cannot be read (OSError)
        end the tally (:attr:`failed` says why), never the daemon's work."""
        if self.failed:
            return
        try:
            traffic = self._traffic.sample()
        except OSError as exc:
            self.failed = str(exc)
            _log.warning("bytes on the wire no longer counted: %s", exc)
            return
        self.up += traffic.sent
        self.down += traffic.received

    def start(self) -> None:
        """Sample every :data:`SAMPLE_SECONDS` on the running event loop until :meth:`stop`."""
        self.sample()
        self._timer = asyncio.get_running_loop().call_later(SAMPLE_SECONDS, self.start)

    def stop(self) -> None:
        """Stop sampling (a last :meth:`sample` is the caller's)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def report(self, rounds: int) -> dict[str, int] | None:
        """The totals for the daemon's final lines (``None`` if the tally failed), and a log
        line with their share a round over the ``rounds`` it applied."""
        if self.failed:
            return None
        if rounds > 0:
            _log.info(
                "on the wire: up %d B, down %d B to port %d (%d rounds: %.0f B up, %.0f B down "
                "a round, set-up included)",
                self.up,
                self.down,
                self.port,
                rounds,
                self.up / rounds,
                self.down / rounds,
            )
        return {"up": self.up, "down": self.down}
