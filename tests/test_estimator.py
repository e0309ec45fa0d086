"""Zero-order estimation against autograd, both evaluation paths, and the aggregate update."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyber0.common import estimator as estimator_module
from cyber0.common.estimator import (
    ZOEstimator,
    apply_aggregate_,
    flat_parameters,
    perturbed_losses,
    update_terms,
)
from cyber0.common.models import (
    LogisticRegression,
    LossFn,
    balanced_cross_entropy_loss,
    class_balanced_weights,
    cross_entropy_loss,
)
from cyber0.common.perturbation import (
    DirectionGenerator,
    canonical_parameters,
    eager,
    perturbed,
)
from cyber0.common.plan import ZOSettings


def ce_loss(model: nn.Module, batch: Any) -> Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def make_problem(seed: int = 0) -> tuple[nn.Module, tuple[Tensor, Tensor]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(48, 12), torch.randint(0, 3, (48,))
    return model, (x, y)


def test_zo_estimate_approaches_the_gradient() -> None:
    """Mean of g_j z_j over ν = 4096 Gaussian directions: E[z zᵀ] = I so it estimates ∇F; its
    relative error is about sqrt(d/ν) = 0.23 for d = 123, i.e. cosine ≈ 0.97."""
    model, batch = make_problem()
    gen = DirectionGenerator(7)
    zo = ZOSettings(nu=4096, mu=1e-3)
    g = ZOEstimator(model, ce_loss, gen, zo, "batched").step_scalars(0, 0, batch)
    z = gen.matrix([p.numel() for _, p in canonical_parameters(model)], 0, 0, zo.nu).double()
    estimate = (g[:, None] * z).mean(0)
    ce_loss(model, batch).backward()
    true = torch.cat([p.grad.reshape(-1) for _, p in canonical_parameters(model)]).double()
    assert F.cosine_similarity(estimate, true, dim=0) >= 0.95


def test_scalar_is_a_directional_derivative() -> None:
    """On a quadratic the central difference is exact: g = ⟨∇F, z⟩ up to float32 rounding."""
    w0 = torch.linspace(-1, 1, 50)
    model = nn.Linear(50, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w0)

    def quad(m: nn.Module, batch: Any) -> Tensor:
        return 0.5 * (m(torch.eye(50)) ** 2).sum()  # m(I) is the weight vector

    gen = DirectionGenerator(1)
    g = ZOEstimator(model, quad, gen, ZOSettings(nu=4, mu=1e-2), "inplace").step_scalars(3, 0, None)
    z = gen.matrix([50], 3, 0, 4).double()
    assert torch.allclose(g, z @ w0.double(), atol=1e-3)


@pytest.mark.parametrize(("steps", "variant"), [(1, "unbiased"), (3, "unbiased"), (3, "biased")])
def test_batched_and_inplace_paths_agree_and_leave_weights_unchanged(
    steps: int, variant: str
) -> None:
    model, batch = make_problem(1)
    zo = ZOSettings(nu=6, local_steps=steps, mu=1e-3, lr=0.05, variant=variant)  # type: ignore[arg-type]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gen = DirectionGenerator(4)
    a = ZOEstimator(model, ce_loss, gen, zo, "batched").local_round(2, [batch] * steps)
    b = ZOEstimator(model, ce_loss, gen, zo, "inplace").local_round(2, [batch] * steps)
    assert a.shape == b.shape == (zo.scalars_per_round,)
    # The same perturbed weights; losses differ only by float32 evaluation order (~1e-7),
    # amplified by 1/(2μ) = 500, and compounded over local steps.
    assert torch.allclose(a, b, atol=5e-4)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("loss", [cross_entropy_loss, balanced_cross_entropy_loss])
@pytest.mark.parametrize(("rows", "batch_size"), [(2, 128), (2, 37), (10, 64), (128, 32)])
def test_logistic_regression_losses_match_vmap(rows: int, batch_size: int, loss: LossFn) -> None:
    """The written-out batched loss of logistic regression (what ``perturbed_losses`` runs for
    it), mean or class-balanced, equals vmap over ``functional_call`` (reached here through a
    loss closure that is not the loss itself), at ν = 1 and 64 and at odd batch sizes, to
    float32 rounding: its ``log_softmax`` runs over the classes in the product's layout, a
    kernel whose ``exp`` and ``log`` may round a tail element differently from the one vmap
    reaches (seen: one ulp of the mean loss, ~1e-7 relative; 1e-6 allows about ten)."""
    model = LogisticRegression(784, 10, init_seed=3)
    gen = torch.Generator().manual_seed(rows * batch_size)
    x = torch.rand(batch_size, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (batch_size,), generator=gen)
    weights = flat_parameters(model) + 0.05 * torch.randn(rows, 7850, generator=gen)
    with torch.inference_mode():
        fast = perturbed_losses(model, loss, weights, (x, y))
        via_vmap = perturbed_losses(model, lambda m, b: loss(m, b), weights, (x, y))
    assert fast.shape == (rows,)
    torch.testing.assert_close(fast, via_vmap, rtol=1e-6, atol=0.0)


def test_biased_variant_sums_steps_over_shared_directions() -> None:
    model, batch = make_problem(2)
    gen = DirectionGenerator(4)
    biased = ZOSettings(nu=5, local_steps=2, lr=1e-9, variant="biased")
    one = ZOSettings(nu=5, local_steps=1)
    s = ZOEstimator(model, ce_loss, gen, biased, "batched").local_round(0, [batch, batch])
    g = ZOEstimator(model, ce_loss, gen, one, "batched").local_round(0, [batch])
    # With a negligible local step the two steps see the same weights and directions.
    assert torch.allclose(s, 2 * g, atol=1e-4)


@pytest.mark.parametrize("path", ["inplace", "batched"])
@pytest.mark.parametrize("variant", ["unbiased", "biased"])
def test_a_client_with_a_direction_cache_follows_the_same_trajectory(
    variant: str, path: str
) -> None:
    """Local rounds (K = 2: local updates too) and global updates with the estimator's cache
    give bitwise the vectors and weights of an estimator that keeps nothing (the batched path
    keeps its direction matrices: 2 steps × 2 directions × 9,923 floats fit in 1 MiB)."""
    zo = ZOSettings(nu=2, local_steps=2, mu=1e-2, lr=0.05, variant=variant)  # type: ignore[arg-type]
    gen = DirectionGenerator(6)
    runs = []
    for budget in (0, 1 << 20):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(120, 80), nn.Tanh(), nn.Linear(80, 3))  # 9,600 weights
        x, y = torch.randn(32, 120), torch.randint(0, 3, (32,))
        est = ZOEstimator(model, ce_loss, gen, zo, path, cache_bytes=budget)  # type: ignore[arg-type]
        vectors = []
        for t in range(3):
            vectors.append(est.local_round(t, [(x, y), (x, y)]))
            apply_aggregate_(model, gen, zo, t, vectors[-1], est.cache)
        assert (est.cache.used > 0) == (budget > 0)
        runs.append((vectors, [p.detach().clone() for p in model.parameters()]))
    (va, wa), (vb, wb) = runs
    assert all(torch.equal(a, b) for a, b in zip(va, vb, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(wa, wb, strict=True))


def test_update_terms_layout() -> None:
    zo = ZOSettings(nu=2, local_steps=3)
    terms = update_terms(zo, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 0.5)
    assert terms == [(0, 0, 0.5), (0, 1, 1.0), (1, 0, 1.5), (1, 1, 2.0), (2, 0, 2.5), (2, 1, 3.0)]
    biased = ZOSettings(nu=2, local_steps=3, variant="biased")
    assert update_terms(biased, [1.0, 2.0], 1.0) == [(0, 0, 1.0), (0, 1, 2.0)]
    with pytest.raises(ValueError, match="expected 6 values; got 5"):
        update_terms(zo, [0.0] * 5, 1.0)


def test_model_state_is_a_function_of_the_aggregates() -> None:
    """Two parties with the same initial weights and aggregates end bitwise equal, and the
    update equals w − η Σ R z computed by hand."""
    zo = ZOSettings(nu=3, local_steps=2, lr=0.1)
    gen = DirectionGenerator(77)
    a, _ = make_problem(3)
    b, _ = make_problem(3)
    start = [p.detach().clone() for _, p in canonical_parameters(a)]
    aggregates = [torch.randn(6, generator=torch.Generator().manual_seed(r)) for r in range(4)]
    for r, agg in enumerate(aggregates):
        apply_aggregate_(a, gen, zo, r, agg)
        apply_aggregate_(b, gen, zo, r, agg.tolist())
    for (_, p), (_, q) in zip(canonical_parameters(a), canonical_parameters(b), strict=True):
        assert torch.equal(p, q)
    by_hand = [w.clone() for w in start]
    for r, agg in enumerate(aggregates):
        for i, w in enumerate(by_hand):
            for step, j, c in update_terms(zo, agg, zo.lr):
                w -= gen.direction(w, r, step, j, i) * c
    for (_, p), w in zip(canonical_parameters(a), by_hand, strict=True):
        assert torch.equal(p.detach(), w)


def test_inplace_path_refuses_parameters_used_outside_their_module() -> None:
    model = nn.Linear(4, 1)

    def reads_weight_directly(m: nn.Module, batch: Any) -> Tensor:
        return m(torch.ones(1, 4)).sum() + m.weight.sum()

    def ignores_bias(m: nn.Module, batch: Any) -> Tensor:
        return (m.weight**2).sum()

    est = ZOEstimator(model, ignores_bias, DirectionGenerator(0), ZOSettings(nu=1), "inplace")
    with pytest.raises(ValueError, match=r"could not perturb \['bias', 'weight'\]"):
        est.step_scalars(0, 0, None)
    est.loss_fn = reads_weight_directly  # used in forward: accepted
    assert est.step_scalars(0, 0, None).shape == (1,)


def test_wrong_number_of_batches_is_refused() -> None:
    model, batch = make_problem()
    est = ZOEstimator(model, ce_loss, DirectionGenerator(0), ZOSettings(local_steps=2), "inplace")
    with pytest.raises(ValueError, match="need 2 batches"):
        est.local_round(0, [batch])


def test_inplace_path_on_a_bert_reads_only_the_embedding_rows_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tiny random BERT: the losses of the row-wise lookup tables (and small tensors generated
    together) equal, bit for bit, those of explicitly materialised weights W ± μZ and of the
    tensor-by-tensor path with whole tables."""
    transformers = pytest.importorskip("transformers")
    import cyber0.common.perturbation as perturbation

    config = transformers.BertConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 300, (4, 12), generator=gen)
    batch = (ids, torch.ones_like(ids), torch.tensor([0, 1, 1, 0]))

    def loss(m: nn.Module, b: Any) -> Tensor:
        return F.cross_entropy(m(input_ids=b[0], attention_mask=b[1]).logits, b[2])

    g, zo = DirectionGenerator(9), ZOSettings(nu=2, mu=1e-2)
    named = canonical_parameters(model)
    assert sum(perturbation._lookup_table(m) for m in model.modules()) == 3  # word, position, type
    with torch.inference_mode():
        for j in range(zo.nu):
            for scale in (zo.mu, -zo.mu):
                with perturbed(model, g, 5, 0, j, scale) as touched:
                    rowwise = loss(model, batch)
                assert len(touched) == len(named)
                shifted = {
                    name: g.direction(p, 5, 0, j, i).mul_(scale).add_(p.detach())
                    for i, (name, p) in enumerate(named)
                }
                logits = torch.func.functional_call(
                    model, shifted, (), {"input_ids": ids, "attention_mask": batch[1]}
                ).logits
                assert torch.equal(rowwise, F.cross_entropy(logits, batch[2]))
    rows = ZOEstimator(model, loss, g, zo, "inplace").step_scalars(5, 0, batch)
    monkeypatch.setattr(perturbation, "_lookup_table", lambda mod: False)  # whole tables,
    monkeypatch.setattr(perturbation, "SMALL_TENSOR", 0)  # every tensor alone
    full = ZOEstimator(model, loss, g, zo, "inplace").step_scalars(5, 0, batch)
    assert torch.equal(rows, full) and bool((rows != 0).all())


@pytest.mark.parametrize(
    ("nu", "steps", "variant", "budget"),
    [
        (1, 1, "unbiased", 1 << 20),
        (1, 5, "unbiased", 1 << 20),
        (3, 4, "biased", 1 << 20),
        (3, 3, "unbiased", 0),
        (2, 3, "biased", 0),
    ],
)
def test_clients_run_together_give_each_clients_bits(
    nu: int, steps: int, variant: str, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``local_rounds`` on logistic regression (clients grouped into one batched product per
    step) returns, row by row, bitwise what ``local_round`` returns client by client: with and
    without kept directions, across groups cut by size (at most 2 clients here) and by batch
    shape (client 3 has fewer samples), and leaves the model's weights untouched."""
    monkeypatch.setattr(estimator_module, "GROUP_ELEMENTS", 2 * (1 + nu) * 10 * 32)
    model = LogisticRegression(784, 10, init_seed=1)
    gen = torch.Generator().manual_seed(nu * 100 + steps)
    sizes = [32, 32, 32, 17, 32]
    batches = [
        [
            (torch.rand(b, 784, generator=gen), torch.randint(0, 10, (b,), generator=gen))
            for _ in range(steps)
        ]
        for b in sizes
    ]
    zo = ZOSettings(nu=nu, local_steps=steps, mu=1e-2, lr=0.5, variant=variant)  # type: ignore[arg-type]
    before = flat_parameters(model)
    directions = DirectionGenerator(9)
    together = ZOEstimator(model, cross_entropy_loss, directions, zo, "batched", budget)
    rows = together.local_rounds(4, batches)
    alone = ZOEstimator(model, cross_entropy_loss, directions, zo, "batched", budget)
    expected = torch.stack([alone.local_round(4, b) for b in batches])
    assert rows.shape == (len(sizes), zo.scalars_per_round)
    assert torch.equal(rows, expected)
    assert bool((rows[:, 0] != rows[0, 0]).any())
    assert torch.equal(flat_parameters(model), before)


def _logistic_regression_clients(
    nu: int, steps: int, size: int, clients: int = 3
) -> tuple[LogisticRegression, list[list[tuple[Tensor, Tensor]]]]:
    model = LogisticRegression(784, 10, init_seed=nu)
    gen = torch.Generator().manual_seed(nu + size)
    batches = [
        [
            (
                torch.rand(size, 1, 28, 28, generator=gen),
                torch.randint(0, 10, (size,), generator=gen),
            )
            for _ in range(steps)
        ]
        for _ in range(clients)
    ]
    return model, batches


@pytest.mark.usefixtures("native_kernel")
@pytest.mark.parametrize(("nu", "steps", "size"), [(1, 1, 32), (2, 3, 17), (64, 1, 1)])
def test_native_and_torch_logistic_regression_scalars_agree(nu: int, steps: int, size: int) -> None:
    """The written-out logistic-regression scalars as one native call (``logreg_scalars``)
    and as torch ops (under ``eager()``, what runs without the kernel and on a GPU) agree, one
    client at a time and clients grouped, with local updates between steps (K = 3), at ν = 64
    and at batches of 17 and 1. Each path gives a client bitwise the same row alone and
    grouped. They differ only in the order of the float32 sums of the products: at the first
    step by up to 5e-7 of max |g| (seen; asserted 2e-6), which the local updates at lr = 0.5
    amplify through the loss's curvature (seen: 5e-6 at the third step; asserted 1e-4)."""
    model, batches = _logistic_regression_clients(nu, steps, size)
    zo = ZOSettings(nu=nu, local_steps=steps, mu=1e-2, lr=0.5)
    results = []
    for mode in (contextlib.nullcontext, eager):
        with mode():
            est = ZOEstimator(model, cross_entropy_loss, DirectionGenerator(2), zo, "batched")
            results.append((est.local_rounds(7, batches), est.local_round(7, batches[0])))
    (native_rows, native_one), (torch_rows, torch_one) = results
    assert native_rows.shape == (3, zo.scalars_per_round)
    error = ((native_rows - torch_rows).abs() / torch_rows.abs().max()).view(3, steps, nu)
    assert float(error[:, 0].max()) < 2e-6
    assert float(error.max()) < 1e-4
    assert not torch.equal(native_rows, torch_rows)  # the native kernel ran
    assert torch.equal(native_one, native_rows[0])
    assert torch.equal(torch_one, torch_rows[0])


@pytest.mark.usefixtures("native_kernel")
@pytest.mark.parametrize("loss", [cross_entropy_loss, balanced_cross_entropy_loss])
@pytest.mark.parametrize("mode", [contextlib.nullcontext, eager])
def test_logistic_regression_scalars_are_float64_central_differences(
    mode: Callable[[], contextlib.AbstractContextManager[None]], loss: LossFn
) -> None:
    """At μ = 1e-3 both routes of the written-out scalars (the class-balanced loss: the torch
    ops on either) give the central differences of the loss computed wholly in float64 to ~1e-7
    of |g| (asserted: 1e-6), where the float32 losses at float32-rounded w ± μz
    (``perturbed_losses``) miss them by over 1e-5 of |g|: their rounding (~1e-7 of a loss of
    ~2.3) is divided by 2μ."""
    nu, mu = 8, 1e-3
    model, batches = _logistic_regression_clients(nu, 1, 32, clients=1)
    zo = ZOSettings(nu=nu, local_steps=1, mu=mu, lr=0.5)
    generator = DirectionGenerator(4)
    x, y = batches[0][0]
    with mode():
        est = ZOEstimator(model, loss, generator, zo, "batched")
        got = est.step_scalars(3, 0, (x, y))
    z = generator.matrix([10, 7840], 3, 0, nu, torch.device("cpu"), torch.float32)
    w = flat_parameters(model)
    example = class_balanced_weights(y) if loss is balanced_cross_entropy_loss else 1 / 32

    def loss64(v: Tensor) -> Tensor:
        logits = x.reshape(32, -1).double() @ v[10:].view(10, 784).T + v[:10]
        return F.cross_entropy(logits, y, reduction="none").mul(example).sum()

    expected = torch.stack(
        [
            (loss64(w.double() + mu * d.double()) - loss64(w.double() - mu * d.double())) / (2 * mu)
            for d in z
        ]
    )
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) < 1e-6 * scale
    with torch.inference_mode():
        rows = torch.cat([w + mu * z, w - mu * z])
        float32 = perturbed_losses(model, loss, rows, (x, y)).double()
    float32_g = (float32[:nu] - float32[nu:]) / (2 * mu)
    assert float((float32_g - expected).abs().max()) > 1e-5 * scale


def test_balanced_clients_run_together_give_each_clients_bits() -> None:
    """Under the class-balanced loss too, ``local_rounds`` gives each client bitwise its
    ``local_round`` (each client's examples weighted by its own batch's classes: client 1's
    batches hold fewer classes), and its scalars are not the mean loss's."""
    model, batches = _logistic_regression_clients(3, 2, 24)
    for step in batches[1]:
        step[1].remainder_(3)
    zo = ZOSettings(nu=3, local_steps=2, mu=1e-2, lr=0.5)
    est = ZOEstimator(model, balanced_cross_entropy_loss, DirectionGenerator(2), zo, "batched")
    rows = est.local_rounds(5, batches)
    assert torch.equal(rows, torch.stack([est.local_round(5, b) for b in batches]))
    mean = ZOEstimator(model, cross_entropy_loss, DirectionGenerator(2), zo, "batched")
    assert not torch.allclose(rows, mean.local_rounds(5, batches), rtol=1e-3, atol=0.0)


@pytest.mark.parametrize("mu", [5.0, 50.0])
def test_logistic_regression_scalars_at_large_steps(native_kernel: ModuleType, mu: float) -> None:
    """Where μ·e spans hundreds of logits (up to ~470 at μ = 5, ~4,700 at μ = 50: past 600 the
    kernel takes an example's two losses directly instead of through e^(u − max u)), the
    native kernel and the torch ops still give the float64 central differences (seen within
    ~1e-7 of max |g|; asserted 1e-6)."""
    model = LogisticRegression(784, 10, init_seed=2)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1, 16, 784, generator=gen)
    y = torch.randint(0, 10, (1, 16), generator=gen)
    z = torch.randn(3, 7850, generator=gen)
    bias = model.linear.bias.detach().reshape(1, -1)
    weight = model.linear.weight.detach().reshape(1, -1)
    w = flat_parameters(model).double()

    def loss64(v: Tensor) -> Tensor:
        return F.cross_entropy(x[0].double() @ v[10:].view(10, 784).T + v[:10], y[0])

    expected = torch.stack(
        [(loss64(w + mu * d.double()) - loss64(w - mu * d.double())) / (2 * mu) for d in z]
    )
    scale = float(expected.abs().max())
    native = native_kernel.logreg_scalars(bias, weight, z, x, y, mu)[0]
    eager_ops = model.directional_differences(bias, weight, z, x, y, mu)[0]
    for got in (native, eager_ops):
        assert float((got - expected).abs().max()) < 1e-6 * scale


@pytest.mark.parametrize("frozen", ["bias", "weight"])
def test_logistic_regression_with_a_frozen_parameter_takes_the_general_batched_path(
    frozen: str,
) -> None:
    """With its bias or its weight frozen, logistic regression's trainable parameters are not
    the written-out loss's (bias, weight) row: the batched path takes the general losses (it
    crashed on the written-out one's layout before) and agrees with the in-place path (same
    perturbed weights, float32 losses in another order: ~1e-7 of a loss, over 2μ = 2e-2)."""
    model = LogisticRegression(784, 10, init_seed=5)
    getattr(model.linear, frozen).requires_grad_(False)
    gen = torch.Generator().manual_seed(5)
    batch = (torch.rand(16, 784, generator=gen), torch.randint(0, 10, (16,), generator=gen))
    zo = ZOSettings(nu=3, local_steps=1, mu=1e-2, lr=0.5)
    directions = DirectionGenerator(6)
    batched = ZOEstimator(model, cross_entropy_loss, directions, zo, "batched")
    inplace = ZOEstimator(model, cross_entropy_loss, directions, zo, "inplace")
    a, b = batched.local_round(1, [batch]), inplace.local_round(1, [batch])
    assert a.shape == (3,) and bool((a != 0).all())
    torch.testing.assert_close(a, b, rtol=0.0, atol=1e-4)


@pytest.mark.usefixtures("native_kernel")
def test_native_logistic_regression_scalars_refuse_a_label_out_of_range() -> None:
    """A label outside [0, C) is an error naming it, not a read past the logits."""
    model, batches = _logistic_regression_clients(1, 1, 4, clients=1)
    x, y = batches[0][0]
    y[2] = 10
    zo = ZOSettings(nu=1, local_steps=1, mu=1e-2, lr=0.5)
    est = ZOEstimator(model, cross_entropy_loss, DirectionGenerator(1), zo, "batched")
    with pytest.raises(RuntimeError, match=r"label 10 is not in \[0, 10\)"):
        est.step_scalars(0, 0, (x, y))


def test_clients_of_other_models_run_one_by_one() -> None:
    """A model without a grouped loss gets ``local_round`` per client; no clients, (0, m)."""
    model, batch = make_problem(3)
    zo = ZOSettings(nu=2, local_steps=2, mu=1e-2, lr=0.1)
    est = ZOEstimator(model, ce_loss, DirectionGenerator(2), zo, "batched")
    rows = est.local_rounds(0, [[batch, batch], [batch, batch]])
    assert torch.equal(rows, torch.stack([est.local_round(0, [batch, batch])] * 2))
    assert est.local_rounds(0, []).shape == (0, zo.scalars_per_round)
