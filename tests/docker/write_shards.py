"""Write a ``local`` stack's data folder from a built-in dataset (run inside the image, as the
compose test does; a user can run it the same way to try the own-data knobs without data of
their own).

Usage: python write_shards.py FOLDER --honest H --byzantine B [--text] [--alpha A] [--seed S]

One file per identity, named as ``CLIENT_DATA=/data/{id}.npz`` (or ``{id}.csv``) asks for:
``honest-i`` and ``byzantine-j`` hold the Dirichlet(A) shards the built-in plan deals the H + B
clients in enrolment order (honest ones first), ``observer`` the test examples.

- MNIST (default): ``.npz`` files, ``x`` float32 (N, 784) and ``y``; the observer gets the
  10,000 test images.
- ``--text``: Rotten Tomatoes ``.csv`` files (``text``, ``label``: 1 = fresh) holding the
  sentences of ``rotten_tomatoes`` shards in their order; the observer gets the 2,000 test
  sentences.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def write_mnist(folder: Path, ids: list[str], alpha: float, seed: int) -> None:
    from cyber0.common.data import ShardSpec, load_mnist, load_shard

    for index, client_id in enumerate(ids):
        spec = ShardSpec(
            n_clients=len(ids), client_index=index, seed=seed, partition="dirichlet", alpha=alpha
        )
        x, y = load_shard(spec)
        np.savez(folder / f"{client_id}.npz", x=x.numpy(), y=y.numpy())
    mnist = load_mnist()
    np.savez(folder / "observer.npz", x=mnist.test_x.numpy(), y=mnist.test_y.numpy())


def write_text(folder: Path, ids: list[str], alpha: float, seed: int) -> None:
    from cyber0.common.text import TextShardSpec, corpus_split, load_corpus, text_shard_indices

    corpus = load_corpus()

    def write(path: Path, indices: list[int]) -> None:
        with path.open("w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["text", "label"])
            writer.writerows((corpus.texts[i], int(corpus.labels[i])) for i in indices)

    for index, client_id in enumerate(ids):
        spec = TextShardSpec(
            n_clients=len(ids), client_index=index, seed=seed, partition="dirichlet", alpha=alpha
        )
        write(folder / f"{client_id}.csv", text_shard_indices(spec).tolist())
    write(folder / "observer.csv", corpus_split().test.tolist())


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("folder", type=Path)
    p.add_argument("--honest", type=int, required=True)
    p.add_argument("--byzantine", type=int, required=True)
    p.add_argument("--text", action="store_true", help="Rotten Tomatoes sentences, not MNIST")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ids = [f"honest-{i}" for i in range(1, args.honest + 1)]
    ids += [f"byzantine-{j}" for j in range(1, args.byzantine + 1)]
    args.folder.mkdir(parents=True, exist_ok=True)
    (write_text if args.text else write_mnist)(args.folder, ids, args.alpha, args.seed)
    print(f"{len(ids)} shards and the observer's file in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
