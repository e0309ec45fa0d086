"""Where a study cell's aggregate points: each round, the aggregate against the honest mean.

    python bench/probe_mnist.py --aggregator nnm+cwtm --attack sf --seed 1 --rounds 800
    python bench/probe_mnist.py --attack sf --seed 1 --k 5 --variant biased

Runs one CYBER-0 cell of ``bench/study_mnist.py`` (the same simulation, up to ``--rounds``) with
a probe on the aggregation and writes ``bench/results/probe/<cell id>.json``. Per round, with
μ_h the mean of the honest vectors and a the aggregate:

- ``cosine``: cos(a, μ_h);
- ``projection``: a·μ_h / |μ_h|², the share of the honest mean the aggregate carries along it
  (1 for the plain mean without an attack);
- ``spread``: the honest vectors' median distance to μ_h, over |μ_h|;
- ``honest_norm``: |μ_h| (with ``projection``, the aggregate's component along μ_h is
  projection·|μ_h|, in the scalars' units: what the round's update moves along it);
- ``coordinates``: the number of coordinates μ_h's energy effectively sits in, the
  participation ratio (Σ μ_j²)² / Σ μ_j⁴ (1 for one coordinate, m for equal ones);
- ``clear_share``: the share of |μ_h|² in the coordinates where |μ_j| exceeds the honest
  vectors' standard deviation σ_j there, where a value of the opposite sign stands out of
  the honest spread for a coordinate-wise rule;
- ``carriers``: how few honest vectors carry half of the honest mean along itself: the
  smallest k such that the k largest projections x_i·μ_h sum to at least half of all of them;
- ``byzantine_neighbours``: the share of the f Byzantine vectors among an honest vector's
  n − f nearest vectors (itself included: what NNM averages into it), averaged over the honest
  vectors (0 when none is among them, 1 when all are);
- ``crowded``: the share of honest vectors with all f Byzantine vectors among those neighbours;
- ``mixed_against``: the share of NNM's n mixed vectors that point against the honest mean
  (a negative projection on μ_h).

``bench/report_mnist.py`` summarises every probe file it finds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_mnist import ALPHAS, ATTACKS, Cell, F

if TYPE_CHECKING:
    from torch import Tensor

OUT = Path(__file__).resolve().parent / "results" / "probe"


def round_figures(honest: Tensor, aggregate: Tensor) -> dict[str, float]:
    """One round's figures (see the module docstring) from the honest vectors ``honest``
    (h, m) and the aggregate (m,), in float64."""
    honest = honest.double()
    mean, a = honest.mean(0), aggregate.double()
    norm2 = float(mean @ mean)
    energy = mean.square()
    clear = mean.abs() > honest.std(0)
    return {
        "cosine": float(a @ mean) / max(float(a.norm()) * norm2**0.5, 1e-300),
        "projection": float(a @ mean) / max(norm2, 1e-300),
        "spread": float((honest - mean).norm(dim=1).median()) / max(norm2**0.5, 1e-300),
        "honest_norm": norm2**0.5,
        "coordinates": norm2**2 / max(float(energy.square().sum()), 1e-300),
        "clear_share": float(energy[clear].sum()) / max(norm2, 1e-300),
        "carriers": carriers(honest @ mean),
    }


def carriers(projections: Tensor) -> float:
    """The smallest k whose k largest ``projections`` sum to at least half of their total."""
    ordered = projections.sort(descending=True).values
    reached = ordered.cumsum(0) >= 0.5 * ordered.sum()
    return float(int(reached.nonzero()[0]) + 1) if bool(reached.any()) else float(len(ordered))


def neighbour_figures(rows: Tensor, f: int) -> dict[str, float]:
    """``byzantine_neighbours``, ``crowded`` and ``mixed_against`` (see the module docstring)
    for the Byzantine rows ``rows[:f]`` and the honest ``rows[f:]``, from NNM's own neighbours
    and mixing (:func:`~cyber0.common.aggregators.nnm_neighbours`, ``nnm_mix``)."""
    from cyber0.common.aggregators import nnm_mix, nnm_neighbours

    rows = rows.double()
    count = nnm_neighbours(rows, f)[f:, :f].sum(dim=1)
    against = nnm_mix(rows, f) @ rows[f:].mean(0) < 0
    return {
        "byzantine_neighbours": float(count.sum()) / (f * count.numel()),
        "crowded": float((count == f).sum()) / count.numel(),
        "mixed_against": float(against.sum()) / against.numel(),
    }


def probe_cell(cell: Cell) -> dict[str, object]:
    """Simulate ``cell`` with the probe; the per-round figures and the evaluation history."""
    from cyber0.common.simulator import build_config, run_zo

    series: dict[str, list[float]] = {}

    def probe(_: int, rows: Tensor, aggregate: Tensor) -> None:
        figures = round_figures(rows[F:], aggregate) | neighbour_figures(rows, F)
        for name, value in figures.items():
            series.setdefault(name, []).append(value)

    result = run_zo(build_config(cell.config()), probe=probe)
    return {"cell": cell.id, "config": cell.config(), **series, "history": result.history}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aggregator", default="nnm+cwtm")
    p.add_argument("--attack", default="sf", choices=ATTACKS)
    p.add_argument("--alpha", type=float, default=1.0, choices=ALPHAS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=1, help="local steps K")
    p.add_argument("--variant", default="unbiased", choices=("unbiased", "biased"))
    p.add_argument("--rounds", type=int, default=800)
    p.add_argument("--out", type=Path, default=OUT, help="folder for the probe files")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    cell = Cell(
        "zo",
        args.alpha,
        args.aggregator,
        args.attack,
        k=args.k,
        variant=args.variant,
        seed=args.seed,
        rounds=args.rounds,
    )
    data = probe_cell(cell)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{cell.id}.json"
    path.write_text(json.dumps(data) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
