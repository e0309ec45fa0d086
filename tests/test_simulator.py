"""The simulator: reproducibility, the results file, config validation."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_federator import FAST, federation, run

from cyber0.client import evaluate
from cyber0.client.session import Session, SessionConfig
from cyber0.client.trainer import ZOTrainer
from cyber0.common import simulator
from cyber0.common.config import ConfigError
from cyber0.common.data import ShardSpec, load_mnist, load_shard
from cyber0.common.localdata import read_arrays
from cyber0.common.models import model_digest
from cyber0.common.plan import plan_json
from cyber0.common.simulator import build_config, main, run_first_order, run_zo, simulate
from cyber0.common.weights import load_model
from cyber0.server.config import build_config as server_config

SMALL: dict[str, Any] = {
    "seed": 3,
    "rounds": 12,
    "eval_every": 4,
    "n_clients": 5,
    "f": 1,
    "data": {"partition": "dirichlet", "alpha": 1.0},
    "zo": {"nu": 8, "mu": 0.001, "lr": 0.004, "batch_size": 16},
    "aggregator": {"name": "cwtm"},
    "attack": {"name": "alie"},
}


def with_(**changes: Any) -> dict[str, Any]:
    config = {**SMALL}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def test_same_config_gives_the_same_model_digest() -> None:
    a = simulate(build_config(SMALL))
    b = simulate(build_config(SMALL))
    assert a["model_digest"] == b["model_digest"]
    c = simulate(build_config(with_(seed=4)))
    assert c["model_digest"] != a["model_digest"]


def test_the_balanced_loss_trains_another_model_and_the_default_keeps_its_own() -> None:
    """``loss: balanced_cross_entropy`` trains both methods on the class-balanced objective (the
    plan the weights record says so): other models than the default's, which an explicit
    ``loss: cross_entropy`` leaves unchanged."""
    both = {"methods": ["zo", "first_order"], "rounds": 4, "eval_every": 4}
    default = simulate(build_config(with_(**both)))
    explicit = simulate(build_config(with_(**both, loss="cross_entropy")))
    balanced = simulate(build_config(with_(**both, loss="balanced_cross_entropy")))
    for method in ("zo", "first_order"):
        digest = default["runs"][method]["model_digest"]
        assert explicit["runs"][method]["model_digest"] == digest
        assert balanced["runs"][method]["model_digest"] != digest
    assert balanced["config"]["loss"] == "balanced_cross_entropy"
    plan = simulator.as_plan(build_config(with_(loss="balanced_cross_entropy")))
    assert plan.loss == "balanced_cross_entropy"


@pytest.mark.parametrize("loss", ["cross_entropy", "balanced_cross_entropy"])
def test_a_federation_of_client_daemons_ends_on_the_simulators_model(loss: str) -> None:
    """The plan the simulator stands for (:func:`~cyber0.common.simulator.as_plan`), served by
    a federator on loopback to three client daemons (sessions with their trainers, shards
    enrolled in index order, no attacker), ends on the simulated run's model, bit for bit,
    under either loss: the plan carries it over the wire to every client."""
    config = build_config(
        with_(
            n_clients=3, f=0, rounds=3, eval_every=3, loss=loss,
            data={"alpha": 0.3}, attack={"name": "none"},
        )
    )  # fmt: skip
    expected = run_zo(config).model_digest
    plan = json.loads(plan_json(simulator.as_plan(config)))
    ids = ["c0", "c1", "c2"]
    federator_config = server_config(
        {**plan, "federator": {"port": 0, "linger": 0.0, "enrolment": ids}}
    )
    assert federator_config.plan.loss == loss
    trainers = [ZOTrainer(device=torch.device("cpu")) for _ in ids]

    async def main() -> list[str]:
        async with federation(federator_config) as fed:
            sessions = [
                Session(SessionConfig(fed.address, i, backoff=FAST), t)
                for i, t in zip(ids, trainers, strict=True)
            ]
            return [r.digest for r in await asyncio.gather(*(s.run() for s in sessions))]

    assert run(main()) == [expected] * 3
    assert all(t.plan is not None and t.plan.loss == loss for t in trainers)


@pytest.mark.parametrize("runner", [run_zo, run_first_order])
def test_a_probe_sees_every_round_and_changes_nothing(runner: Any) -> None:
    """The probe gets each round's n client vectors (Byzantine rows first) and the aggregate
    the model is updated with, and the run ends on the same model as without it."""
    config = build_config(with_(aggregator={"name": "mean"}, attack={"name": "sf"}))
    seen: list[tuple[int, Any, Any]] = []
    probed = runner(config, probe=lambda t, rows, agg: seen.append((t, rows, agg)))
    assert probed.model_digest == runner(config).model_digest
    assert [t for t, _, _ in seen] == list(range(config.rounds))
    for _, rows, aggregate in seen:
        assert rows.shape[0] == config.n_clients
        assert torch.allclose(aggregate, rows.mean(0))  # the mean rule: checks what was passed
        honest_mean = rows[config.f :].mean(0)
        assert torch.allclose(rows[0], -honest_mean)  # SF: the Byzantine row comes first


@pytest.mark.parametrize(
    "changes",
    [
        {"attack": {"name": "lf"}},
        {"attack": {"name": "sf", "mode": "colluding"}},
        {"attack": {"name": "adaptive", "params": {"base": "ipm"}}},
        {"aggregator": {"name": "nnm+krum"}, "n_clients": 7, "f": 1},
        {"zo": {"local_steps": 2, "variant": "biased"}, "attack": {"name": "none"}},
    ],
)
def test_attacks_modes_and_variants_run(changes: dict[str, Any]) -> None:
    result = simulate(build_config(with_(rounds=4, **changes)))
    assert 0.0 <= result["final_test_accuracy"] <= 1.0
    zo = result["config"]["zo"]
    expected = zo["nu"] * (zo["local_steps"] if zo["variant"] == "unbiased" else 1)
    assert result["uplink_scalars_per_client_round"] == expected


def test_cli_writes_results_and_plot(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(with_(methods=["zo", "first_order"])))  # JSON is YAML
    assert main(["--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    for key in (
        "config",
        "rounds",
        "history",
        "final_test_accuracy",
        "uplink_scalars_per_client_round",
        "uplink_bytes_per_client_round",
        "model_digest",
    ):
        assert key in result
    assert [h["round"] for h in result["history"]] == [4, 8, 12]
    assert result["uplink_bytes_per_client_round"] == 4 * 8
    assert result["history"][-1]["uplink_bytes_cum"] == 12 * 4 * 8
    baseline = result["runs"]["first_order"]
    assert baseline["uplink_scalars_per_client_round"] == 7850
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 10_000
    # each method's final model, in a daemon's --save-model format
    for method in ("zo", "first_order"):
        model, meta = load_model(tmp_path / "out" / f"{method}.safetensors")
        assert model_digest(model) == result["runs"][method]["model_digest"]
        assert (meta["method"], meta["round"], meta["model"]) == (method, "11", "logreg")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nu_typo": 3}, r"nu_typo: unknown key"),
        ({"zo": {"nuu": 3}}, r"zo\.nuu: unknown key"),
        ({"n_clients": 4, "f": 2}, r"f: needs n_clients > 2f; got n_clients=4, f=2"),
        ({"zo": {"nu": 0}}, r"zo: nu must be >= 1"),
        ({"zo": {"mu": 0.0}}, r"zo: mu must be finite and > 0"),
        ({"zo": {"mu": math.inf}}, r"zo\.mu: expected a finite number; got inf"),
        ({"data": {"alpha": math.inf}}, r"data\.alpha: expected a finite number"),
        ({"first_order": {"lr": math.nan}}, r"first_order\.lr: expected a finite number"),
        ({"first_order": {"batch_size": 0}}, r"first_order\.batch_size: must be >= 1; got 0"),
        ({"seed": 2**63}, r"seed: must be in \[0, 2\*\*63\); got 9223372036854775808"),
        ({"seed": -1}, r"seed: must be in \[0, 2\*\*63\); got -1"),
        ({"n_clients": 7000, "f": 0}, r"n_clients: 60000 training examples make at most 6000"),
        (
            {"n_clients": 7000, "f": 0, "data": {"partition": "iid", "validation": 59000}},
            r"n_clients: 1000 training examples make at most 1000 iid shards",
        ),
        ({"aggregator": {"name": "cwtm", "params": {"n": 7}}}, r"aggregator\.params\.n: is the"),
        ({"aggregator": {"name": "cwtm", "params": {"f": 1}}}, r"aggregator\.params\.f: is the"),
        ({"aggregator": {"name": "cc", "params": {1: 2}}}, r"aggregator\.params: keys must be"),
        ({"n_clients": 10, "f": 4, "aggregator": {"name": "krum"}}, r"aggregator: krum needs n"),
        ({"attack": {"name": "mimic", "params": {"target": 8}}}, r"attack: mimic: target=8 but"),
        (
            {"attack": {"name": "mimic", "mode": "colluding", "params": {"target": 1}}},
            r"attack: mimic: target=1 but only h=1",
        ),
        ({"zo": {"nu": "many"}}, r"zo\.nu: expected an integer"),
        ({"aggregator": {"name": "trimmed"}}, r"aggregator: .*trimmed"),
        ({"attack": {"name": "nope"}}, r"attack: .*nope"),
        ({"attack": {"mode": "psychic"}}, r"attack\.mode: must be one of"),
        ({"loss": "mse"}, r"loss: must be one of \['cross_entropy', 'balanced_cross_entropy'\]"),
        ({"data": {"alpha": -1.0}}, r"data\.alpha: must be > 0"),
        ({"model": "minilm"}, r"model: the simulator trains logreg\[\?inputs=D\]"),
        ({"model": "logreg?inputs=0"}, r"model: model 'logreg\?inputs=0': inputs must be >= 1"),
        ({"model": "logreg?inputs=30"}, r"data\.dataset: dataset 'mnist' has 784 features"),
        ({"data": {"dataset": "rotten_tomatoes"}}, r"data\.dataset: the simulator reads mnist"),
        ({"data": {"dataset": "local"}}, r"data\.dataset: dataset 'local': give classes="),
        ({"data": {"dataset": "local?classes=3"}}, r"data\.files: a local dataset needs"),
        ({"data": {"dataset": "local?classes=3", "files": "c{id}.npz"}}, r"data\.test: a local"),
        ({"data": {"files": "c{id}.npz"}}, r"data\.files: only a local dataset reads files"),
        (
            {"data": {"dataset": "local?classes=3", "files": "c{id}.npz", "test": "t.npz"}},
            r"data\.files: c0\.npz: no such file",
        ),
    ],
)
def test_bad_configs_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(with_(**changes))


def test_cli_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("rounds: 3\nbogus: 1\n")
    assert main(["--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "bogus: unknown key" in capsys.readouterr().err


def write_shard_files(folder: Path, n_clients: int, seed: int) -> None:
    """The MNIST Dirichlet(1) shards of ``n_clients`` as ``folder/client-i.npz``, and the test
    set as ``folder/test.npz``."""
    for i in range(n_clients):
        spec = ShardSpec(n_clients=n_clients, client_index=i, seed=seed, partition="dirichlet")
        x, y = load_shard(spec)
        np.savez(folder / f"client-{i}.npz", x=x.numpy(), y=y.numpy())
    mnist = load_mnist()
    np.savez(folder / "test.npz", x=mnist.test_x.numpy(), y=mnist.test_y.numpy())


def test_a_local_dataset_of_the_mnist_shards_gives_the_mnist_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each client's own file holding its MNIST shard (and the test set as the test file) is
    the built-in run, bit for bit, for both methods and under a label-flipping attack; the
    files are read once for both methods."""
    write_shard_files(tmp_path, SMALL["n_clients"], SMALL["seed"])
    local = {
        "dataset": "local?classes=10",
        "files": str(tmp_path / "client-{id}.npz"),
        "test": str(tmp_path / "test.npz"),
    }
    changes: dict[str, Any] = {"methods": ["zo", "first_order"], "attack": {"name": "lf"}}
    built_in = simulate(build_config(with_(**changes)))
    read: list[str] = []

    def counted(path: str, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        read.append(Path(path).name)
        return read_arrays(path, classes)

    monkeypatch.setattr(simulator, "read_arrays", counted)
    mine = simulate(build_config(with_(data=local, **changes)))
    assert sorted(read) == sorted(
        [f"client-{i}.npz" for i in range(SMALL["n_clients"])] + ["test.npz"]
    )
    for method in ("zo", "first_order"):
        assert mine["runs"][method]["model_digest"] == built_in["runs"][method]["model_digest"]
        assert mine["runs"][method]["history"] == built_in["runs"][method]["history"]


def test_tabular_clients_under_attack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``logreg?inputs=12`` on 12-feature rows: 8 clients with their own files, 2 of them
    sign-flipping, CWTM: the test file's accuracy rises from chance to >= 0.9. A client file
    with a label out of range stops the CLI with exit 2 naming the file."""
    means = np.random.default_rng(0).choice([-1.0, 1.0], size=(3, 12))
    for name, seed, n in [*((f"c{i}", i, 150) for i in range(8)), ("test", 99, 600)]:
        draws = np.random.default_rng(seed)
        y = draws.integers(0, 3, n)
        x = (means[y] + draws.standard_normal((n, 12))).astype(np.float32)
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    config = {
        "seed": 1,
        "rounds": 150,
        "eval_every": 50,
        "n_clients": 8,
        "f": 2,
        "model": "logreg?inputs=12",
        "data": {
            "dataset": "local?classes=3",
            "files": str(tmp_path / "c{id}.npz"),
            "test": str(tmp_path / "test.npz"),
        },
        "zo": {"nu": 8, "mu": 0.001, "lr": 0.01, "batch_size": 32},
        "aggregator": {"name": "cwtm"},
        "attack": {"name": "sf"},
    }
    result = simulate(build_config(config), weights=tmp_path)
    assert result["history"][0]["round"] == 50
    assert result["final_test_accuracy"] >= 0.9
    # cyber0-evaluate scores the saved model on the test file as the simulator did
    argv = ["--weights", str(tmp_path / "zo.safetensors"), "--data", str(tmp_path / "test.npz")]
    assert evaluate.main(argv) == 0
    scored = json.loads(capsys.readouterr().out)
    assert (scored["accuracy"], scored["loss"]) == (
        result["final_test_accuracy"],
        result["final_test_loss"],
    )
    np.savez(tmp_path / "c5.npz", x=np.zeros((4, 12), np.float32), y=np.array([0, 1, 2, 3]))
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config))
    assert main(["--config", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "c5.npz: y[3] = 3 is not a label in [0, 3)" in capsys.readouterr().err
