"""Byzantine attacks: what the f Byzantine clients send in place of their honest vectors.

A model attack is a callable ``attack(honest, n, f) -> Tensor`` returning the ``(f, m)``
Byzantine rows, in the dtype and on the device of ``honest``. ``honest`` is the ``(h, m)``
matrix the attackers see: the honest clients' vectors for an omniscient attacker, or the
colluders' own honest computations for a realistic one. The formulas are the same in both
modes; only the input differs, and the caller decides what to pass.

Notation: ``μ_h`` is the mean of the honest rows and ``σ_h`` their coordinate-wise standard
deviation with ddof=1 (the unbiased sample estimate) when ``h ≥ 2``; with a single row
``σ_h = 0``, so ALIE sends ``μ_h`` and Min-Max / Min-Sum with the "std" direction send ``μ_h``.
Arithmetic runs in float64. ``f = 0`` returns an empty ``(0, m)`` tensor.

Randomised attacks (``gaussian``, ``tma``) draw from a ``torch.Generator`` keyed by
``(seed, attack, k)`` for the k-th call (k = 0, 1, ...) on the instance, with SplitMix64 as in
:mod:`cyber0.common.perturbation`: a fresh instance replays the same sequence, successive calls
(rounds) differ, and no global RNG is touched.

``lf`` (label flipping) is a data attack: it changes the labels the Byzantine clients train on
(:meth:`LabelFlip.flip_labels`) and refuses to produce vectors.
"""

from __future__ import annotations

import math
import numbers
from statistics import NormalDist
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import Tensor

from .aggregators import Aggregator
from .perturbation import GAMMA, MASK64, mix64

__all__ = [
    "ALIE",
    "ATTACK_NAMES",
    "Adaptive",
    "Attack",
    "AttackConfigError",
    "AttackKind",
    "DataAttack",
    "FallOfEmpires",
    "GaussianNoise",
    "InnerProductManipulation",
    "LabelFlip",
    "Mimic",
    "MinMax",
    "MinSum",
    "SignFlip",
    "TrimmedMeanAttack",
    "alie_z",
    "get_attack",
    "get_attack_against",
]

_F64 = torch.float64

AttackKind = Literal["model", "data"]
Direction = Literal["std", "sign", "unit"]


class AttackConfigError(ValueError):
    """An attack's parameters, or the (n, f) it is called with, are invalid."""


class Attack(Protocol):
    """The contract of every attack: a name, a kind and ``(honest, n, f) -> (f, m)``."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> AttackKind: ...

    def __call__(self, honest: Tensor, n: int, f: int) -> Tensor: ...


class DataAttack(Attack, Protocol):
    """A data attack: it poisons the labels the Byzantine clients compute on."""

    def flip_labels(self, y: Tensor, num_classes: int = 10) -> Tensor: ...


# --------------------------------------------------------------------------------------------
# Parameter checks and shared statistics


def _int_param(attack: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AttackConfigError(f"{attack}: {name} must be an integer; got {name}={value!r}")
    if int(value) < minimum:
        raise AttackConfigError(f"{attack}: {name} must be >= {minimum}; got {name}={value}")
    return int(value)


def _real_param(attack: str, name: str, value: object, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AttackConfigError(f"{attack}: {name} must be a number; got {name}={value!r}")
    v = float(value)
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        bound = "" if minimum is None else f" and >= {minimum}"
        raise AttackConfigError(f"{attack}: {name} must be finite{bound}; got {name}={value}")
    return v


def _choice_param(attack: str, name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise AttackConfigError(f"{attack}: {name} must be one of {list(allowed)}; got {value!r}")
    return value


def _mean_std(honest: Tensor) -> tuple[Tensor, Tensor]:
    """``(μ_h, σ_h)`` of float64 rows; σ_h uses ddof=1 and is 0 for a single row."""
    mu = honest.mean(dim=0)
    if honest.shape[0] < 2:
        return mu, torch.zeros_like(mu)
    return mu, honest.std(dim=0, correction=1)


def _repeat(v: Tensor, f: int) -> Tensor:
    return v.unsqueeze(0).repeat(f, 1)


def _generator(seed: int, stream: int, call: int) -> torch.Generator:
    """A CPU generator keyed by (seed, stream, call) through SplitMix64."""
    key = seed & MASK64
    for v in (stream, call):
        key = mix64(key + GAMMA * (v + 1))
    return torch.Generator(device="cpu").manual_seed(key)


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s z: ``s = ⌊n/2⌋ + 1 − f``, ``z = Φ⁻¹((n − s)/n)``; needs 1 ≤ f ≤ ⌊n/2⌋.

    Baruch, Baruch and Goldberg, "A little is enough: circumventing defenses for distributed
    learning", NeurIPS 2019. Example: n=20, f=5 gives s=6, z = Φ⁻¹(0.7) ≈ 0.5244.
    """
    s = n // 2 + 1 - f
    if f < 1 or s < 1:
        raise AttackConfigError(f"alie's z needs 1 <= f <= floor(n/2); got n={n}, f={f}")
    return NormalDist().inv_cdf((n - s) / n)


# --------------------------------------------------------------------------------------------
# Model attacks


class _Registered:
    """What the registry needs of an attack class: its name, kind and constructor keywords."""

    NAME: ClassVar[str]
    #: ``"model"``: the attack replaces vectors; ``"data"``: it poisons labels.
    KIND: ClassVar[AttackKind] = "model"
    #: Keyword parameters accepted by the constructor (for the registry's unknown-key check).
    PARAMS: ClassVar[tuple[str, ...]] = ()
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        """The registry name."""
        return self.NAME

    @property
    def kind(self) -> AttackKind:
        """What the attack acts on (:attr:`KIND`)."""
        return self.KIND

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.PARAMS)
        return f"{type(self).__name__}({args})"


class _ModelAttack(_Registered):
    """Shared call path: checks, f = 0, float64, dtype and device of the result."""

    def _rows(self, honest: Tensor, n: int, f: int) -> Tensor:
        """The ``(f, m)`` float64 Byzantine rows from finite float64 ``honest``, f ≥ 1."""
        raise NotImplementedError

    def __call__(self, honest: Tensor, n: int, f: int) -> Tensor:
        n, f = _check_call(self.NAME, honest, n, f)
        if f == 0:
            return honest.new_zeros((0, honest.shape[1]))
        out = self._rows(honest.to(_F64), n, f)
        return out.to(dtype=honest.dtype, device=honest.device)


def _check_call(name: str, honest: Tensor, n: int, f: int) -> tuple[int, int]:
    f = _int_param(name, "f", f, 0)
    n = _int_param(name, "n", n, 1)
    if n <= f:
        raise AttackConfigError(f"{name} needs n > f; got n={n}, f={f}")
    if honest.ndim != 2 or not honest.is_floating_point():
        raise ValueError(
            f"{name} expects an (h, m) floating tensor of honest vectors; "
            f"got shape {tuple(honest.shape)}, dtype {honest.dtype}"
        )
    if f > 0 and honest.shape[0] == 0:
        raise ValueError(f"{name} needs at least one honest row to attack; got h=0")
    if not bool(torch.isfinite(honest).all()):
        raise ValueError(f"{name}: the honest vectors must be finite")
    return n, f


class SignFlip(_ModelAttack):
    """Sign flipping: every Byzantine client sends ``−μ_h``."""

    NAME = "sf"

    def _rows(self, honest: Tensor, n: int, f: int) -> Tensor:
        return _repeat(-honest.mean(dim=0), f)


class InnerProductManipulation(_ModelAttack):
    """Inner-product manipulation: every Byzantine client sends ``−τ · μ_h`` (ByzFL's
    convention, default τ = 2). Xie, Koyejo and Gupta, "Fall of empires: breaking Byzantine-
    tolerant SGD by inner product manipulation", UAI 2019. (Some papers write ``(1 − τ) μ_h``;
    ``τ_ours = τ_theirs − 1``.)
    """

    NAME = "ipm"
    PARAMS = ("tau",)

    def __init__(self, tau: float = 2.0) -> None:
        self.tau = _real_param(self.NAME, "tau", tau)

    def _rows(self, honest: Tensor, n: int, f: int) -> Tensor:
        return _repeat(-self.tau * honest.mean(dim=0), f)


class FallOfEmpires(InnerProductManipulation):
    """``foe``: the same attack as ``ipm`` under its paper's name."""

    NAME = "foe"


class ALIE(_ModelAttack):
    """A little is enough: every Byzantine client sends ``μ_h + z · σ_h``, with ``z`` from
    :func:`alie_z` (n, f) unless ``tau`` fixes it. Baruch et al., NeurIPS 2019.
    """

    NAME = "alie"
    PARAMS = ("tau",)

    def __init__(self, tau: float | None = None) -> None:
        self.tau = None if tau is None else _real_param(self.NAME, "tau", tau)

    def z(self, n: int, f: int) -> float:
        """The multiplier used for (n, f)."""
        return alie_z(n, f) if self.tau is None else self.tau

    def _rows(self, honest: Tensor, n: int, f: int) -> Tensor:
        mu, sigma = _mean_std(honest)
        return _repeat(mu + self.z(n, f) * sigma, f)


class GaussianNoise(_ModelAttack):
    """Gaussian: row ``r`` is ``μ_h + σ · ε_r`` with ``ε_r ~ N(0, I_m)`` i.i.d.; ``sigma`` is
    absolute (in the units of the vectors), default 1.0. The k-th call draws from a generator
    keyed by ``(seed, k)`` (module docstring).
    """

    NAME = "gaussian"
    PARAMS = ("sigma", "seed")
    _STREAM: ClassVar[int] = 1

    def __init__(self, sigma: float = 1.0, seed: int = 0) -> None:
        self.sigma = _real_param(self.NAME, "sigma", sigma, 0.0)
        self.seed = _int_param(self.NAME, "seed", seed, 0)
        self._calls = 0

    def _rows(self, honest: Tensor, n: int, f: int) -> Tensor:
        gen = _generator(self.seed, self._STREAM, self._calls)
        self._calls += 1
        noise = torch.randn((f, honest.shape[1]), generator=gen, dtype=_F64)
        return honest.mean(dim=0) + self.sigma * noise.to(honest.device)


class Mimic(_ModelAttack):
    """Mimic: every Byzantine client copies honest row ``target`` (default 0), over-weighting
    one client. Karimireddy, He and Jaggi, "Byzantine-robust learning on heterogeneous
    datasets via bucketing", ICLR 2022.
    """

    NAME = "mimic"
    PARAMS = ("target",)

    def __init__(self, target: int = 0) -> None:
        self.target = _int_param(self.NAME, "target", target, 0)

    def _rows(self, honest: Tensor, n: int, f: int) -> Tensor:
        if self.target >= honest.shape[0]:
            raise AttackConfigError(
                f"mimic: target={self.target} but only h={honest.shape[0]} honest rows"
            )
        return _repeat(honest[self.target], f)


class TrimmedMeanAttack(_ModelAttack):
    """Fang et al.'s full-knowledge attack on the trimmed mean (USENIX Security 2020, "Local
    model poisoning attacks to Byzantine-robust federated learning").

    Per coordinate j the Byzantine values lie beyond the honest extreme opposite to the honest
    direction ``s_j = sign(μ_h,j)``, within a factor ``b`` (default 2) of it. With
    ``lo_j = min_i h_ij`` and ``hi_j = max_i h_ij``:

    * ``μ_h,j > 0`` (pull down): ``[lo_j / b, lo_j]`` if ``lo_j > 0``, else ``[b · lo_j, lo_j]``;
    * ``μ_h,j ≤ 0`` (push up):  ``[hi_j, b · hi_j]`` if ``hi_j > 0``, else ``[hi_j / b, hi_j]``.

    ``mode="uniform"`` (default, as in the paper) samples each value uniformly in its interval
    with the keyed generator (module docstring); ``mode="boundary"`` sends the far end
    (``lo/b``, ``b·lo``, ``b·hi`` or ``hi/b``) in every row, deterministically.
    """

    NAME = "tma"
    PARAMS = ("b", "mode", "seed")
    _STREAM: ClassVar[int] = 2

    def __init__(self, b: float = 2.0, mode: str = "uniform", seed: int = 0) -> None:
        self.b = _real_param(self.NAME, "b", b, 1.0)
        self.mode = _choice_param(self.NAME, "mode", mode, ("uniform", "boundary"))
        self.seed = _int_param(self.NAME, "seed", seed, 0)
        self._calls = 0

    def _rows(self, honest: Tensor, n: int, f: int) -> Tensor:
        b = self.b
        mu = honest.mean(dim=0)
        lo, hi = honest.amin(dim=0), honest.amax(dim=0)
        down = mu > 0
        near = torch.where(down, lo, hi)
        far = torch.where(
            down,
            torch.where(lo > 0, lo / b, lo * b),
            torch.where(hi > 0, hi * b, hi / b),
        )
        if self.mode == "boundary":
            return _repeat(far, f)
        gen = _generator(self.seed, self._STREAM, self._calls)
        self._calls += 1
        u = torch.rand((f, honest.shape[1]), generator=gen, dtype=_F64).to(honest.device)
        return far + u * (near - far)


def _direction(honest: Tensor, kind: str) -> Tensor:
    """The perturbation ``p`` of Min-Max / Min-Sum: ``−σ_h``, ``−sign(μ_h)`` or
    ``−μ_h / ‖μ_h‖`` (zero if ``μ_h = 0``)."""
    mu, sigma = _mean_std(honest)
    if kind == "std":
        return -sigma
    if kind == "sign":
        return -torch.sign(mu)
    norm = mu.norm()
    return -mu / norm if float(norm) > 0 else torch.zeros_like(mu)


def _largest_root(p2: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """The largest γ ≥ 0 with ``p2 γ² + 2 b γ + c ≤ 0`` given ``c ≤ 0`` (elementwise; 0 where
    ``p2 = 0``), by the cancellation-free root formula."""
    c = c.clamp(max=0.0)
    root = torch.sqrt(b * b - p2 * c)
    pos = torch.where(b >= 0, -c / (b + root), (root - b) / p2)
    pos = torch.where((b >= 0) & (b + root == 0), torch.zeros_like(pos), pos)
    return torch.where(p2 > 0, pos, torch.zeros_like(pos))


class _MinAttack(_ModelAttack):
    PARAMS = ("direction",)

    def __init__(self, direction: str = "std") -> None:
        self.direction = _choice_param(self.NAME, "direction", direction, ("std", "sign", "unit"))

    def gamma(self, honest: Tensor) -> float:
        """The largest admissible γ for float64 ``honest`` (closed form, see the class)."""
        raise NotImplementedError

    def _rows(self, honest: Tensor, n: int, f: int) -> Tensor:
        mu = honest.mean(dim=0)
        return _repeat(mu + self.gamma(honest) * _direction(honest, self.direction), f)


class MinMax(_MinAttack):
    """Min-Max (Shejwalkar and Houmansadr, "Manipulating the Byzantine", NDSS 2021): every
    Byzantine client sends ``μ_h + γ p`` with the largest γ ≥ 0 such that
    ``max_i ‖μ_h + γ p − h_i‖ ≤ max_{i,j} ‖h_i − h_j‖``; ``p`` is ``−σ_h`` ("std", default),
    ``−sign(μ_h)`` ("sign") or ``−μ_h/‖μ_h‖`` ("unit").

    The paper finds γ by bisection; the constraint is one quadratic in γ per honest row
    (``‖a_i + γ p‖² ≤ D²`` with ``a_i = μ_h − h_i``, true at γ = 0), so γ is computed exactly as
    the smallest of their largest roots.
    """

    NAME = "minmax"

    def gamma(self, honest: Tensor) -> float:
        p = _direction(honest, self.direction)
        a = honest.mean(dim=0) - honest
        sq = (a * a).sum(dim=1)
        gram = sq[:, None] + sq[None, :] - 2.0 * (a @ a.T)
        d2 = gram.clamp_min(0.0).max()
        roots = _largest_root((p * p).sum(), a @ p, sq - d2)
        return float(roots.min())


class MinSum(_MinAttack):
    """Min-Sum (Shejwalkar and Houmansadr, NDSS 2021): like :class:`MinMax` with the constraint
    ``Σ_i ‖μ_h + γ p − h_i‖² ≤ max_i Σ_j ‖h_i − h_j‖²``, a single quadratic in γ, solved exactly.
    """

    NAME = "minsum"

    def gamma(self, honest: Tensor) -> float:
        h = honest.shape[0]
        p = _direction(honest, self.direction)
        a = honest.mean(dim=0) - honest
        sq = (a * a).sum(dim=1)
        # Σ_j ‖h_i − h_j‖² = h ‖a_i‖² + Σ_j ‖a_j‖² (the cross term vanishes since Σ_j a_j = 0).
        bound = (h * sq + sq.sum()).max()
        root = _largest_root(h * (p * p).sum(), (a @ p).sum(), sq.sum() - bound)
        return float(root)


class Adaptive(_ModelAttack):
    """ALIE or IPM with τ tuned against the aggregator in use (ByzFL's Optimal-ALIE /
    Optimal-IPM): the attack returns ``byz(τ*)`` with

        τ* = argmax_τ ‖aggregator([byz(τ); honest']) − μ_h‖,

    ``byz(τ) = μ_h + τ σ_h`` (base "alie") or ``−τ μ_h`` (base "ipm"), over a grid of
    ``evaluations`` points on ``[0, tau_max]`` plus the base's default τ (Baruch's z for
    (n, f), or 2), then ``refine`` golden-section steps between the best point's grid
    neighbours. The first best τ wins ties, the default first, so the result is at least as
    damaging as the base attack. Byzantine rows come first, as in the simulator.

    ``honest'`` has n − f rows: ``honest`` itself when it has n − f rows (omniscient), else its
    rows cycled to n − f (colluders emulate the unseen honest clients by their own vectors).
    """

    NAME = "adaptive"
    PARAMS = ("base", "aggregator", "tau_max", "evaluations", "refine")
    REQUIRED = ("aggregator",)

    def __init__(
        self,
        aggregator: Aggregator,
        base: str = "alie",
        tau_max: float = 20.0,
        evaluations: int = 32,
        refine: int = 16,
    ) -> None:
        if not callable(aggregator):
            raise AttackConfigError(f"adaptive: aggregator must be callable; got {aggregator!r}")
        self.aggregator = aggregator
        self.base = _choice_param(self.NAME, "base", base, ("alie", "ipm"))
        self.tau_max = _real_param(self.NAME, "tau_max", tau_max, 0.0)
        self.evaluations = _int_param(self.NAME, "evaluations", evaluations, 2)
        self.refine = _int_param(self.NAME, "refine", refine, 0)

    def _candidate(self, honest: Tensor, tau: float) -> Tensor:
        mu, sigma = _mean_std(honest)
        return mu + tau * sigma if self.base == "alie" else -tau * mu

    def _default_tau(self, n: int, f: int) -> float:
        if self.base == "ipm":
            return 2.0
        s = n // 2 + 1 - f
        return alie_z(n, f) if s >= 1 else 0.0

    def search(self, honest: Tensor, n: int, f: int) -> tuple[float, Tensor]:
        """``(τ*, byz(τ*))`` for ``f ≥ 1``: the chosen τ and the ``(f, m)`` rows, in
        ``honest``'s dtype."""
        n, f = _check_call(self.NAME, honest, n, f)
        if f == 0:
            raise AttackConfigError("adaptive: search needs f >= 1")
        h64 = honest.to(_F64)
        mu = h64.mean(dim=0)
        fill = honest[torch.arange(n - f, device=honest.device) % honest.shape[0]]

        def damage(tau: float) -> float:
            byz = _repeat(self._candidate(h64, tau), f).to(honest.dtype)
            agg = self.aggregator(torch.cat([byz, fill]))
            return float((agg.to(_F64) - mu).norm())

        step = self.tau_max / (self.evaluations - 1)
        grid = [self._default_tau(n, f)] + [k * step for k in range(self.evaluations)]
        scores = [damage(t) for t in grid]
        best = max(range(len(grid)), key=lambda k: (scores[k], -k))
        best_tau, best_score = grid[best], scores[best]
        if self.refine and step > 0:
            lo, hi = max(best_tau - step, 0.0), min(best_tau + step, self.tau_max)
            inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
            x1, x2 = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
            s1, s2 = damage(x1), damage(x2)
            for i in range(self.refine):
                for tau, score in ((x1, s1), (x2, s2)):
                    if score > best_score:
                        best_tau, best_score = tau, score
                if i == self.refine - 1:
                    break
                if s1 >= s2:
                    hi, x2, s2 = x2, x1, s1
                    x1 = hi - inv_phi * (hi - lo)
                    s1 = damage(x1)
                else:
                    lo, x1, s1 = x1, x2, s2
                    x2 = lo + inv_phi * (hi - lo)
                    s2 = damage(x2)
        rows = _repeat(self._candidate(h64, best_tau), f)
        return best_tau, rows.to(dtype=honest.dtype)

    def _rows(self, honest: Tensor, n: int, f: int) -> Tensor:
        return self.search(honest, n, f)[1].to(_F64)

    def __repr__(self) -> str:
        return (
            f"Adaptive(base={self.base!r}, aggregator={self.aggregator!r}, "
            f"tau_max={self.tau_max}, evaluations={self.evaluations}, refine={self.refine})"
        )


# --------------------------------------------------------------------------------------------
# Data attack


class LabelFlip(_Registered):
    """Label flipping (data attack): the Byzantine clients compute honestly on labels
    ``y → C − 1 − y`` (MNIST: ``9 − y``). Calling it on vectors raises ``TypeError``."""

    NAME: ClassVar[str] = "lf"
    KIND: ClassVar[AttackKind] = "data"

    def __call__(self, honest: Tensor, n: int, f: int) -> Tensor:
        raise TypeError(
            "lf is a data attack: it acts on labels (use flip_labels on the Byzantine clients' "
            "data), not on vectors"
        )

    def flip_labels(self, y: Tensor, num_classes: int = 10) -> Tensor:
        """``num_classes − 1 − y`` for integer labels in ``[0, num_classes)``."""
        c = _int_param(self.NAME, "num_classes", num_classes, 2)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"lf: labels must be an integer tensor; got dtype {y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= c):
            raise ValueError(
                f"lf: labels must lie in [0, {c}); got min={int(y.min())}, max={int(y.max())}"
            )
        return (c - 1) - y


# --------------------------------------------------------------------------------------------
# Registry

_ATTACKS: dict[str, type[_ModelAttack] | type[LabelFlip]] = {
    "adaptive": Adaptive,
    "alie": ALIE,
    "foe": FallOfEmpires,
    "gaussian": GaussianNoise,
    "ipm": InnerProductManipulation,
    "lf": LabelFlip,
    "mimic": Mimic,
    "minmax": MinMax,
    "minsum": MinSum,
    "sf": SignFlip,
    "tma": TrimmedMeanAttack,
}

#: The registered attack names.
ATTACK_NAMES: tuple[str, ...] = tuple(sorted(_ATTACKS))


def get_attack(name: str, **params: Any) -> Attack:
    """The attack registered under ``name``, built with ``params``. Unknown names or
    parameters, missing required ones and invalid values raise :class:`AttackConfigError`."""
    cls = _ATTACKS.get(name)
    if cls is None:
        raise AttackConfigError(f"unknown attack {name!r}; known: {', '.join(ATTACK_NAMES)}")
    for key in params:
        if key not in cls.PARAMS:
            accepted = ", ".join(cls.PARAMS) or "none"
            raise AttackConfigError(f"{name}: unknown parameter {key!r}; accepted: {accepted}")
    for key in cls.REQUIRED:
        if key not in params:
            raise AttackConfigError(f"{name}: missing required parameter {key!r}")
    return cls(**params)


def get_attack_against(name: str, rule: Aggregator, **params: Any) -> Attack:
    """:func:`get_attack`, with ``rule`` (the aggregator in use) as the adaptive attack's
    ``aggregator``; every other attack ignores ``rule``. Naming the aggregator in ``params`` is
    refused: the attack must line-search against the rule that actually aggregates."""
    if name == "adaptive":
        if "aggregator" in params:
            raise AttackConfigError(
                "adaptive: the aggregator is the one in use (the training plan's rule); do not "
                "give it as a parameter"
            )
        params["aggregator"] = rule
    return get_attack(name, **params)
