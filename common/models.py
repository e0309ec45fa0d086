"""Models by name, their evaluation and their identity (:func:`model_digest`).

Construction never touches the global RNG: parameters are allocated uninitialised
(``torch.empty``) and then filled explicitly (zeros, or from a seeded generator).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import int_options, name_options
from .plan import LOSSES, PlanError

#: A forward-only loss closure: ``loss_fn(model, batch)`` returns a scalar tensor.
LossFn = Callable[[nn.Module, Any], Tensor]


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

    def cross_entropy_at(
        self, weights: Tensor, batch: tuple[Tensor, Tensor], balanced: bool = False
    ) -> Tensor:
        """Mean cross-entropy (labels in ``[0, C)``) at each row of ``weights`` (P, C + C·D), the
        parameters in canonical order (``linear.bias``, then ``linear.weight`` row-major);
        ``balanced``: the class-balanced mean ``Σ w_i ℓ_i`` (:func:`class_balanced_weights`).

        The loss ``vmap`` of :func:`cross_entropy_loss` (or :func:`balanced_cross_entropy_loss`)
        over ``functional_call`` computes, to float32 rounding, at a fraction of its cost: one
        matrix product of the P·C weight rows, the bias added after it, and ``log_softmax`` over
        the classes of a (P, C, B) tensor (its kernel vectorises along B there, ~30× faster at
        C = 10 than over a last dimension of 10).
        """
        x, y = batch
        (rows, _), (classes, features) = weights.shape, self.linear.weight.shape
        bias = weights[:, :classes].reshape(rows, classes, 1)
        weight = weights[:, classes:].reshape(rows * classes, features)
        logits = torch.mm(weight, x.reshape(-1, features).T).view(rows, classes, -1).add_(bias)
        labels = y.view(1, 1, -1).expand(rows, 1, -1)
        picked = logits.log_softmax(1).gather(1, labels)
        if balanced:
            weighted = picked.view(rows, -1).double().mv(class_balanced_weights(y.view(-1)))
            return weighted.neg_().to(picked.dtype)
        return picked.sum(2).div_(-y.numel()).view(rows)

    def directional_differences(
        self,
        bias: Tensor,
        weight: Tensor,
        z: Tensor,
        x: Tensor,
        y: Tensor,
        mu: float,
        balanced: bool = False,
    ) -> Tensor:
        """g (G, ν) in float64: ``(L(w + μ z_j) − L(w − μ z_j)) / (2μ)`` for G groups (clients)
        at bias (G, C) and weight (G, C·D), group g on its batch ``x[g]`` (B, ...), ``y[g]``
        (B,), along the rows of z (ν, C + C·D), L the batch's mean cross-entropy (``balanced``:
        its class-balanced mean ``Σ w_i ℓ_i``, :func:`class_balanced_weights` of ``y[g]``).

        The logits are linear in the weights: at w ± μz_j they are ``a ± μ e_j`` with
        ``a = b + W x`` and ``e_j = z_j``'s bias part ``+ Z_j x``, so the products are taken
        once for W and once for the ν directions (not for 2ν perturbed weight rows), w ± μz is
        never rounded to float32, and the losses are taken in float64. What the native kernel's
        ``logreg_scalars`` computes for the mean (in its own order of float32 sums: the two agree
        to float32 rounding of the products).
        """
        (groups, classes), features, nu = bias.shape, self.linear.weight.shape[1], z.shape[0]
        z_bias = z[:, :classes].double().unsqueeze(2)
        z_weight = z[:, classes:].reshape(nu * classes, features)
        out = torch.empty(groups, nu, dtype=torch.float64, device=bias.device)
        for g in range(groups):
            x_t = x[g].reshape(-1, features).T
            a = torch.mm(weight[g].view(classes, features), x_t).double()
            a += bias[g].double().unsqueeze(1)
            u = torch.mm(z_weight, x_t).double().view(nu, classes, -1).add_(z_bias).mul_(mu)
            picked = u.gather(1, y[g].view(1, 1, -1).expand(nu, 1, -1)).squeeze(1)
            difference = (a + u).logsumexp(1) - (a - u).logsumexp(1) - 2.0 * picked
            if balanced:
                out[g] = difference.mv(class_balanced_weights(y[g])).div_(2.0 * mu)
            else:
                out[g] = difference.mean(1).div_(2.0 * mu)
        return out


@dataclass(frozen=True)
class ModelSpec:
    """A model by registry name (which carries its options, such as ``logreg?inputs=30``) and
    class count; ``init_seed=None`` means the model's default init."""

    name: str = "logreg"
    num_classes: int = 10
    init_seed: int | None = None


#: Features of ``logreg`` without ``inputs``: an MNIST image's 28 × 28 pixels.
LOGREG_INPUTS = 784


def logreg_inputs(name: str) -> int:
    """D of ``logreg[?inputs=D]`` (default :data:`LOGREG_INPUTS`); ValueError for another
    option or a D < 1."""
    _, options = name_options(name, "model", ("inputs",))
    inputs = int_options(name, "model", options).get("inputs", LOGREG_INPUTS)
    if inputs < 1:
        raise ValueError(f"model {name!r}: inputs must be >= 1; got {inputs}")
    return inputs


def _logreg(spec: ModelSpec) -> nn.Module:
    return LogisticRegression(logreg_inputs(spec.name), spec.num_classes, spec.init_seed)


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


def check_model_name(name: str) -> None:
    """ValueError unless ``name`` is a known model with valid options (no weights are read):
    the known names are listed for an unknown one."""
    from .hf import is_hf_name, parse_model_name

    key = registry_key(name)
    if key not in MODELS:
        raise ValueError(f"unknown model name={name!r}; known: {', '.join(sorted(MODELS))}")
    if is_hf_name(name):
        parse_model_name(name)
    else:  # logreg
        logreg_inputs(name)


def build_model(spec: ModelSpec) -> nn.Module:
    """A fresh model for ``spec``; ValueError for a name :func:`check_model_name` refuses."""
    check_model_name(spec.name)
    return MODELS[registry_key(spec.name)](spec)


def cross_entropy_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """The forward-only loss closure of the classification tasks: mean cross-entropy."""
    x, y = batch
    return F.cross_entropy(model(x), y)


def class_balanced_weights(y: Tensor) -> Tensor:
    """Per-example weights ``w_i = 1 / (|C_B| · n_{y_i})`` (float64, summing to 1) for labels
    ``y`` (B,): ``n_c`` examples of class c in the batch, ``C_B`` the classes present. So
    ``Σ w_i ℓ_i`` is the mean over the batch's classes of each class's mean loss."""
    counts = torch.bincount(y)
    present = int((counts > 0).sum())
    return counts.double().reciprocal()[y].div_(present)


def balanced_cross_entropy_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Class-balanced cross-entropy: the mean over the batch's classes of each class's mean
    cross-entropy (:func:`class_balanced_weights`), so a client's label skew does not set its
    objective's class prior."""
    x, y = batch
    losses = F.cross_entropy(model(x), y, reduction="none")
    return losses.double().mul(class_balanced_weights(y)).sum().to(losses.dtype)


_LOSS_FUNCTIONS: dict[str, LossFn] = {
    "cross_entropy": cross_entropy_loss,
    "balanced_cross_entropy": balanced_cross_entropy_loss,
}


def loss_function(name: str) -> LossFn:
    """The loss closure a plan's ``loss`` names (:data:`~cyber0.common.plan.LOSSES`);
    PlanError naming ``loss`` for another name."""
    if name not in LOSSES:
        raise PlanError(f"loss must be one of {LOSSES}; got loss={name!r}")
    return _LOSS_FUNCTIONS[name]


@contextmanager
def _evaluating(model: nn.Module, batch_size: int) -> Iterator[None]:
    """``model`` in eval mode under ``torch.inference_mode`` (its train/eval mode restored
    after); ValueError for a ``batch_size`` below 1."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got batch_size={batch_size}")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 4096) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(x, y)``.

    Runs in eval mode under ``torch.inference_mode`` (the previous train/eval mode is restored);
    per-batch sums are accumulated in Python floats and divided by ``len(y)``. A tie in the
    logits counts for the lowest class index (``argmax``).
    """
    n = y.numel()
    if n == 0 or x.shape[0] != n:
        raise ValueError(f"need len(x) == len(y) > 0; got len(x)={x.shape[0]}, len(y)={n}")
    correct, loss_sum = 0, 0.0
    with _evaluating(model, batch_size):
        for start in range(0, n, batch_size):
            logits = model(x[start : start + batch_size]).float()
            target = y[start : start + batch_size]
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == target).sum().item())
    return correct / n, loss_sum / n


def predict(model: nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    """The predicted label of each example of ``x``, int64 on its device: the ``argmax`` of the
    logits, a tie going to the lowest class index, as :func:`evaluate` counts it."""
    with _evaluating(model, batch_size):
        parts = [model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64, device=x.device)


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
