"""The simulator: reproducibility, the results file, config validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cyber0.common.config import ConfigError
from cyber0.common.simulator import build_config, main, run_first_order, run_zo, simulate

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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nu_typo": 3}, r"nu_typo: unknown key"),
        ({"zo": {"nuu": 3}}, r"zo\.nuu: unknown key"),
        ({"n_clients": 4, "f": 2}, r"f: needs n_clients > 2f; got n_clients=4, f=2"),
        ({"zo": {"nu": 0}}, r"zo: nu must be >= 1"),
        ({"zo": {"mu": 0.0}}, r"zo: mu must be > 0"),
        ({"zo": {"nu": "many"}}, r"zo\.nu: expected an integer"),
        ({"aggregator": {"name": "trimmed"}}, r"aggregator: .*trimmed"),
        ({"attack": {"name": "nope"}}, r"attack: .*nope"),
        ({"attack": {"mode": "psychic"}}, r"attack\.mode: must be one of"),
        ({"data": {"alpha": -1.0}}, r"data\.alpha: must be > 0"),
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
