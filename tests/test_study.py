"""The MNIST study's validation split and its report generator."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from cyber0.common.data import (
    Partition,
    ShardSpec,
    dirichlet_partition,
    load_mnist,
    shard_indices,
    validation_split,
)
from cyber0.common.simulator import build_config, eval_set, simulate

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _module(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


report = _module("report_mnist")
mnist_grid = _module("mnist_grid")
mnist_probes = _module("mnist_probes")
mnist_runs = _module("mnist_runs")
mnist_seeds = _module("mnist_seeds")
mnist_sweep = _module("mnist_sweep")


# ----------------------------------------------------------------------------------------------
# Validation split


def test_validation_split_is_a_deterministic_partition() -> None:
    pool, held = validation_split(1000, 100)
    assert held.numel() == 100 and pool.numel() == 900
    assert torch.equal(torch.cat([pool, held]).sort().values, torch.arange(1000))
    assert torch.equal(pool, pool.sort().values) and torch.equal(held, held.sort().values)
    again_pool, again_held = validation_split(1000, 100)
    assert torch.equal(held, again_held) and torch.equal(pool, again_pool)
    assert not torch.equal(held, validation_split(1000, 100, seed=1)[1])
    # the held-out set is the tail of one fixed permutation: a larger split contains a smaller one
    assert set(held.tolist()) <= set(validation_split(1000, 200)[1].tolist())
    zero_pool, zero_held = validation_split(10, 0)
    assert torch.equal(zero_pool, torch.arange(10)) and zero_held.numel() == 0
    with pytest.raises(ValueError, match="validation must be in"):
        validation_split(10, 10)


@pytest.mark.parametrize("partition", ["dirichlet", "iid"])
def test_held_out_examples_are_in_no_shard(partition: Partition) -> None:
    n, validation = 20, 10_000
    shards = [
        shard_indices(
            ShardSpec(
                n_clients=n,
                client_index=i,
                seed=0,
                partition=partition,
                alpha=1.0,
                validation=validation,
            )
        )
        for i in range(n)
    ]
    _, held = validation_split(60_000, validation)
    joined = torch.cat(shards)
    assert joined.numel() == 60_000 - validation  # shards are disjoint and cover the pool
    assert torch.equal(torch.cat([joined, held]).sort().values, torch.arange(60_000))
    assert not set(held.tolist()) & set(joined.tolist())


@pytest.mark.parametrize("partition", ["dirichlet", "iid"])
def test_whole_shard_batch_holds_every_sweep_shard(partition: Partition) -> None:
    """The sweep's WHOLE_SHARD batch draws each client's whole shard (the sweep's seed and
    validation split, n=20, α=1), so its honest spread is the clients' data alone."""
    study = _module("study_mnist")
    sizes = _shard_sizes(study.SEED, partition, study.VALIDATION)
    assert max(sizes) <= study.WHOLE_SHARD
    assert max(sizes) > 2048  # the next batch below it leaves some clients sampling


def test_whole_shard_batch_holds_every_shard_of_the_whole_group() -> None:
    """Group ``whole`` runs the study's partitions (no validation split, α=1) at every seed it
    plans: WHOLE_SHARD is above each of their shards too."""
    study = _module("study_mnist")
    whole = [c for c in study.study_cells() if c.group == "whole"]
    assert {(c.alpha, c.partition, c.validation) for c in whole} == {(1.0, "dirichlet", 0)}
    largest = max(max(_shard_sizes(s, "dirichlet", 0)) for s in {c.seed for c in whole})
    assert 2048 < largest <= study.WHOLE_SHARD


def _shard_sizes(seed: int, partition: Partition, validation: int) -> list[int]:
    """The 20 clients' shard sizes at α=1."""
    return [
        shard_indices(
            ShardSpec(
                n_clients=20,
                client_index=i,
                seed=seed,
                partition=partition,
                alpha=1.0,
                validation=validation,
            )
        ).numel()
        for i in range(20)
    ]


def test_validation_zero_keeps_the_old_shards() -> None:
    spec = ShardSpec(n_clients=20, client_index=3, seed=0, partition="dirichlet", alpha=0.1)
    expected = dirichlet_partition(load_mnist().train_y, 20, 0.1, 0)[3]
    assert torch.equal(shard_indices(spec), expected)


def test_simulator_evaluates_on_the_validation_split() -> None:
    config: dict[str, Any] = {
        "rounds": 2,
        "eval_every": 1,
        "n_clients": 4,
        "f": 1,
        "data": {"validation": 500},
        "zo": {"nu": 2, "batch_size": 8},
        "attack": {"name": "none"},
    }
    built = build_config(config)
    x, y = eval_set(built)
    _, held = validation_split(60_000, 500)
    assert torch.equal(y, load_mnist().train_y[held]) and x.shape == (500, 784)
    result = simulate(built)
    assert result["eval_split"] == "validation"
    # accuracies are multiples of 1/500: measured on the 500 held-out examples
    assert all(
        abs(h["test_accuracy"] * 500 - round(h["test_accuracy"] * 500)) < 1e-6
        for h in result["history"]
    )
    assert simulate(build_config({**config, "data": {}}))["eval_split"] == "test"


# ----------------------------------------------------------------------------------------------
# The grid's cells


def test_cell_ids_are_unique_and_name_a_non_standard_budget() -> None:
    """Every planned cell has its own folder; a long cell's id is its grid cell's id plus
    ``-r<rounds>``, and that grid cell is planned too (the report pairs them)."""
    study = _module("study_mnist")
    cells = study.study_cells()
    ids = {c.id for c in cells}
    assert len(ids) == len(cells)
    long = [c for c in cells if c.group == "long"]
    assert long and all(c.rounds == study.LONG_ROUNDS for c in long)
    for cell in long:
        standard = replace(cell, rounds=study.ROUNDS[cell.nu])
        assert cell.id == f"{standard.id}-r{study.LONG_ROUNDS}" and standard.id in ids
    assert not any("-r" in c.id for c in cells if c.group != "long")
    colluding = [c for c in cells if c.group == "colluding"]
    assert colluding and all(c.config()["attack"]["mode"] == "colluding" for c in colluding)
    for cell in colluding:
        omniscient = replace(cell, mode="omniscient")
        assert "-col" in cell.id and cell.id.replace("-col", "") == omniscient.id
        assert omniscient.id in ids
    assert all(c.config()["attack"]["mode"] == "omniscient" for c in cells if c not in colluding)
    iid = [c for c in cells if c.config()["data"]["partition"] == "iid"]
    assert iid and all(c.group == "iid" and c.id.split("-")[1] == "iid" for c in iid)
    assert {c.method for c in iid} == {"zo", "first_order"}
    assert not any("iid" in c.id for c in cells if c not in iid)
    whole = [c for c in cells if c.zo_batch != study.ZO_BATCH]
    assert whole and all(c.group == "whole" and c.zo_batch == study.WHOLE_SHARD for c in whole)
    for cell in whole:  # the grid's cell of the same seed, named without the batch
        grid = replace(cell, zo_batch=study.ZO_BATCH)
        assert cell.id.replace(f"-b{study.WHOLE_SHARD}", "") == grid.id and grid.id in ids


# ----------------------------------------------------------------------------------------------
# Report generator


def _results(
    method: str, accuracies: list[float], per_round: int, every: int = 10, **over: Any
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data": {
            "partition": over.get("partition", "dirichlet"),
            "alpha": over.get("alpha", 1.0),
            "validation": 0,
        },
        "zo": {
            "nu": over.get("nu", 64),
            "local_steps": over.get("k", 1),
            "variant": over.get("variant", "unbiased"),
            "lr": over.get("lr", 0.002),
            "mu": 0.001,
            "batch_size": over.get("batch", 32),
        },
        "first_order": {"lr": 0.1, "batch_size": 32},
        "aggregator": {"name": over.get("aggregator", "cwtm")},
        "attack": {"name": over.get("attack", "none"), "mode": over.get("mode", "omniscient")},
        "methods": [method],
        "seed": over.get("seed", 0),
        "loss": over.get("loss", "cross_entropy"),
    }
    history = [
        {
            "round": every * (i + 1),
            "test_accuracy": a,
            "test_loss": 1.0,
            "uplink_bytes_cum": per_round * every * (i + 1),
        }
        for i, a in enumerate(accuracies)
    ]
    return {
        "config": cfg,
        "rounds": every * len(accuracies),
        "eval_split": over.get("eval_split", "test"),
        "history": history,
        "final_test_accuracy": accuracies[-1],
        "uplink_bytes_per_client_round": per_round,
        "wall_seconds": 1.5,
    }


def _write(root: Path, cell: str, data: dict[str, Any]) -> None:
    (root / cell).mkdir(parents=True)
    (root / cell / "results.json").write_text(json.dumps(data))


def _write_zo(root: Path, cell: str, acc: float, **over: Any) -> None:
    """A CYBER-0 cell ending at ``acc`` (256 B a round), named like the study's: ``cell``, plus
    ``-s<seed>`` for a seed other than 0."""
    seed = over.get("seed", 0)
    _write(root, cell + ("" if seed == 0 else f"-s{seed}"), _results("zo", [0.7, acc], 256, **over))


def test_bytes_to_target_and_not_reached() -> None:
    history = _results("zo", [0.5, 0.84, 0.85, 0.9], 256)["history"]
    assert mnist_runs.bytes_to(history) == 30 * 256  # the first evaluation at >= 0.85
    assert mnist_runs.bytes_to(history, 0.95) is None
    assert mnist_runs.human_bytes(None) == "not reached"
    assert mnist_runs.human_bytes(7680) == "7.7 kB"


def test_the_overview_names_the_blocks_where_every_attack_stays_within(tmp_path: Path) -> None:
    """NNM+CWTM with K=5 (biased) within 3 points under all 7 attacks at seeds 0 and 1: named
    as a block where the target holds; CWTM in the same block, 4 points under TMA at seed 1
    only, is not, and its row gives that attack's mean and worst drop."""
    attacks = mnist_runs.ATTACKS
    for agg, tag in (("nnm+cwtm", "nnm_cwtm"), ("cwtm", "cwtm")):
        for seed in (0, 1):
            for attack in attacks:
                acc = 0.92 if attack == "none" else 0.90
                if agg == "cwtm" and attack == "tma" and seed == 1:
                    acc = 0.88
                _write_zo(
                    tmp_path,
                    f"zo-a1.0-nu64-k5b-{tag}-{attack}",
                    acc,
                    aggregator=agg,
                    attack=attack,
                    seed=seed,
                    k=5,
                    variant="biased",
                )
    lines = mnist_grid.setting_overview(mnist_runs.Study(mnist_runs.load_runs(tmp_path)))
    assert (
        "| CYBER-0, α=1.0, ν=64, K=5 (biased) | 6 of 7 · seeds 0, 1 · beyond: tma +3.00 "
        "(worst +4.00) | 7 of 7 · seeds 0, 1 |"
    ) in lines
    assert lines[-1] == (
        "Every attack within 3 points at every seed: nnm+cwtm at CYBER-0, α=1.0, ν=64, K=5 "
        "(biased) (seeds 0, 1). A biased block with K local steps sends the ν scalars a round "
        "of K=1."
    )


def test_report_from_synthetic_results(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results, "zo-a1.0-nu64-k1-cwtm-none", _results("zo", [0.7, 0.86, 0.91], 256))
    _write(results, "zo-a1.0-nu64-k1-cwtm-sf", _results("zo", [0.6, 0.8, 0.84], 256, attack="sf"))
    _write(results, "fo-a1.0-cwtm-none", _results("first_order", [0.86, 0.9], 31400, every=2))
    _write(results, "fo-a1.0-cwtm-sf", _results("first_order", [0.8, 0.9], 31400, 2, attack="sf"))
    _write(results, "sweep/zo-x", _results("zo", [0.8, 0.88], 256, eval_split="validation"))
    # seed 1 of the target block: the seed-0 table is unchanged, the spread table shows both
    _write(results, "zo-a1.0-nu64-k1-cwtm-none-s1", _results("zo", [0.7, 0.9], 256, seed=1))
    _write(
        results, "zo-a1.0-nu64-k1-cwtm-sf-s1", _results("zo", [0.8, 0.88], 256, attack="sf", seed=1)
    )
    # alie passes at seed 0 (2 points) but not on average (5 at seed 1): flagged as not robust
    _write(results, "zo-a1.0-nu64-k1-cwtm-alie", _results("zo", [0.8, 0.89], 256, attack="alie"))
    _write(
        results,
        "zo-a1.0-nu64-k1-cwtm-alie-s1",
        _results("zo", [0.8, 0.85], 256, attack="alie", seed=1),
    )
    # the long group: sf's 7-point gap closes to 1 in 10 more rounds; the shared first rounds
    # match the standard runs (first evaluations 0.7 and 0.6, as above)
    _write(results, "zo-a1.0-nu64-k1-cwtm-none-r60", _results("zo", [0.7, 0.86, 0.91, 0.92], 256))
    _write(
        results,
        "zo-a1.0-nu64-k1-cwtm-sf-r60",
        _results("zo", [0.6, 0.8, 0.84, 0.91], 256, attack="sf"),
    )
    # colluding attackers: their own table, the omniscient sf run stays in the seed-0 table
    _write(
        results,
        "zo-a1.0-nu64-k1-cwtm-sf-col",
        _results("zo", [0.7, 0.85, 0.9], 256, attack="sf", mode="colluding"),
    )
    # a block other than ν=64, K=1 at α=0.1: read with the other blocks, not the α=0.1 section
    _write(
        results, "zo-a0.1-nu1-k1-cwtm-none", _results("zo", [0.8, 0.85, 0.9], 4, alpha=0.1, nu=1)
    )
    _write(
        results,
        "zo-a0.1-nu1-k1-cwtm-sf",
        _results("zo", [0.7, 0.8, 0.82], 4, alpha=0.1, nu=1, attack="sf"),
    )
    # NNM+CWTM under SF at K=1 (2 and 6 points at seeds 0 and 1) and at K=5 biased (1 and 2)
    for k, variant, tag, accs in (
        (1, "unbiased", "k1", {0: (0.90, 0.88), 1: (0.90, 0.84)}),
        (5, "biased", "k5b", {0: (0.92, 0.91), 1: (0.92, 0.90)}),
        (5, "unbiased", "k5u", {0: (0.93, 0.915), 1: (0.92, 0.885)}),
    ):
        for seed, (none, sf) in accs.items():
            for attack, acc in (("none", none), ("sf", sf)):
                _write_zo(
                    results,
                    f"zo-a1.0-nu64-{tag}-nnm_cwtm-{attack}",
                    acc,
                    aggregator="nnm+cwtm",
                    attack=attack,
                    seed=seed,
                    k=k,
                    variant=variant,
                )
    # CWTM at K=5 (biased) under SF: 1 and 2.5 points at seeds 0 and 1 (K=1: 7 and 2)
    for seed, (none, sf) in {0: (0.92, 0.91), 1: (0.92, 0.895)}.items():
        for attack, acc in (("none", none), ("sf", sf)):
            _write_zo(
                results,
                f"zo-a1.0-nu64-k5b-cwtm-{attack}",
                acc,
                attack=attack,
                seed=seed,
                k=5,
                variant="biased",
            )
    (tmp_path / "probe").mkdir()
    for attack, k, projection, norm in (
        ("sf", 1, [0.5, 0.5, 0.25, 0.0], 2.0),
        ("none", 1, [0.5, 0.5, 0.5, 0.5], 1.0),
        ("sf", 5, [0.5, 0.5, 0.1, 0.1], 5.0),
        ("none", 5, [0.5, 0.5, 0.5, 0.5], 4.0),
    ):
        cell = f"zo-a1.0-nu64-k{k}{'b' if k > 1 else ''}-cwtm-{attack}-r4"
        probe = {
            "cell": cell,
            "config": _module("study_mnist")
            .Cell("zo", 1.0, "cwtm", attack, k=k, variant="biased" if k > 1 else "unbiased")
            .config(),
            "cosine": [1.0, 0.5, -0.25, 0.5],
            "projection": projection,
            "spread": [1.0, 2.0, 3.0, 4.0],
            "honest_norm": [norm] * 4,
            "history": [{"round": 2, "test_accuracy": 0.8}, {"round": 4, "test_accuracy": 0.7}],
        }
        if attack == "sf":  # logged by newer probes only: the no-attack ones go without
            probe["coordinates"] = [20.0] * 4 if k == 1 else [10.0, 10.0, 8.0, 6.0]
            probe["clear_share"] = [0.05] * 4 if k == 1 else [0.1, 0.1, 0.2, 0.4]
        (tmp_path / "probe" / f"{cell}.json").write_text(json.dumps(probe))
    doc, figures = tmp_path / "docs" / "results.md", tmp_path / "docs" / "figures"
    assert (
        report.main(["--results", str(results), "--doc", str(doc), "--figures", str(figures)]) == 0
    )
    text = doc.read_text()
    rows = {
        line.split("|")[3].strip(): line
        for line in text.splitlines()
        if line.startswith("| α=1.0, ν=64, K=1 | cwtm |")
    }
    # none: ZO reaches 85% at round 20 -> 20 * 256 = 5120 B; first-order at round 2 -> 62.8 kB
    assert "| 5.1 kB | 20 | 62.8 kB | 2 | 12.3× |" in rows["none"]
    # sf: ZO never reaches 85%; first-order reaches it at round 4
    assert "| not reached | — | 125.6 kB | 4 | — |" in rows["sf"]
    assert "| CYBER-0 cwtm | 91.00 | 84.00 |" in text
    assert "**not met**" in text  # sf drops 7 points, more than 3
    assert "| rule | attack | test acc. (%), seeds 0 / 1 | drop vs" in text  # the seeds that ran
    assert "| cwtm | none | 91.00 / 90.00 |  | spread 1.00 pts |  |" in text
    assert "| cwtm | sf | 84.00 / 88.00 | +7.00 / +2.00 | +4.50 (2 seeds) | no |" in text
    assert "Beyond it on average: cwtm sf, cwtm alie, nnm+cwtm sf." in text
    assert "beyond 3 points on average over the seeds: cwtm alie, nnm+cwtm sf;" in text
    # K=5 (biased) across seeds: its own table, and the mean drops beside K=1's
    assert "SF drop by seed: +2.00 / +6.00 points" in text
    assert "| nnm+cwtm | sf | 91.00 / 90.00 | +1.00 / +2.00 | +1.50 (2 seeds) | yes |" in text
    assert "K=1 → K=5 (nnm+cwtm, points; the worst seed in brackets): sf +4.00 → +1.50 " in text
    assert "(max +6.00 → +2.00, 2 seeds)." in text
    assert "nnm+cwtm (1 of 7 attacks, seeds 0, 1; 2 runs): every run within." in text
    assert "cwtm (1 of 7 attacks, seeds 0, 1; 2 runs): every run within;" in text
    assert "K=1 → K=5 (cwtm, points; the worst seed in brackets): sf +4.50 → +1.75 " in text
    assert "| cwtm | sf | 91.00 / 89.50 | +1.00 / +2.50 | +1.75 (2 seeds) | yes |" in text
    # every α=1 block against the target's test: attacks within at every seed, the others
    assert (
        "| CYBER-0, α=1.0, ν=64, K=1 | 0 of 2 · seeds 0, 1 · beyond: sf +4.50 (worst +7.00), "
        "alie +3.50 (worst +5.00) | 0 of 1 · seeds 0, 1 · beyond: sf +4.00 (worst +6.00) |"
    ) in text
    assert (
        "| CYBER-0, α=1.0, ν=64, K=5 (biased) | 1 of 1 · seeds 0, 1 | 1 of 1 · seeds 0, 1 |" in text
    )
    assert "Every attack within 3 points at every seed: in no block." in text  # 1 of 7 ran
    # NNM+CWTM at K=5 unbiased across seeds: its own seed table (1.5 and 3.5 points)
    assert "| nnm+cwtm | sf | 91.50 / 88.50 | +1.50 / +3.50 | +2.50 (2 seeds) | no |" in text
    assert "- `zo-a1.0-nu64-k1-cwtm-{none,sf,alie}-s1` (20)" in text  # the inventory
    assert "| CYBER-0 ν=64 | none | 0.002 | 0.001 | 32 | 20 |" in text  # the sweep table
    assert (figures / "mnist-a1.0-cwtm.png").stat().st_size > 10_000
    assert "| cwtm | sf | 0 | 84.00 | 84.00 | 91.00 | +7.00 / +7.00 / +1.00 | yes |" in text
    assert "within 3 points at the end: cwtm sf +7.00 → +1.00; beyond: none." in text
    assert "the gap ends within 3 points for cwtm sf +7.00 → +1.00 (a slower run" in text
    assert "(6 in all) the accuracies are equal in every run" in text
    assert "- `zo-a1.0-nu64-k1-cwtm-{none,sf}-r60` (40)" in text
    # the probe, one round per stretch: round 3 has a negative cosine, accuracy from round 2
    assert (
        "| `zo-a1.0-nu64-k1-cwtm-sf-r4` | 3–3 | +0.250 | -0.25 | 100 | 3.00 | +0.5000 | 80.00 |"
        in text
    )
    # the probes at K=1 and K=5 side by side over rounds 3-4: along = share x |mu_h|, and its
    # fraction of the same K's no-attack run (K=1: 0.25 / 0.5; K=5: 0.5 / 2.0)
    assert (
        "| cwtm | sf | 0 | K=1 | 3–4 | 12.5% | +0.12 | 50 | 4.00 | 2.000 | +0.2500 | 2.000 | 50% "
        "| 20.0 | 5.0% |" in text
    )
    assert (
        "| cwtm | sf | 0 | K=5 (biased) | 3–4 | 10.0% | +0.12 | 50 | 4.00 | 5.000 | +0.5000 "
        "| 2.000 | 25% | 7.0 | 30.0% |" in text
    )
    assert "| cwtm | none | 0 | K=1 | 3–4 | 50.0% | +0.12 | 50 | 4.00 | 1.000 | +0.5000 |" in text
    assert (
        "- cwtm sf, seed 0, K=1 → K=5 (biased): the aggregate moves 2.0× as far along μ_h a "
        "round (+0.2500 → +0.5000; 50% → 25% of the no-attack pace) in a step of median size "
        "|a| 2.00 → 2.00; it keeps 12.5% → 10.0% of "
        "the honest mean, with a negative cosine in 50% → 50% of the rounds, while |μ_h| goes "
        "2.00 → 5.00 and the honest spread against it stays (4.00 → 4.00); μ_h's energy sits "
        "in 20.0 → 7.0 effective coordinates, 5.0% → 30.0% of it where the honest mean stands "
        "out of the honest spread." in text
    )
    assert (
        "In the 1 attacked setting probed for it, the share of |μ_h|² in coordinates where the "
        "honest mean stands out of the honest spread grows with K (bullets above)" in text
    )
    assert "`zo-a1.0-nu64-k1-cwtm-sf-r4` 12.5% over rounds 3–4;" in text
    assert (
        "- CYBER-0, α=0.1, ν=1, K=1, cwtm: no attack 90.00% after 30 rounds (+5.00 over its last "
        "fifth); 0 of 1 attacks within 3 points: sf -8.00 (round 20)" in text
    )
    # the overview: no-attack accuracy · attacks within 3 points · the costliest attack
    assert "| α=1.0, ν=64, K=1 | 91.00 · 1/2 · sf -7.00 | 90.00 · 1/1 · sf -2.00 | — | — |" in text
    assert "| α=1.0, ν=64, K=5 (biased) | 92.00 · 1/1 · sf -1.00 | 92.00 · 1/1 · sf -1.00 |" in text
    assert "| α=0.1, ν=1, K=1 | 90.00 · 0/1 · sf -8.00 | — | — | — |" in text
    assert "No α=0.1 cell at ν=64, K=1 has run." in text
    assert "| cwtm | sf | 84.00 | +7.00 | 90.00 | +1.00 | yes |" in text
    assert (
        "Colluding attackers within 3 points of the no-attack run: cwtm sf; beyond: none." in text
    )
    # the colluding sf drop (1) is 6 points below the omniscient one (7), more than the 5 the
    # omniscient drop moves over seeds (7 and 2)
    assert "over seeds (*Seed spread*) for: cwtm sf (+7.00 → +1.00) weaker" in text
    assert "Beyond 3 points in both modes: none." in text
    assert "mean drop is +7.00 points omniscient and +1.00 colluding" in text
    assert "- `zo-a1.0-nu64-k1-cwtm-{sf}-col` (30)" in text


def test_colluding_attackers_against_the_k5_block_by_seed(tmp_path: Path) -> None:
    """Each colluding run's drop against the same seed's (omniscient) no-attack run, beside the
    omniscient attack's; an attack beyond 3 points at one seed is beyond."""
    finals = {  # (attack, mode) -> final accuracy at seeds 0 and 1
        ("none", "omniscient"): (0.92, 0.92),
        ("sf", "omniscient"): (0.91, 0.90),
        ("sf", "colluding"): (0.90, 0.88),
        ("tma", "omniscient"): (0.91, 0.91),
        ("tma", "colluding"): (0.915, 0.91),
    }
    for (attack, mode), by_seed in finals.items():
        for seed, acc in enumerate(by_seed):
            _write_zo(
                tmp_path,
                f"zo-a1.0-nu64-k5b-nnm_cwtm-{attack}{'-col' if mode == 'colluding' else ''}",
                acc,
                aggregator="nnm+cwtm",
                attack=attack,
                mode=mode,
                seed=seed,
                k=5,
                variant="biased",
            )
    lines = mnist_seeds.colluding_k5_section(mnist_runs.Study(mnist_runs.load_runs(tmp_path)))
    assert "| nnm+cwtm | sf | +1.00 / +2.00 | +2.00 / +4.00 | +3.00 | no |" in lines
    assert "| nnm+cwtm | tma | +1.00 / +1.00 | +0.50 / +1.00 | +0.75 | yes |" in lines
    assert lines[-1] == (
        "Colluding attackers against nnm+cwtm at CYBER-0, α=1.0, ν=64, K=5 (biased), within 3 "
        "points at every seed: tma +0.75 (worst +1.00); beyond at some seed: sf +3.00 (worst "
        "+4.00)."
    )
    assert mnist_seeds.colluding_k5_section(mnist_runs.Study([])) == ["Not run."]


def test_iid_runs_have_their_own_table_beside_the_target_block(tmp_path: Path) -> None:
    """Runs on IID shards (config ``alpha`` 1.0, as the simulator ignores it there) stay out of
    the α=1 tables; their table sets each drop beside the α=1 one and says which α=1 misses
    close without the label skew."""
    finals = {  # (partition, attack) -> CWTM's final accuracy at ν=64, K=1
        ("dirichlet", "none"): 0.91,
        ("dirichlet", "sf"): 0.87,
        ("dirichlet", "tma"): 0.85,
        ("iid", "none"): 0.92,
        ("iid", "sf"): 0.91,
        ("iid", "tma"): 0.88,
    }
    at_seed_1 = {
        ("dirichlet", "none"): 0.90,
        ("dirichlet", "sf"): 0.87,
        ("dirichlet", "tma"): 0.84,
        ("iid", "none"): 0.92,
        ("iid", "sf"): 0.90,
        ("iid", "tma"): 0.86,
    }
    for seed, accuracies in ((0, finals), (1, at_seed_1)):
        for (partition, attack), acc in accuracies.items():
            split = "iid" if partition == "iid" else "a1.0"
            _write_zo(
                tmp_path,
                f"zo-{split}-nu64-k1-cwtm-{attack}",
                acc,
                attack=attack,
                partition=partition,
                seed=seed,
            )
    for attack, acc in (("none", 0.93), ("tma", 0.80)):
        _write(
            tmp_path,
            f"fo-iid-cwtm-{attack}",
            _results("first_order", [0.9, acc], 31400, attack=attack, partition="iid"),
        )
    for attack, acc in (("none", 0.92), ("tma", 0.40)):
        _write(
            tmp_path,
            f"fo-a1.0-cwtm-{attack}",
            _results("first_order", [0.9, acc], 31400, attack=attack),
        )
    study = mnist_runs.Study(mnist_runs.load_runs(tmp_path))
    none = study.get(mnist_runs.TARGET_BLOCK, "cwtm", "none")
    assert none is not None and none.final == 0.91  # not the IID run of the same config α
    assert mnist_seeds.iid_reading(study) == (
        " On IID shards, where the honest spread is minibatch noise alone, CWTM under TMA "
        "loses 5.00 points on average over seeds 0, 1 against 6.00 at α=1 (*Without label "
        "skew*); first-order CWTM loses 13.00 there against 52.00 at α=1 (seed 0): at the study's "
        "batch most of the gap TMA opens in CYBER-0 is there without the label skew, which adds "
        "1.00 points to it."
    )
    assert len(study.iid) == 8 and len(study.cells) == 5  # 3 ZO and 2 first-order at α=1
    lines = mnist_seeds.iid_section(study)
    assert "| cwtm | none | 91.00 |  | 92.00 |  | 93.00 |  |" in lines
    assert "| cwtm | sf | 87.00 | +4.00 | 91.00 | +1.00 | — |  |" in lines
    assert "| cwtm | tma | 85.00 | +6.00 | 88.00 | +4.00 | 80.00 | +13.00 |" in lines
    assert (
        "CYBER-0 on IID shards, within 3 points of its no-attack run: cwtm sf; beyond: cwtm tma."
        in lines
    )
    assert (
        "Beyond 3 points at α=1 and within on IID shards (seed 0 on both sides): cwtm sf "
        "(+4.00 → +1.00); beyond on both: cwtm tma (+6.00 → +4.00)." in lines
    )
    assert lines[-1] == (
        "cwtm on IID shards at seeds 0, 1: within 3 points at every seed: sf; the others: "
        "tma +5.00 (worst +6.00). Mean drop over the seeds both ran, α=1 → IID (points): "
        "sf +3.50 → +1.50; tma +6.00 → +5.00."
    )
    assert mnist_seeds.iid_verdict(study) == (
        "The same test on IID shards, without label skew (*Without label skew*): cwtm (1 of 2 "
        "attacks within at every seed, seeds 0, 1; beyond: tma +5.00 (worst +6.00))."
    )
    assert mnist_seeds.iid_section(mnist_runs.Study([])) == ["Not run."]
    assert mnist_seeds.iid_verdict(mnist_runs.Study([])) == ""


def test_iid_runs_at_k5_are_read_against_the_k5_block(tmp_path: Path) -> None:
    """CWTM with K=5 (biased) on IID shards is tested and set beside the α=1 K=5 block, not
    the target block (K=1), in the verdict and the per-seed lines."""
    finals = {  # (partition, K, attack) -> final accuracy at seeds 0 and 1
        ("dirichlet", 1, "none"): (0.91, 0.91),
        ("dirichlet", 1, "tma"): (0.80, 0.80),
        ("dirichlet", 5, "none"): (0.92, 0.92),
        ("dirichlet", 5, "tma"): (0.86, 0.87),
        ("iid", 1, "none"): (0.92, 0.92),
        ("iid", 1, "tma"): (0.88, 0.87),
        ("iid", 5, "none"): (0.93, 0.93),
        ("iid", 5, "tma"): (0.91, 0.89),
    }
    for (partition, k, attack), by_seed in finals.items():
        for seed, acc in enumerate(by_seed):
            split = "iid" if partition == "iid" else "a1.0"
            kind = "k1" if k == 1 else "k5b"
            _write_zo(
                tmp_path,
                f"zo-{split}-nu64-{kind}-cwtm-{attack}",
                acc,
                attack=attack,
                partition=partition,
                seed=seed,
                k=k,
                variant="biased",
            )
    study = mnist_runs.Study(mnist_runs.load_runs(tmp_path))
    assert len(study.iid) == 8
    # K=5: IID drops 2 and 4 points (mean 3, worst 4) against α=1 K=5's 6 and 5 (mean 5.5);
    # K=1: IID 4 and 5 (mean 4.5) against 11 at α=1
    assert mnist_seeds.iid_verdict(study) == (
        "The same test on IID shards, without label skew (*Without label skew*): cwtm (0 of 1 "
        "attacks within at every seed, seeds 0, 1; beyond: tma +4.50 (worst +5.00)); cwtm at "
        "K=5 biased (0 of 1 attacks within at every seed, seeds 0, 1; beyond: tma +3.00 (worst "
        "+4.00))."
    )
    assert mnist_seeds.iid_reading(study) == (
        " On IID shards, where the honest spread is minibatch noise alone, CWTM under TMA "
        "loses 4.50 points on average over seeds 0, 1 against 11.00 at α=1 (*Without label "
        "skew*): most of the gap TMA opens in CYBER-0 comes with the label skew. With K=5 "
        "(biased) it loses 3.00 points on IID shards against 5.50 at α=1 (seeds 0, 1): the "
        "local steps cut the part without skew from 4.50 to 3.00 points, and the label skew "
        "adds 2.50 where it added 6.50 at K=1."
    )
    assert mnist_seeds.iid_section(study)[-1] == (
        "cwtm at K=5 biased on IID shards at seeds 0, 1: within 3 points at every seed: "
        "none; the others: tma +3.00 (worst +4.00). Mean drop over the seeds both ran, α=1 → "
        "IID (points): tma +5.50 → +3.00."
    )


def test_whole_shard_runs_are_tested_by_seed_beside_the_grids_batch(tmp_path: Path) -> None:
    """CWTM's whole-shard runs (group ``whole``) stay out of the target block's tables, are
    tested by seed against their own no-attack runs, and set each attack's mean drop beside
    the grid batch's over the same seeds."""
    whole = _module("study_mnist").WHOLE_SHARD
    finals = {  # (batch, attack) -> final accuracy at seeds 0 and 1
        (128, "none"): (0.91, 0.92),
        (128, "tma"): (0.85, 0.86),
        (128, "alie"): (0.90, 0.91),
        (whole, "none"): (0.915, 0.905),
        (whole, "tma"): (0.89, 0.87),
        (whole, "alie"): (0.91, 0.90),
    }
    for (batch, attack), by_seed in finals.items():
        for seed, acc in enumerate(by_seed):
            suffix = "" if batch == 128 else f"-b{whole}"
            _write_zo(
                tmp_path,
                f"zo-a1.0-nu64-k1-cwtm-{attack}{suffix}",
                acc,
                attack=attack,
                batch=batch,
                seed=seed,
            )
    study = mnist_runs.Study(mnist_runs.load_runs(tmp_path))
    assert len(study.whole) == 6 and len(study.cells) == 3 and len(study.spread) == 3
    assert study.get(mnist_runs.TARGET_BLOCK, "cwtm", "tma").final == 0.85
    # TMA: 2.5 and 3.5 points (mean 3.0, worst 3.5); ALIE 0.5 at both seeds
    assert mnist_seeds.whole_verdict(study) == (
        f"The same test with every client's whole shard a step (batch {whole}, the validation "
        "sweep's closest batch to the target; *Every client's whole shard*): cwtm (1 of 2 "
        "attacks within at every seed, seeds 0, 1; beyond: tma +3.00 (worst +3.50))."
    )
    lines = mnist_seeds.whole_section(study)
    assert "| tma | 89.00 / 87.00 | +2.50 / +3.50 | +3.00 (seeds 0, 1) | +6.00 → +3.00 | no |" in (
        lines
    )
    assert (
        "| alie | 91.00 / 90.00 | +0.50 / +0.50 | +0.50 (seeds 0, 1) | +1.00 → +0.50 | yes |"
        in (lines)
    )
    assert lines[-1].startswith("Without an attack: 91.50 / 90.50% (at least 90.00%).")
    assert mnist_seeds.whole_reading(study) == (
        " On the test split with every client's whole shard a step (*Every client's whole "
        "shard*), CWTM under TMA loses 3.00 points on average over seeds 0, 1 (worst 3.50) "
        "against 6.00 at batch 128; within 3 points at 1 of 2 seeds: with no minibatch noise "
        "left, what the clients' different data leave of the gap is enough to miss the target, "
        "so no batch makes CWTM alone hold TMA off at every seed under this label skew."
    )


def test_skew_table_sets_each_block_at_alpha_1_beside_alpha_0_1(tmp_path: Path) -> None:
    """Mean drop over the attacks that ran, and how many stay within 3 points, per α; a block
    or rule missing at one α shows a dash."""
    results = tmp_path / "results"
    finals = {  # (α, attack) -> CWTM's final accuracy at ν=64, K=1
        (1.0, "none"): 0.91,
        (1.0, "sf"): 0.89,
        (1.0, "foe"): 0.86,
        (0.1, "none"): 0.90,
        (0.1, "sf"): 0.70,
    }
    for (alpha, attack), acc in finals.items():
        _write(
            results,
            f"zo-a{alpha}-nu64-k1-cwtm-{attack}",
            _results("zo", [acc], 256, alpha=alpha, attack=attack),
        )
    _write(results, "zo-a1.0-nu1-k1-cwtm-none", _results("zo", [0.88], 16, nu=1))
    study = mnist_runs.Study(mnist_runs.load_runs(results))
    rows = [line for line in mnist_grid.skew_by_block(study) if line.startswith("| ν=")]
    # α=1: drops 2 and 5 -> mean +3.5, one within; α=0.1: drop 20 -> +20.0, none within
    assert rows[0] == "| ν=64, K=1 | +3.5 (1/2) → +20.0 (0/1) | — → — | — → — | — → — |"
    assert rows[1] == "| ν=1, K=1 | — → — | — → — | — → — | — → — |"  # no attacked run


def _write_rate_run(
    results: Path,
    lr: float,
    attack: str,
    acc: float,
    loss: str = "cross_entropy",
    suffix: str = "",
    aggregator: str = "cwtm",
    batch: int = 128,
    partition: str = "dirichlet",
    seed: int = 0,
) -> None:
    """A worst-case sweep run (ν=64, K=1, 1,000 rounds, validation; batch 128, CWTM,
    Dirichlet shards and seed 0 unless said) ending at ``acc``."""
    _write(
        results,
        f"sweep/zo-nu64-lr{lr:g}-mu0.001-b{batch}-r1000-{attack}{suffix}",
        _results(
            "zo",
            [0.5, acc],
            256,
            500,
            attack=attack,
            lr=lr,
            batch=batch,
            eval_split="validation",
            loss=loss,
            aggregator=aggregator,
            partition=partition,
            seed=seed,
        ),
    )


def test_iid_batch_runs_stay_out_of_the_sweep_and_set_their_drops_beside_alpha_1(
    tmp_path: Path,
) -> None:
    """The batch comparison on IID shards is read beside the same batches at α=1, and none of
    its runs enters the α=1 sweep (rate choice, sweep table)."""
    for partition, suffix, accuracies in (
        ("dirichlet", "", {128: (0.90, 0.84), 512: (0.91, 0.86)}),
        ("iid", "-iid", {128: (0.92, 0.87), 512: (0.92, 0.90)}),
    ):
        for batch, (none, tma) in accuracies.items():
            for attack, acc in (("none", none), ("tma", tma)):
                _write_rate_run(
                    tmp_path, 0.004, attack, acc, suffix=suffix, batch=batch, partition=partition
                )
    study = mnist_runs.Study(mnist_runs.load_runs(tmp_path))
    assert len(study.sweep) == 4 and len(study.iid_sweep) == 4
    assert all(r.partition == "dirichlet" for r in study.sweep)
    assert [r.final for r in mnist_sweep.worst_case_runs(study.sweep)[0.004]] == [0.90, 0.84]
    assert mnist_sweep.iid_batch_findings(study) == [
        "- the same batches on IID shards (group `sweep-batch`, `-iid`), under TMA: batch 128: "
        "87.00%; batch 512: 90.00%. CWTM's drop against the same batch's no-attack run, batch "
        "128 → 512: α=1 6.00 → 5.00, IID 5.00 → 2.00 points: batch 512 brings the drop within "
        "3 points without the label skew but not with it, so what a larger batch leaves at α=1 "
        "is the skew's."
    ]


def test_whole_shard_batch_reads_as_the_drop_without_minibatch_noise(tmp_path: Path) -> None:
    """When the widest batch of the comparison is every client's whole shard, the finding says
    what is left at α=1 without any minibatch noise, and whether that is within 3 points."""
    whole = _module("study_mnist").WHOLE_SHARD
    for partition, suffix, accuracies in (
        ("dirichlet", "", {128: (0.90, 0.84), whole: (0.91, 0.875)}),
        ("iid", "-iid", {128: (0.92, 0.87), whole: (0.92, 0.915)}),
    ):
        for batch, (none, tma) in accuracies.items():
            for attack, acc in (("none", none), ("tma", tma)):
                _write_rate_run(
                    tmp_path, 0.004, attack, acc, suffix=suffix, batch=batch, partition=partition
                )
    study = mnist_runs.Study(mnist_runs.load_runs(tmp_path))
    (line,) = mnist_sweep.iid_batch_findings(study)
    assert line.endswith(
        f"IID 5.00 → 0.50 points: batch {whole} brings the drop within 3 points without the "
        "label skew but not with it, so what a larger batch leaves at α=1 is the skew's. At "
        f"batch {whole} (every client's whole shard) no minibatch noise is left, and CWTM "
        "loses 3.50 points to TMA at α=1, 0.50 on IID shards: what the clients' different data "
        "cost it."
    )
    # the whole-shard runs at further seeds stay out of the seed-0 sweep and get their own line
    for seed, tma in ((1, 0.885), (2, 0.878)):
        for attack, acc in (("none", 0.91), ("tma", tma)):
            _write_rate_run(
                tmp_path, 0.004, attack, acc, suffix=f"-s{seed}", batch=whole, seed=seed
            )
    study = mnist_runs.Study(mnist_runs.load_runs(tmp_path))
    assert len(study.sweep) == 4 and len(study.sweep_seeds) == 4
    assert mnist_sweep.iid_batch_findings(study)[1:] == [
        f"- batch {whole} (every client's whole shard) at α=1 under TMA, by seed (group "
        "`sweep-batch`, `-s<seed>`): CWTM's drop 3.50 (seed 0), 2.50 (seed 1), 3.20 (seed 2) "
        "points, mean 3.07; within 3 points at 1 of 3 seeds (1)."
    ]


def test_worst_case_sweep_picks_the_rate_with_the_best_lowest_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rate with the highest lowest validation accuracy is picked (not the best no-attack
    one), and the report says whether it is the study's."""
    study_mnist = _module("study_mnist")
    monkeypatch.setattr(study_mnist, "WORST_CASE_RATES", (0.004, 0.008, 0.016))
    results = tmp_path / "results"
    # (no attack, worst attack's) validation accuracy per rate: 0.004 is best without an attack
    # and 0.008 has the best worst case
    for lr, (clean, worst) in {
        0.004: (0.91, 0.84),
        0.008: (0.90, 0.86),
        0.016: (0.85, 0.80),
    }.items():
        for attack in study_mnist.ATTACKS:
            acc = clean if attack == "none" else worst if attack == "tma" else clean - 0.01
            acc = clean if (lr, attack) == (0.016, "sf") else acc  # SF costs nothing there
            _write_rate_run(results, lr, attack, acc)
    study = mnist_runs.Study(mnist_runs.load_runs(results))
    assert mnist_sweep.worst_case_rate(study.sweep) == 0.008
    findings = mnist_sweep.worst_case_findings(study.sweep)
    assert (
        "- η=0.008 (8 of 8 runs): lowest 86.00% (TMA), no attack 90.00%, largest drop 4.00 "
        "points." in findings
    )
    assert (
        findings[-1] == "- the best worst case over every attack: η=0.008 (the study ran η=0.004)."
    )
    assert mnist_sweep.rate_section(study)[-1].startswith(
        "It picks η=0.008, not the study's η=0.004:"
    )
    assert mnist_sweep.rate_reading(study).endswith(
        "η=0.008 narrows it under tma and widens it under none; η=0.016 narrows it under sf, tma "
        "and widens it under none."
    )
    monkeypatch.setattr(study_mnist, "ZO_LR", {**study_mnist.ZO_LR, 64: 0.008})
    own = mnist_sweep.rate_section(study)[-1]
    assert own.startswith(
        "It picks the study's own rate, η=0.008: its lowest validation accuracy is 86.00% (TMA); "
        "η=0.004 has 84.00% (TMA) and widens the drop under TMA; η=0.016 has 80.00% (TMA) and "
        "narrows the drop under SF but widens the drop under TMA. So the misses"
    )


def test_balanced_objective_runs_stay_out_of_the_rate_sweep(tmp_path: Path) -> None:
    """Group sweep-loss's runs share the worst-case sweep's settings but not its objective: the
    rate choice reads the plain runs only, and the loss section sets the two side by side."""
    study_mnist = _module("study_mnist")
    results = tmp_path / "results"
    for loss, suffix, tma in (("cross_entropy", "", 0.85), ("balanced_cross_entropy", "-b", 0.80)):
        for attack in study_mnist.ATTACKS:
            acc = 0.90 if attack == "none" else tma if attack == "tma" else 0.885
            _write_rate_run(results, 0.004, attack, acc, loss, suffix)
    for attack, plain, balanced in (("none", 0.9, 0.9), ("sf", 0.86, 0.89), ("foe", 0.87, 0.85)):
        for loss, acc in (("cross_entropy", plain), ("balanced_cross_entropy", balanced)):
            _write_rate_run(results, 0.004, attack, acc, loss, f"-nnm-{loss}", "nnm+cwtm")
    study = mnist_runs.Study(mnist_runs.load_runs(results))
    assert [len(runs) for runs in mnist_sweep.worst_case_runs(study.sweep).values()] == [8]
    assert len(study.objective_runs) == 8 + 6
    lines = mnist_sweep.loss_section(study)
    assert "| tma | 85.00 | +5.00 | 80.00 | +10.00 |" in lines
    assert lines[-1] == "Drop, plain → balanced: SF +4.00 → +1.00; FOE +3.00 → +5.00 points."
    assert "| sf | 86.00 | +4.00 | 89.00 | +1.00 |" in lines
    assert next(line for line in lines if line.startswith("Within 3 points")) == (
        "Within 3 points of the no-attack run: plain 6 of 7 (SF, FOE, ALIE, LF, MINMAX, "
        "ADAPTIVE); balanced 6 of 7 (SF, FOE, ALIE, LF, MINMAX, ADAPTIVE). Largest drop: plain "
        "5.00 (TMA), balanced 10.00 (TMA). So on MNIST the balanced objective does not narrow "
        "CWTM's drops as a whole, and the study keeps the plain objective."
    )


def test_clear_share_reading_follows_the_probes() -> None:
    def late(clear: float, coordinates: float) -> dict[str, float]:
        return {"clear": clear, "coordinates": coordinates}

    falls = mnist_probes._clear_reading([("a", late(0.05, 22.6), late(0.013, 22.5))])
    assert "falls with K (bullets above), and μ_h spreads over about as many" in falls
    fewer = mnist_probes._clear_reading([("a", late(0.05, 22.6), late(0.013, 12.0))])
    assert fewer.endswith("falls with K (bullets above).")
    mixed = [("a", late(0.05, 20.0), late(0.01, 20.0)), ("b", late(0.05, 20.0), late(0.09, 20.0))]
    assert "grows with K for b but falls for a (bullets above)" in mnist_probes._clear_reading(
        mixed
    )
    assert mnist_probes._clear_reading([]) == ""


def test_probe_figures_of_one_round() -> None:
    """μ_h = (2, 0): all its energy in one coordinate, which stands out of the honest spread
    there (σ = 0.82 < 2) while the other (μ = 0, σ = 1.63) does not; a = (1, 1)."""
    figures = _module("probe_mnist").round_figures(
        torch.tensor([[3.0, 0.0], [1.0, 0.0], [2.0, 2.0], [2.0, -2.0]]), torch.tensor([1.0, 1.0])
    )
    assert figures == pytest.approx(
        {
            "cosine": 2 / (2 * 2**0.5),
            "projection": 0.5,
            "spread": 0.5,  # distances 1, 1, 2, 2: the lower median over |μ_h|
            "honest_norm": 2.0,
            "coordinates": 1.0,
            "clear_share": 1.0,
            "carriers": 2.0,  # projections on μ_h: 6, 4, 4, 2 of 16
        }
    )
    even = torch.ones(3, 4) + torch.tensor([[0.1], [0.0], [-0.1]])  # σ = 0.1 everywhere
    spread_out = torch.ones(3, 4) + torch.tensor([[2.0], [0.0], [-2.0]])  # σ = 2 everywhere
    assert _module("probe_mnist").round_figures(even, torch.ones(4))["coordinates"] == 4.0
    assert _module("probe_mnist").round_figures(even, torch.ones(4))["clear_share"] == 1.0
    assert _module("probe_mnist").round_figures(spread_out, torch.ones(4))["clear_share"] == 0.0


def test_byzantine_share_of_nnm_neighbours() -> None:
    """Rows 0-1 Byzantine (at 0), four honest; each row has n - f = 4 NNM neighbours. The two
    honest rows near 0 take both Byzantine rows (crowded), the two far ones one each (the tie
    between the two Byzantine rows goes to the lower index): (1 + 1 + 1/2 + 1/2) / 4."""
    figures = _module("probe_mnist").neighbour_figures
    rows = torch.tensor([[0.0], [0.0], [0.1], [-0.1], [10.0], [11.0]])
    # μ_h = 5.25 > 0; the mixed rows: 0.0 (rows 0-3 mix rows 0-3) and 5.25 (rows 4-5 mix rows
    # 0, 2, 4, 5): none below 0
    assert figures(rows, 2) == {"byzantine_neighbours": 0.75, "crowded": 0.5, "mixed_against": 0}
    # honest 0, 0, 3, 5 (μ_h = 2) and the attackers at -2: they crowd the two short honest rows,
    # whose mixed rows, like theirs, are (-2 - 2 + 0 + 0) / 4 = -1; rows 4 and 5 mix rows 2-5: +2
    against = torch.tensor([[-2.0], [-2.0], [0.0], [0.0], [3.0], [5.0]])
    assert figures(against, 2) == {
        "byzantine_neighbours": 0.5,
        "crowded": 0.5,
        "mixed_against": 4 / 6,
    }


def test_carriers_count_the_vectors_that_carry_half_the_mean() -> None:
    carriers = _module("probe_mnist").carriers
    assert carriers(torch.tensor([0.5, 3.0, 1.0, 0.5])) == 1.0  # 3 of 5
    assert carriers(torch.tensor([1.0, 1.0, 1.0, 1.0])) == 2.0
    assert carriers(torch.tensor([-1.0, 1.0, 1.0, 1.0])) == 1.0  # half of a total of 2
    # μ_h = (2, 0) of rows (4, 0), (2, 0), (0, 2), (2, -2): projections 8, 4, 0, 4 of 16
    honest = torch.tensor([[4.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, -2.0]])
    assert _module("probe_mnist").round_figures(honest, torch.ones(2))["carriers"] == 1.0


def test_neighbour_section_and_the_skew_reading(tmp_path: Path) -> None:
    def probe(alpha: float, attack: str, share: float, crowded: float, carriers: float) -> None:
        cosine = -0.4 if alpha == 0.1 and attack == "sf" else 0.3
        against = 0.8 if cosine < 0 else 0.2
        data = {
            "cell": f"zo-a{alpha}-{attack}",
            "config": {
                "data": {"alpha": alpha},
                "attack": {"name": attack},
                "aggregator": {"name": "nnm+cwtm"},
                "seed": 0,
            },
            # the first half differs, to show that only the later half counts
            "byzantine_neighbours": [0.0, 0.0, share, share],
            "crowded": [0.0, 0.0, crowded, crowded],
            "mixed_against": [0.5, 0.5, against, against],
            "carriers": [9.0, 9.0, carriers, carriers],
            "cosine": [1.0, 1.0, cosine, cosine],
            "projection": [0.1] * 4,
            "spread": [1.0] * 4,
            "honest_norm": [1.0] * 4,
            "history": [
                {"round": 2, "test_accuracy": 0.5, "test_loss": 2.0},
                {"round": 4, "test_accuracy": 0.6, "test_loss": 9.0 if cosine < 0 else 0.5},
            ],
        }
        (tmp_path / f"zo-a{alpha}-{attack}.json").write_text(json.dumps(data))

    assert mnist_probes.neighbour_section(tmp_path)[0].startswith("No probe has logged")
    probe(1.0, "none", 0.0, 0.0, 6.0)
    probe(1.0, "sf", 0.9, 0.6, 5.0)
    probe(0.1, "sf", 0.65, 0.7, 2.5)
    partial = mnist_probes.neighbour_section(tmp_path)
    assert (
        "(picked at random, its 14 other neighbours out of 19 would hold 73.7% of them)"
        in (partial[0])
    )
    assert "| `zo-a1.0-none` | 1 | — | — | 20 | 6.0 | +0.30 | 2.00 → 0.50 | 60.00 |" in partial
    assert "| `zo-a0.1-sf` | 0.1 | 65.0 | 70 | 80 | 2.5 | -0.40 | 2.00 → 9.00 | 60.00 |" in partial
    assert not any(line.startswith("Why NNM+CWTM fails") for line in partial)  # no α=0.1 none
    probe(0.1, "none", 0.0, 0.0, 3.0)
    why = mnist_probes.neighbour_section(tmp_path)[-1]
    assert why.startswith(
        "What the probes show for NNM+CWTM under SF at α=0.1: the attack turns the aggregate "
        "against the honest mean (cos -0.40, against +0.30 at α=1)"
    )
    assert "crowd no fewer honest vectors' neighbourhoods than at α=1 (all five among" in why
    assert "the neighbours of 70% of the honest vectors, against 60%)" in why
    assert "rests on fewer clients (without attack half of it is carried by 3.0 of" in why
    assert "against 6.0 at α=1), and more of the mixed vectors point against it (80%, " in why
    assert mnist_probes.neighbour_shares(tmp_path) == {
        (1.0, "none"): 0.0,
        (1.0, "sf"): 0.9,
        (0.1, "sf"): 0.65,
        (0.1, "none"): 0.0,
    }


def test_a_claim_is_exclusive_while_its_runner_lives(tmp_path: Path) -> None:
    """A second claim of a held cell fails while the holder lives; the claim of a runner that
    died is taken over; a released claim can be taken again."""
    study = _module("study_mnist")
    held = study.claim(tmp_path, "cell-a")
    assert held is not None and held.read_text() == str(os.getpid())
    assert study.claim(tmp_path, "cell-a") is None
    held.unlink()
    assert study.claim(tmp_path, "cell-a") == held

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".claims" / "cell-b").write_text(str(dead.pid))
    taken = study.claim(tmp_path, "cell-b")
    assert taken is not None and taken.read_text() == str(os.getpid())
    sweep = study.claim(tmp_path, "sweep/cell-c")  # a sweep cell's id names a subfolder
    assert sweep is not None and study.claim(tmp_path, "sweep/cell-c") is None
    claims = sorted(p.name for p in (tmp_path / ".claims").iterdir())
    assert claims == ["cell-a", "cell-b", "sweep%cell-c"]


def test_two_runners_side_by_side_run_each_cell_once(tmp_path: Path) -> None:
    """Two study runners started together on the same cells (real processes, 2-round cells):
    every cell is started by exactly one of them, and every cell gets its results."""
    argv = [
        sys.executable,
        str(BENCH / "study_mnist.py"),
        *("--group", "a", "--aggregator", "cwtm", "--attack", "none", "sf", "alie"),
        *("--alpha", "1.0", "--nu", "64", "--k", "1", "--method", "zo", "--rounds", "2"),
        *("--out", str(tmp_path)),
    ]
    runners = [
        subprocess.Popen(
            argv,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [r.communicate(timeout=600)[1] for r in runners]
    assert [r.returncode for r in runners] == [0, 0], logs
    ids = [f"zo-a1.0-nu64-k1-cwtm-{a}-r2" for a in ("none", "sf", "alie")]
    for cid in ids:
        assert sum(log.count(f"start {cid} ") for log in logs) == 1, logs
        assert (tmp_path / cid / "results.json").exists()
    assert not list((tmp_path / ".claims").iterdir())  # every claim released


def test_the_shipped_federation_plan_is_the_recommended_block() -> None:
    """``configs/federation-mnist.yaml`` serves the plan of the study's block that met the
    target at every seed (NNM+CWTM, ν=64, K=5 biased, α=1): its rates, μ, batch, budget and
    federation size, read from the study's own cell."""
    from cyber0.server.config import load_config

    study = _module("study_mnist")
    cell = study.Cell("zo", 1.0, "nnm+cwtm", "none", nu=64, k=5, variant="biased").config()
    plan = load_config(str(BENCH.parent / "configs" / "federation-mnist.yaml")).plan
    zo = plan.zo
    assert {k: getattr(zo, k) for k in cell["zo"]} == cell["zo"]
    assert (plan.seed, plan.rounds, plan.loss) == (cell["seed"], cell["rounds"], cell["loss"])
    assert (plan.n_clients, plan.f) == (cell["n_clients"], cell["f"])
    assert (plan.partition, plan.alpha) == (cell["data"]["partition"], cell["data"]["alpha"])
    assert (plan.aggregator, plan.model, plan.dataset) == ("nnm+cwtm", "logreg", "mnist")
    # The README's federation across machines: 7 training ids, f = 2 (its quorum of 5 updates
    # is one NNM+CWTM can aggregate).
    sized = load_config(
        str(BENCH.parent / "configs" / "federation-mnist.yaml"), {"n_clients": 7, "f": 2}
    )
    assert (sized.plan.n_clients, sized.plan.f, sized.quorum) == (7, 2, 5)
