"""Models by name, their evaluation and their identity (:func:`model_digest`).

Construction never touches the global RNG: parameters are allocated uninitialised
(``torch.empty``) and then filled explicitly (zeros, or from a seeded generator).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Affine(nn.Module):
    """``y = x Wᵀ + b``, W ``(out, in)``, b ``(out,)``, computed as ``addmm(b, W, xᵀ)ᵀ``.

    The same map as ``nn.Linear``, written so that under ``vmap`` over many weight sets (the
    batched ZO path) the weights fold into the rows of one matrix product; ``nn.Linear`` there
    becomes a batched product with ``out`` columns, several times slower. Parameters are
    allocated uninitialised (no RNG is touched).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias.unsqueeze(1), self.weight, x.T).T


class LogisticRegression(nn.Module):
    """Multinomial logistic regression ``logits = x.flatten(1) @ Wᵀ + b``, W ``(C, D)``, b ``(C,)``.

    ``init_seed=None`` (default): W = 0 and b = 0, so every party starts from the same point and
    the initial loss is exactly ``log C``. With a seed: W and b ~ U(−1/√D, 1/√D) (the bound
    ``nn.Linear`` uses) drawn from ``torch.Generator().manual_seed(init_seed)``, W first.
    """

    def __init__(
        self, in_features: int = 784, num_classes: int = 10, init_seed: int | None = None
    ) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1; got in_features={in_features}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2; got num_classes={num_classes}")
        self.linear = Affine(in_features, num_classes)
        with torch.no_grad():
            if init_seed is None:
                self.linear.weight.zero_()
                self.linear.bias.zero_()
            else:
                gen = torch.Generator().manual_seed(init_seed)
                bound = 1.0 / math.sqrt(in_features)
                self.linear.weight.uniform_(-bound, bound, generator=gen)
                self.linear.bias.uniform_(-bound, bound, generator=gen)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))

    def cross_entropy_at(self, weights: Tensor, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Mean cross-entropy (labels in ``[0, C)``) at each row of ``weights`` (P, C + C·D), the
        parameters in canonical order (``linear.bias``, then ``linear.weight`` row-major).

        The loss ``vmap`` of :func:`cross_entropy_loss` over ``functional_call`` computes, to
        float32 rounding, at a fraction of its cost: one matrix product of the P·C weight rows,
        the bias added after it, and ``log_softmax`` over the classes of a (P, C, B) tensor.
        """
        x, y = batch
        classes = self.linear.bias.numel()
        rows = weights[None]
        return self.grouped_cross_entropy_at(
            rows[..., :classes], rows[..., classes:], x[None], y[None]
        )[0]

    def grouped_cross_entropy_at(
        self, bias: Tensor, weight: Tensor, x: Tensor, y: Tensor
    ) -> Tensor:
        """:meth:`cross_entropy_at` for G groups at once (G clients, each with its own batch),
        the P rows' parameters split into ``bias`` (G, P, C) and ``weight`` (G, P, C·D) (no copy
        when ``weight`` is contiguous); ``x`` (G, B, ...), ``y`` (G, B) → (G, P).

        Row g is bitwise ``cross_entropy_at`` of group g's rows on its batch on any CPU: each
        group's product is its own matrix product of the ungrouped shapes (one batched product
        of G > 1 takes other kernels on AVX-512 and differs in the last bits), the rest runs on
        all groups at once (tested bitwise against the ungrouped path). ``log_softmax`` runs
        over dimension 1 of the (G·P, C, B) logits as the product lays them out: its kernel
        vectorises along B there, ~30× faster at C = 10 than over a last dimension of 10.
        """
        (groups, rows, classes), features = bias.shape, self.linear.weight.shape[1]
        size = y.shape[1]
        weight = weight.reshape(groups, rows * classes, features)
        features_by_batch = x.flatten(2).transpose(1, 2)
        if groups == 1:
            logits = torch.mm(weight[0], features_by_batch[0])
        else:
            logits = weight.new_empty(groups, rows * classes, size)
            for g in range(groups):
                torch.mm(weight[g], features_by_batch[g], out=logits[g])
        logits = logits.view(groups * rows, classes, size).add_(bias.reshape(-1, classes, 1))
        labels = y.view(groups, 1, 1, size).expand(groups, rows, 1, size)
        picked = logits.log_softmax(1).gather(1, labels.reshape(groups * rows, 1, size))
        return picked.view(groups, rows, size).sum(2).div_(-size)


@dataclass(frozen=True)
class ModelSpec:
    """A model by registry name and shape; ``init_seed=None`` means the model's default init."""

    name: str = "logreg"
    in_features: int = 784
    num_classes: int = 10
    init_seed: int | None = None


def _logreg(spec: ModelSpec) -> nn.Module:
    return LogisticRegression(spec.in_features, spec.num_classes, spec.init_seed)


def _hf(spec: ModelSpec) -> nn.Module:
    from .hf import build_text_classifier  # deferred: transformers is the optional text extra

    return build_text_classifier(spec.name, spec.num_classes, spec.init_seed)


#: Registry key → builder. A name's key is the part before ``?`` (its options), and ``hf`` for
#: every ``hf:<id>`` (a Hugging Face model from a local folder, see :mod:`cyber0.common.hf`).
MODELS: dict[str, Callable[[ModelSpec], nn.Module]] = {"logreg": _logreg, "minilm": _hf, "hf": _hf}


def registry_key(name: str) -> str:
    """``logreg`` → ``logreg``; ``minilm?head=mean`` → ``minilm``; ``hf:roberta-large`` → ``hf``."""
    base = name.partition("?")[0]
    return "hf" if base.startswith("hf:") else base


def build_model(spec: ModelSpec) -> nn.Module:
    """A fresh model for ``spec``; ValueError listing the known names for an unknown one."""
    try:
        builder = MODELS[registry_key(spec.name)]
    except KeyError:
        raise ValueError(
            f"unknown model name={spec.name!r}; known: {', '.join(sorted(MODELS))}"
        ) from None
    return builder(spec)


def cross_entropy_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """The forward-only loss closure of the classification tasks: mean cross-entropy."""
    x, y = batch
    return F.cross_entropy(model(x), y)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 4096) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(x, y)``.

    Runs in eval mode under ``torch.inference_mode`` (the previous train/eval mode is restored);
    per-batch sums are accumulated in Python floats and divided by ``len(y)``. A tie in the
    logits counts for the lowest class index (``argmax``).
    """
    n = y.numel()
    if n == 0 or x.shape[0] != n:
        raise ValueError(f"need len(x) == len(y) > 0; got len(x)={x.shape[0]}, len(y)={n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got batch_size={batch_size}")
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                logits = model(x[start : start + batch_size]).float()
                target = y[start : start + batch_size]
                loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
                correct += int((logits.argmax(dim=1) == target).sum().item())
    finally:
        model.train(was_training)
    return correct / n, loss_sum / n


def model_digest(model: nn.Module) -> str:
    """SHA-256 hex of all parameters: the model identity used by the simulator, the clients and
    the federator logs; :func:`tensors_digest` of ``model.named_parameters()`` (trainable or
    frozen; tied ones once)."""
    return tensors_digest(model.named_parameters())


def tensors_digest(named: Iterable[tuple[str, Tensor]]) -> str:
    """SHA-256 hex of named tensors, taken sorted by name; for each, the hash absorbs
    ``len(header)`` (8 bytes, little-endian), ``header = "name|dtype|shape"`` in UTF-8, then the
    tensor's raw bytes (``detach().contiguous().cpu()``, native little-endian).

    Registration order does not matter; names, shapes, dtypes and every bit of every value do.
    """
    h = hashlib.sha256()
    for name, param in sorted(named, key=lambda item: item[0]):
        tensor = param.detach().contiguous().cpu()
        header = f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode()
        h.update(struct.pack("<Q", len(header)))
        h.update(header)
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
