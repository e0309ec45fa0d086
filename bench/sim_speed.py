"""Simulator speed: wall time of a 20-client, 1000-round MNIST run at ν = 64 (target < 120 s).

    python bench/sim_speed.py [--repeats 3] [--rounds 1000] [--out bench/results/sim_speed.json]

Runs the simulator in this process (CWTM, f = 5, ALIE, Dirichlet(1)), ``--repeats`` times, and
writes the median and spread of the wall times with the machine's core count and load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from cyber0.common.simulator import build_config, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--out", default="bench/results/sim_speed.json")
    args = parser.parse_args()
    config = build_config(
        {
            "seed": 0,
            "rounds": args.rounds,
            "eval_every": args.rounds,
            "n_clients": 20,
            "f": 5,
            "data": {"partition": "dirichlet", "alpha": 1.0},
            "zo": {"nu": 64, "mu": 0.001, "lr": 0.002, "batch_size": 32},
            "aggregator": {"name": "cwtm"},
            "attack": {"name": "alie"},
        }
    )
    walls, accuracies = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = simulate(config)
        walls.append(time.perf_counter() - start)
        accuracies.append(result["final_test_accuracy"])
        print(f"{walls[-1]:.1f} s, accuracy {accuracies[-1]:.4f}", flush=True)
    record = {
        "benchmark": "sim_speed",
        "command": f"python bench/sim_speed.py --repeats {args.repeats} --rounds {args.rounds}",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "config": {"n_clients": 20, "f": 5, "nu": 64, "rounds": args.rounds},
        "wall_seconds": walls,
        "median_seconds": statistics.median(walls),
        "min_seconds": min(walls),
        "max_seconds": max(walls),
        "target_seconds": 120.0,
        "met": statistics.median(walls) < 120.0,
        "final_test_accuracy": accuracies,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"median {record['median_seconds']:.1f} s (target < 120 s): {args.out}")


if __name__ == "__main__":
    main()
