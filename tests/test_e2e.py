"""End to end with real processes on 127.0.0.1: the demo, crashes and recovery."""

from __future__ import annotations

import json
import math
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cyber0.client import demo
from cyber0.common.models import ModelSpec, build_model, model_digest
from cyber0.common.weights import load_model, load_weights, read_metadata
from cyber0.server.config import build_config
from cyber0.v1 import federation_pb2 as pb

pytestmark = pytest.mark.slow


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def update_payload_bytes(m: int) -> int:
    """ByteSize of a ClientMessage carrying an Update of m floats for a multi-byte round."""
    msg = pb.ClientMessage(update=pb.Update(round=300, values=[0.5] * m))
    return msg.ByteSize()


def test_demo_federation_learns_and_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's main job, shortened: federator, 5 honest, 2 colluding ALIE identities in one
    Byzantine daemon, an observer. Exit 0 means every party ended with the same digest."""
    workdir = tmp_path / "demo"
    # An earlier run's files go (its durable log would be resumed, its metrics read); a file of
    # the user's stays.
    workdir.mkdir()
    (workdir / "federator.db").write_bytes(b"not a log of this run")
    (workdir / "metrics.jsonl").write_text('{"event": "round", "round": 999}\n')
    (workdir / "honest-9.out").write_text("from a run with more honest daemons\n")
    (workdir / "notes.txt").write_text("mine")
    rounds = 60
    code = demo.main(
        [
            "--rounds", str(rounds), "--honest", "5", "--byzantine", "2", "--nu", "32",
            "--eval-every", "20", "--workdir", str(workdir), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0, (workdir / "federator.log").read_text()[-3000:]
    assert (workdir / "notes.txt").read_text() == "mine"
    assert not (workdir / "honest-9.out").exists()
    records = read_metrics(workdir / "metrics.jsonl")
    rounds_seen = [r for r in records if r["event"] == "round"]
    # The summary's training time is the rounds' own (the federator's round_ms), apart from
    # the start-up of the processes and the observer's last evaluation.
    out = capsys.readouterr().out
    summary = re.search(r"(\d+) rounds in ([\d.]+) s \(([\d.]+) s with start-up", out)
    assert summary is not None
    assert int(summary[1]) == rounds
    assert float(summary[2]) == pytest.approx(
        sum(r["round_ms"] for r in rounds_seen) / 1e3, abs=0.05
    )
    assert float(summary[2]) < float(summary[3])
    assert [r["round"] for r in rounds_seen] == list(range(rounds))
    for r in rounds_seen:
        assert r["rejected"] == []
        # Exactly K·ν float32s per client on the uplink: the Update's protobuf payload.
        assert r["uplink_payload_bytes"] == sum(
            pb.ClientMessage(update=pb.Update(round=r["round"], values=[0.5] * 32)).ByteSize()
            for _ in r["participants"]
        )
    assert {c for r in rounds_seen for c in r["participants"]} >= {"byzantine-1", "byzantine-2"}
    # The bytes on the wire (--wire-metrics), over one connection per identity and the
    # observer's: a round's updates cross after the previous sample (it precedes the aggregate
    # that opens the round), each with at least its gRPC prefix and DATA frame header.
    for r in rounds_seen:
        assert r["wire_connections"] == 8
        assert r["uplink_wire_bytes"] >= r["uplink_payload_bytes"] + 14 * len(r["participants"])
    on_wire = re.search(r"on the wire .*: up (\d+) B, down (\d+) B per connection", out)
    assert on_wire is not None
    for got, key in zip(on_wire.groups(), ("uplink", "downlink"), strict=True):
        median = statistics.median(r[f"{key}_wire_bytes"] / 8 for r in rounds_seen[1:])
        assert int(got) == round(median)
    # The federator splits its counts by the client that authenticated on each connection:
    # every byte of every round is some identity's. Each daemon's own counters (its final
    # line's "wire", all its identities together) see its connections from the other end: what
    # the federator counted for its identities, plus what crossed after the last round's sample
    # (the last aggregate, the reports, the streams' ends: about 170 B up and 390 B down a
    # daemon, measured), less what the federator sent twice (a retransmission counts again at
    # the sender) or what reached the daemon in the last second of a connection that closed
    # before its next sample (0.2 KB seen once, in Compose under load).
    daemons = {name: [name] for name in ["observer", *(f"honest-{i}" for i in range(1, 6))]}
    daemons["byzantine"] = ["byzantine-1", "byzantine-2"]
    for r in rounds_seen:
        assert r["wire_unattributed"] == {"uplink": 0, "downlink": 0}, r
        assert sorted(r["wire_by_client"]) == sorted(c for ids in daemons.values() for c in ids)
    for name, identities in daemons.items():
        own = json.loads((workdir / f"{name}.out").read_text().splitlines()[0])["wire"]
        for part, key, slack in (("up", "uplink", 1000), ("down", "downlink", 2000)):
            federator = sum(r["wire_by_client"][c][key] for r in rounds_seen for c in identities)
            assert federator - 1000 <= own[part] <= federator + slack, (name, part, federator, own)
    # shards follow the demo's enrolment, not the order the daemons happened to connect in
    joined = re.findall(
        r"(\S+) joined as train on shard (\d+)", (workdir / "federator.log").read_text()
    )
    shards = {client: int(shard) for client, shard in joined}
    assert shards == {f"honest-{i + 1}": i for i in range(5)} | {"byzantine-1": 5, "byzantine-2": 6}
    final = [r for r in records if r["event"] == "report" and r["client"] == "observer"][-1]
    # 60 rounds of ν=32 with 2 of 7 clients attacking reach about 0.8; 0.7 leaves noise room.
    assert final["round"] == rounds - 1 and final["accuracy"] >= 0.7
    digests = {r["client"]: r["digest"] for r in records if r["event"] == "report"}
    assert len(digests) == 8 and len(set(digests.values())) == 1
    model = build_model(ModelSpec(name="logreg"))
    load_weights(model, workdir / "model.safetensors")  # the observer's final model
    assert model_digest(model) == digests["observer"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Federation:
    """Processes of one federation under test; everything is killed at the end."""

    def __init__(self, workdir: Path, plan: dict[str, Any]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "federation.yaml"
        self.config.write_text(yaml.safe_dump(plan))
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start_federator(self, name: str) -> subprocess.Popen[str]:
        args = ["-m", "cyber0.server.cli", "--config", str(self.config), "--port", str(self.port)]
        args += ["--log-db", str(self.workdir / "federator.db")]
        args += ["--metrics", str(self.workdir / f"{name}.jsonl")]
        out = self.workdir / f"{name}.out"
        proc = demo.spawn(args, out, self.workdir / f"{name}.log")
        assert demo.wait_ready(proc, out) == self.port
        self.procs[name] = proc
        return proc

    def start_client(
        self, name: str, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        target = f"127.0.0.1:{self.port}"
        args = ["-m", "cyber0.client.cli", "--target", target, "--id", name, *extra]
        out, log = self.workdir / f"{name}.out", self.workdir / f"{name}.log"
        proc = demo.spawn(args, out, log, env)
        self.procs[name] = proc
        return proc

    def rounds_done(self, metrics: str) -> int:
        path = self.workdir / f"{metrics}.jsonl"
        if not path.exists():
            return 0
        return sum(1 for r in read_metrics(path) if r["event"] == "round")

    def wait_for(self, metrics: str, rounds: int, timeout: float = 120.0) -> None:
        """Until ``rounds`` rounds are in the metrics, looking every 20 ms: rounds with every
        client present take a few ms, and a slower look once let 32 rounds pass (the whole
        run) between the one it waited for and the caller's next step."""
        deadline = time.monotonic() + timeout
        while self.rounds_done(metrics) < rounds:
            assert time.monotonic() < deadline, f"{metrics}: fewer than {rounds} rounds"
            time.sleep(0.02)

    def digest(self, name: str) -> str:
        lines = (self.workdir / f"{name}.out").read_text().splitlines()
        return str(json.loads(lines[-1])["digest"])

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    plan = {
        "seed": 5,
        "n_clients": 3,
        "f": 0,
        "aggregator": "mean",
        "rounds": 40,
        "zo": {"nu": 8, "mu": 0.001, "lr": 0.005, "batch_size": 32},
        "federator": {"round_timeout": 2.0, "quorum": 2, "linger": 30.0},
    }
    fed = Federation(tmp_path, plan)
    yield fed
    fed.kill_all()


def test_client_and_federator_survive_sigkill(federation: Federation) -> None:
    """A client SIGKILLed mid-training restarts and catches up; the federator SIGKILLed and
    restarted resumes from its log without losing a completed round; everyone ends equal."""
    fed = federation
    fed.start_federator("federator-1")
    fed.start_client("observer", "--role", "observer", "--eval-every", "10")
    for i in range(3):
        fed.start_client(f"client-{i}")
    fed.wait_for("federator-1", 8)
    fed.procs["client-2"].send_signal(signal.SIGKILL)  # rounds go on at the deadline with 2
    fed.procs["client-2"].wait()
    # Rounds take milliseconds: count from the kill. The round open at the kill may still hold
    # client-2's update; the one after it cannot.
    killed_at = sum(r["event"] == "round" for r in read_metrics(fed.workdir / "federator-1.jsonl"))
    assert killed_at < 30, f"client-2 was killed after {killed_at} of the 40 rounds, not mid-run"
    fed.wait_for("federator-1", max(14, killed_at + 2))
    fed.start_client("client-2")  # same id: it replays the aggregates it missed
    fed.wait_for("federator-1", 20)
    fed.procs["federator-1"].send_signal(signal.SIGKILL)
    fed.procs["federator-1"].wait()
    fed.start_federator("federator-2")  # same port, same log: the clients reconnect by themselves
    for name in ("observer", "client-0", "client-1", "client-2"):
        assert fed.procs[name].wait(timeout=180) == 0, (fed.workdir / f"{name}.log").read_text()
    assert fed.procs["federator-2"].wait(timeout=60) == 0

    first = [
        r["round"] for r in read_metrics(fed.workdir / "federator-1.jsonl") if r["event"] == "round"
    ]
    second = [
        r["round"] for r in read_metrics(fed.workdir / "federator-2.jsonl") if r["event"] == "round"
    ]
    # The log commits a round before its metrics line is written, so a SIGKILL in between leaves
    # one durable round without a line: the restarted federator's own count is the truth.
    second_log = (fed.workdir / "federator-2.log").read_text()
    found = re.search(r"serving \S+: 40 rounds, (\d+) completed", second_log)
    assert found is not None, second_log
    completed = int(found.group(1))
    assert completed >= 20 and first == list(range(len(first)))
    assert len(first) in (completed, completed - 1)
    assert second == list(range(completed, 40))  # resumed at the next round: none lost or redone
    records = [
        r
        for name in ("federator-1", "federator-2")
        for r in read_metrics(fed.workdir / f"{name}.jsonl")
        if r["event"] == "round"
    ]
    # Left out of rounds after its kill (they ran on without it); that it caught up after its
    # restart is shown by its exit status and its final digest below.
    assert any("client-2" not in r["participants"] for r in records[8:])
    digests = {name: fed.digest(name) for name in ("observer", "client-0", "client-1", "client-2")}
    assert len(set(digests.values())) == 1, digests


def test_parties_on_different_cpu_paths_end_on_one_model(federation: Federation) -> None:
    """Clients whose arithmetic takes other CPU paths (torch's scalar or AVX2 kernels, MKL's
    oldest or AVX2 code path, the eager generator instead of the native kernel), as on other
    machines, still regenerate the same Gaussian directions: every party ends on one digest.
    (With the math library's log/cos/sin, protocol version 2, these paths drew other bits.)"""
    fed = federation
    fed.start_federator("federator")
    fed.start_client("observer", "--role", "observer")
    fed.start_client("client-0")
    scalar = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
    fed.start_client("client-1", env={**scalar, "CYBER0_NATIVE_GENERATOR": "0"})
    fed.start_client("client-2", env={"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"})
    for name in ("observer", "client-0", "client-1", "client-2"):
        assert fed.procs[name].wait(timeout=120) == 0, (fed.workdir / f"{name}.log").read_text()
    digests = {name: fed.digest(name) for name in ("observer", "client-0", "client-1", "client-2")}
    assert len(set(digests.values())) == 1, digests


def test_clients_save_the_final_model(federation: Federation) -> None:
    """``--save-model``: the file a client writes at the end loads into a fresh model built from
    its metadata, with the digest every party reported; an unwritable path is refused before
    the client connects."""
    fed = federation
    bad = fed.workdir / "no-such-folder" / "model.safetensors"
    refused = fed.start_client("client-x", "--save-model", str(bad))
    assert refused.wait(timeout=60) == 2
    assert "does not exist or is read-only" in (fed.workdir / "client-x.log").read_text()

    fed.start_federator("federator")
    saved = {name: fed.workdir / f"{name}.safetensors" for name in ("observer", "client-0")}
    fed.start_client("observer", "--role", "observer", "--save-model", str(saved["observer"]))
    fed.start_client("client-0", "--save-model", str(saved["client-0"]))
    for i in (1, 2):
        fed.start_client(f"client-{i}")
    for name in ("observer", "client-0", "client-1", "client-2"):
        assert fed.procs[name].wait(timeout=120) == 0, (fed.workdir / f"{name}.log").read_text()
    digests = {name: fed.digest(name) for name in ("observer", "client-0", "client-1", "client-2")}
    assert len(set(digests.values())) == 1, digests
    for name, path in saved.items():
        report = json.loads((fed.workdir / f"{name}.out").read_text().splitlines()[-1])
        assert report["weights"] == str(path)
        model, meta = load_model(path)
        assert model_digest(model) == digests[name]
        assert meta["round"] == "39" and meta["model"] == "logreg" and meta["num_classes"] == "10"
        assert json.loads(meta["plan"])["seed"] == 5


def start_long_run(fed: Federation, rounds: int, *saving: str) -> None:
    """A federation of ``rounds`` rounds (milliseconds each: enough of them that a signal
    lands mid-run) with client-0 and client-1, and client-2 run with ``saving``."""
    plan = {**yaml.safe_load(fed.config.read_text()), "rounds": rounds}
    fed.config.write_text(yaml.safe_dump(plan))
    fed.start_federator("federator")
    for i in (0, 1):
        fed.start_client(f"client-{i}")
    fed.start_client("client-2", *saving)


def restart_client_2_and_finish(fed: Federation, *saving: str) -> str:
    """Restart client-2 with ``saving``, let all three finish; client-2's log of that run."""
    fed.start_client("client-2", *saving)
    for name in ("client-0", "client-1", "client-2"):
        assert fed.procs[name].wait(timeout=120) == 0, (fed.workdir / f"{name}.log").read_text()
    digests = {name: fed.digest(name) for name in ("client-0", "client-1", "client-2")}
    assert len(set(digests.values())) == 1, digests
    return (fed.workdir / "client-2.log").read_text()


def test_a_client_resumes_from_its_checkpoint(federation: Federation) -> None:
    """``--save-every 5 --resume``: a client SIGKILLed mid-run restarts from its last checkpoint
    (a multiple of 5 rounds) instead of round 0 and ends with everyone's digest; the same file
    against a federation of another plan is refused before any training."""
    fed, rounds = federation, 400
    ckpt = fed.workdir / "client-2.safetensors"
    saving = ("--save-model", str(ckpt), "--save-every", "5", "--resume", "--log-level", "INFO")
    start_long_run(fed, rounds, *saving)
    deadline = time.monotonic() + 120
    while not ckpt.exists() or int(read_metadata(ckpt)["round"]) < 9:
        assert time.monotonic() < deadline, "no checkpoint after round 9"
        time.sleep(0.2)
    fed.procs["client-2"].send_signal(signal.SIGKILL)
    fed.procs["client-2"].wait()
    saved = int(read_metadata(ckpt)["round"])
    assert 9 <= saved < rounds - 1 and (saved + 1) % 5 == 0
    assert f"resumed from {ckpt} after round" in restart_client_2_and_finish(fed, *saving)
    assert read_metadata(ckpt)["round"] == str(rounds - 1)  # the final save

    other_dir = fed.workdir / "other"
    other_dir.mkdir()
    other = Federation(other_dir, {**yaml.safe_load(fed.config.read_text()), "seed": 6})
    try:
        other.start_federator("federator")
        refused = other.start_client("client-2", *saving)
        assert refused.wait(timeout=60) == 1
        assert "holds a model of another plan" in (other_dir / "client-2.log").read_text()
        assert read_metadata(ckpt)["round"] == str(rounds - 1)  # untouched
    finally:
        other.kill_all()


def test_a_stopped_client_saves_its_model_and_resumes_from_it(federation: Federation) -> None:
    """SIGTERM mid-run: the client stops its sessions, lets a computation in progress finish,
    writes ``--save-model`` for its last applied round and exits 143. Restarted with
    ``--resume`` it replays only the rounds after that one and ends on everyone's digest, so the
    file held the global model of its round (not weights mid-perturbation or mid-update)."""
    fed, rounds = federation, 400
    ckpt = fed.workdir / "client-2.safetensors"
    saving = ("--save-model", str(ckpt), "--resume", "--log-level", "INFO")
    start_long_run(fed, rounds, *saving)
    fed.wait_for("federator", 10)
    fed.procs["client-2"].send_signal(signal.SIGTERM)
    assert fed.procs["client-2"].wait(timeout=60) == 128 + signal.SIGTERM
    log = (fed.workdir / "client-2.log").read_text()
    saved = int(read_metadata(ckpt)["round"])
    assert 5 <= saved < rounds - 1, log
    assert f"stopped by SIGTERM; the model of round {saved} is in {ckpt}" in log
    assert f"resumed from {ckpt} after round {saved}" in restart_client_2_and_finish(fed, *saving)


FEATURES = 40  # tabular rows: the plan's model is logreg?inputs=40


def local_plan(rounds: int) -> dict[str, Any]:
    """Three clients training logistic regression on their own files of tabular rows."""
    return {
        "seed": 8,
        "model": f"logreg?inputs={FEATURES}",
        "dataset": "local?classes=3",
        "n_clients": 3,
        "f": 0,
        "aggregator": "mean",
        "rounds": rounds,
        "zo": {"nu": 8, "mu": 0.001, "lr": 0.005, "batch_size": 32},
    }


def write_cluster_examples(path: Path, n: int, seed: int) -> None:
    """``n`` examples of 3 classes around fixed means in R^40 (the same means in every file,
    other draws per ``seed``), as the ``.npz`` a ``local`` plan's client brings."""
    means = np.random.default_rng(100).choice([-1.0, 1.0], size=(3, FEATURES))
    draws = np.random.default_rng(seed)
    y = draws.integers(0, 3, n)
    x = means[y] + 2.0 * draws.standard_normal((n, FEATURES))
    np.savez(path, x=x.astype(np.float32), y=y)


def test_a_checkpoint_of_another_run_of_the_plan_is_refused(tmp_path: Path) -> None:
    """``--resume`` checks the checkpoint's aggregates against the federator's: the file of an
    earlier run of the same plan (a fresh federator, a new log: other aggregates) is refused
    with exit 1, naming the file and leaving it untouched; the run it was saved in, its
    federator restarted from its log, takes it back and the client ends on everyone's digest."""
    for i in range(3):
        write_cluster_examples(tmp_path / f"client-{i}.npz", 200, seed=i)
    plan = local_plan(rounds=300)
    data = ("--data", str(tmp_path / "{id}.npz"))
    ckpt = tmp_path / "client-2.safetensors"
    saving = ("--save-model", str(ckpt), "--save-every", "5", "--resume", "--log-level", "INFO")
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    # Every round of the first run waits for all three clients; the second runs without client-2.
    everyone = {"round_timeout": 5.0, "quorum": 3, "linger": 30.0}
    first = Federation(tmp_path / "run1", {**plan, "federator": everyone})
    two = {"round_timeout": 0.05, "quorum": 2, "linger": 30.0}
    second = Federation(tmp_path / "run2", {**plan, "federator": two})
    try:
        first.start_federator("federator-1")
        for i in (0, 1):
            first.start_client(f"client-{i}", *data)
        first.start_client("client-2", *data, *saving)
        deadline = time.monotonic() + 120
        while not ckpt.exists() or int(read_metadata(ckpt)["round"]) < 9:
            assert time.monotonic() < deadline, "no checkpoint after round 9"
            time.sleep(0.02)
        for name in ("client-2", "federator-1"):
            first.procs[name].send_signal(signal.SIGKILL)
            first.procs[name].wait()
        saved = int(read_metadata(ckpt)["round"])
        assert saved < 299

        second.start_federator("federator")
        for i in (0, 1):
            second.start_client(f"client-{i}", *data)
        second.wait_for("federator", saved + 2)
        refused = second.start_client("client-2", *data, *saving)
        assert refused.wait(timeout=60) == 1
        log = (second.workdir / "client-2.log").read_text()
        assert f"{ckpt} holds round {saved} of another run of this plan" in log, log
        assert read_metadata(ckpt)["round"] == str(saved)
        second.kill_all()

        first.start_federator("federator-2")  # same port, same log: the first run goes on
        first.start_client("client-2", *data, *saving)
        for name in ("client-0", "client-1", "client-2"):
            code = first.procs[name].wait(timeout=180)
            assert code == 0, (first.workdir / f"{name}.log").read_text()[-3000:]
        log = (first.workdir / "client-2.log").read_text()
        assert f"resumed from {ckpt} after round {saved}" in log
        digests = {name: first.digest(name) for name in ("client-0", "client-1", "client-2")}
        assert len(set(digests.values())) == 1, digests
    finally:
        first.kill_all()
        second.kill_all()


def test_clients_train_on_their_own_files(tmp_path: Path) -> None:
    """A ``local`` plan: each client daemon trains on its own ``--data`` file and the observer
    evaluates on its own held-out one; the federator never names the data. The observer's
    accuracy rises from chance and every party ends on one digest. A client started without a
    file, or with a file whose labels the plan does not have, stops with a message naming it,
    and takes its seat when restarted with a good one (named by the ``{id}`` template)."""
    plan = {**local_plan(rounds=30), "federator": {"round_timeout": 30.0, "linger": 30.0}}
    fed = Federation(tmp_path, plan)
    try:
        for i in range(3):
            write_cluster_examples(tmp_path / f"client-{i}.npz", 200, seed=i)
        write_cluster_examples(tmp_path / "held-out.npz", 300, seed=99)
        bad = tmp_path / "bad.npz"
        np.savez(bad, x=np.zeros((4, FEATURES), np.float32), y=np.array([0, 1, 2, 3]))
        fed.start_federator("federator")
        fed.start_client("client-0")
        fed.start_client("client-1", "--data", str(bad))
        for name in ("client-0", "client-1"):
            assert fed.procs[name].wait(timeout=60) == 1
        assert "give --data FILE" in (tmp_path / "client-0.log").read_text()
        refused = "bad.npz: y[3] = 3 is not a label in [0, 3) (1 of 4 labels out of range)"
        assert refused in (tmp_path / "client-1.log").read_text()
        held_out = str(tmp_path / "held-out.npz")
        saved = str(tmp_path / "model.safetensors")
        observer = ("--role", "observer", "--eval-every", "5", "--save-model", saved)
        fed.start_client("observer", *observer, "--data", held_out)
        for i in range(3):  # {id}: the client's id, so client-i reads client-i.npz
            fed.start_client(f"client-{i}", "--data", str(tmp_path / "{id}.npz"))
        names = ("observer", "client-0", "client-1", "client-2")
        for name in names:
            assert fed.procs[name].wait(timeout=120) == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        fed.kill_all()
    assert len({fed.digest(name) for name in names}) == 1
    reports = [
        r
        for r in read_metrics(tmp_path / "federator.jsonl")
        if r["event"] == "report" and r["client"] == "observer"
    ]
    # The model starts at W = 0: loss log 3, every example labelled 0 (a third of them right).
    # The held-out examples are 3 clusters in R^40 whose means differ in about half the
    # coordinates by 2 (noise σ = 2): a trained logistic regression separates them.
    assert reports[-1]["round"] == 29
    assert reports[-1]["accuracy"] >= 0.9 and reports[-1]["loss"] < 0.25 * math.log(3)
    # The saved model scored on the same file by cyber0-evaluate, in a process of its own: the
    # observer's last report, and predictions that agree with it.
    predictions = tmp_path / "labels.txt"
    scored = subprocess.run(
        [sys.executable, "-m", "cyber0.client.evaluate", "--weights", saved, "--data", held_out,
         "--predictions", str(predictions)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(scored.stdout)
    assert result["examples"] == 300 and result["round"] == 29
    assert result["digest"] == fed.digest("observer")
    for key in ("accuracy", "loss"):  # a Report carries them as float32
        assert np.float32(result[key]) == np.float32(reports[-1][key])
    labels = np.array([int(line) for line in predictions.read_text().splitlines()])
    assert np.mean(labels == np.load(held_out)["y"]) == result["accuracy"]


def test_the_demo_runs_a_local_plan_on_the_parties_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cyber0-demo --plan`` (a local plan on 40-feature rows) ``--data`` (one file per
    identity, the observer's held out): every party ends on one digest and the observer's
    accuracy on its file rises from chance. A missing file or a plan that sets n_clients is
    refused before anything starts, a field the federator refuses as it starts (exit 2); a
    party whose file breaks a rule stops the demo at once (exit 1) with that party's message."""
    for i, name in enumerate(["honest-1", "honest-2", "honest-3", "byzantine-1"]):
        write_cluster_examples(tmp_path / f"{name}.npz", 200, seed=i)
    write_cluster_examples(tmp_path / "observer.npz", 300, seed=99)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"model: logreg?inputs={FEATURES}\ndataset: local?classes=3\n"
        "zo: {nu: 8, lr: 0.005, batch_size: 32}\n"
    )
    argv = ["--rounds", "30", "--honest", "3", "--byzantine", "1", "--attack", "sf"]
    argv += ["--eval-every", "10", "--plan", str(plan), "--workdir", str(tmp_path / "w")]
    argv += ["--quiet", "--data", str(tmp_path / "{id}.npz")]
    assert demo.main(argv) == 0, (tmp_path / "w" / "federator.log").read_text()[-2000:]
    accuracy = re.search(r"final test accuracy \(observer\) ([\d.]+)", capsys.readouterr().out)
    assert accuracy is not None and float(accuracy[1]) >= 0.9
    assert demo.main([*argv[:-1], str(tmp_path / "missing-{id}.npz")]) == 2
    assert "missing-observer.npz: no such file" in capsys.readouterr().err
    (tmp_path / "counted.yaml").write_text("n_clients: 9\n")
    assert demo.main([*argv, "--plan", str(tmp_path / "counted.yaml")]) == 2
    assert "n_clients come from --honest and --byzantine" in capsys.readouterr().err
    (tmp_path / "typo.yaml").write_text("roundz: 9\n")  # refused by the federator itself
    assert demo.main([*argv, "--plan", str(tmp_path / "typo.yaml")]) == 2
    assert "roundz: unknown key" in capsys.readouterr().err
    np.savez(tmp_path / "honest-2.npz", x=np.zeros((4, FEATURES), np.float32), y=[0, 1, 2, 3])
    started = time.monotonic()
    assert demo.main(argv) == 1
    assert time.monotonic() - started < 60  # not the 120 s a finished party may take
    err = capsys.readouterr().err
    assert "honest-2 exit 1" in err and "y[3] = 3 is not a label in [0, 3)" in err


def test_the_demo_plan_takes_the_loss_flag_over_its_plan_file(tmp_path: Path) -> None:
    """``--loss`` names the objective of the demo's plan, over a ``--plan`` file's; the plan
    is one the federator accepts; without either the default objective stays."""
    mine = tmp_path / "plan.yaml"
    mine.write_text("loss: cross_entropy\nrounds: 5\n")
    args = demo.build_parser().parse_args(["--plan", str(mine), "--loss", "balanced_cross_entropy"])
    plan = demo.default_plan(args)
    assert (plan["loss"], plan["rounds"]) == ("balanced_cross_entropy", 5)
    assert build_config(plan).plan.loss == "balanced_cross_entropy"
    assert "loss" not in demo.default_plan(demo.build_parser().parse_args([]))
