"""Simulator speed: wall time of a 20-client, 1000-round MNIST run at ν = 64 (target < 120 s).

    python bench/sim_speed.py [--repeats 3] [--rounds 1000] [--batch 32 128]

Runs the simulator in this process (CWTM, f = 5, ALIE, Dirichlet(1), 2 torch threads) for each
batch size, ``--repeats`` times, interleaved, and writes ``bench/results/sim-speed.json``
(median and spread of the wall times, the machine and its load) for ``bench/report.py``.
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

from cyber0.common.simulator import build_config, simulate


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


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="results folder (default bench/results)")
    p.add_argument("--name", default="sim-speed")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    doc: dict[str, Any] = {"command": command_line(), "machine": machine(), "started": started()}
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
    print(f"wrote {write_result(args.name, doc, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
