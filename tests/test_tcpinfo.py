"""The kernel's TCP byte counters (:mod:`cyber0.common.tcpinfo`) on real loopback sockets, and
the federator's ``--wire-metrics`` lines against what its rounds must at least have carried."""

from __future__ import annotations

import asyncio
import socket
import statistics
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
from cyber0.v1 import federation_pb2 as pb

GRPC_FRAMING = 5 + 9
"""Bytes a gRPC message costs on HTTP/2 at the least: its 5-byte prefix and one DATA frame's
9-byte header."""


def exchange(a: socket.socket, b: socket.socket, size: int) -> None:
    """Send ``size`` bytes from ``a`` to ``b`` and wait until ``b`` has read them all."""
    a.sendall(b"x" * size)
    got = 0
    while got < size:
        got += len(b.recv(size - got))


def test_a_sample_counts_the_payload_of_the_ports_connections_exactly() -> None:
    """Two connections: each sample gives the bytes since the previous one, to the byte, for
    the accepted ends (``end="local"``) and, mirrored, for the connecting ends
    (``end="remote"``); the listener and a closed connection are not counted."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        traffic = PortTraffic(port)
        opened = PortTraffic(port, end="remote")
        assert traffic.sample() == opened.sample() == Traffic(0, 0, 0)
        ends = []
        for _ in range(2):
            client = socket.create_connection(("127.0.0.1", port))
            server, _ = listener.accept()
            ends.append((client, server))
        (c1, s1), (c2, s2) = ends
        try:
            exchange(c1, s1, 1000)
            exchange(s1, c1, 300)
            exchange(c2, s2, 70)
            assert traffic.sample() == Traffic(received=1070, sent=300, connections=2)
            assert opened.sample() == Traffic(received=300, sent=1070, connections=2)
            assert traffic.sample() == opened.sample() == Traffic(0, 0, 2)
            exchange(s2, c2, 5)
            exchange(c2, s2, 9)
            assert counters(s2) == (79, 5)
            assert counters(c2) == (5, 79)
            assert traffic.sample() == Traffic(received=9, sent=5, connections=2)
            s1.close()
            c1.close()
            exchange(c2, s2, 1)
            assert traffic.sample() == Traffic(received=1, sent=0, connections=1)
            assert opened.sample() == Traffic(received=5, sent=10, connections=1)
        finally:
            for c, s in ends:
                c.close()
                s.close()


def test_wire_metrics_count_at_least_every_message_of_the_rounds(tmp_path: Path) -> None:
    """A federation of 5 with ``wire_metrics``: each round line carries the kernel's counts,
    over one connection per client, and up to every round they hold at least the protobuf
    payload the federator counted plus each message's gRPC prefix and DATA frame header; in
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
    for r in lines:  # by round t's sample: every update of rounds <= t, every aggregate < t
        assert r["wire_connections"] == 5
        up_wire += r["uplink_wire_bytes"]
        down_wire += r["downlink_wire_bytes"]
        up_floor += 5 * (update_size(r["round"], m) + GRPC_FRAMING)
        assert up_wire >= up_floor and down_wire >= down_floor, r
        aggregate = pb.ServerMessage(aggregate=wire.aggregate(r["round"], b"\0" * 4 * m))
        down_floor += 5 * (aggregate.ByteSize() + GRPC_FRAMING)
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
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
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
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            server, _ = listener.accept()
            with server:

                def short_info(sock: socket.socket) -> tuple[int, int]:
                    raise tcpinfo.CountersUnavailable("no byte counters")

                monkeypatch.setattr(tcpinfo, "counters", short_info)
                with pytest.raises(tcpinfo.CountersUnavailable):
                    PortTraffic(port).sample()
