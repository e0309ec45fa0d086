"""``cyber0-federator``: configuration errors, flags over file values, and real processes that
exit 0 when the rounds are done or on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_federator import FakeTrainer, run, sessions_for

from cyber0.server.app import log_final_digests
from cyber0.server.cli import build_parser, config_from_args, main
from cyber0.server.log import DurableLog


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "federator.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("seed: 1\nroundz: 3\n", "roundz: unknown key"),
        ("seed: 1\nzo:\n  nu: 4\n  kappa: 2\n", "zo.kappa: unknown key"),
        ("federator:\n  port: 0\n  deadline: 3\n", "federator.deadline: unknown key"),
        (
            "n_clients: 4\nf: 1\nfederator:\n  quorum: 9\n",
            "federator.quorum: must be in [1, n_clients=4]; got 9",
        ),
        ("n_clients: 4\nf: 1\naggregator: krum\n", "'krum' with f=1 cannot aggregate quorum=3"),
        (
            "dataset: imdb\n",
            "dataset: unknown dataset 'imdb'; known: local, mnist, rotten_tomatoes",
        ),
        ("dataset: local\n", "dataset: dataset 'local': give classes=<number of labels, >= 2>"),
        ("dataset: rotten_tomatoes\n", "dataset: dataset 'rotten_tomatoes' needs a Hugging Face"),
        ("dataset: mnist?alpha=1\n", "dataset: dataset 'mnist?alpha=1': mnist takes no options"),
        ("loss: mse\n", "loss: must be one of ['cross_entropy', 'balanced_cross_entropy']; got"),
        ("zo: {lr: .inf}\n", "zo.lr: expected a finite number; got inf"),
        ("alpha: .nan\n", "alpha: expected a finite number; got nan"),
        ("federator: {round_timeout: .inf}\n", "federator.round_timeout: expected a finite"),
        ("model: resnet\n", "model: unknown model name='resnet'; known: hf, logreg, minilm"),
        ("model: logreg?width=3\n", "model: model 'logreg?width=3': unknown option(s) ['width']"),
        ("model: logreg?inputs=0\n", "model: model 'logreg?inputs=0': inputs must be >= 1; got 0"),
        ("model: logreg?inputs=x\n", "model: model 'logreg?inputs=x': inputs must be an integer"),
        (
            "model: logreg?inputs=30\n",
            "dataset: dataset 'mnist' has 784 features an example: it needs model logreg",
        ),
        ("model: minilm\n", "dataset: dataset 'mnist' has 784 features an example"),
        ("model: minilm?head=max\n", "model: model 'minilm?head=max': head must be one of"),
        (
            "federator:\n  wire_metrics: true\n",
            "federator.wire_metrics: needs metrics (the file its counts go to)",
        ),
    ],
)
def test_a_bad_config_is_an_error_naming_the_key(
    text: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", write(tmp_path, text)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cyber0-federator: error: ")
    assert named in err


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "seed: 1\nzo: {nu: 8, mu: 0.01}\nn_clients: 7\nrounds: 9\nloss: balanced_cross_entropy\n"
        "federator: {port: 1234}\n",
    )
    args = build_parser().parse_args(
        ["--config", path, "--nu", "2", "--local-steps", "3", "--seed", "5", "--port", "0"]
    )
    config = config_from_args(args)
    assert (config.plan.seed, config.plan.rounds, config.plan.n_clients) == (5, 9, 7)
    assert config.plan.loss == "balanced_cross_entropy"
    assert (config.plan.zo.nu, config.plan.zo.local_steps, config.plan.zo.mu) == (2, 3, 0.01)
    assert config.settings.port == 0
    assert config.quorum == 7 - 2
    flag = build_parser().parse_args(["--config", path, "--loss", "cross_entropy"])
    assert config_from_args(flag).plan.loss == "cross_entropy"


def test_an_unknown_loss_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--loss", "mse"])
    assert exit_info.value.code == 2
    assert "--loss: invalid choice: 'mse'" in capsys.readouterr().err


def test_a_log_of_another_plan_stops_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "log.db")
    config = config_from_args(build_parser().parse_args(["--seed", "1", "--log-db", db]))
    DurableLog.open(db, config.plan).close()
    assert main(["--seed", "2", "--log-db", db, "--port", "0"]) == 2
    assert "seed: logged 1, configured 2" in capsys.readouterr().err


def test_a_taken_port_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port), "--rounds", "1"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def federator_command() -> list[str]:
    script = Path(sys.executable).with_name("cyber0-federator")
    found = str(script) if script.exists() else shutil.which("cyber0-federator")
    return [found] if found else [sys.executable, "-m", "cyber0.server.cli"]


def start(*flags: str) -> tuple[subprocess.Popen[str], str]:
    """A federator process and the address from its ready line."""
    proc = subprocess.Popen(
        [*federator_command(), "--port", "0", "--log-level", "WARNING", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    prefix = "cyber0-federator listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise AssertionError(f"no ready line: {line!r} {proc.communicate()[1]}")
    return proc, line[len(prefix) :].strip()


def test_sigterm_stops_a_serving_federator_promptly(tmp_path: Path) -> None:
    proc, address = start("--rounds", "100", "--log-db", str(tmp_path / "log.db"))
    try:
        with grpc.insecure_channel(address) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_the_process_exits_0_after_its_last_round_and_the_linger() -> None:
    proc, address = start(
        "--clients", "3", "--byzantine", "0", "--aggregator", "mean", "--nu", "4",
        "--rounds", "3", "--linger", "0.2", "--log-level", "INFO",
    )  # fmt: skip
    try:
        trainers = [FakeTrainer(seed=i) for i in range(3)]

        async def main() -> None:
            await asyncio.gather(*(s.run() for s in sessions_for(address, trainers)))

        run(main())
        assert {t.applied_round for t in trainers} == {2}
        assert proc.wait(timeout=10) == 0
        digest = trainers[0].digest()
        assert f"final model: 3 parties reported digest {digest[:16]}" in proc.communicate()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_the_final_digests_are_summed_up_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cyber0.federator")
    log_final_digests({})
    assert caplog.records == []
    log_final_digests({"b": "ab" * 16, "a": "ab" * 16})
    log_final_digests({"b": "ab" * 16, "a": "cd" * 16, "c": "ab" * 16})
    agree, differ = caplog.records
    assert (agree.levelno, agree.getMessage()) == (
        logging.INFO,
        f"final model: 2 parties reported digest {'ab' * 8}",
    )
    assert (differ.levelno, differ.getMessage()) == (
        logging.WARNING,
        f"final model: 3 parties reported 2 different digests: {'ab' * 8} (b, c); {'cd' * 8} (a)",
    )
