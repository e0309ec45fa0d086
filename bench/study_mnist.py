"""The MNIST study of issue 2: CYBER-0 and first-order FedSGD over a grid of robust-FL cells.

Every cell is one :func:`cyber0.common.simulator.simulate` run written to
``OUT/<cell-id>/results.json``; finished cells are skipped, so the runner resumes where it
stopped. Cells run in priority order (the order of :func:`study_cells`) and no new cell starts
once ``--budget-minutes`` have passed. ``--sweep`` runs the hyperparameter sweep instead (on the
validation split, never the test set) into ``OUT/sweep/<id>/results.json``. Runners started
side by side on one machine share the cells: each claims a cell before it starts it
(``OUT/.claims/<id>``, :func:`claim`) and skips the cells another live runner holds.

    python bench/study_mnist.py --sweep                      # hyperparameters, validation split
    python bench/study_mnist.py --budget-minutes 70          # the grid, by priority
    python bench/study_mnist.py --alpha 1.0 --nu 64 --k 1    # one slice of it
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from _common import cpu_model

OUT = Path(__file__).resolve().parent / "results" / "mnist"
N_CLIENTS, F = 20, 5
ALPHAS = (1.0, 0.1)
AGGREGATORS = ("cwtm", "nnm+cwtm", "krum", "median")
ATTACKS = ("none", "sf", "foe", "alie", "lf", "tma", "minmax", "adaptive")
#: Hyperparameters chosen by ``--sweep`` (validation split, α=1, CWTM; rates and μ without an
#: attack, the batch under TMA, the attack that hurt CWTM most at batch 32); see the doc.
ZO_LR = {64: 4e-3, 1: 8e-3}
ZO_MU = 1e-3
ZO_BATCH = 128
#: The ν=64 rates of the worst-case sweep (group ``sweep-rate``: every attack, the study's batch).
WORST_CASE_RATES = (1e-3, 2e-3, 4e-3, 8e-3, 16e-3)
#: The batch of the first (no-attack) sweep.
SWEEP_BATCH = 32
FO_LR = 1.0
FO_BATCH = ZO_BATCH
#: Rounds per cell: ν=64 and the first-order baseline, and ν=1 (which needs many more).
ROUNDS = {64: 1000, 1: 6000}
FO_ROUNDS = 1000
#: Rounds of the long-budget group: the target block's failing cells at 3x the budget, to tell
#: an attack that only slows training (its gap closes) from one that biases it (the gap stays).
LONG_ROUNDS = 3000
SEED = 0
#: Further seeds of the seed-spread group (the target block again: partition, batches,
#: directions and attack noise all change with the seed).
SPREAD_SEEDS = (1, 2)
#: Two more seeds for the one block where NNM+CWTM kept every attack within the tolerance at
#: every spread seed (K=5, biased).
EXTRA_SEEDS = (3, 4)
VALIDATION = 10_000
#: A batch above every client's shard, in the sweep (at most 4,640 examples at α=1, seeds 0-2;
#: 2,500 on IID shards) and in the study (at most 4,985 at α=1, seeds 0-2): each client's whole
#: shard every step (:func:`cyber0.common.data.batch_indices`).
WHOLE_SHARD = 5000
#: The attacks of the colluding group: those that read the honest vectors (LF and no attack do
#: not, so their runs are the same in both modes).
COLLUDING_ATTACKS = ("sf", "foe", "alie", "tma", "minmax", "adaptive")
#: The attacks the K=5 seed group runs first: NNM+CWTM's misses at K=1, with their baseline.
K5_FIRST = ("none", "sf", "foe")
#: The attacks CWTM's K=5 seed runs start with: its misses at K=5, seed 0, with their baseline.
K5_CWTM_FIRST = ("none", "lf", "tma")
#: The order of the whole-shard group's attacks: CWTM's worst miss at the study's batch (TMA)
#: with its baseline, then its other misses, then the rest.
WHOLE_ORDER = ("none", "tma", "foe", "lf", "sf", "alie", "minmax", "adaptive")

#: The class-balanced objective of group ``sweep-loss``.
BAL = "balanced_cross_entropy"

log = logging.getLogger("study_mnist")


@dataclass(frozen=True)
class Cell:
    """One experiment of the grid: a method on (α, ν, K, variant, aggregator, attack); the
    attackers are omniscient (they see the honest vectors) unless ``mode`` is "colluding"
    (they see only their own honest computations)."""

    method: str  # "zo" or "first_order"
    alpha: float
    aggregator: str
    attack: str
    nu: int = 64
    k: int = 1
    variant: str = "unbiased"
    rounds: int = 1000
    group: str = ""
    zo_lr: float = 0.0
    zo_mu: float = ZO_MU
    zo_batch: int = ZO_BATCH
    fo_lr: float = FO_LR
    fo_batch: int = FO_BATCH
    validation: int = 0
    seed: int = SEED
    mode: str = "omniscient"
    loss: str = "cross_entropy"
    partition: str = "dirichlet"
    tag: str = field(default="", compare=False)

    @property
    def eval_every(self) -> int:
        """Evaluation period: fine for the fast first-order runs (rounds to 85% matter)."""
        return 2 if self.method == "first_order" else max(5, self.rounds // 200)

    @property
    def id(self) -> str:
        """Folder name, e.g. ``zo-a1.0-nu64-k1-cwtm-alie``, ``fo-a1.0-cwtm-none``; an IID
        partition is ``iid`` where ``a<α>`` stands (``zo-iid-nu64-k1-cwtm-tma``); colluding
        attackers add ``-col``, a batch other than :data:`ZO_BATCH` adds ``-b<batch>``, a seed
        other than :data:`SEED` adds ``-s<seed>``, a budget other than the standard one
        (:data:`ROUNDS`, :data:`FO_ROUNDS`) adds ``-r<rounds>``."""
        if self.tag:
            return self.tag
        agg = self.aggregator.replace("+", "_")
        suffix = "-col" if self.mode == "colluding" else ""
        suffix += "" if self.zo_batch == ZO_BATCH else f"-b{self.zo_batch}"
        suffix += "" if self.seed == SEED else f"-s{self.seed}"
        if self.rounds != standard_rounds(self.method, self.nu):
            suffix += f"-r{self.rounds}"
        split = "iid" if self.partition == "iid" else f"a{self.alpha}"
        if self.method == "first_order":
            return f"fo-{split}-{agg}-{self.attack}{suffix}"
        k = f"k{self.k}" if self.k == 1 else f"k{self.k}{self.variant[0]}"
        return f"zo-{split}-nu{self.nu}-{k}-{agg}-{self.attack}{suffix}"

    def config(self) -> dict[str, Any]:
        """The simulator's YAML-equivalent mapping."""
        lr = self.zo_lr or ZO_LR[self.nu]
        return {
            "seed": self.seed,
            "loss": self.loss,
            "rounds": self.rounds,
            "eval_every": self.eval_every,
            "n_clients": N_CLIENTS,
            "f": F,
            "data": {
                "partition": self.partition,
                "alpha": self.alpha,
                "validation": self.validation,
            },
            "zo": {
                "nu": self.nu,
                "local_steps": self.k,
                "mu": self.zo_mu,
                "lr": lr,
                "batch_size": self.zo_batch,
                "variant": self.variant,
            },
            "aggregator": {"name": self.aggregator},
            "attack": {"name": self.attack, "mode": self.mode},
            "methods": [self.method],
            "first_order": {"lr": self.fo_lr, "batch_size": self.fo_batch},
        }


def standard_rounds(method: str, nu: int) -> int:
    """The grid's budget for a cell: :data:`FO_ROUNDS` for first-order, else ``ROUNDS[nu]``."""
    return FO_ROUNDS if method == "first_order" else ROUNDS[nu]


def _zo(
    alpha: float, aggs: Iterable[str], attacks: Iterable[str], group: str, **kw: Any
) -> list[Cell]:
    rounds = kw.pop("rounds", standard_rounds("zo", kw.get("nu", 64)))
    return [
        Cell("zo", alpha, a, t, rounds=rounds, group=group, **kw) for a in aggs for t in attacks
    ]


def _fo(
    alpha: float, aggs: Iterable[str], attacks: Iterable[str], group: str, **kw: Any
) -> list[Cell]:
    return [
        Cell("first_order", alpha, a, t, rounds=FO_ROUNDS, group=group, **kw)
        for a in aggs
        for t in attacks
    ]


def study_cells() -> list[Cell]:
    """The whole grid, in priority order (duplicates removed, first occurrence kept)."""
    head, tail = ("cwtm", "nnm+cwtm"), ("krum", "median")
    k5 = ("none", "alie", "sf")
    ordered = [
        *_zo(1.0, head, ATTACKS, "a"),
        *_fo(1.0, ("cwtm",), ATTACKS, "a"),
        *_zo(1.0, tail, ATTACKS, "b"),
        *_fo(1.0, tail, ATTACKS, "b"),
        *_zo(0.1, head, ATTACKS, "c"),
        *_fo(0.1, ("cwtm",), ATTACKS, "c"),
        *_zo(1.0, ("cwtm",), ATTACKS, "d", nu=1),
        *_zo(1.0, ("cwtm",), k5, "e", k=5, variant="unbiased"),
        *_zo(1.0, ("cwtm",), k5, "e", k=5, variant="biased"),
        # seed spread of the target block: CWTM under every attack, then NNM+CWTM
        *[c for s in SPREAD_SEEDS for c in _zo(1.0, ("cwtm",), ATTACKS, "seeds", seed=s)],
        *[
            c
            for s in SPREAD_SEEDS
            for c in _zo(1.0, ("nnm+cwtm",), ("none", "foe"), "seeds", seed=s)
        ],
        *[c for s in SPREAD_SEEDS for c in _zo(1.0, ("nnm+cwtm",), ATTACKS, "seeds", seed=s)],
        # the target block's cells beyond 3 points, at 3x the budget (and NNM+CWTM's worst seed)
        *_zo(1.0, ("cwtm",), ("none", "sf", "foe", "lf", "tma"), "long", rounds=LONG_ROUNDS),
        *_zo(1.0, ("nnm+cwtm",), ("none", "sf", "foe"), "long", rounds=LONG_ROUNDS),
        *_zo(1.0, ("nnm+cwtm",), ("none", "sf"), "long", rounds=LONG_ROUNDS, seed=1),
        # the target block against colluding attackers (the vector attacks; LF is the same)
        *_zo(1.0, ("cwtm", "nnm+cwtm"), COLLUDING_ATTACKS, "colluding", mode="colluding"),
        # NNM+CWTM with K=5 (biased), the block within 3 points at every seed, against them
        *[
            c
            for s in (SEED, *SPREAD_SEEDS)
            for c in _zo(
                1.0,
                ("nnm+cwtm",),
                COLLUDING_ATTACKS,
                "colluding",
                k=5,
                variant="biased",
                mode="colluding",
                seed=s,
            )
        ],
        # NNM+CWTM with K=5 local steps (biased: the uplink of K=1), at the further seeds: its
        # K=1 misses (SF, FOE) were seed-dependent; first those, then every attack
        *[
            c
            for attacks in (K5_FIRST, ATTACKS)
            for s in SPREAD_SEEDS
            for c in _zo(1.0, ("nnm+cwtm",), attacks, "k5seeds", k=5, variant="biased", seed=s)
        ],
        # CWTM with K=5 (biased) at the further seeds: its seed-0 misses (LF, TMA) first
        *[
            c
            for attacks in (K5_CWTM_FIRST, ATTACKS)
            for s in SPREAD_SEEDS
            for c in _zo(1.0, ("cwtm",), attacks, "k5seeds", k=5, variant="biased", seed=s)
        ],
        # NNM+CWTM with K=5 (biased), within at seeds 0-2 under every attack, at two more seeds
        *[
            c
            for s in EXTRA_SEEDS
            for c in _zo(1.0, ("nnm+cwtm",), ATTACKS, "k5seeds", k=5, variant="biased", seed=s)
        ],
        # NNM+CWTM with K=5 in the unbiased variant (K·ν scalars a round) at the further seeds
        *[
            c
            for s in SPREAD_SEEDS
            for c in _zo(1.0, ("nnm+cwtm",), ATTACKS, "k5seeds", k=5, variant="unbiased", seed=s)
        ],
        # the target block without label skew (IID shards), with first-order CWTM beside it: do
        # the attacks' drops come from the clients' heterogeneity?
        *_zo(1.0, ("cwtm", "nnm+cwtm"), ATTACKS, "iid", partition="iid"),
        *_fo(1.0, ("cwtm",), ATTACKS, "iid", partition="iid"),
        *[
            c
            for s in SPREAD_SEEDS
            for c in _zo(1.0, ("cwtm", "nnm+cwtm"), ATTACKS, "iid", partition="iid", seed=s)
        ],
        # CWTM with K=5 (biased) on IID shards: do its K=5 misses at α=1 come with the skew too?
        *[
            c
            for s in (SEED, *SPREAD_SEEDS)
            for c in _zo(
                1.0, ("cwtm",), ATTACKS, "iid", k=5, variant="biased", partition="iid", seed=s
            )
        ],
        # the target block's CWTM with every client's whole shard a step, the batch the sweep
        # found closest to the target (*Batch*): no minibatch noise left in the honest spread.
        # TMA and its baseline at every seed first, then the other attacks seed by seed
        *[
            c
            for attacks in (WHOLE_ORDER[:2], WHOLE_ORDER[2:])
            for s in (SEED, *SPREAD_SEEDS)
            for c in _zo(1.0, ("cwtm",), attacks, "whole", zo_batch=WHOLE_SHARD, seed=s)
        ],
        # the rest of the grid
        *_fo(1.0, ("nnm+cwtm",), ATTACKS, "rest"),
        *_zo(0.1, tail, ATTACKS, "rest"),
        *_fo(0.1, ("nnm+cwtm", *tail), ATTACKS, "rest"),
        *_zo(1.0, ("nnm+cwtm", *tail), ATTACKS, "rest", nu=1),
        *[c for a in ALPHAS for c in _zo(a, AGGREGATORS, ATTACKS, "rest", nu=1)],
        *[
            c
            for a in ALPHAS
            for v in ("unbiased", "biased")
            for c in _zo(a, AGGREGATORS, ATTACKS, "rest", k=5, variant=v)
        ],
        *[
            c
            for a in ALPHAS
            for v in ("unbiased", "biased")
            for c in _zo(a, AGGREGATORS, ATTACKS, "rest", nu=1, k=5, variant=v)
        ],
    ]
    seen: set[str] = set()
    cells = []
    for cell in ordered:
        if cell.id not in seen:
            seen.add(cell.id)
            cells.append(cell)
    return cells


def sweep_cells(rounds: int = 300) -> list[Cell]:
    """Hyperparameter sweep: validation split, α=1, n=20, f=5, CWTM, K=1; no attack except for
    the batch comparison."""
    cells: list[Cell] = []

    def zo(
        nu: int,
        lr: float,
        mu: float = ZO_MU,
        batch: int = SWEEP_BATCH,
        length: int = rounds,
        attack: str = "none",
        group: str = "",
        loss: str = "cross_entropy",
        aggregator: str = "cwtm",
        partition: str = "dirichlet",
        seed: int = SEED,
    ) -> None:
        tag = f"sweep/zo-nu{nu}-lr{lr:g}-mu{mu:g}-b{batch}"
        tag += f"-r{length}" if length != rounds else ""
        tag += f"-{attack}" if attack != "none" else ""
        tag += f"-{aggregator.replace('+', '_')}" if aggregator != "cwtm" else ""
        tag += "-balanced" if loss != "cross_entropy" else ""
        tag += "-iid" if partition == "iid" else ""
        tag += f"-s{seed}" if seed != SEED else ""
        if any(c.tag == tag for c in cells):
            return
        plain = attack == "none" and batch == SWEEP_BATCH
        cells.append(
            Cell(
                "zo",
                1.0,
                aggregator,
                attack,
                nu=nu,
                rounds=length,
                group=group or ("sweep" if plain else "sweep-batch"),
                zo_lr=lr,
                zo_mu=mu,
                zo_batch=batch,
                validation=VALIDATION,
                loss=loss,
                partition=partition,
                seed=seed,
                tag=tag,
            )
        )

    for lr in (1e-3, 2e-3, 4e-3, 8e-3):
        zo(64, lr)
    zo(64, 2e-3, mu=1e-2)
    zo(64, 2e-3, mu=1e-4)
    zo(64, 2e-3, batch=64)
    for lr in (1e-3, 2e-3, 4e-3, 8e-3, 16e-3):
        zo(1, lr)
    # the two best ν=64 rates of the short sweep, and ν=1, over a whole study run
    for lr in (2e-3, 4e-3):
        zo(64, lr, length=1000)
    for lr in (4e-3, 8e-3, 16e-3):
        zo(1, lr, length=3000)
    # the batch: the honest clients' spread shrinks as 1/sqrt(batch), and with it what an attack
    # hidden inside that spread can shift; compared under TMA
    for batch in (32, 128, 256, 512):
        zo(64, 4e-3, batch=batch, length=1000, attack="tma")
    zo(64, 4e-3, batch=512, length=1000)
    # larger still: batch 2048 (a client's whole shard where it holds fewer, 8 of 20 at α=1),
    # and every client's whole shard, where the honest spread is the clients' data alone
    for batch in (2048, WHOLE_SHARD):
        for attack in ("none", "tma"):
            zo(64, 4e-3, batch=batch, length=1000, attack=attack)
    # the same batches on IID shards: how much of what a batch leaves is the label skew's
    for batch in (ZO_BATCH, 512, 2048, WHOLE_SHARD):
        for attack in ("none", "tma"):
            zo(64, 4e-3, batch=batch, length=1000, attack=attack, partition="iid")
    # whole shards at α=1 at the further seeds: is the drop left without minibatch noise the
    # same at every seed?
    for seed in SPREAD_SEEDS:
        for attack in ("none", "tma"):
            zo(64, 4e-3, batch=WHOLE_SHARD, length=1000, attack=attack, seed=seed)
    # the rate for the worst case: ν=64 at the study's batch, a whole study run under every
    # attack, each rate judged by its lowest validation accuracy over them
    for lr in WORST_CASE_RATES:
        for attack in ATTACKS:
            zo(64, lr, batch=ZO_BATCH, length=1000, attack=attack, group="sweep-rate")
    # the class-balanced objective (loss: balanced_cross_entropy) at the chosen rate, under
    # every attack: does removing the label skew's class prior from each client's objective
    # narrow CWTM's drops?
    for attack in ATTACKS:
        zo(64, 4e-3, batch=ZO_BATCH, length=1000, attack=attack, group="sweep-loss", loss=BAL)
    # and NNM+CWTM under the attacks it misses in the target block, both objectives
    for attack in ("none", "sf", "foe"):
        for loss in ("cross_entropy", BAL):
            zo(64, 4e-3, ZO_MU, ZO_BATCH, 1000, attack, "sweep-loss", loss, "nnm+cwtm")
    for lr in (0.03, 0.1, 0.3, 1.0, 3.0):
        cells.append(
            Cell(
                "first_order",
                1.0,
                "cwtm",
                "none",
                rounds=rounds,
                group="sweep",
                fo_lr=lr,
                fo_batch=SWEEP_BATCH,
                validation=VALIDATION,
                tag=f"sweep/fo-lr{lr:g}-b{SWEEP_BATCH}",
            )
        )
    return cells


def select(cells: Sequence[Cell], args: argparse.Namespace) -> list[Cell]:
    """The cells matching every given filter."""

    def keep(cell: Cell) -> bool:
        checks = [
            (args.alpha, cell.alpha if cell.partition == "dirichlet" else None),
            (args.nu, cell.nu if cell.method == "zo" else None),
            (args.k, cell.k if cell.method == "zo" else None),
            (args.variant, cell.variant if cell.method == "zo" and cell.k > 1 else None),
            (args.aggregator, cell.aggregator),
            (args.attack, cell.attack),
            (args.method, cell.method),
            (args.group, cell.group),
        ]
        return all(wanted is None or value in wanted for wanted, value in checks)

    return [c for c in cells if keep(c)]


def run_cell(cell: Cell, out: Path, threads: int) -> tuple[str, float, float]:
    """Simulate one cell into ``out/<id>/results.json``; ``(id, accuracy, seconds)``."""
    import torch

    from cyber0.common.perturbation import GAUSSIAN_DERIVATION
    from cyber0.common.simulator import build_config, simulate

    torch.set_num_threads(threads)
    start = time.perf_counter()
    result = simulate(build_config(cell.config()))
    result["cell"] = {"id": cell.id, "group": cell.group, "method": cell.method}
    result["host"] = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "directions": GAUSSIAN_DERIVATION,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    folder = out / cell.id
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(folder / "results.json")
    return cell.id, float(result["final_test_accuracy"]), time.perf_counter() - start


def claim(out: Path, cell_id: str) -> Path | None:
    """Claim ``cell_id`` for this runner, so that runners started side by side on one machine
    never run the same cell: ``out/.claims/<id>``, created atomically and holding this
    process's pid (a sweep cell's ``sweep/<id>`` as ``sweep%<id>``). None while a live process
    holds it; the claim of a runner that died (killed, machine restarted) is taken over. Release
    it by deleting the returned path."""
    folder = out / ".claims"
    folder.mkdir(parents=True, exist_ok=True)
    name = cell_id.replace("/", "%")
    path = folder / name
    mine = folder / f".{name}.{os.getpid()}"
    mine.write_text(str(os.getpid()))
    try:
        for _ in range(2):
            try:
                os.link(mine, path)
                return path
            except FileExistsError:
                if _holder_alive(path):
                    return None
                path.unlink(missing_ok=True)
        return None
    finally:
        mine.unlink()


def _holder_alive(path: Path) -> bool:
    """Whether the pid written in the claim ``path`` is a live process."""
    try:
        os.kill(int(path.read_text()), 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, ValueError):
        return False
    return True


def run_all(
    cells: Sequence[Cell], out: Path, jobs: int, threads: int, budget_s: float | None
) -> int:
    """Run the cells not yet done, by priority, ``jobs`` at a time; returns how many ran."""
    todo = [c for c in cells if not (out / c.id / "results.json").exists()]
    log.info(
        "%d cells selected, %d already done, %d to run",
        len(cells),
        len(cells) - len(todo),
        len(todo),
    )
    start = time.monotonic()
    done = 0

    def over_budget() -> bool:
        return budget_s is not None and time.monotonic() - start > budget_s

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        pending: dict[Future[tuple[str, float, float]], tuple[Cell, Path]] = {}
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < jobs and not over_budget():
                cell = queue.pop(0)
                if (out / cell.id / "results.json").exists():  # done by another runner since
                    continue
                held = claim(out, cell.id)
                if held is None:
                    log.info("skip %s: another runner is running it", cell.id)
                    continue
                if (out / cell.id / "results.json").exists():  # finished and released since
                    held.unlink()
                    continue
                log.info("start %s (group %s, %d rounds)", cell.id, cell.group, cell.rounds)
                pending[pool.submit(run_cell, cell, out, threads)] = (cell, held)
            if not pending:
                log.info("budget spent: %d cells not started", len(queue))
                break
            finished = next(iter(_wait_any(pending)))
            cell, held = pending.pop(finished)
            held.unlink(missing_ok=True)
            try:
                cid, acc, secs = finished.result()
            except Exception:
                log.exception("cell %s failed", cell.id)
                continue
            done += 1
            log.info(
                "done %s: accuracy %.4f in %.0f s (%d/%d, %.0f s elapsed)",
                cid,
                acc,
                secs,
                done,
                len(todo),
                time.monotonic() - start,
            )
    return done


def _wait_any(pending: Iterable[Future[Any]]) -> set[Future[Any]]:
    from concurrent.futures import FIRST_COMPLETED, wait

    finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    return finished


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT, help="results folder")
    p.add_argument("--sweep", action="store_true", help="run the hyperparameter sweep")
    p.add_argument("--alpha", type=float, nargs="+", help="keep these α (Dirichlet cells)")
    p.add_argument("--nu", type=int, nargs="+", help="keep these ν (ZO cells)")
    p.add_argument("--k", type=int, nargs="+", help="keep these K (ZO cells)")
    p.add_argument("--variant", nargs="+", choices=("unbiased", "biased"), help="K>1 variants")
    p.add_argument("--aggregator", nargs="+", help="keep these aggregators")
    p.add_argument("--attack", nargs="+", help="keep these attacks")
    p.add_argument("--method", nargs="+", choices=("zo", "first_order"), help="keep methods")
    p.add_argument(
        "--group",
        nargs="+",
        help="priority groups a..e, seeds, long, colluding, k5seeds, iid, rest, sweep",
    )
    p.add_argument("--rounds", type=int, help="override every selected cell's rounds")
    p.add_argument("--jobs", type=int, default=1, help="cells in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--budget-minutes", type=float, help="start no cell after this long")
    p.add_argument("--list", action="store_true", help="print the selected cells and exit")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    cells = select(sweep_cells() if args.sweep else study_cells(), args)
    if args.rounds:
        cells = [replace(c, rounds=args.rounds) for c in cells]
    if args.list:
        for c in cells:
            state = "done" if (args.out / c.id / "results.json").exists() else "todo"
            print(f"{c.group:5} {state:4} {c.rounds:6} {c.id}")
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    budget = None if args.budget_minutes is None else 60.0 * args.budget_minutes
    run_all(cells, args.out, args.jobs, args.threads, budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
