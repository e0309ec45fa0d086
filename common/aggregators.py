"""Robust aggregation rules over the n client vectors of one round, in the small space R^m.

Every rule is a callable ``rule(x) -> Tensor`` mapping an ``(n, m)`` float tensor (one row per
client) to an ``(m,)`` tensor of the same dtype and device. Arithmetic runs in float64 and the
result is cast back. Each rule is built with the declared number ``f`` of Byzantine clients and
validates its precondition (``cwtm needs n > 2f``) in the constructor when the expected ``n`` is
given, and on every call otherwise, raising :class:`AggregatorConfigError`.

Non-finite rows (the same rule for every aggregator)
    A row with any NaN or ±Inf entry is treated as Byzantine and dropped before aggregation. If
    ``d`` rows are dropped, the rule runs on the ``n' = n − d`` finite rows with
    ``f' = max(f − d, 0)``. Reducing f is deliberate: a non-finite row is a Byzantine client
    already identified, so among the remaining rows at most ``f − d`` are Byzantine under the
    (n, f) assumption, and ``n > 2f`` implies ``n' > 2f'`` (likewise ``n > 2f + 2`` implies
    ``n' > 2f' + 2``): the rule's guarantee for (n', f') is the one it had for (n, f). Keeping
    f would trim or discard honest rows needlessly and can break the precondition (n=5, f=2,
    one NaN row: cwtm would need 4 > 4). When ``d > f`` the assumption itself is violated; the
    rule still runs with ``f' = 0`` on what is left if its precondition holds, and otherwise
    raises :class:`AggregationError`. The output is always finite (inputs are rescaled by a
    power of two where an intermediate could overflow); a non-finite result raises
    :class:`AggregationError` rather than being returned.

Distances (Krum, Multi-Krum, NNM) use the Gram form ``‖a‖² + ‖b‖² − 2⟨a, b⟩`` in float64 after
centring at the coordinate-wise median and scaling by a power of two, so the cost is one
``(n, n)`` matrix product plus a per-row selection (``kthvalue``), not a sort of the matrix.
Ties are broken towards the lowest row index everywhere.

Rules (registry names): ``mean``, ``median``, ``cwtm``, ``krum``, ``multikrum``, ``geomed``,
``cc``, and ``nnm+<rule>`` for nearest-neighbour mixing followed by any of them.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

__all__ = [
    "AGGREGATOR_NAMES",
    "CWTM",
    "NNM",
    "AggregationError",
    "Aggregator",
    "AggregatorConfigError",
    "CenteredClipping",
    "GeometricMedian",
    "Krum",
    "Mean",
    "Median",
    "MultiKrum",
    "finite_rows",
    "get_aggregator",
    "nnm_mix",
    "nnm_neighbours",
]

_F64 = torch.float64


class AggregatorConfigError(ValueError):
    """A rule's parameters, or the number of rows it is given, violate its precondition."""


class AggregationError(RuntimeError):
    """Too few finite rows remain to aggregate, or the result would not be finite."""


class Aggregator(Protocol):
    """The contract every rule meets: a name and ``(n, m) -> (m,)``."""

    @property
    def name(self) -> str: ...

    def __call__(self, x: Tensor) -> Tensor: ...


def finite_rows(x: Tensor) -> Tensor:
    """Boolean ``(n,)`` mask, True where row ``i`` of the ``(n, m)`` tensor is all finite."""
    if x.ndim != 2:
        raise ValueError(f"expected an (n, m) tensor; got shape {tuple(x.shape)}")
    return torch.isfinite(x).all(dim=1)


# --------------------------------------------------------------------------------------------
# Parameter checks


def _int_param(rule: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AggregatorConfigError(f"{rule}: {name} must be an integer; got {name}={value!r}")
    if int(value) < minimum:
        raise AggregatorConfigError(f"{rule}: {name} must be >= {minimum}; got {name}={value}")
    return int(value)


def _positive_param(rule: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AggregatorConfigError(f"{rule}: {name} must be a number; got {name}={value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise AggregatorConfigError(f"{rule}: {name} must be finite and > 0; got {name}={value}")
    return float(value)


# --------------------------------------------------------------------------------------------
# Float64 kernels on finite rows


def _pow2_exponent(x: Tensor) -> int:
    """An exponent ``e`` with ``max|x| < 2**e`` (0 for an all-zero or empty ``x``)."""
    top = float(x.abs().max()) if x.numel() else 0.0
    return 0 if top == 0.0 else math.frexp(top)[1]


def _times_pow2(x: Tensor, e: int) -> Tensor:
    """``x · 2**e``, exact (barring underflow), in two halves so ``2**±1024`` never appears."""
    return x * math.ldexp(1.0, e // 2) * math.ldexp(1.0, e - e // 2)


def _rescaled(value: float, e: int) -> float:
    """``value · 2**-e``, a positive threshold in the units of ``x`` moved to those of
    ``x · 2**-e``, kept within float64's positive range: saturated, it still exceeds (or stays
    below) every rescaled distance, as the exact value would, and is never 0 or inf."""
    try:
        return max(math.ldexp(value, -e), math.ulp(0.0))
    except OverflowError:
        return sys.float_info.max


def _mean(x: Tensor) -> Tensor:
    """Row mean as a sum of ``x_i / n``: cannot overflow for finite ``x``."""
    return (x / x.shape[0]).sum(dim=0)


def _median_of_sorted(s: Tensor) -> Tensor:
    n = s.shape[0]
    if n % 2:
        return s[n // 2].clone()
    return s[n // 2 - 1] / 2 + s[n // 2] / 2


def _median(x: Tensor) -> Tensor:
    return _median_of_sorted(torch.sort(x, dim=0).values)


def _row_norms(d: Tensor) -> Tensor:
    """Euclidean norm of each row without overflow (rows are scaled by their max entry)."""
    top = d.abs().amax(dim=1, keepdim=True)
    safe = torch.where(top > 0, top, torch.ones_like(top))
    return (d / safe).norm(dim=1) * top.squeeze(1)


def _sq_distances(x: Tensor) -> Tensor:
    """``(n, n)`` squared Euclidean distances, in units of a power-of-two scale of ``x``."""
    x = _times_pow2(x, -_pow2_exponent(x))  # |x| < 1: the differences cannot overflow
    c = x - _median(x)
    sq = (c * c).sum(dim=1)
    d = sq[:, None] + sq[None, :]  # then − 2⟨a, b⟩ in place: two (n, n) buffers, not four
    return d.sub_((c @ c.T).mul_(2.0)).clamp_min_(0.0)


def _sum_k_smallest_(d: Tensor, k: int) -> Tensor:
    """Per row, the sum of its ``k`` smallest entries (ties counted exactly); overwrites ``d``."""
    t = torch.kthvalue(d, k, dim=1).values
    less = d < t[:, None]
    count = less.sum(dim=1)
    below = d.masked_fill_(less.logical_not_(), 0.0).sum(dim=1)
    return below + (k - count).to(d.dtype) * t


def _k_nearest_mask(d: Tensor, k: int) -> Tensor:
    """Per row, a boolean mask of its ``k`` smallest entries; boundary ties go to low indices."""
    t = torch.kthvalue(d, k, dim=1).values[:, None]
    less = d < t
    equal = d == t
    need = k - less.sum(dim=1, keepdim=True)
    return less | (equal & (equal.cumsum(dim=1) <= need))


def _krum_scores(x: Tensor, f: int) -> Tensor:
    """score_i = Σ of the squared distances from x_i to its n − f − 2 nearest other rows."""
    d = _sq_distances(x)
    d.fill_diagonal_(math.inf)
    return _sum_k_smallest_(d, x.shape[0] - f - 2)


def nnm_neighbours(x: Tensor, f: int) -> Tensor:
    """``(n, n)`` boolean mask: row i marks the n − f rows nearest to x_i, itself included, that
    NNM averages into x_i (boundary ties go to low indices). ``x`` must be finite."""
    d = _sq_distances(x)
    d.fill_diagonal_(-1.0)  # strictly nearest to itself, whatever the rounding
    return _k_nearest_mask(d, x.shape[0] - f)


def nnm_mix(x: Tensor, f: int) -> Tensor:
    """NNM's mixing: each row replaced by the mean of its n − f nearest rows, itself included
    (:func:`nnm_neighbours`). ``x`` must be finite."""
    return nnm_neighbours(x, f).to(x.dtype) / (x.shape[0] - f) @ x


# --------------------------------------------------------------------------------------------
# Rules


class _Rule:
    """Shared call path: input checks, the non-finite rule, float64, the precondition."""

    NAME: ClassVar[str]
    #: Keyword parameters accepted by the constructor (for the registry's unknown-key check).
    PARAMS: ClassVar[tuple[str, ...]] = ("f", "n")
    #: Parameters the registry insists on.
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    #: The precondition, as printed in error messages.
    REQUIREMENT: ClassVar[str] = "n > 2f"

    def __init__(self, f: int = 0, n: int | None = None) -> None:
        self.f = _int_param(self.NAME, "f", f, 0)
        self.n = None if n is None else _int_param(self.NAME, "n", n, 1)
        if self.n is not None:
            self._check_config(self.n)

    def min_n(self, f: int) -> int:
        """The smallest number of rows the rule accepts with ``f`` declared faults."""
        return 2 * f + 1

    @property
    def name(self) -> str:
        """The registry name."""
        return self.NAME

    def requirement(self) -> str:
        """The precondition on (n, f), as printed in error messages."""
        return self.REQUIREMENT

    def _describe(self, n: int, f: int) -> str:
        return f"n={n}, f={f}"

    def _check_config(self, n: int) -> None:
        if n < self.min_n(self.f):
            raise AggregatorConfigError(
                f"{self.name} needs {self.requirement()}; got {self._describe(n, self.f)}"
            )

    def _aggregate(self, x: Tensor, f: int) -> Tensor:
        """The rule itself on finite float64 rows, ``x.shape[0] >= self.min_n(f)``."""
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or not x.is_floating_point():
            raise ValueError(
                f"{self.name} expects an (n, m) floating tensor; "
                f"got shape {tuple(x.shape)}, dtype {x.dtype}"
            )
        n = x.shape[0]
        if self.n is not None and n != self.n:
            raise AggregatorConfigError(f"{self.name} was built for n={self.n}; got n={n} rows")
        self._check_config(n)
        keep = finite_rows(x)
        dropped = n - int(keep.sum())
        f = max(self.f - dropped, 0)
        if n - dropped < self.min_n(f):
            raise AggregationError(
                f"{self.name}: {dropped} of {n} rows are non-finite and were dropped; the "
                f"{n - dropped} finite rows with f'={f} do not satisfy {self.requirement()}"
            )
        rows = (x[keep] if dropped else x).to(_F64)
        out = self._aggregate(rows, f)
        if not bool(torch.isfinite(out).all()):
            raise AggregationError(f"{self.name}: the aggregate is not finite")
        return out.to(x.dtype)

    def _params(self) -> Mapping[str, object]:
        return {"f": self.f, "n": self.n}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items() if v is not None)
        return f"{type(self).__name__}({args})"


class Mean(_Rule):
    """Arithmetic mean ``(1/n) Σ_i x_i``. Not robust: ``f`` is accepted and ignored; n ≥ 1."""

    NAME = "mean"
    REQUIREMENT = "n >= 1"

    def min_n(self, f: int) -> int:
        return 1

    def _aggregate(self, x: Tensor, f: int) -> Tensor:
        return _mean(x)


class Median(_Rule):
    """Coordinate-wise median; for even n the average of the two middle values.

    ``f`` does not change the output; it only states the precondition n > 2f (breakdown point
    1/2). Yin et al., "Byzantine-robust distributed learning", ICML 2018.
    """

    NAME = "median"

    def _aggregate(self, x: Tensor, f: int) -> Tensor:
        return _median(x)


class CWTM(_Rule):
    """Coordinate-wise trimmed mean: per coordinate, sort, drop the f largest and the f
    smallest values and average the remaining n − 2f. Needs n > 2f.

    ``cwtm_j(x) = (1/(n − 2f)) Σ_{k=f+1}^{n−f} x_(k),j`` with ``x_(k),j`` the k-th smallest value.
    Yin et al., ICML 2018. Cost O(n m log n) (one sort along dim 0).
    """

    NAME = "cwtm"
    REQUIRED = ("f",)

    def _aggregate(self, x: Tensor, f: int) -> Tensor:
        n = x.shape[0]
        return _mean(torch.sort(x, dim=0).values[f : n - f])


class Krum(_Rule):
    """Krum: ``score_i = Σ_{j ∈ N_i} ‖x_i − x_j‖²`` over the n − f − 2 rows nearest to x_i
    (x_i excluded); returns the row of minimum score, ties to the lowest index. Needs
    n > 2f + 2. Blanchard et al., "Machine learning with adversaries", NeurIPS 2017.
    """

    NAME = "krum"
    REQUIRED = ("f",)
    REQUIREMENT = "n > 2f + 2"

    def min_n(self, f: int) -> int:
        return 2 * f + 3

    def _aggregate(self, x: Tensor, f: int) -> Tensor:
        return x[int(torch.argmin(_krum_scores(x, f)))].clone()


class MultiKrum(_Rule):
    """Multi-Krum: the mean of the q rows with the lowest Krum scores (stable order, ties to
    the lowest index); ``q`` defaults to n − f. Needs n > 2f + 2 and 1 ≤ q ≤ n.
    El Mhamdi et al., "The hidden vulnerability of distributed learning", ICML 2018.
    """

    NAME = "multikrum"
    PARAMS = ("f", "n", "q")
    REQUIRED = ("f",)
    REQUIREMENT = "n > 2f + 2 and q <= n"

    def __init__(self, f: int = 0, q: int | None = None, n: int | None = None) -> None:
        self.q = None if q is None else _int_param(self.NAME, "q", q, 1)
        super().__init__(f=f, n=n)

    def min_n(self, f: int) -> int:
        return max(2 * f + 3, self.q or 0)

    def _describe(self, n: int, f: int) -> str:
        return f"n={n}, f={f}" + ("" if self.q is None else f", q={self.q}")

    def _aggregate(self, x: Tensor, f: int) -> Tensor:
        q = x.shape[0] - f if self.q is None else self.q
        order = torch.sort(_krum_scores(x, f), stable=True).indices
        return _mean(x[order[:q]])

    def _params(self) -> Mapping[str, object]:
        return {"f": self.f, "q": self.q, "n": self.n}


class GeometricMedian(_Rule):
    """Geometric median ``argmin_z Σ_i ‖x_i − z‖`` by smoothed Weiszfeld iterations:
    ``z ← Σ_i w_i x_i / Σ_i w_i`` with ``w_i = 1 / max(eps, ‖x_i − z‖)``, starting at the
    coordinate-wise median (deterministic), stopping after ``max_iter`` iterations or when
    ``‖z_new − z‖ ≤ tol · ‖z_new‖``. ``f`` only states the precondition n > 2f.
    Pillutla et al., "Robust aggregation for federated learning" (RFA), IEEE TSP 2022.
    """

    NAME = "geomed"
    PARAMS = ("f", "n", "eps", "max_iter", "tol")

    def __init__(
        self,
        f: int = 0,
        eps: float = 1e-8,
        max_iter: int = 100,
        tol: float = 1e-7,
        n: int | None = None,
    ) -> None:
        self.eps = _positive_param(self.NAME, "eps", eps)
        self.max_iter = _int_param(self.NAME, "max_iter", max_iter, 1)
        self.tol = _positive_param(self.NAME, "tol", tol)
        super().__init__(f=f, n=n)

    def _aggregate(self, x: Tensor, f: int) -> Tensor:
        e = _pow2_exponent(x)  # exact rescaling to |x| < 1: no intermediate can overflow
        x = _times_pow2(x, -e)
        eps = _rescaled(self.eps, e)
        z = _median(x)
        for _ in range(self.max_iter):
            d = _row_norms(x - z).clamp_min(eps)
            w = d.min() / d  # ∝ 1 / d, in (0, 1]: no overflow even for a subnormal eps
            z_new = (w / w.sum()) @ x
            change = float((z_new - z).norm())
            z = z_new
            if change <= self.tol * float(z.norm()):
                break
        return _times_pow2(z, e)

    def _params(self) -> Mapping[str, object]:
        return {"f": self.f, "eps": self.eps, "max_iter": self.max_iter, "tol": self.tol}


class CenteredClipping(_Rule):
    """Centered clipping: ``v ← v + (1/n) Σ_i clip_τ(x_i − v)`` for ``iters`` (L) iterations,
    with ``clip_τ(u) = u · min(1, τ / ‖u‖)``. Karimireddy et al., "Learning from history for
    Byzantine robust optimization", ICML 2021.

    The paper starts from the previous round's momentum; aggregation here is stateless across
    rounds (every round is a pure function of its n vectors), so ``v`` starts at the
    coordinate-wise median, a robust and deterministic centre. ``τ`` is absolute, in the units
    of the vectors. ``f`` only states the precondition n > 2f.
    """

    NAME = "cc"
    PARAMS = ("f", "n", "tau", "iters")

    def __init__(self, f: int = 0, tau: float = 1.0, iters: int = 3, n: int | None = None) -> None:
        self.tau = _positive_param(self.NAME, "tau", tau)
        self.iters = _int_param(self.NAME, "iters", iters, 1)
        super().__init__(f=f, n=n)

    def _aggregate(self, x: Tensor, f: int) -> Tensor:
        e = _pow2_exponent(x)
        x = _times_pow2(x, -e)
        tau = _rescaled(self.tau, e)
        v = _median(x)
        for _ in range(self.iters):
            u = x - v
            factor = (tau / _row_norms(u)).clamp(max=1.0)  # a zero norm gives inf -> 1
            v = v + _mean(u * factor[:, None])
        return _times_pow2(v, e)

    def _params(self) -> Mapping[str, object]:
        return {"f": self.f, "tau": self.tau, "iters": self.iters, "n": self.n}


class NNM(_Rule):
    """Nearest-neighbour mixing, then ``rule``: each x_i is replaced by the mean of its n − f
    nearest rows (Euclidean, itself included; boundary ties to the lowest index) and ``rule``
    aggregates the mixed rows with the same f. Needs n > 2f and the rule's precondition.
    Allouah et al., "Fixing by mixing", AISTATS 2023. Registry name ``nnm+<rule>``.
    """

    NAME = "nnm"

    def __init__(self, rule: _Rule, n: int | None = None) -> None:
        if isinstance(rule, NNM):
            raise AggregatorConfigError("nnm cannot wrap another nnm rule")
        self.rule = rule
        super().__init__(f=rule.f, n=n)

    @property
    def name(self) -> str:
        return f"nnm+{self.rule.name}"

    def min_n(self, f: int) -> int:
        return max(2 * f + 1, self.rule.min_n(f))

    def requirement(self) -> str:
        # every rule but the mean already requires n > 2f
        return "n > 2f" if isinstance(self.rule, Mean) else self.rule.requirement()

    def _describe(self, n: int, f: int) -> str:
        return self.rule._describe(n, f)

    def _aggregate(self, x: Tensor, f: int) -> Tensor:
        return self.rule._aggregate(nnm_mix(x, f), f)

    def __repr__(self) -> str:
        return f"NNM({self.rule!r})"


_RULES: dict[str, type[_Rule]] = {
    "cc": CenteredClipping,
    "cwtm": CWTM,
    "geomed": GeometricMedian,
    "krum": Krum,
    "mean": Mean,
    "median": Median,
    "multikrum": MultiKrum,
}

#: The base rule names; each also exists as ``nnm+<name>``.
AGGREGATOR_NAMES: tuple[str, ...] = tuple(sorted(_RULES))


def get_aggregator(name: str, **params: Any) -> Aggregator:
    """The rule registered under ``name`` (``"cwtm"``, ``"nnm+krum"``, ...), built with
    ``params`` (``f``, ``n`` and the rule's own). Unknown names or parameters, missing required
    ones and invalid values raise :class:`AggregatorConfigError`."""
    base = name.removeprefix("nnm+")
    cls = _RULES.get(base)
    if cls is None:
        known = ", ".join(AGGREGATOR_NAMES)
        raise AggregatorConfigError(
            f"unknown aggregator {name!r}; known: {known} (each also as nnm+<name>)"
        )
    for key in params:
        if key not in cls.PARAMS:
            raise AggregatorConfigError(
                f"{name}: unknown parameter {key!r}; accepted: {', '.join(cls.PARAMS)}"
            )
    for key in ("f", *cls.REQUIRED) if name != base else cls.REQUIRED:
        if key not in params:
            raise AggregatorConfigError(f"{name}: missing required parameter {key!r}")
    if name == base:
        return cls(**params)
    n = params.pop("n", None)  # the composite checks n (the inner rule never sees raw rows)
    return NNM(cls(**params), n=n)
