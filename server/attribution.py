"""Whose bytes: the federator's wire counts per client.

gRPC names each call's peer (``context.peer()``: the connecting end's address); the kernel's
counters come per connection, keyed by the same address (:class:`~cyber0.common.tcpinfo.Traffic`).
:class:`ConnectionOwners` remembers which client authenticated on which connection and splits a
sample by client: the federator's own view of what each party sent and received, which does not
rest on the parties' word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from cyber0.common.tcpinfo import Address, Traffic, address


def grpc_peer_address(peer: str) -> Address | None:
    """(host, port) of a gRPC peer string (``ipv4:10.0.0.2:5000``, ``ipv6:%5B::1%5D:5000``);
    ``None`` for a peer that is not a TCP end (a Unix socket)."""
    scheme, _, rest = peer.partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return None
    host, _, port = unquote(rest).rpartition(":")
    if not port.isdigit() or not host:
        return None
    return address(host.removeprefix("[").removesuffix("]"), int(port))


@dataclass(frozen=True)
class ClientTraffic:
    """One sample split by client: ``by_client`` maps each client to its connections'
    (received, sent) bytes; ``unattributed``: the rest (connections on which no client, or more
    than one, has authenticated)."""

    by_client: Mapping[str, tuple[int, int]]
    unattributed: tuple[int, int]


MAX_CONNECTIONS = 1 << 16
"""Connections remembered between two samples at most; past it the oldest are forgotten (their
bytes then count as unattributed), so calls from ever new connections while no round closes
cannot grow the table without bound."""


class ConnectionOwners:
    """The clients that authenticated on each open connection."""

    def __init__(self, limit: int = MAX_CONNECTIONS) -> None:
        self._owners: dict[Address, set[str]] = {}
        self._limit = limit

    def note(self, client_id: str, peer: str) -> None:
        """``client_id`` authenticated on the connection of gRPC peer ``peer``."""
        end = grpc_peer_address(peer)
        if end is None:
            return
        self._owners.setdefault(end, set()).add(client_id)
        if len(self._owners) > self._limit:
            del self._owners[next(iter(self._owners))]

    def split(self, traffic: Traffic) -> ClientTraffic:
        """``traffic``'s connections by owner; connections no longer open are forgotten."""
        self._owners = {e: o for e, o in self._owners.items() if e in traffic.by_connection}
        by_client: dict[str, tuple[int, int]] = {}
        rest = (0, 0)
        for end, (received, sent) in traffic.by_connection.items():
            owners = self._owners.get(end, set())
            if len(owners) == 1:
                (owner,) = owners
                r, s = by_client.get(owner, (0, 0))
                by_client[owner] = (r + received, s + sent)
            else:
                rest = (rest[0] + received, rest[1] + sent)
        return ClientTraffic(by_client, rest)
