"""First-order robust FedSGD baseline: gradients, flat helpers, and a short MNIST run."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyber0.common.aggregators import get_aggregator
from cyber0.common.baseline import (
    apply_update_,
    assign_flat_,
    first_order_round,
    flat_gradient,
    flat_parameters,
    honest_gradients,
    upload_bytes,
)
from cyber0.common.data import ShardSpec, batch_indices, load_mnist, load_shard
from cyber0.common.models import (
    ModelSpec,
    balanced_cross_entropy_loss,
    build_model,
    class_balanced_weights,
    evaluate,
)


def mean_rule(rows: Tensor) -> Tensor:
    return rows.mean(dim=0)


def tiny_problem() -> tuple[nn.Module, Tensor, Tensor]:
    model = build_model(ModelSpec(name="logreg?inputs=5", num_classes=3, init_seed=2))
    model.double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2, 1])
    return model, x, y


def test_flat_gradient_matches_the_softmax_formula() -> None:
    """∇_W = (softmax(x Wᵀ + b) − onehot(y))ᵀ x / B, ∇_b = mean(softmax − onehot); canonical
    order is by name: linear.bias, then linear.weight (row-major)."""
    model, x, y = tiny_problem()
    w = model.get_parameter("linear.weight").detach()
    b = model.get_parameter("linear.bias").detach()
    residual = torch.softmax(x @ w.T + b, dim=1) - F.one_hot(y, 3).double()
    expected = torch.cat([residual.mean(0), (residual.T @ x / len(y)).reshape(-1)])
    got = flat_gradient(model, x, y)
    assert got.shape == (3 + 15,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())  # .grad untouched


def test_flat_gradient_of_the_balanced_loss_weights_each_example_by_its_class() -> None:
    """Under :func:`balanced_cross_entropy_loss` the softmax formula's examples take their
    class-balanced weights w_i: ∇_b = Σ w_i r_i, ∇_W = Σ w_i r_i x_iᵀ (r_i = softmax − onehot);
    not the mean's gradient (the classes of ``y`` are 4, 3 and 2 examples)."""
    model, x, y = tiny_problem()
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2])
    w = model.get_parameter("linear.weight").detach()
    b = model.get_parameter("linear.bias").detach()
    residual = torch.softmax(x @ w.T + b, dim=1) - F.one_hot(y, 3).double()
    weighted = residual * class_balanced_weights(y).unsqueeze(1)
    expected = torch.cat([weighted.sum(0), (weighted.T @ x).reshape(-1)])
    got = flat_gradient(model, x, y, balanced_cross_entropy_loss)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(got, flat_gradient(model, x, y), rtol=1e-3, atol=0.0)


def test_flat_gradient_matches_finite_differences_on_a_nonlinear_model() -> None:
    gen = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    assign_flat_(model, 0.5 * torch.randn(23, generator=gen, dtype=torch.float64))
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    grad = flat_gradient(model, x, y)
    w0, h = flat_parameters(model), 1e-6
    fd = torch.empty_like(w0)
    for i in range(w0.numel()):
        e = torch.zeros_like(w0)
        e[i] = h
        losses = []
        for sign in (1.0, -1.0):
            assign_flat_(model, w0 + sign * e)
            losses.append(F.cross_entropy(model(x), y).item())
        fd[i] = (losses[0] - losses[1]) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)


def test_flat_helpers_round_trip_and_update() -> None:
    model, _, _ = tiny_problem()
    flat = flat_parameters(model)
    assert flat.shape == (18,)
    assert torch.equal(flat[:3], model.get_parameter("linear.bias").detach())
    assign_flat_(model, torch.arange(18.0, dtype=torch.float64))
    assert model.get_parameter("linear.weight")[0, 0].item() == 3.0  # after the 3 bias entries
    apply_update_(model, torch.ones(18, dtype=torch.float64), lr=0.5)
    assert torch.equal(flat_parameters(model), torch.arange(18.0, dtype=torch.float64) - 0.5)
    with pytest.raises(ValueError, match="d=18"):
        assign_flat_(model, torch.zeros(17))
    assert upload_bytes(build_model(ModelSpec())) == 4 * (784 * 10 + 10)


def test_round_stacks_byzantine_rows_first_and_applies_the_aggregate() -> None:
    model, x, y = tiny_problem()
    batches = [(x[:3], y[:3]), (x[3:6], y[3:6]), (x[6:], y[6:])]
    w0 = flat_parameters(model)
    expected_honest = honest_gradients(model, batches)
    seen: list[Tensor] = []

    def first_row(rows: Tensor) -> Tensor:
        seen.append(rows)
        return rows[0]

    byz = torch.full((1, 18), 2.0, dtype=torch.float64)
    honest = first_order_round(model, batches, first_row, lr=0.1, byzantine=lambda g: byz)
    torch.testing.assert_close(honest, expected_honest)
    assert torch.equal(seen[0], torch.cat([byz, expected_honest]))
    torch.testing.assert_close(flat_parameters(model), w0 - 0.1 * 2.0)
    with pytest.raises(ValueError, match="lr"):
        first_order_round(model, batches, mean_rule, lr=0.0)


def mnist_test_subset() -> tuple[Tensor, Tensor]:
    mnist = load_mnist()
    return mnist.test_x[:2000], mnist.test_y[:2000]


def train(
    model: nn.Module,
    rule: Callable[[Tensor], Tensor],
    rounds: int,
    byzantine: Callable[[Tensor], Tensor] | None = None,
) -> None:
    """FedSGD on 5 iid MNIST clients, batch 32, lr 0.5, batches keyed by (0, client, t, 0)."""
    shards = [load_shard(ShardSpec(n_clients=5, client_index=i, seed=0)) for i in range(5)]
    for t in range(rounds):
        batches = []
        for i, (x, y) in enumerate(shards):
            idx = batch_indices(y.numel(), 32, 0, i, t, 0)
            batches.append((x[idx], y[idx]))
        first_order_round(model, batches, rule, lr=0.5, byzantine=byzantine)


def test_mean_fedsgd_learns_mnist_quickly() -> None:
    """300 rounds, 5 iid clients × 32 samples, lr 0.5, mean rule: test accuracy from 0.09
    (zero init predicts class 0) to above 0.85 on 2000 test images."""
    model = build_model(ModelSpec(name="logreg"))
    acc0, loss0 = evaluate(model, *mnist_test_subset())
    train(model, mean_rule, rounds=300)
    acc, loss = evaluate(model, *mnist_test_subset())
    assert acc0 < 0.15 and acc > 0.85
    assert loss < 0.5 * loss0


def test_cwtm_resists_a_scaled_sign_flip_that_breaks_the_mean() -> None:
    """One Byzantine row −50·mean(G) (n = 6, f = 1): the mean steps along +7.5·mean(G), i.e.
    gradient ascent; CWTM(f=1) drops the extreme coordinate and still learns."""

    def attack(honest: Tensor) -> Tensor:
        return -50.0 * honest.mean(dim=0, keepdim=True)

    robust = build_model(ModelSpec(name="logreg"))
    train(robust, get_aggregator("cwtm", f=1), rounds=150, byzantine=attack)
    naive = build_model(ModelSpec(name="logreg"))
    train(naive, mean_rule, rounds=150, byzantine=attack)
    assert evaluate(robust, *mnist_test_subset())[0] > 0.8
    assert evaluate(naive, *mnist_test_subset())[0] < 0.3
