"""The MNIST study's results files as runs (:class:`Run`, :class:`Study`), the targets they are
read against, and the table and drop helpers every section of ``docs/results-mnist.md`` shares.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET = 0.85  # accuracy at which uplink bytes are compared
GOAL = 0.90  # no-attack target at α=1, ν=64
TOLERANCE = 0.03  # every attack within 3 points of no attack (CWTM, NNM+CWTM)
ATTACKS = ("none", "sf", "foe", "alie", "lf", "tma", "minmax", "adaptive")
AGGREGATORS = ("cwtm", "nnm+cwtm", "krum", "median")
HEADLINE_AGGREGATORS = ("cwtm", "nnm+cwtm")
#: (α, ν, K, variant) of the target block, and of the K=5 seed group (NNM+CWTM, biased).
TARGET_BLOCK = (1.0, 64, 1, "")
K5_BLOCK = (1.0, 64, 5, "biased")
#: The block of first-order runs at α=1 (ν = K = 0, see :attr:`Run.block`).
FO_BLOCK = (1.0, 0, 0, "")
#: The blocks that ran on IID shards (group ``iid``), in the order the report shows them.
IID_BLOCKS = (TARGET_BLOCK, K5_BLOCK)
#: The K=5 block in the unbiased variant (K·ν scalars a round), rerun at the spread seeds too.
K5_UNBIASED_BLOCK = (1.0, 64, 5, "unbiased")


@dataclass(frozen=True)
class Run:
    """One results file, flattened to what the report needs."""

    id: str
    method: str
    alpha: float
    nu: int
    k: int
    variant: str
    aggregator: str
    attack: str
    rounds: int
    eval_split: str
    final: float
    history: tuple[dict[str, float], ...]
    bytes_per_round: int
    wall_seconds: float
    zo_lr: float
    zo_mu: float
    zo_batch: int
    fo_lr: float
    fo_batch: int
    seed: int
    mode: str
    host: dict[str, Any]
    loss: str = "cross_entropy"
    partition: str = "dirichlet"

    @property
    def block(self) -> tuple[float, int, int, str]:
        """(α, ν, K, variant) of a ZO run; first-order runs have ν = K = 0."""
        if self.method == "first_order":
            return (self.alpha, 0, 0, "")
        return (self.alpha, self.nu, self.k, self.variant if self.k > 1 else "")

    def reached(self, target: float = TARGET) -> dict[str, float] | None:
        """The first evaluation with accuracy >= target, or None."""
        return reached(self.history, target)


def reached(history: Iterable[dict[str, float]], target: float = TARGET) -> dict[str, float] | None:
    """The first history entry whose ``test_accuracy`` is at least ``target``; None if none."""
    for entry in history:
        if entry["test_accuracy"] >= target:
            return entry
    return None


def bytes_to(history: Iterable[dict[str, float]], target: float = TARGET) -> int | None:
    """Cumulative uplink bytes per client at the first evaluation reaching ``target``."""
    entry = reached(history, target)
    return None if entry is None else int(entry["uplink_bytes_cum"])


def load_run(path: Path, root: Path) -> Run:
    """Parse one ``results.json`` (``path``) found under ``root``."""
    data: dict[str, Any] = json.loads(path.read_text())
    config = data["config"]
    zo, fo = config["zo"], config["first_order"]
    method = config["methods"][0]
    return Run(
        id=str(path.parent.relative_to(root)),
        method=method,
        alpha=float(config["data"]["alpha"]),
        nu=int(zo["nu"]),
        k=int(zo["local_steps"]),
        variant=str(zo["variant"]),
        aggregator=str(config["aggregator"]["name"]),
        attack=str(config["attack"]["name"]),
        rounds=int(data["rounds"]),
        eval_split=str(data.get("eval_split", "test")),
        final=float(data["final_test_accuracy"]),
        history=tuple(data["history"]),
        bytes_per_round=int(data["uplink_bytes_per_client_round"]),
        wall_seconds=float(data["wall_seconds"]),
        zo_lr=float(zo["lr"]),
        zo_mu=float(zo["mu"]),
        zo_batch=int(zo["batch_size"]),
        fo_lr=float(fo["lr"]),
        fo_batch=int(fo["batch_size"]),
        seed=int(config["seed"]),
        mode=str(config["attack"].get("mode", "omniscient")),
        host=dict(data.get("host", {})),
        loss=str(config.get("loss", "cross_entropy")),
        partition=str(config["data"].get("partition", "dirichlet")),
    )


def load_runs(root: Path) -> list[Run]:
    """Every results file under ``root``, sorted by id."""
    return sorted((load_run(p, root) for p in root.rglob("results.json")), key=lambda r: r.id)


def pct(x: float | None) -> str:
    """``0.9123 -> "91.23"``; None -> an em dash."""
    return "—" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def human_bytes(n: int | None) -> str:
    """Bytes with a binary-free SI unit (B, kB, MB, GB); None -> "not reached"."""
    if n is None:
        return "not reached"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table; a ``|`` inside a cell (as in |μ_h|) is escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def block_name(block: tuple[float, int, int, str]) -> str:
    """Human name of a (α, ν, K, variant) block."""
    alpha, nu, k, variant = block
    if nu == 0:
        return f"first-order FedSGD, α={alpha}"
    name = f"CYBER-0, α={alpha}, ν={nu}, K={k}"
    return f"{name} ({variant})" if variant else name


class Study:
    """The study runs indexed for lookups."""

    def __init__(self, runs: Sequence[Run]) -> None:
        from study_mnist import SEED, WHOLE_SHARD

        self.runs = list(runs)
        validation = [r for r in runs if r.eval_split == "validation"]
        #: The batch comparison's runs at seeds other than the sweep's (group ``sweep-batch``).
        self.sweep_seeds = [r for r in validation if r.seed != SEED]
        at_seed = [r for r in validation if r.seed == SEED]
        #: The batch comparison's validation runs on IID shards (group ``sweep-batch``).
        self.iid_sweep = [r for r in at_seed if r.partition == "iid"]
        skewed = [r for r in at_seed if r not in self.iid_sweep]
        self.sweep = [r for r in skewed if r.loss == "cross_entropy" and r.aggregator == "cwtm"]
        #: Group ``sweep-loss``'s validation runs outside the CWTM sweep: the balanced
        #: objective's, and NNM+CWTM's under either objective.
        self.objective_runs = [r for r in skewed if r not in self.sweep]
        evaluated = [r for r in runs if r.eval_split != "validation"]
        #: Group ``whole``: CYBER-0 runs on every client's whole shard a step, kept out of
        #: every table at the grid's batch.
        self.whole = [r for r in evaluated if r.method == "zo" and r.zo_batch == WHOLE_SHARD]
        # a budget other than the grid's is named in the id (``-r<rounds>``, see Cell.id)
        self.long = [r for r in evaluated if re.search(r"-r\d+$", r.id)]
        self.colluding = [r for r in evaluated if r.mode == "colluding" and r not in self.long]
        #: Group ``iid``: the target block's rules on IID shards (α does not apply), kept out
        #: of every α-keyed table.
        self.iid = [r for r in evaluated if r.partition == "iid"]
        tested = [
            r
            for r in evaluated
            if r not in self.long
            and r not in self.colluding
            and r not in self.iid
            and r not in self.whole
        ]
        self.cells = [r for r in tested if r.seed == SEED]
        self.spread = [r for r in tested if r.seed != SEED]
        self.index = {(r.block, r.aggregator, r.attack): r for r in self.cells}
        self.by_seed = {(r.block, r.aggregator, r.attack, r.seed): r for r in tested}
        #: The IID runs keyed like :attr:`by_seed`: their config α, which IID shards ignore, is
        #: 1.0, so their blocks are :data:`TARGET_BLOCK` and :data:`FO_BLOCK`.
        self.iid_by_seed = {(r.block, r.aggregator, r.attack, r.seed): r for r in self.iid}
        #: The whole-shard runs keyed like :attr:`by_seed` (their block is the target block's).
        self.whole_by_seed = {(r.block, r.aggregator, r.attack, r.seed): r for r in self.whole}

    def get(self, block: tuple[float, int, int, str], aggregator: str, attack: str) -> Run | None:
        """The run of a cell, if it ran."""
        return self.index.get((block, aggregator, attack))

    def fo(self, alpha: float, aggregator: str, attack: str) -> Run | None:
        """The first-order run beside a ZO cell."""
        return self.get((alpha, 0, 0, ""), aggregator, attack)

    def blocks(self) -> list[tuple[float, int, int, str]]:
        """ZO blocks present, α=1 first, then ν descending, K, variant."""
        found = {r.block for r in self.cells if r.method == "zo"}
        return sorted(found, key=lambda b: (-b[0], -b[1], b[2], b[3]))


def accuracy_at(run: Run, round: int) -> float | None:
    """Accuracy at the last evaluation at or before ``round``; None past the run's end."""
    return None if round > run.rounds else history_accuracy(run.history, round)


def history_accuracy(history: Iterable[dict[str, float]], round: int) -> float | None:
    """``test_accuracy`` of the last entry at or before ``round`` (None if there is none)."""
    before = [h for h in history if h["round"] <= round]
    return before[-1]["test_accuracy"] if before else None


def seeds_text(seeds: Sequence[int]) -> str:
    """``seed 0`` or ``seeds 0, 1, 2``."""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def drop_text(attack: str, by_seed: dict[int, float]) -> str:
    """An attack's drop in points: at its one seed, or the mean and the worst over several."""
    drops = list(by_seed.values())
    if len(drops) == 1:
        return f"{attack} {100 * drops[0]:+.2f}"
    return f"{attack} {100 * sum(drops) / len(drops):+.2f} (worst {100 * max(drops):+.2f})"


def drop_points(base: Run | None, run: Run | None) -> float | None:
    """``base.final − run.final`` (a fraction; None when either did not run)."""
    return None if base is None or run is None else base.final - run.final


def attack_drops(
    index: Mapping[tuple[tuple[float, int, int, str], str, str, int], Run],
    block: tuple[float, int, int, str],
    aggregator: str,
) -> dict[str, dict[int, float]]:
    """:func:`drops_by_seed` of every attack that ran with ``aggregator`` in ``block``."""
    return {a: d for a in ATTACKS[1:] if (d := drops_by_seed(index, block, aggregator, a))}


def attacks_verdict(rule: str, drops: Mapping[str, dict[int, float]]) -> str:
    """``cwtm (6 of 7 attacks within at every seed, seeds 0, 1, 2; beyond: tma +3.26 (worst
    +3.67))``: ``drops`` as :func:`attack_drops` gives them."""
    seeds = sorted({s for d in drops.values() for s in d})
    beyond = [drop_text(a, d) for a, d in drops.items() if max(d.values()) > TOLERANCE]
    return (
        f"{rule} ({len(drops) - len(beyond)} of {len(drops)} attacks within at every seed, "
        f"{seeds_text(seeds)}{'; beyond: ' + ', '.join(beyond) if beyond else ''})"
    )


def drops_by_attack(runs: Sequence[Run]) -> dict[str, float]:
    """Each attacked run's drop against the no-attack run among ``runs`` (one setting)."""
    clean = next(r for r in runs if r.attack == "none")
    return {r.attack: clean.final - r.final for r in runs if r.attack != "none"}


def seed_drops(
    study: Study, aggregator: str, attack: str, block: tuple[float, int, int, str] = TARGET_BLOCK
) -> dict[int, float]:
    """An attack's drops against the same seed's no-attack run in ``block`` (by default the
    target block), by seed, for the seeds that ran both (in seed order)."""
    return drops_by_seed(study.by_seed, block, aggregator, attack)


def drops_by_seed(
    index: Mapping[tuple[tuple[float, int, int, str], str, str, int], Run],
    block: tuple[float, int, int, str],
    aggregator: str,
    attack: str,
) -> dict[int, float]:
    """:func:`seed_drops` over ``index`` (keyed like :attr:`Study.by_seed`)."""
    return {
        s: base.final - run.final
        for s in sorted({key[3] for key in index})
        if (base := index.get((block, aggregator, "none", s))) is not None
        and (run := index.get((block, aggregator, attack, s))) is not None
    }


def paired(
    first: Mapping[int, float], second: Mapping[int, float]
) -> tuple[list[int], list[float], list[float]]:
    """The seeds in both (in ``first``'s order) and each side's values at them."""
    seeds = [s for s in first if s in second]
    return seeds, [first[s] for s in seeds], [second[s] for s in seeds]
