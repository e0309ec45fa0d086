"""Model registry, deterministic initialisation, evaluation and the model digest."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyber0.common.estimator import ZOEstimator
from cyber0.common.models import (
    LogisticRegression,
    ModelSpec,
    balanced_cross_entropy_loss,
    build_model,
    class_balanced_weights,
    cross_entropy_loss,
    evaluate,
    loss_function,
    model_digest,
)
from cyber0.common.perturbation import DirectionGenerator
from cyber0.common.plan import LOSSES, PlanError, TrainingPlan, ZOSettings, plan_fields, plan_json


def test_logreg_shapes_and_zero_init() -> None:
    model = build_model(ModelSpec(name="logreg"))
    assert isinstance(model, LogisticRegression)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {"linear.weight": (10, 784), "linear.bias": (10,)}
    assert all(p.count_nonzero().item() == 0 for p in model.parameters())
    out = model(torch.rand(5, 1, 28, 28))  # images are flattened
    assert out.shape == (5, 10)
    acc, loss = evaluate(model, torch.rand(7, 784), torch.arange(7))
    assert loss == pytest.approx(math.log(10), rel=1e-6)
    assert acc == pytest.approx(1 / 7)  # all logits tie: argmax is class 0


def test_logreg_equals_its_formula_and_runs_on_both_zo_paths() -> None:
    """The addmm form is x Wᵀ + b; the in-place path (hooks on the module owning W and b) and
    the batched path (vmap) agree up to float32 rounding: losses differ by ~1e-7 relative, i.e.
    ~3e-7 at log 10, divided by 2μ = 2e-3 gives ~1e-4 per scalar."""
    model = LogisticRegression(init_seed=3)
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    w, b = model.linear.weight, model.linear.bias
    torch.testing.assert_close(model(x), x.flatten(1) @ w.T + b, rtol=1e-5, atol=1e-5)
    zo = ZOSettings(nu=8, local_steps=1, mu=1e-3, lr=1e-3, batch_size=16)
    rows = [
        ZOEstimator(model, cross_entropy_loss, DirectionGenerator(5), zo, path=path).local_round(
            0, [(x, y)]
        )
        for path in ("inplace", "batched")
    ]
    torch.testing.assert_close(rows[0], rows[1], rtol=1e-3, atol=1e-3)
    assert rows[0].abs().max() > 1e-2  # a real signal, not two zero vectors


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model(ModelSpec(name="logreg?inputs=20", num_classes=3, init_seed=4))
    b = build_model(ModelSpec(name="logreg?inputs=20", num_classes=3, init_seed=4))
    c = build_model(ModelSpec(name="logreg?inputs=20", num_classes=3, init_seed=5))
    build_model(ModelSpec())
    assert torch.equal(torch.random.get_rng_state(), before)
    assert model_digest(a) == model_digest(b) != model_digest(c)
    weight = a.get_parameter("linear.weight")
    assert weight.abs().max().item() <= 1 / math.sqrt(20)
    assert weight.std().item() > 0.05


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ValueError, match="logreg"):
        build_model(ModelSpec(name="resnet"))


def test_evaluate_matches_direct_computation() -> None:
    model = build_model(ModelSpec(name="logreg?inputs=6", num_classes=4, init_seed=0))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=gen)
    y = torch.randint(0, 4, (50,), generator=gen)
    model.train()
    acc, loss = evaluate(model, x, y, batch_size=7)  # uneven last batch
    assert model.training  # mode restored
    logits = model(x)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert acc == (logits.argmax(1) == y).sum().item() / 50
    with pytest.raises(ValueError, match="len"):
        evaluate(model, x[:3], y)


def test_digest_changes_with_one_ulp() -> None:
    model = build_model(ModelSpec(name="logreg", init_seed=1))
    before = model_digest(model)
    assert model_digest(model) == before
    with torch.no_grad():
        w = model.get_parameter("linear.weight")
        w[3, 100] = torch.nextafter(w[3, 100], torch.tensor(math.inf))
    after = model_digest(model)
    assert after != before
    assert len(after) == 64 and int(after, 16) >= 0


class AB(nn.Module):
    def __init__(self, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.b = nn.Parameter(b.clone())


class BA(nn.Module):
    def __init__(self, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.b = nn.Parameter(b.clone())
        self.a = nn.Parameter(a.clone())


def test_digest_ignores_registration_order_but_not_names_shapes_or_dtypes() -> None:
    a, b = torch.arange(6.0).reshape(2, 3), torch.tensor([7.0, 8.0])
    names_ab = [n for n, _ in AB(a, b).named_parameters()]
    assert names_ab == ["a", "b"] and [n for n, _ in BA(a, b).named_parameters()] == ["b", "a"]
    assert model_digest(AB(a, b)) == model_digest(BA(a, b))
    assert model_digest(AB(a, b)) != model_digest(AB(b, a))  # names swapped with values
    assert model_digest(AB(a, b)) != model_digest(AB(a.reshape(3, 2), b))  # same bytes, shape
    assert model_digest(AB(a, b)) != model_digest(AB(a.double(), b.double()))
    frozen = AB(a, b)
    frozen.b.requires_grad_(False)
    assert model_digest(frozen) == model_digest(AB(a, b))  # frozen parameters count too


def test_class_balanced_loss_weights_each_present_class_equally() -> None:
    """Balanced cross-entropy equals the mean over the batch's classes of each class's mean
    loss, computed class by class; absent classes take no weight; a balanced batch gives the
    plain mean."""
    gen = torch.Generator().manual_seed(3)
    model = LogisticRegression(in_features=5, num_classes=4, init_seed=1)
    x = torch.randn(9, 5, generator=gen)
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 3, 3])  # class 2 absent
    weights = class_balanced_weights(y)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert weights[y == 0].tolist() == [1 / 18] * 6 and weights[6].item() == 1 / 3
    losses = F.cross_entropy(model(x), y, reduction="none").double()
    by_class = torch.stack([losses[y == c].mean() for c in (0, 1, 3)]).mean()
    balanced = balanced_cross_entropy_loss(model, (x, y))
    assert balanced.dtype == torch.float32
    assert balanced.double().item() == pytest.approx(by_class.item(), rel=1e-6)
    assert abs(balanced.item() - cross_entropy_loss(model, (x, y)).item()) > 1e-3
    even = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    assert balanced_cross_entropy_loss(model, (x[:8], even)).item() == pytest.approx(
        cross_entropy_loss(model, (x[:8], even)).item(), rel=1e-6
    )


def test_a_plan_names_its_loss_and_each_name_has_one_closure() -> None:
    """``loss`` defaults to the mean cross-entropy; each of LOSSES maps to its closure; another
    name is a PlanError naming the field and the choices, from the plan and from the lookup."""
    assert TrainingPlan(seed=0).loss == "cross_entropy"
    assert [loss_function(name) for name in LOSSES] == [
        cross_entropy_loss,
        balanced_cross_entropy_loss,
    ]
    for refuse in (lambda: TrainingPlan(seed=0, loss="mse"), lambda: loss_function("mse")):  # type: ignore[arg-type]
        with pytest.raises(PlanError, match=r"loss must be one of \('cross_entropy', 'balanced"):
            refuse()


def test_a_plan_written_before_its_loss_field_reads_as_cross_entropy() -> None:
    """:func:`plan_fields` of a plan's JSON without ``loss`` (written before the field existed)
    is the cross-entropy plan's; a written ``loss`` is kept."""
    plan = TrainingPlan(seed=3, zo=ZOSettings(nu=2))
    old = {k: v for k, v in json.loads(plan_json(plan)).items() if k != "loss"}
    assert plan_fields(json.dumps(old)) == json.loads(plan_json(plan))
    balanced = TrainingPlan(seed=3, loss="balanced_cross_entropy")
    assert plan_fields(plan_json(balanced))["loss"] == "balanced_cross_entropy"
