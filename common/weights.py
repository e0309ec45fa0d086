"""Trained weights on disk: a safetensors file that any party can load and check.

A model's state is a pure function of (initial weights, plan, aggregates), but a user who has
trained one wants the weights themselves. :func:`save_weights` writes every parameter under its
name (tied parameters once, as ``named_parameters`` yields them; buffers are left out: training
never changes them and the model digest does not cover them) with metadata that names the model
and carries its digest. :func:`load_weights` (into a model you built) and :func:`load_model`
(builds the model the metadata names) check the digest before touching a model and refuse a
file whose names, shapes or dtypes differ from the model's, so a truncated, edited or foreign
file is an error, never a silently different model.

A client's checkpoint also records, under :data:`CHAIN_KEY`, the :func:`chain_aggregate` value of
the aggregates it applied: what lets a resumed client check that the file belongs to the run the
federator serves, and not to another run of the same plan.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .models import ModelSpec, build_model, tensors_digest

FORMAT = "cyber0-weights/1"

#: Metadata key of a checkpoint's aggregate chain (hex), for rounds ``0 … round``; files written
#: before it existed lack it.
CHAIN_KEY = "aggregate_chain"

#: The aggregate chain before round 0.
CHAIN_START = bytes(32)


def chain_aggregate(previous: bytes, round: int, values: Sequence[float] | np.ndarray) -> bytes:
    """The aggregate chain after ``round``: ``SHA-256(previous ‖ round as 8-byte little-endian ‖
    the values as float32 little-endian)``, ``previous`` being the chain after ``round − 1``
    (:data:`CHAIN_START` before round 0). Equal chains mean equal aggregates, so, for one plan,
    the same model."""
    values32 = np.asarray(values, dtype="<f4")
    return hashlib.sha256(previous + round.to_bytes(8, "little") + values32.tobytes()).digest()


class WeightsError(ValueError):
    """A weights file does not fit the model it is loaded into (the message says how)."""


def save_weights(
    model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> str:
    """Write ``model``'s parameters to ``path`` (safetensors) and return their digest.

    ``metadata`` (string values) is stored beside ``format`` and ``digest``. The file appears
    whole or not at all: it is written next to ``path``, synced to disk and renamed over it.
    """
    path = Path(path)
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()}
    digest = tensors_digest(tensors.items())
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, tmp, metadata={**(metadata or {}), "format": FORMAT, "digest": digest})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return digest


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a weights file (its header only; the values are not read or checked)."""
    metadata, _ = _read(path, values=False)
    return metadata


def _read(
    path: str | os.PathLike[str], values: bool = True
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a weights file, checking its format and (``values``) its digest."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            names = list(f.keys()) if values else []
            tensors = {name: f.get_tensor(name) for name in names}
    except (OSError, SafetensorError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file: {exc}") from None
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
    if not values:
        return metadata, tensors
    stored = metadata.get("digest", "")
    if tensors_digest(tensors.items()) != stored:
        raise WeightsError(
            f"{path}: the stored values do not have the digest the file records "
            f"({stored[:16]}...): the file was altered or damaged"
        )
    return metadata, tensors


def _copy_into(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: object) -> None:
    params = dict(model.named_parameters())
    missing, unexpected = sorted(params.keys() - tensors.keys()), sorted(tensors.keys() - params)
    if missing or unexpected:
        raise WeightsError(
            f"{path}: parameters missing from the file: {missing[:5]}; "
            f"in the file but not in the model: {unexpected[:5]}"
        )
    for name, p in params.items():
        t = tensors[name]
        if t.shape != p.shape or t.dtype != p.dtype:
            raise WeightsError(
                f"{path}: {name} is {t.dtype} {tuple(t.shape)} in the file, "
                f"{p.dtype} {tuple(p.shape)} in the model"
            )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name])


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, str]:
    """Copy the parameters stored at ``path`` into ``model`` in place; return the metadata.

    Raises :class:`WeightsError`, leaving ``model`` untouched, when the file is unreadable, is
    not this format, holds values whose digest is not the one it records, names other
    parameters, or has another shape or dtype for one.
    """
    metadata, tensors = _read(path)
    _copy_into(model, tensors, path)
    return metadata


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, str]]:
    """The model a client saved (``model`` and ``num_classes`` metadata name it; a Hugging Face
    model needs its local folder, as at training) with the saved weights, and the metadata."""
    metadata, tensors = _read(path)
    try:
        spec = ModelSpec(name=metadata["model"], num_classes=int(metadata["num_classes"]))
    except (KeyError, ValueError):
        raise WeightsError(
            f"{path}: the metadata does not name the model (model, num_classes); "
            "build it yourself and use load_weights"
        ) from None
    model = build_model(spec)
    _copy_into(model, tensors, path)
    return model, metadata
