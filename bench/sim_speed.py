"""Simulator speed: wall time of a 20-client, 1000-round MNIST run at ν = 64 (target < 120 s).

    python bench/sim_speed.py [--repeats 3] [--rounds 1000] [--batch 32 128]

Runs the simulator in this process (CWTM, f = 5, ALIE, Dirichlet(1), 2 torch threads) for each
batch size, ``--repeats`` times, interleaved, and writes ``bench/results/sim-speed.json``
(median and spread of the wall times, the machine and its load) for ``bench/report.py``.

Then, for the study's K = 5 cells (ν = 1 and 64, batch 128), the 20 clients' local rounds of
one round as the simulator runs them, grouped (``ZOEstimator.local_rounds``), against the same
rounds client by client (``local_round``), alternating round by round on the same batches:
the time per round of each, their ratio, and a check that both give the same bits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, figure, machine, started, write_result

from cyber0.common.allocator import keep_freed_memory
from cyber0.common.estimator import ZOEstimator
from cyber0.common.models import LogisticRegression, cross_entropy_loss
from cyber0.common.perturbation import DirectionGenerator
from cyber0.common.plan import ZOSettings
from cyber0.common.simulator import build_config, load_examples, make_clients, simulate

#: The study's K = 5 settings timed client by client against grouped: ν → rate.
GROUPED_RATES = {1: 8e-3, 64: 4e-3}


def config(rounds: int, batch: int) -> dict[str, Any]:
    """The timed run: the study's setting at α = 1 (ν = 64, CWTM, ALIE), one evaluation."""
    return {
        "seed": 0,
        "rounds": rounds,
        "eval_every": rounds,
        "n_clients": 20,
        "f": 5,
        "data": {"partition": "dirichlet", "alpha": 1.0},
        "zo": {"nu": 64, "mu": 0.001, "lr": 0.004, "batch_size": batch},
        "aggregator": {"name": "cwtm"},
        "attack": {"name": "alie"},
    }


def client_rounds(nu: int, rounds: int, threads: int) -> list[dict[str, Any]]:
    """Per-round time of the 20 clients' K = 5 local rounds (ν = ``nu``, unbiased, batch 128),
    grouped and client by client, alternating (the order flips every round); their ratio per
    round pair. Raises if the two ever differ in a bit."""
    built = build_config(config(rounds, 128))
    zo = ZOSettings(nu=nu, local_steps=5, mu=1e-3, lr=GROUPED_RATES[nu], batch_size=128)
    clients = make_clients(built, None, load_examples(built))
    model = LogisticRegression(init_seed=0)
    estimator = ZOEstimator(model, cross_entropy_loss, DirectionGenerator(0), zo, "batched")
    times: dict[str, list[float]] = {"grouped": [], "client_by_client": []}
    for t in range(rounds):
        batches = [[c.batch(built, 128, t, k) for k in range(5)] for c in clients]
        rows = {}
        for way in ("grouped", "client_by_client")[:: 1 if t % 2 == 0 else -1]:
            start = time.perf_counter()
            if way == "grouped":
                rows[way] = estimator.local_rounds(t, batches)
            else:
                rows[way] = torch.stack([estimator.local_round(t, b) for b in batches])
            times[way].append(time.perf_counter() - start)
        if not torch.equal(rows["grouped"], rows["client_by_client"]):
            raise RuntimeError(f"grouped and client-by-client rows differ at round {t}")
    ratios = [a / b for a, b in zip(times["client_by_client"], times["grouped"], strict=True)]
    label = f"20 clients' local rounds, ν={nu}, K=5, batch 128, {threads} torch threads"
    return [
        figure(
            f"sim.clients.nu{nu}.{way}",
            f"{label}: {way.replace('_', ' ')}, per round",
            "ms",
            [1e3 * v for v in values],
        )
        for way, values in times.items()
    ] + [
        figure(
            f"sim.clients.nu{nu}.speedup",
            f"{label}: client by client / grouped (same bits, checked every round)",
            "×",
            ratios,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="results folder (default bench/results)")
    p.add_argument("--name", default="sim-speed")
    p.add_argument("--client-rounds", type=int, default=30, help="rounds timed per ν, each way")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    doc: dict[str, Any] = {"command": command_line(), "machine": machine(), "started": started()}
    doc["keep_freed_memory"] = keep_freed_memory()  # as cyber0-sim does
    walls: dict[int, list[float]] = {b: [] for b in args.batch}
    accuracy: dict[int, list[float]] = {b: [] for b in args.batch}
    for _ in range(args.repeats):
        for batch in args.batch:
            built = build_config(config(args.rounds, batch))
            start = time.perf_counter()
            result = simulate(built)
            walls[batch].append(time.perf_counter() - start)
            accuracy[batch].append(float(result["final_test_accuracy"]))
            print(f"batch {batch}: {walls[batch][-1]:.1f} s", flush=True)
    doc["runs"] = {str(b): {"wall_seconds": walls[b], "accuracy": accuracy[b]} for b in walls}
    doc["figures"] = [
        figure(
            f"sim.speed.b{batch}",
            f"simulator, 20 clients × {args.rounds} rounds, ν=64, batch {batch}, CWTM + ALIE, "
            f"{args.threads} torch threads: wall time",
            "s",
            walls[batch],
            target="< 120" if args.rounds == 1000 else None,
            note=f"final test accuracy {100 * accuracy[batch][0]:.2f}% (every run)"
            if len(set(accuracy[batch])) == 1
            else "final test accuracy differs between runs",
        )
        for batch in args.batch
    ]
    for nu in GROUPED_RATES:
        doc["figures"] += client_rounds(nu, args.client_rounds, args.threads)
    print(f"wrote {write_result(args.name, doc, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
