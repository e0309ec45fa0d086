"""Bytes on the wire, from the kernel: the TCP payload counters of a port's connections.

Linux keeps, per TCP socket, the payload bytes it has received and sent (``TCP_INFO``'s
``tcpi_bytes_received`` and ``tcpi_bytes_sent``, or ``tcpi_bytes_acked`` before Linux 4.19):
everything the connection carried above TCP, so TLS records, HTTP/2 frames (headers, pings,
window updates) and gRPC prefixes included; retransmitted bytes count again, as they crossed
again. :class:`PortTraffic` finds the process's own connections on a port (the federator's:
those it accepted on its listening port; a client's: those it opened to the federator's)
through ``/proc/self/fd`` and reads these counters from a duplicate of each socket's
descriptor (the duplicate is closed at once, so the connection's life is not touched).
Each sample also gives every connection's share, keyed by the address of its connecting end,
which names the same connection at both ends where no address translation stands between them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

_RECEIVED_OFFSET = 128
"""``tcpi_bytes_received`` (u64) in ``struct tcp_info`` (Linux ≥ 4.1)."""
_ACKED_OFFSET = 120
"""``tcpi_bytes_acked`` (u64): payload sent and acknowledged (Linux ≥ 4.1)."""
_SENT_OFFSET = 200
"""``tcpi_bytes_sent`` (u64): payload sent, retransmissions included (Linux ≥ 4.19)."""
_INFO_BYTES = 256
_FD_DIR = "/proc/self/fd"

Address = tuple[str, int]
"""(host, port) of a TCP end, the host in :func:`address`'s canonical text."""


def address(host: str, port: int) -> Address:
    """A TCP end's (host, port) with the host canonical: an IPv4-mapped IPv6 host (a dual-stack
    listener's view of an IPv4 peer) as its IPv4 address, an IPv6 zone dropped, text that is no
    IP address kept as it is."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host, port
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), port


def available() -> bool:
    """Whether this system has the counters :class:`PortTraffic` reads (Linux)."""
    return (
        sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO") and os.path.isdir(_FD_DIR)
    )


@dataclass(frozen=True)
class Traffic:
    """TCP payload bytes a port's connections carried between two samples: ``received`` by
    this process, ``sent`` by it; ``connections``: those open at the later sample;
    ``by_connection``: each of those connections' (received, sent), keyed by the address of
    its connecting end."""

    received: int
    sent: int
    connections: int
    by_connection: Mapping[Address, tuple[int, int]] = field(default_factory=dict)


class CountersUnavailable(OSError):
    """This kernel's ``TCP_INFO`` has no byte counters (Linux ≥ 4.1 has them)."""


def counters(sock: socket.socket) -> tuple[int, int]:
    """(payload bytes received, payload bytes sent) of a connected TCP socket."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _INFO_BYTES)
    if len(info) < _RECEIVED_OFFSET + 8:
        raise CountersUnavailable("this kernel's TCP_INFO has no byte counters (Linux >= 4.1)")
    (received,) = struct.unpack_from("=Q", info, _RECEIVED_OFFSET)
    sent_at = _SENT_OFFSET if len(info) >= _SENT_OFFSET + 8 else _ACKED_OFFSET
    (sent,) = struct.unpack_from("=Q", info, sent_at)
    return received, sent


def _sockets() -> list[tuple[int, int]]:
    """(descriptor, inode) of each socket this process holds."""
    found = []
    for entry in os.scandir(_FD_DIR):
        try:
            target = os.readlink(entry.path)
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            found.append((int(entry.name), int(target[8:-1])))
    return found


class PortTraffic:
    """Samples the traffic of this process's connections on ``port``: with ``end="local"``
    those it accepted on its listening ``port``, with ``end="remote"`` those it opened to a
    peer's ``port``.

    Each :meth:`sample` returns what crossed them since the previous one (a connection first
    seen counts from its start), in all and per connection. What a connection carried after
    the previous sample is lost when it closes before the next one. One sampler at a time:
    samples are not locked.
    """

    def __init__(self, port: int, end: Literal["local", "remote"] = "local") -> None:
        if not available():
            raise OSError("TCP byte counters need Linux (TCP_INFO and /proc/self/fd)")
        self.port, self.end = port, end
        self._last: dict[int, tuple[int, int]] = {}
        self._matched: dict[int, Address] = {}
        self._other: set[int] = set()

    def sample(self) -> Traffic:
        """The bytes received and sent on the port's open connections since the last sample
        (:class:`CountersUnavailable` on a kernel without them)."""
        now: dict[int, tuple[int, int]] = {}
        held = _sockets()
        for fd, inode in held:
            if inode in self._other:
                continue
            seen = self._read(fd, inode)
            if seen is not None:
                now[inode] = seen
        present = {inode for _, inode in held}
        self._matched = {i: end for i, end in self._matched.items() if i in present}
        self._other &= present
        by_connection: dict[Address, tuple[int, int]] = {}
        for inode, (r, s) in now.items():
            r0, s0 = self._last.get(inode, (0, 0))
            r1, s1 = by_connection.get(self._matched[inode], (0, 0))
            by_connection[self._matched[inode]] = (r1 + r - r0, s1 + s - s0)
        self._last = now
        return Traffic(
            sum(r for r, _ in by_connection.values()),
            sum(s for _, s in by_connection.values()),
            len(now),
            by_connection,
        )

    def _read(self, fd: int, inode: int) -> tuple[int, int] | None:
        """The counters of socket ``inode`` at ``fd`` if it is one of the port's connections
        (``None`` otherwise, remembering sockets that never will be)."""
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:  # closed since the listing, or not an inet socket
            return None
        with sock:
            try:
                if os.fstat(sock.fileno()).st_ino != inode:
                    return None  # the descriptor was reused for another file
                if inode not in self._matched:
                    end = self._connecting_end(sock)
                    if end is None:
                        self._other.add(inode)
                        return None
                    self._matched[inode] = end
                return counters(sock)
            except CountersUnavailable:
                raise
            except OSError:  # a connection still connecting, or closing
                return None

    def _connecting_end(self, sock: socket.socket) -> Address | None:
        """The address of the connecting end of ``sock`` if it is one of the connections
        sampled, else ``None`` (OSError while it connects or closes: asked again at the next
        sample)."""
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return None
        if self.end == "local":
            if sock.getsockname()[1] != self.port:
                return None
            host, port = sock.getpeername()[:2]
        else:
            if sock.getpeername()[1] != self.port:
                return None
            host, port = sock.getsockname()[:2]
        return address(host, port)
