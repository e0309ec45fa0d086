"""Write a ``local`` stack's data folder from MNIST (run inside the image, as the compose test
does; a user can run it the same way to try the own-data knobs without data of their own).

Usage: python write_shards.py FOLDER --honest H --byzantine B [--alpha A] [--seed S]

``FOLDER/honest-i.npz`` and ``FOLDER/byzantine-j.npz`` hold the Dirichlet(A) shards the
built-in MNIST plan would deal the H + B clients in enrolment order (honest ones first), and
``FOLDER/observer.npz`` the 10,000 test examples: one ``.npz`` (``x`` float32 (N, 784), ``y``)
per identity, the names that ``CLIENT_DATA=/data/{id}.npz`` asks for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cyber0.common.data import ShardSpec, load_mnist, load_shard


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("folder", type=Path)
    p.add_argument("--honest", type=int, required=True)
    p.add_argument("--byzantine", type=int, required=True)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ids = [f"honest-{i}" for i in range(1, args.honest + 1)]
    ids += [f"byzantine-{j}" for j in range(1, args.byzantine + 1)]
    args.folder.mkdir(parents=True, exist_ok=True)
    for index, client_id in enumerate(ids):
        spec = ShardSpec(
            n_clients=len(ids),
            client_index=index,
            seed=args.seed,
            partition="dirichlet",
            alpha=args.alpha,
        )
        x, y = load_shard(spec)
        np.savez(args.folder / f"{client_id}.npz", x=x.numpy(), y=y.numpy())
    mnist = load_mnist()
    np.savez(args.folder / "observer.npz", x=mnist.test_x.numpy(), y=mnist.test_y.numpy())
    print(f"{len(ids)} shards and observer.npz in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
