"""The training plan: everything a party needs to reproduce the global model.

A model's state is a pure function of (initial weights, plan, sequence of aggregates). The plan is
what the federator hands to every client at Join; the simulator builds the same object from YAML.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Variant = Literal["unbiased", "biased"]
Distribution = Literal["gaussian", "rademacher"]
Loss = Literal["cross_entropy", "balanced_cross_entropy"]

VARIANTS: tuple[Variant, ...] = ("unbiased", "biased")
DISTRIBUTIONS: tuple[Distribution, ...] = ("gaussian", "rademacher")
#: The objectives a plan can name (:func:`cyber0.common.models.loss_function`): the batch's mean
#: cross-entropy, or its class-balanced mean (the mean over the batch's classes of each class's
#: mean cross-entropy).
LOSSES: tuple[Loss, ...] = ("cross_entropy", "balanced_cross_entropy")


class PlanError(ValueError):
    """A plan field has an invalid value; the message names the field."""


@dataclass(frozen=True)
class ZOSettings:
    """Zero-order estimator settings shared by every party.

    ``nu`` directions per local step, ``local_steps`` (K) steps per round, smoothing ``mu``,
    learning rate ``lr``, ``batch_size`` examples per local step.
    Unbiased: fresh directions each local step, K·ν scalars per round.
    Biased: the same ν directions for all K steps, ν scalars per round (summed over steps).
    """

    nu: int = 64
    local_steps: int = 1
    mu: float = 1e-3
    lr: float = 1e-3
    batch_size: int = 32
    variant: Variant = "unbiased"
    distribution: Distribution = "gaussian"

    def __post_init__(self) -> None:
        if self.nu < 1:
            raise PlanError(f"nu must be >= 1; got nu={self.nu}")
        if self.local_steps < 1:
            raise PlanError(f"local_steps must be >= 1; got local_steps={self.local_steps}")
        if not (math.isfinite(self.mu) and self.mu > 0):
            raise PlanError(f"mu must be finite and > 0; got mu={self.mu}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PlanError(f"lr must be finite and > 0; got lr={self.lr}")
        if self.batch_size < 1:
            raise PlanError(f"batch_size must be >= 1; got batch_size={self.batch_size}")
        if self.variant not in VARIANTS:
            raise PlanError(f"variant must be one of {VARIANTS}; got variant={self.variant!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise PlanError(
                f"distribution must be one of {DISTRIBUTIONS}; "
                f"got distribution={self.distribution!r}"
            )

    @property
    def scalars_per_round(self) -> int:
        """Length m of a client's update: K·ν (unbiased) or ν (biased)."""
        return self.nu * self.local_steps if self.variant == "unbiased" else self.nu


@dataclass(frozen=True)
class TrainingPlan:
    """What the federator broadcasts once: the master seed and the ZO settings, the model and
    data specs (by name and parameters, never weights), the objective every party trains
    (``loss``), the robust rule and its declared f."""

    seed: int
    zo: ZOSettings = field(default_factory=ZOSettings)
    model: str = "logreg"
    dataset: str = "mnist"
    partition: Literal["iid", "dirichlet"] = "dirichlet"
    alpha: float = 1.0
    n_clients: int = 10
    f: int = 2
    aggregator: str = "cwtm"
    rounds: int = 300
    loss: Loss = "cross_entropy"

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**63:
            raise PlanError(f"seed must be in [0, 2**63); got seed={self.seed}")
        if self.n_clients < 1:
            raise PlanError(f"n_clients must be >= 1; got n_clients={self.n_clients}")
        if not 0 <= self.f < self.n_clients:
            raise PlanError(f"f must satisfy 0 <= f < n_clients; got f={self.f}")
        if self.partition not in ("iid", "dirichlet"):
            raise PlanError(f"partition must be 'iid' or 'dirichlet'; got {self.partition!r}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise PlanError(f"alpha must be finite and > 0; got alpha={self.alpha}")
        if self.rounds < 1:
            raise PlanError(f"rounds must be >= 1; got rounds={self.rounds}")
        if self.loss not in LOSSES:
            raise PlanError(f"loss must be one of {LOSSES}; got loss={self.loss!r}")


def plan_json(plan: TrainingPlan) -> str:
    """Canonical JSON of ``plan`` (sorted keys), as the log and weights files store it."""
    return json.dumps(dataclasses.asdict(plan), sort_keys=True)


def plan_fields(text: str) -> dict[str, Any]:
    """The fields of a :func:`plan_json` text, with a field it lacks at its default: a plan
    written before that field existed (``loss``) trained what the default names."""
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(TrainingPlan)
        if f.default is not dataclasses.MISSING
    }
    return {**defaults, **json.loads(text)}
