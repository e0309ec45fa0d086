"""The kernel's TCP byte counters (:mod:`cyber0.common.tcpinfo`) on real loopback sockets, and
the federator's ``--wire-metrics`` lines against what its rounds must at least have carried."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_federator import (
    FakeTrainer,
    federation,
    make_config,
    read_metrics,
    run,
    sessions_for,
    update_size,
)

from cyber0 import wire
from cyber0.client.traffic import WireTally, target_port
from cyber0.common import tcpinfo
from cyber0.common.tcpinfo import PortTraffic, Traffic, counters
from cyber0.server.attribution import ConnectionOwners, grpc_peer_address
from cyber0.v1 import federation_pb2 as pb

GRPC_FRAMING = 5 + 9
"""Bytes a gRPC message costs on HTTP/2 at the least: its 5-byte prefix and one DATA frame's
9-byte header."""


@contextlib.contextmanager
def listening(dual_stack: bool = False) -> Iterator[tuple[socket.socket, int]]:
    """A listening socket on loopback (on ``::`` taking IPv4 too, with ``dual_stack``) and its
    port."""
    with socket.socket(socket.AF_INET6 if dual_stack else socket.AF_INET) as listener:
        if dual_stack:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", 0) if dual_stack else ("127.0.0.1", 0))
        listener.listen()
        yield listener, listener.getsockname()[1]


def exchange(a: socket.socket, b: socket.socket, size: int) -> None:
    """Send ``size`` bytes from ``a`` to ``b`` and wait until ``b`` has read them all."""
    a.sendall(b"x" * size)
    got = 0
    while got < size:
        got += len(b.recv(size - got))


def test_a_sample_counts_the_payload_of_the_ports_connections_exactly() -> None:
    """Two connections: each sample gives the bytes since the previous one, to the byte, in all
    and per connection (keyed by the connecting end's address at both ends), for the accepted
    ends (``end="local"``) and, mirrored, for the connecting ends (``end="remote"``); the
    listener and a closed connection are not counted."""
    with listening() as (listener, port):
        traffic = PortTraffic(port)
        opened = PortTraffic(port, end="remote")
        assert traffic.sample() == opened.sample() == Traffic(0, 0, 0)
        ends = []
        for _ in range(2):
            client = socket.create_connection(("127.0.0.1", port))
            server, _ = listener.accept()
            ends.append((client, server))
        (c1, s1), (c2, s2) = ends
        e1, e2 = c1.getsockname(), c2.getsockname()
        try:
            exchange(c1, s1, 1000)
            exchange(s1, c1, 300)
            exchange(c2, s2, 70)
            assert traffic.sample() == Traffic(1070, 300, 2, {e1: (1000, 300), e2: (70, 0)})
            assert opened.sample() == Traffic(300, 1070, 2, {e1: (300, 1000), e2: (0, 70)})
            quiet = {e1: (0, 0), e2: (0, 0)}
            assert traffic.sample() == opened.sample() == Traffic(0, 0, 2, quiet)
            exchange(s2, c2, 5)
            exchange(c2, s2, 9)
            assert counters(s2) == (79, 5)
            assert counters(c2) == (5, 79)
            assert traffic.sample() == Traffic(9, 5, 2, {e1: (0, 0), e2: (9, 5)})
            s1.close()
            c1.close()
            exchange(c2, s2, 1)
            assert traffic.sample() == Traffic(1, 0, 1, {e2: (1, 0)})
            assert opened.sample() == Traffic(5, 10, 1, {e2: (5, 10)})
        finally:
            for c, s in ends:
                c.close()
                s.close()


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:10.0.0.7", "10.0.0.7"),
        ("fe80::1%eth0", "fe80::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("fed.example.org", "fed.example.org"),
    ],
)
def test_an_address_names_a_host_one_way(host: str, canonical: str) -> None:
    """A dual-stack listener sees an IPv4 peer as an IPv4-mapped IPv6 address, and gRPC names
    it in IPv4: both give the same key."""
    assert tcpinfo.address(host, 9) == (canonical, 9)


def test_a_dual_stack_listener_keys_an_ipv4_connection_by_its_ipv4_address() -> None:
    """An IPv4 client of a listener on ``::`` is ``::ffff:127.0.0.1`` to the kernel; the sample
    keys it as ``127.0.0.1``, the address gRPC gives for the same peer."""
    with listening(dual_stack=True) as (listener, port):
        traffic = PortTraffic(port)
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            with server:
                exchange(client, server, 12)
                assert traffic.sample().by_connection == {client.getsockname(): (12, 0)}


@pytest.mark.parametrize(
    ("peer", "end"),
    [
        ("ipv4:10.0.0.2:5000", ("10.0.0.2", 5000)),
        ("ipv6:%5B::1%5D:50452", ("::1", 50452)),
        ("ipv6:[::ffff:10.0.0.2]:7", ("10.0.0.2", 7)),
        ("ipv6:%5Bfe80::1%25eth0%5D:8", ("fe80::1", 8)),
        ("unix:/tmp/fed.sock", None),
        ("ipv4:10.0.0.2", None),
        ("ipv4::5", None),
    ],
)
def test_a_grpc_peer_names_the_connecting_end(peer: str, end: tuple[str, int] | None) -> None:
    assert grpc_peer_address(peer) == end


def test_a_sample_splits_by_the_client_that_authenticated_on_each_connection() -> None:
    """A connection counts for the one client that authenticated on it; one on which nobody,
    or more than one client, authenticated is unattributed; a connection gone from a sample is
    forgotten (its address may come back as somebody else's)."""
    owners = ConnectionOwners()
    owners.note("alice", "ipv4:10.0.0.2:5000")
    owners.note("alice", "ipv4:10.0.0.2:5000")  # a second call on the same connection
    owners.note("alice", "ipv4:10.0.0.2:5001")  # her second connection
    owners.note("bob", "ipv6:%5B::1%5D:6000")
    owners.note("carol", "ipv4:10.0.0.9:7000")
    owners.note("dave", "ipv4:10.0.0.9:7000")  # a proxy's connection carrying two clients
    owners.note("erin", "unix:/tmp/fed.sock")  # no TCP end: nothing to key
    sample = Traffic(
        received=1 + 2 + 4 + 8 + 16,
        sent=32 + 64 + 128 + 256 + 512,
        connections=5,
        by_connection={
            ("10.0.0.2", 5000): (1, 32),
            ("10.0.0.2", 5001): (2, 64),
            ("::1", 6000): (4, 128),
            ("10.0.0.9", 7000): (8, 256),
            ("10.0.0.3", 9): (16, 512),  # a health check that never authenticated
        },
    )
    split = owners.split(sample)
    assert split.by_client == {"alice": (3, 96), "bob": (4, 128)}
    assert split.unattributed == (24, 768)
    later = Traffic(5, 6, 1, {("10.0.0.2", 5000): (5, 6)})
    assert owners.split(later).by_client == {"alice": (5, 6)}
    reused = Traffic(7, 8, 1, {("::1", 6000): (7, 8)})  # bob's address, a new connection
    assert owners.split(reused).by_client == {}


def test_the_connections_remembered_between_samples_are_bounded() -> None:
    """Past its limit the table forgets its oldest connection: calls from ever new connections
    while no round closes cannot grow it without bound."""
    owners = ConnectionOwners(limit=2)
    for port in (1, 2, 3):
        owners.note(f"c{port}", f"ipv4:10.0.0.2:{port}")
    ends = {("10.0.0.2", port): (port, 0) for port in (1, 2, 3)}
    split = owners.split(Traffic(6, 0, 3, ends))
    assert split.by_client == {"c2": (2, 0), "c3": (3, 0)}
    assert split.unattributed == (1, 0)


def test_wire_metrics_count_at_least_every_message_of_the_rounds(tmp_path: Path) -> None:
    """A federation of 5 with ``wire_metrics``: each round line carries the kernel's counts,
    over one connection per client, split by client, and up to every round each client's hold
    at least its updates and aggregates plus each message's gRPC prefix and DATA frame header; in
    the steady rounds a client's median traffic a round stays within a few hundred bytes of its
    payload (a round's sample may take a few bytes of its neighbours': it runs as the round
    closes, beside the broadcast)."""
    metrics = tmp_path / "metrics.jsonl"
    rounds = 12
    config = make_config(n=5, f=1, nu=4, rounds=rounds, metrics=str(metrics), wire_metrics=True)
    trainers = [FakeTrainer(seed=200 + i) for i in range(5)]

    async def main() -> None:
        async with federation(config) as fed:
            await asyncio.gather(*(s.run() for s in sessions_for(fed.address, trainers)))

    run(main())
    lines = [r for r in read_metrics(metrics) if r["event"] == "round"]
    assert [r["round"] for r in lines] == list(range(rounds))
    m = config.plan.zo.scalars_per_round
    up_floor = down_floor = up_wire = down_wire = 0
    clients = {c: [0, 0] for c in lines[0]["participants"]}
    assert len(clients) == 5
    for r in lines:  # by round t's sample: every update of rounds <= t, every aggregate < t
        assert r["wire_connections"] == 5
        up_wire += r["uplink_wire_bytes"]
        down_wire += r["downlink_wire_bytes"]
        up_floor += update_size(r["round"], m) + GRPC_FRAMING
        aggregate = pb.ServerMessage(aggregate=wire.aggregate(r["round"], b"\0" * 4 * m))
        # Split by client: every connection is one client's (each session authenticated on
        # it before the first round closed), and so is every byte.
        assert r["wire_by_client"].keys() == clients.keys()
        assert r["wire_unattributed"] == {"uplink": 0, "downlink": 0}
        for key in ("uplink", "downlink"):
            split = [c[key] for c in r["wire_by_client"].values()]
            assert sum(split) == r[f"{key}_wire_bytes"]
        for c, counted in r["wire_by_client"].items():
            clients[c][0] += counted["uplink"]
            clients[c][1] += counted["downlink"]
            assert clients[c][0] >= up_floor and clients[c][1] >= down_floor, (c, r)
        down_floor += aggregate.ByteSize() + GRPC_FRAMING
    assert up_wire == sum(up for up, _ in clients.values())
    assert down_wire == sum(down for _, down in clients.values())
    steady = lines[2:-1]  # after the joins, before the last round (which opens none)
    payload = statistics.median(
        (r["uplink_payload_bytes"] + r["downlink_payload_bytes"]) / 5 for r in steady
    )
    wire_bytes = statistics.median(
        (r["uplink_wire_bytes"] + r["downlink_wire_bytes"]) / 5 for r in steady
    )
    assert payload + 2 * GRPC_FRAMING <= wire_bytes <= payload + 400


@pytest.mark.parametrize(
    ("target", "port"),
    [
        ("127.0.0.1:50051", 50051),
        ("fed.example.org:443", 443),
        ("[::1]:7", 7),
        ("dns:///fed:9", 9),
        ("fed.example.org", None),
        ("::1", None),
        ("fed:port", None),
    ],
)
def test_a_daemon_counts_the_connections_to_its_targets_port(target: str, port: int | None) -> None:
    assert target_port(target) == port


def test_a_tally_whose_counters_fail_stops_counting_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A daemon's tally that cannot read its counters any more (OSError) stops counting and
    reports nothing, instead of failing the session that sampled it before closing."""
    with listening() as (listener, port):
        tally = WireTally(port)
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            with server:
                exchange(client, server, 40)
                tally.sample()
                assert (tally.up, tally.down, tally.report(1)) == (40, 0, {"up": 40, "down": 0})

                def unreadable() -> Traffic:
                    raise OSError("/proc/self/fd: gone")

                monkeypatch.setattr(tally._traffic, "sample", unreadable)
                tally.sample()
                exchange(server, client, 5)
                tally.sample()
    assert tally.failed == "/proc/self/fd: gone"
    assert tally.report(1) is None


def test_a_kernel_without_the_counters_is_an_error_not_silent_zeros(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where TCP_INFO has no byte counters (Linux < 4.1, stood in for here), a sample raises
    CountersUnavailable (an OSError: the federator and the daemons log it and go on) instead of
    reporting no connections and no bytes."""
    with listening() as (listener, port), socket.create_connection(("127.0.0.1", port)):
        server, _ = listener.accept()
        with server:

            def short_info(sock: socket.socket) -> tuple[int, int]:
                raise tcpinfo.CountersUnavailable("no byte counters")

            monkeypatch.setattr(tcpinfo, "counters", short_info)
            with pytest.raises(tcpinfo.CountersUnavailable):
                PortTraffic(port).sample()
