"""First-order robust FedSGD: the baseline CYBER-0 is compared against.

Round t, honest client i with minibatch B_i (n = h + f clients in all)::

    g_i = ∇_w F(w_t; B_i) ∈ R^d         (autograd, the plan's loss, canonical order)
    R   = AGG(byzantine rows ; g_1 … g_h) ∈ R^d
    w_{t+1} = w_t − η · R

Vectors are laid out in the canonical parameter order of
:func:`cyber0.common.perturbation.canonical_parameters` (trainable parameters sorted by name), the
same order the zero-order path indexes its directions by. Each client uploads
``d · element_size`` bytes per round (``4 · d`` for float32), see :func:`upload_bytes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .estimator import flat_parameters
from .models import LossFn, cross_entropy_loss
from .perturbation import canonical_parameters

__all__ = [
    "apply_update_",
    "assign_flat_",
    "first_order_round",
    "flat_gradient",
    "flat_parameters",
    "honest_gradients",
    "upload_bytes",
]

#: A rule on a stack of vectors, ``(n, d) -> (d,)``: any ``cyber0.common.aggregators`` rule or a
#: plain function.
AggregateFn = Callable[[Tensor], Tensor]


def flat_gradient(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn = cross_entropy_loss
) -> Tensor:
    """``∇_w loss_fn(model, (x, y))`` flattened in canonical order, shape ``(d,)``: by default
    ``∇_w mean_i CE(model(x_i), y_i)``; the zero-order clients' closure
    (:func:`~cyber0.common.models.loss_function`) gives first-order clients their objective.

    Uses ``torch.autograd.grad``: the parameters' ``.grad`` fields are left untouched. A
    parameter the loss does not depend on contributes zeros.
    """
    params = [p for _, p in canonical_parameters(model)]
    loss = loss_fn(model, (x, y))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).detach().reshape(-1)
            for p, g in zip(params, grads, strict=True)
        ]
    )


def honest_gradients(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """Each batch's :func:`flat_gradient` at the current weights, stacked: ``(len(batches), d)``."""
    if not batches:
        d = sum(p.numel() for _, p in canonical_parameters(model))
        return torch.empty(0, d)
    return torch.stack([flat_gradient(model, x, y) for x, y in batches])


def _check_length(model: nn.Module, flat: Tensor) -> list[nn.Parameter]:
    params = [p for _, p in canonical_parameters(model)]
    d = sum(p.numel() for p in params)
    if flat.dim() != 1 or flat.numel() != d:
        raise ValueError(f"expected a flat vector of length d={d}; got shape {tuple(flat.shape)}")
    return params


@torch.no_grad()
def assign_flat_(model: nn.Module, flat: Tensor) -> None:
    """Copy ``flat`` (canonical order, length d) into the model's trainable parameters."""
    offset = 0
    for p in _check_length(model, flat):
        p.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


@torch.no_grad()
def apply_update_(model: nn.Module, aggregate: Tensor, lr: float) -> None:
    """``w ← w − lr · aggregate`` parameter by parameter as ``p.sub_(slice * lr)``."""
    offset = 0
    for p in _check_length(model, aggregate):
        p.sub_(aggregate[offset : offset + p.numel()].view_as(p) * lr)
        offset += p.numel()


def upload_bytes(model: nn.Module) -> int:
    """Bytes one client sends per round: ``Σ numel · element_size`` (``4 · d`` for float32)."""
    return sum(p.numel() * p.element_size() for _, p in canonical_parameters(model))


def first_order_round(
    model: nn.Module,
    client_batches: Sequence[tuple[Tensor, Tensor]],
    aggregator: AggregateFn,
    lr: float,
    byzantine: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """One round in place: honest gradients G ``(h, d)``, ``R = aggregator(cat[B, G])``,
    ``w ← w − lr · R``; returns G.

    ``client_batches`` holds one minibatch per honest client. ``byzantine(G)``, if given,
    returns the f Byzantine rows ``B`` ``(f, d)``; it is called before the update, so it may see
    G (omniscient attack, e.g. ``lambda g: attack(g, n, f)``) or compute gradients of the
    current model on poisoned data (data attack). Byzantine rows come first, as in the
    simulator.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got lr={lr}")
    honest = honest_gradients(model, client_batches)
    rows = honest if byzantine is None else torch.cat([byzantine(honest), honest])
    apply_update_(model, aggregator(rows), lr)
    return honest
