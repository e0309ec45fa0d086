"""A byte-counting TCP relay for measuring gRPC on the wire.

Every connection accepted on one of the relay's ports is forwarded to the upstream address and
recorded as a :class:`Connection`: each direction's bytes, time-stamped per chunk read, and parsed
as they pass: HTTP/2 frames (type, length, stream) and, inside DATA frames, the gRPC 5-byte
message prefixes, so each byte is attributed to protobuf payload, gRPC prefix, frame header,
WINDOW_UPDATE, PING, HEADERS, SETTINGS, ...; with TLS, the TLS records instead (the frames are
encrypted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_TYPES = {
    0: "DATA",
    1: "HEADERS",
    2: "PRIORITY",
    3: "RST_STREAM",
    4: "SETTINGS",
    5: "PUSH_PROMISE",
    6: "PING",
    7: "GOAWAY",
    8: "WINDOW_UPDATE",
    9: "CONTINUATION",
}
TLS_CONTENT = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}
#: TLS 1.3 application record overhead: 5-byte header + 16-byte AEAD tag + 1 inner type byte.
TLS13_RECORD_OVERHEAD = 22


@dataclass
class Direction:
    """Everything that passed one way on one TCP connection, time-stamped."""

    tls: bool
    preface: bool
    times: list[float] = field(default_factory=list)
    cumulative: list[int] = field(default_factory=list)
    total: int = 0
    # (time, kind, bytes): frames (or TLS records) and gRPC messages
    events: list[tuple[float, str, int]] = field(default_factory=list)
    _header: bytearray = field(default_factory=bytearray)
    _skip: int = 0
    _frame: tuple[str, int, int, int] | None = None  # kind, stream, flags, payload remaining
    _pad: int = 0
    _grpc: dict[int, list[Any]] = field(default_factory=dict)

    def feed(self, data: bytes, now: float) -> None:
        """Account for ``data`` (one chunk read from the socket at ``now``)."""
        self.total += len(data)
        self.times.append(now)
        self.cumulative.append(self.total)
        view = memoryview(data)
        if self.preface:
            take = min(len(view), len(PREFACE) - len(self._header))
            self._header += view[:take]
            view = view[take:]
            if len(self._header) < len(PREFACE):
                return
            self.events.append((now, "preface", len(PREFACE)))
            self._header.clear()
            self.preface = False
        if self.tls:
            self._feed_tls(view, now)
        else:
            self._feed_h2(view, now)

    def _feed_tls(self, view: memoryview, now: float) -> None:
        i = 0
        while i < len(view):
            if self._skip:
                n = min(self._skip, len(view) - i)
                self._skip -= n
                i += n
                continue
            take = min(5 - len(self._header), len(view) - i)
            self._header += view[i : i + take]
            i += take
            if len(self._header) == 5:
                kind = TLS_CONTENT.get(self._header[0], f"tls_{self._header[0]}")
                length = int.from_bytes(self._header[3:5], "big")
                self.events.append((now, kind, 5 + length))
                self._skip = length
                self._header.clear()

    def _feed_h2(self, view: memoryview, now: float) -> None:
        i = 0
        while i < len(view):
            if self._frame is not None:
                kind, stream, flags, remaining = self._frame
                n = min(remaining, len(view) - i)
                if kind == "DATA":
                    self._data_payload(stream, view[i : i + n], now)
                remaining -= n
                i += n
                self._frame = (kind, stream, flags, remaining) if remaining else None
                continue
            take = min(9 - len(self._header), len(view) - i)
            self._header += view[i : i + take]
            i += take
            if len(self._header) == 9:
                h = self._header
                length = int.from_bytes(h[0:3], "big")
                kind = FRAME_TYPES.get(h[3], f"type_{h[3]}")
                flags = h[4]
                stream = int.from_bytes(h[5:9], "big") & 0x7FFFFFFF
                if kind == "WINDOW_UPDATE":
                    kind = "WINDOW_UPDATE_stream" if stream else "WINDOW_UPDATE_connection"
                self.events.append((now, kind, 9 + length))
                self._header.clear()
                self._pad = -1 if kind == "DATA" and flags & 0x8 else 0
                if length:
                    self._frame = (kind, stream, flags, length)

    def _data_payload(self, stream: int, view: memoryview, now: float) -> None:
        """gRPC length-prefixed messages inside a stream's DATA payload."""
        state = self._grpc.setdefault(stream, [bytearray(), 0])  # prefix bytes, body remaining
        i = 0
        if self._pad == -1 and len(view):  # PADDED: first byte is the pad length
            self._pad = 0
            i = 1
        while i < len(view):
            if state[1]:
                n = min(state[1], len(view) - i)
                state[1] -= n
                i += n
                continue
            take = min(5 - len(state[0]), len(view) - i)
            state[0] += view[i : i + take]
            i += take
            if len(state[0]) == 5:
                length = int.from_bytes(state[0][1:5], "big")
                self.events.append((now, "grpc_message", length))
                state[0].clear()
                state[1] = length

    def bytes_at(self, t: float) -> int:
        """Bytes that had passed at time ``t``."""
        k = bisect_right(self.times, t)
        return self.cumulative[k - 1] if k else 0

    def window(self, t0: float, t1: float) -> tuple[int, Counter[str], Counter[str]]:
        """(bytes, bytes by kind, count by kind) that passed in (t0, t1]."""
        size: Counter[str] = Counter()
        count: Counter[str] = Counter()
        for t, kind, n in self.events:
            if t0 < t <= t1:
                size[kind] += n
                count[kind] += 1
        return self.bytes_at(t1) - self.bytes_at(t0), size, count


@dataclass
class Connection:
    """One relayed TCP connection: ``up`` is client → federator, ``down`` the reverse."""

    label: str
    opened: float
    up: Direction
    down: Direction
    closed: float | None = None


class Relay:
    """A byte-counting TCP relay: one listening port per label, every accepted connection is
    forwarded to ``upstream`` and recorded as a :class:`Connection`."""

    def __init__(self, upstream: tuple[str, int], tls: bool) -> None:
        self.upstream = upstream
        self.tls = tls
        self.connections: list[Connection] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, label: str) -> int:
        """A new listening port whose connections are labelled ``label``."""

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await self._relay(label, reader, writer)
            finally:
                self._tasks.discard(task)

        server = await asyncio.start_server(accept, "127.0.0.1", 0, limit=1 << 20)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _relay(
        self, label: str, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        u_reader, u_writer = await asyncio.open_connection(*self.upstream, limit=1 << 20)
        conn = Connection(
            label,
            time.monotonic(),
            Direction(tls=self.tls, preface=not self.tls),
            Direction(tls=self.tls, preface=False),
        )
        self.connections.append(conn)

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: Direction
        ) -> None:
            try:
                while True:
                    data = await src.read(1 << 20)
                    if not data:
                        break
                    counter.feed(data, time.monotonic())
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.write_eof()

        try:
            await asyncio.gather(
                pump(c_reader, u_writer, conn.up), pump(u_reader, c_writer, conn.down)
            )
        finally:
            conn.closed = time.monotonic()
            for w in (c_writer, u_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    async def close(self) -> None:
        """Stop listening and wait for the relayed connections to end."""
        for server in self._servers:
            server.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
