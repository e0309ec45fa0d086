"""Two-point zero-order estimation and the aggregate update, for any ``torch.nn.Module``.

For local step k and direction j, on one minibatch B_k::

    g_{k,j} = (F(w_k + μ z_{k,j}; B_k) − F(w_k − μ z_{k,j}; B_k)) / (2μ)
    w_{k+1} = w_k − η Σ_j g_{k,j} z_{k,j}

Unbiased variant: fresh directions z_{t,k,j} at every local step; the update vector is
(g_{0,0}, …, g_{0,ν−1}, g_{1,0}, …) of length K·ν. Biased variant: the directions z_{t,0,j} of the
first step are reused at all K steps; the update vector is s_j = Σ_k g_{k,j}, of length ν.

Every party then applies an aggregate R of the same length with the regenerated directions only:
``w ← w − η Σ R z`` (see :func:`update_terms`). The local trajectory of a round never leaks into
the global model: after its K steps the client returns to the round's starting weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeGuard

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .models import LogisticRegression, LossFn, balanced_cross_entropy_loss, cross_entropy_loss
from .perturbation import (
    DEFAULT_CACHE_BYTES,
    DirectionCache,
    DirectionGenerator,
    apply_directions_,
    canonical_parameters,
    native_for_cpu,
    perturbed,
    whole_direction_bytes,
)
from .plan import ZOSettings

Path = Literal["batched", "inplace"]
#: Most logit parts (clients × (1 + ν)·C × B floats) :meth:`ZOEstimator.local_rounds` puts in
#: one group: 1 Mi (4 MiB). Logistic regression at B = 32 groups 1,638 clients at ν = 1 and 50 at
#: ν = 64.
GROUP_ELEMENTS = 1 << 20


def direction_step(zo: ZOSettings, step: int) -> int:
    """The step coordinate of the directions used at local step ``step``."""
    return step if zo.variant == "unbiased" else 0


def update_terms(
    zo: ZOSettings, values: Sequence[float] | Tensor, scale: float
) -> list[tuple[int, int, float]]:
    """``(step, direction, scale · value)`` terms for a vector laid out as the variant sends it."""
    flat = [float(v) for v in values]
    if len(flat) != zo.scalars_per_round:
        raise ValueError(f"expected {zo.scalars_per_round} values; got {len(flat)}")
    nu = zo.nu
    return [(i // nu, i % nu, scale * v) for i, v in enumerate(flat)]


def apply_aggregate_(
    model: nn.Module,
    generator: DirectionGenerator,
    zo: ZOSettings,
    round: int,
    aggregate: Any,
    cache: DirectionCache | None = None,
) -> None:
    """The global update of round ``round``: ``w ← w − η Σ_{k,j} R_{k,j} z_{t,k,j}`` (with the
    directions ``cache`` kept, e.g. a client's :attr:`ZOEstimator.cache`: same bits)."""
    params = [p for _, p in canonical_parameters(model)]
    apply_directions_(params, generator, round, update_terms(zo, aggregate, zo.lr), cache)


class _LossModule(nn.Module):
    """Wraps (model, loss_fn) so ``functional_call`` can swap the model's parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def perturbed_losses(model: nn.Module, loss_fn: LossFn, weights: Tensor, batch: Any) -> Tensor:
    """Losses at each row of ``weights`` (P, d), a flat vector in canonical parameter order,
    evaluated in one vectorised call (``torch.func.vmap`` over ``functional_call``).

    Each parameter's (P, ...) block is made contiguous first, so that a product with an
    unbatched input folds the P weight sets into one matrix product instead of P small ones.
    Logistic regression under :func:`~cyber0.common.models.cross_entropy_loss` or
    :func:`~cyber0.common.models.balanced_cross_entropy_loss`, bias and weight trainable, runs
    the same loss written out (:meth:`~cyber0.common.models.LogisticRegression.cross_entropy_at`,
    the same losses to float32 rounding), without vmap's per-call cost: at ν = 1 that cost was
    several forwards."""
    if _written_out(model, loss_fn):
        return model.cross_entropy_at(weights, batch, loss_fn is balanced_cross_entropy_loss)
    wrapper = _LossModule(model, loss_fn)
    params, offset = {}, 0
    for name, p in canonical_parameters(model):
        block = weights[:, offset : offset + p.numel()]
        params[f"model.{name}"] = block.reshape(-1, *p.shape).contiguous()
        offset += p.numel()

    def one(params: dict[str, Tensor]) -> Tensor:
        return functional_call(wrapper, params, (batch,))

    return vmap(one)(params)


def central_differences(losses: Tensor, mu: float) -> Tensor:
    """g_j = (F(w + μz_j) − F(w − μz_j)) / (2μ) from ``losses`` (..., 2ν) laid out as the ν
    losses at w + μz_j, then the ν at w − μz_j; (..., ν)."""
    nu = losses.shape[-1] // 2
    return (losses[..., :nu] - losses[..., nu:]) / (2.0 * mu)


def flat_parameters(model: nn.Module) -> Tensor:
    """The parameters concatenated in canonical order (a copy)."""
    return torch.cat([p.detach().reshape(-1) for _, p in canonical_parameters(model)])


def _untouched_message(model: nn.Module, touched: set[int]) -> str:
    names = [name for i, (name, _) in enumerate(canonical_parameters(model)) if i not in touched]
    return (
        f"the in-place path could not perturb {names}: a parameter must be used inside the "
        "forward of the module that owns it (freeze unused ones with requires_grad=False, or "
        "use path='batched')"
    )


class ZOEstimator:
    """Runs a client's K local ZO steps of one round and returns the scalars it sends.

    ``path="batched"`` evaluates all 2ν perturbed losses of a step in one vectorised call from a
    (ν, d) direction matrix (small models); ``path="inplace"`` evaluates them one by one through
    :func:`~cyber0.common.perturbation.perturbed`, holding one tensor's worth of z at a time
    (large models). Both see bitwise the same perturbed weights.

    With K > 1 the round's starting weights are kept in a snapshot (one copy of the weights)
    and restored exactly after the local steps. Up to ``cache_bytes`` of the round's directions
    are kept in :attr:`cache` (:class:`~cyber0.common.perturbation.DirectionCache`) for the
    local updates and the round's global update (:func:`apply_aggregate_` with
    ``cache=estimator.cache``), and on the in-place path for its second forward: the in-place
    path keeps no more than one direction of every tensor needs, the batched path its (ν, d)
    direction matrices that fit. The model's trainable parameters are taken, in canonical order,
    when the estimator is made.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        generator: DirectionGenerator,
        zo: ZOSettings,
        path: Path = "inplace",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if path not in ("batched", "inplace"):
            raise ValueError(f"path must be 'batched' or 'inplace'; got {path!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.generator = generator
        self.zo = zo
        self.path = path
        if path == "inplace":
            cache_bytes = min(cache_bytes, whole_direction_bytes(model))
        self.cache = DirectionCache(cache_bytes)
        named = canonical_parameters(model)
        self._params = [p for _, p in named]
        self._sizes = [p.numel() for p in self._params]
        self._shapes = [tuple(p.shape) for p in self._params]
        #: Logistic regression under cross_entropy_loss or balanced_cross_entropy_loss, bias
        #: and weight trainable: the loss written out (see :meth:`local_rounds`).
        self._written_out = path == "batched" and _written_out(model, loss_fn)
        self._balanced = loss_fn is balanced_cross_entropy_loss
        self._directions: dict[tuple[int, int], Tensor] = {}

    def _round_directions(self, round: int, dstep: int) -> Tensor:
        """The (ν, d) directions of ``(round, dstep)`` as the batched path's step takes them:
        Z where the loss is written out (its scalars take Z and μ), else μ·Z. Cached for the
        current round (clients of a simulator and the local steps of a round share them); Z is
        also kept in :attr:`cache` where it fits, for the local updates and the round's global
        update."""
        key = (round, dstep)
        if key not in self._directions:
            if any(r != round for r, _ in self._directions):
                self._directions.clear()
            z = self._matrix(round, dstep)
            kept = self.cache.keep_matrix(round, dstep, z, self._shapes)
            if not self._written_out:
                z = torch.mul(z, self.zo.mu) if kept else z.mul_(self.zo.mu)
            self._directions[key] = z
        return self._directions[key]

    def _flat(self) -> Tensor:
        """The estimator's parameters concatenated in canonical order (a copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self._params])

    def _matrix(self, round: int, dstep: int) -> Tensor:
        """The (ν, d) direction matrix of ``(round, dstep)`` on the parameters' device, dtype."""
        first = self._params[0]
        return self.generator.matrix(
            self._sizes, round, dstep, self.zo.nu, first.device, first.dtype
        )

    @torch.inference_mode()
    def step_scalars(self, round: int, step: int, batch: Any) -> Tensor:
        """g_{step, j} for j < ν at the current weights, as float64 (ν,)."""
        zo, dstep = self.zo, direction_step(self.zo, step)
        if self._written_out:
            z = self._round_directions(round, dstep)
            bias, weight = (p.reshape(1, -1) for p in self._params)
            return self._group_scalars(bias, weight, z, [batch])[0]
        if self.path == "batched":
            scaled = self._round_directions(round, dstep)
            weights = _perturbed_rows(self._flat(), scaled)
            losses = perturbed_losses(self.model, self.loss_fn, weights, batch).double()
        else:
            losses = torch.empty(2 * zo.nu, dtype=torch.float64)
            n_params = len(self._params)
            for j in range(zo.nu):
                for sign, at in ((1.0, j), (-1.0, zo.nu + j)):
                    with perturbed(
                        self.model, self.generator, round, dstep, j, sign * zo.mu, self.cache
                    ) as touched:
                        losses[at] = float(self.loss_fn(self.model, batch))
                    if len(touched) != n_params:
                        raise ValueError(_untouched_message(self.model, touched))
        return central_differences(losses, zo.mu)

    def local_round(self, round: int, batches: Sequence[Any]) -> Tensor:
        """The update vector (float32, length ``zo.scalars_per_round``) for ``round``, computed on
        ``batches`` (one per local step). The model's weights are unchanged afterwards."""
        zo = self.zo
        if len(batches) != zo.local_steps:
            raise ValueError(
                f"need {zo.local_steps} batches (one per local step); got {len(batches)}"
            )
        params = self._params
        snapshot = [p.detach().clone() for p in params] if zo.local_steps > 1 else None
        rows = []
        try:
            for k, batch in enumerate(batches):
                g = self.step_scalars(round, k, batch)
                rows.append(g)
                if k + 1 < zo.local_steps:
                    terms = [(direction_step(zo, k), j, zo.lr * float(v)) for j, v in enumerate(g)]
                    with torch.no_grad():
                        apply_directions_(params, self.generator, round, terms, self.cache)
        finally:
            if snapshot is not None:
                with torch.no_grad():
                    for p, saved in zip(params, snapshot, strict=True):
                        p.copy_(saved)
        stacked = torch.stack(rows)
        out = stacked.reshape(-1) if zo.variant == "unbiased" else stacked.sum(dim=0)
        return out.to(torch.float32)

    def local_rounds(self, round: int, batches: Sequence[Sequence[Any]]) -> Tensor:
        """:meth:`local_round` for clients that all start ``round`` at the model's weights
        (``batches[i]``: client i's K batches), as an (n, m) float32 tensor whose row i is
        bitwise ``local_round(round, batches[i])``.

        Logistic regression under :func:`~cyber0.common.models.cross_entropy_loss` or
        :func:`~cyber0.common.models.balanced_cross_entropy_loss` on the batched path (bias and
        weight trainable) runs its clients together on an (n, d) stack of their weights: the
        scalars of a local step in one call per group of consecutive clients whose batches share
        a shape and whose logit parts fit in ``GROUP_ELEMENTS`` (the native kernel's
        ``logreg_scalars`` for the mean, or
        :meth:`~cyber0.common.models.LogisticRegression.directional_differences`, each group's
        rows computed on their own; one client's :meth:`step_scalars` is a group of one, its
        weights not copied), each local update as
        :func:`apply_directions_` computes it (``w -= z_j · c_j``, term by term) on all n rows
        at once. Any other model runs :meth:`local_round` client by client.
        """
        zo = self.zo
        if not self._written_out:
            return _stack_rows([self.local_round(round, b) for b in batches], zo)
        if any(len(b) != zo.local_steps for b in batches):
            raise ValueError(f"need {zo.local_steps} batches (one per local step) per client")
        if not batches:
            return _stack_rows([], zo)
        with torch.inference_mode():
            flat = self._flat()
            weights = flat.expand(len(batches), -1).clone()
            groups = self._groups(batches)
            classes = self._sizes[0]
            steps = []
            for k in range(zo.local_steps):
                dstep = direction_step(zo, k)
                z = self._round_directions(round, dstep)
                g = torch.cat(
                    [
                        self._group_scalars(
                            weights[a:b, :classes],
                            weights[a:b, classes:],
                            z,
                            [c[k] for c in batches[a:b]],
                        )
                        for a, b in groups
                    ]
                )
                steps.append(g)
                if k + 1 < zo.local_steps:
                    coefficients = g.mul(zo.lr).to(weights.dtype)
                    for j in range(zo.nu):
                        weights.sub_(torch.mul(z[j], coefficients[:, j : j + 1]))
        stacked = torch.stack(steps)
        if zo.variant == "unbiased":
            return stacked.transpose(0, 1).reshape(len(batches), -1).to(torch.float32)
        return stacked.sum(dim=0).to(torch.float32)

    def _groups(self, batches: Sequence[Sequence[Any]]) -> list[tuple[int, int]]:
        """``[start, end)`` ranges of consecutive clients whose batches share shapes, each
        holding at most GROUP_ELEMENTS logit parts (one client at least)."""
        parts = (1 + self.zo.nu) * self._sizes[0] * max(len(y) for c in batches for _, y in c)
        per_group = max(1, GROUP_ELEMENTS // parts)
        shapes = [_shapes(client) for client in batches]
        groups: list[tuple[int, int]] = []
        for i, shape in enumerate(shapes):
            if groups:
                start = groups[-1][0]
                if i - start < per_group and shape == shapes[start]:
                    groups[-1] = (start, i + 1)
                    continue
            groups.append((i, i + 1))
        return groups

    def _group_scalars(
        self, bias: Tensor, weight: Tensor, z: Tensor, batches: Sequence[Any]
    ) -> Tensor:
        """g (G, ν) in float64 for G clients at ``bias`` (G, C) and ``weight`` (G, C·D), each on
        its own batch of the step, along the step's directions ``z`` (ν, C + C·D):
        :meth:`step_scalars` for each."""
        assert isinstance(self.model, LogisticRegression)
        x = _stacked([b[0] for b in batches])
        y = _stacked([b[1] for b in batches])
        mu = self.zo.mu
        if self._balanced:  # per-example weights: the torch ops only
            return self.model.directional_differences(bias, weight, z, x, y, mu, balanced=True)
        kernel = native_for_cpu(bias, weight, z, x)
        if kernel is not None:  # the same formula in one C++ call (native_generator.cpp)
            return kernel.logreg_scalars(bias, weight, z, x, y, mu)
        return self.model.directional_differences(bias, weight, z, x, y, mu)


def _written_out(model: nn.Module, loss_fn: LossFn) -> TypeGuard[LogisticRegression]:
    """Whether ``model`` is logistic regression under :func:`cross_entropy_loss` or
    :func:`balanced_cross_entropy_loss` with its bias and weight trainable: its loss is written
    out (no ``vmap``)."""
    return (
        loss_fn in (cross_entropy_loss, balanced_cross_entropy_loss)
        and isinstance(model, LogisticRegression)
        and [name for name, _ in canonical_parameters(model)] == ["linear.bias", "linear.weight"]
    )


def _perturbed_rows(weights: Tensor, scaled: Tensor) -> Tensor:
    """(2ν, d): ``weights`` (d,) + each row of ``scaled`` (ν, d), then − each, written straight
    into one contiguous tensor."""
    nu = scaled.shape[0]
    rows = weights.new_empty(2 * nu, weights.shape[0])
    torch.add(weights, scaled, out=rows[:nu])
    torch.sub(weights, scaled, out=rows[nu:])
    return rows


def _stacked(tensors: list[Tensor]) -> Tensor:
    """``torch.stack(tensors)``: the same values and layout, without a copy for one contiguous
    tensor (one client's step)."""
    if len(tensors) == 1:
        return tensors[0].unsqueeze(0).contiguous()
    return torch.stack(tensors)


def _shapes(batches: Sequence[Any]) -> list[tuple[int, ...]]:
    """The shapes of a client's K batch inputs."""
    return [tuple(x.shape) for x, _ in batches]


def _stack_rows(rows: Sequence[Tensor], zo: ZOSettings) -> Tensor:
    """Update vectors (m,) or blocks of them (n, m) stacked into (n, m); (0, m) for none."""
    if not rows:
        return torch.empty(0, zo.scalars_per_round)
    return torch.cat([r.reshape(-1, zo.scalars_per_round) for r in rows])
