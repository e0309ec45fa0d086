"""Examples a client brings from its own disk: the ``local`` dataset.

A plan whose dataset is ``local?classes=C[&max_length=L]`` trains on data the federator never
sees and never names: each training daemon reads its own file (``cyber0-client --data FILE``),
and an observer's file is the set it evaluates on. Only the label count C (the model's output
width) and, for text models, the tokens per example L (default 64) are shared through the plan.
Every example of the file is the client's shard; its minibatches are drawn as for any shard
(:func:`~cyber0.common.data.batch_indices`).

File formats, by suffix:

- text models (``minilm``, ``hf:<id>``): ``.csv`` or ``.tsv`` with a header row naming a ``text``
  and a ``label`` column (other columns are ignored), or ``.jsonl`` with one
  ``{"text": ..., "label": ...}`` object a line; UTF-8. ``.csv`` and ``.tsv`` follow CSV
  quoting, read strictly: a field that starts with ``"`` is quoted (a ``"`` inside it is
  written ``""``), and an unclosed or misplaced quote is an error, never merged rows. Sentences
  go through the model's own tokenizer (truncated and right-padded to L tokens).
- other models: ``.npz`` (``numpy.savez``, read without pickle) with an array ``x`` of N
  examples shaped as the model's input (``logreg?inputs=D``: D features, default 784, which
  28 × 28 images also fit) and an integer array ``y`` of N labels.

Labels are integers in ``[0, C)``; to label new examples (``cyber0-evaluate``) a file may have
none (the readers with ``classes=None``). A file that breaks a rule raises
:class:`DataFileError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import functools
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import torch
from torch import Tensor, nn

from .config import int_options, name_options
from .plan import TrainingPlan
from .text import DEFAULT_MAX_LENGTH, check_max_length, tokenize

DATASET = "local"
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl")
ARRAY_SUFFIXES = (".npz",)


class DataFileError(ValueError):
    """A local data file cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class LocalDataset:
    """A parsed dataset name: ``local?classes=C&max_length=L``."""

    classes: int
    max_length: int = DEFAULT_MAX_LENGTH


def parse_local_name(name: str) -> LocalDataset:
    """``local?classes=2&max_length=32`` → ``LocalDataset(2, 32)``; ValueError naming the bad
    part (``classes`` is required and at least 2)."""
    base, options = name_options(name, "dataset", ("classes", "max_length"))
    if base != DATASET:
        raise ValueError(f"dataset {name!r}: expected {DATASET!r} before '?'")
    values = int_options(name, "dataset", options)
    if values.get("classes", 0) < 2:
        raise ValueError(f"dataset {name!r}: give classes=<number of labels, >= 2>")
    dataset = LocalDataset(**values)
    check_max_length(name, dataset.max_length)
    return dataset


def check_data_path(path: str, text: bool | None = None) -> Path:
    """``path`` as an existing file with a known suffix (for a text model when ``text``, another
    model when not ``text``, either when None); DataFileError otherwise."""
    file = Path(path)
    suffixes = {True: TEXT_SUFFIXES, False: ARRAY_SUFFIXES, None: TEXT_SUFFIXES + ARRAY_SUFFIXES}
    allowed = suffixes[text]
    if file.suffix.lower() not in allowed:
        kind = {True: "a text model's", False: "this model's", None: "local"}[text]
        raise DataFileError(f"{path}: {kind} examples must be in a {'/'.join(allowed)} file")
    if not file.exists():
        raise DataFileError(f"{path}: no such file")
    if not file.is_file():
        raise DataFileError(f"{path}: not a file")
    return file


def _label(raw: object, classes: int, where: str) -> int:
    """``raw`` (an int, or its decimal string) as a label in ``[0, classes)``."""
    value = raw.strip() if isinstance(raw, str) else raw
    if isinstance(value, str) and value.isascii() and value.lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < classes:
        raise DataFileError(f"{where}: label {raw!r} is not an integer in [0, {classes})")
    return value


def _delimiter(file: Path) -> str:
    """The field separator of a ``.csv`` (comma) or ``.tsv`` (tab) file."""
    return "\t" if file.suffix.lower() == ".tsv" else ","


@overload
def read_sentences(path: str, classes: int) -> tuple[list[str], Tensor]: ...
@overload
def read_sentences(path: str, classes: None) -> tuple[list[str], None]: ...


def read_sentences(path: str, classes: int | None) -> tuple[list[str], Tensor | None]:
    """The sentences and int64 labels of a ``.csv``/``.tsv``/``.jsonl`` file (module docstring);
    ``classes=None``: the sentences alone (the file needs no labels; any are ignored)."""
    file = check_data_path(path, text=True)
    labelled = classes is not None
    fields = ("text", "label") if labelled else ("text",)
    texts: list[str] = []
    labels: list[int] = []
    try:
        with file.open(encoding="utf-8-sig", newline="") as stream:
            if file.suffix.lower() == ".jsonl":
                for number, line in enumerate(stream, 1):
                    if not line.strip():
                        continue
                    where = f"{path}: line {number}"
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataFileError(f"{where}: not JSON ({exc.msg})") from None
                    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                        raise DataFileError(f'{where}: want {{"text": "...", "label": <int>}}')
                    texts.append(row["text"])
                    if classes is not None:
                        labels.append(_label(row.get("label"), classes, where))
            else:
                reader = csv.DictReader(stream, delimiter=_delimiter(file), strict=True)
                try:
                    missing = set(fields) - set(reader.fieldnames or ())
                    if missing:
                        raise DataFileError(
                            f"{path}: the header row has no {' or '.join(sorted(missing))} column"
                        )
                    for row in reader:
                        where = f"{path}: line {reader.line_num}"
                        if any(row[name] is None for name in fields):
                            raise DataFileError(f"{where}: fewer fields than the header")
                        texts.append(row["text"])
                        if classes is not None:
                            labels.append(_label(row["label"], classes, where))
                except csv.Error as exc:  # in the record after the last one read
                    raise DataFileError(
                        f"{path}: line {reader.line_num + 1}: {exc} (read with CSV quoting)"
                    ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFileError(f"{path}: {exc}") from None
    if not texts:
        raise DataFileError(f"{path}: no examples")
    return texts, torch.tensor(labels, dtype=torch.int64) if labelled else None


def _npz_arrays(path: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file named in ``names``, those it has (no other is read)."""
    file = check_data_path(path, text=False)
    found: dict[str, np.ndarray] | None = None
    try:
        with file.open("rb") as stream:  # closed here whatever numpy makes of the bytes
            loaded = np.load(stream, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                found = {name: loaded[name] for name in names if name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataFileError(f"{path}: not a readable .npz file ({exc})") from None
    if found is None:
        raise DataFileError(f"{path}: holds one array (.npy); save x and y with numpy.savez")
    return found


@overload
def read_arrays(path: str, classes: int) -> tuple[Tensor, Tensor]: ...
@overload
def read_arrays(path: str, classes: None) -> tuple[Tensor, None]: ...


def read_arrays(path: str, classes: int | None) -> tuple[Tensor, Tensor | None]:
    """Float32 examples and int64 labels of an ``.npz`` file (module docstring);
    ``classes=None``: the examples alone (the file needs no ``y``; one is ignored)."""
    names = ("x", "y") if classes is not None else ("x",)
    arrays = _npz_arrays(path, names)
    missing = set(names) - set(arrays)
    if missing:
        raise DataFileError(f"{path}: no array named {' or '.join(sorted(missing))}")
    x = arrays["x"]
    y = arrays["y"] if classes is not None else None
    if y is not None and (y.ndim != 1 or y.dtype.kind not in "iu"):
        raise DataFileError(f"{path}: y must be a 1-D integer array; got {y.dtype} {y.shape}")
    count = x.shape[0] if y is None else y.shape[0]
    if x.ndim < 2 or x.shape[0] != count or x.dtype.kind not in "fiu":
        raise DataFileError(
            f"{path}: x must be a numeric array of {count} examples (one per label); "
            f"got {x.dtype} {x.shape}"
        )
    if count == 0:
        raise DataFileError(f"{path}: no examples")
    if y is not None and classes is not None:
        bad = np.flatnonzero((y < 0) | (y >= classes))
        if bad.size:
            raise DataFileError(
                f"{path}: y[{bad[0]}] = {y[bad[0]]} is not a label in [0, {classes}) "
                f"({bad.size} of {y.size} labels out of range)"
            )
    features = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not bool(torch.isfinite(features).all()):
        raise DataFileError(f"{path}: x holds NaN or infinite values")
    return features, None if y is None else torch.from_numpy(y.astype(np.int64))


def has_labels(path: str) -> bool:
    """Whether an examples file carries labels: a ``label`` column (CSV, TSV), a ``label`` in
    its first object (JSON Lines), an array ``y`` (``.npz``: only ``y`` is read);
    DataFileError when it cannot be read."""
    file = check_data_path(path)
    if file.suffix.lower() == ".npz":
        return "y" in _npz_arrays(path, ("y",))
    try:
        with file.open(encoding="utf-8-sig", newline="") as stream:
            if file.suffix.lower() == ".jsonl":
                first = next((line for line in stream if line.strip()), "{}")
                row = json.loads(first)
                return isinstance(row, dict) and "label" in row
            reader = csv.DictReader(stream, delimiter=_delimiter(file), strict=True)
            return "label" in (reader.fieldnames or ())
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
        raise DataFileError(f"{path}: {exc}") from None


def check_fits(model: nn.Module, x: Tensor, path: str) -> None:
    """DataFileError naming ``path`` unless ``model`` accepts the file's examples (one is run);
    for a text model first a ValueError naming ``max_length`` (the examples' width), the model
    and its limit when sentences that long do not fit its positions
    (:func:`~cyber0.common.hf.check_positions`)."""
    from .hf import TextClassifier, check_positions

    if isinstance(model, TextClassifier):
        check_positions(model, x.shape[-1])
    try:
        with torch.inference_mode():
            model(x[:1].to(next(model.parameters()).device))
    except (RuntimeError, ValueError, IndexError) as exc:
        raise DataFileError(
            f"{path}: examples shaped {tuple(x.shape[1:])} do not fit the model ({exc})"
        ) from None


@dataclass(frozen=True)
class LocalTask:
    """The client-side task of a ``local`` plan: every shard and the test set are ``path``'s
    examples (tokenised with the tokenizer in ``folder`` for a text model; None: arrays)."""

    dataset: LocalDataset
    path: str
    folder: Path | None = None

    @property
    def num_classes(self) -> int:
        return self.dataset.classes

    @property
    def eval_batch_size(self) -> int:
        return 4096 if self.folder is None else 256

    @functools.cached_property
    def examples(self) -> tuple[Tensor, Tensor]:
        """The file's ``(x, y)`` on the CPU, read once (treat as read-only)."""
        if self.folder is None:
            return read_arrays(self.path, self.dataset.classes)
        texts, labels = read_sentences(self.path, self.dataset.classes)
        return tokenize(texts, self.folder, self.dataset.max_length), labels

    def inputs(self) -> Tensor:
        """The file's examples without labels (the file may have none), on the CPU."""
        if self.folder is None:
            return read_arrays(self.path, None)[0]
        texts, _ = read_sentences(self.path, None)
        return tokenize(texts, self.folder, self.dataset.max_length)

    def shard(self, plan: TrainingPlan, index: int) -> tuple[Tensor, Tensor]:
        """The file's examples, whatever the shard index."""
        return self.examples

    def test_set(self) -> tuple[Tensor, Tensor]:
        """The file's examples (an observer's evaluation set)."""
        return self.examples
