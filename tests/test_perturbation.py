"""The direction generator: reference derivation, determinism, statistics, canonical order."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from cyber0.common.perturbation import (
    GAMMA,
    DirectionGenerator,
    apply_directions_,
    canonical_parameters,
    mix64,
    perturbed,
    stream_key,
)


def reference_gaussian(seed: int, coords: tuple[int, int, int, int], n: int) -> list[float]:
    """The documented derivation in plain Python floats (float64 transcendentals)."""
    key = stream_key(seed, *coords)
    out: list[float] = []
    for c in range((n + 1) // 2):
        x = mix64(key + GAMMA * (c + 1))
        h, low = x >> 40, (x >> 8) & 0xFFFFFF
        r = math.sqrt(-2.0 * math.log((2**24 - h) * 2.0**-24))
        theta = low * 2.0 * math.pi * 2.0**-24
        out += [r * math.cos(theta), r * math.sin(theta)]
    return out[:n]


def test_stream_key_matches_splitmix64_fold() -> None:
    key = 5
    for v in (1, 2, 3, 4):
        key = mix64(key + GAMMA * (v + 1))
    assert stream_key(5, 1, 2, 3, 4) == key
    assert len({stream_key(5, *c) for c in [(0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 0, 0)]}) == 3
    with pytest.raises(ValueError, match=">= 0"):
        stream_key(5, -1, 0, 0, 0)


def test_gaussian_matches_reference_derivation() -> None:
    n = 1001  # odd: the last pair is cut
    z = DirectionGenerator(1234).direction(torch.empty(n), 3, 1, 5, 2)
    ref = torch.tensor(reference_gaussian(1234, (3, 1, 5, 2), n), dtype=torch.float64)
    # float32 Box-Muller against float64: a few float32 ulps (|z| < 6, ulp(6) = 4.8e-7).
    assert torch.allclose(z.double(), ref, rtol=0, atol=2e-6)


def test_rademacher_matches_reference_exactly() -> None:
    n = 70_001  # crosses a block boundary
    z = DirectionGenerator(99, "rademacher").direction(torch.empty(n), 1, 0, 4, 7)
    key = stream_key(99, 1, 0, 4, 7)
    idx = [0, 1, 2, 65_535, 65_536, 65_537, n - 1]
    expected = [1.0 - 2.0 * ((mix64(key + GAMMA * (c + 1)) >> 32) & 1) for c in idx]
    assert z[idx].tolist() == expected
    assert set(z.unique().tolist()) == {-1.0, 1.0}


GEN_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys, torch
    torch.set_num_threads(int(sys.argv[1]))
    from cyber0.common.perturbation import DirectionGenerator
    h = hashlib.sha256()
    for dist in ("gaussian", "rademacher"):
        g = DirectionGenerator(2024, dist)
        for idx, n in enumerate((1, 3, 131_073, 1_000_003)):
            h.update(g.direction(torch.empty(n), 7, 2, 3, idx).numpy().tobytes())
        h.update(g.direction(torch.empty(4097, dtype=torch.float64), 7, 2, 3, 9).numpy().tobytes())
    print(h.hexdigest())
    """
)


def test_bitwise_identical_across_processes_and_thread_counts() -> None:
    digests = {
        subprocess.run(
            [sys.executable, "-c", GEN_SCRIPT, str(threads)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for threads in (1, 2)
    }
    h = hashlib.sha256()
    for dist in ("gaussian", "rademacher"):
        g = DirectionGenerator(2024, dist)  # type: ignore[arg-type]
        for idx, n in enumerate((1, 3, 131_073, 1_000_003)):
            h.update(g.direction(torch.empty(n), 7, 2, 3, idx).numpy().tobytes())
        h.update(g.direction(torch.empty(4097, dtype=torch.float64), 7, 2, 3, 9).numpy().tobytes())
    digests.add(h.hexdigest())
    assert len(digests) == 1


def test_repeated_calls_and_slices_agree() -> None:
    g = DirectionGenerator(11)
    a = g.direction(torch.empty(200_000), 0, 0, 0, 0)
    b = g.direction(torch.empty(200_000), 0, 0, 0, 0)
    assert torch.equal(a, b)
    # A non-float32 target gets the float32 values cast.
    c = g.direction(torch.empty(200_000, dtype=torch.float64), 0, 0, 0, 0)
    assert torch.equal(c, a.double())
    assert not torch.equal(a, g.direction(torch.empty(200_000), 0, 0, 1, 0))


def test_gaussian_statistics() -> None:
    """Mean ≈ 0 and covariance ≈ I over N = 8192 directions in d = 32.

    Each covariance entry has standard error ≈ 1/sqrt(N) = 0.011 (√2/√N on the diagonal), so
    a 0.06 bound is over 4 standard errors; the mean's bound 0.05 is 4.5 standard errors."""
    g = DirectionGenerator(3)
    z = g.matrix([32], 0, 0, 8192).double()
    assert z.mean(0).abs().max() < 0.05
    cov = z.T @ z / z.shape[0]
    assert (cov - torch.eye(32, dtype=torch.float64)).abs().max() < 0.06
    big = g.direction(torch.empty(1_000_000), 1, 0, 0, 0).double()
    assert abs(float(big.mean())) < 0.005 and abs(float(big.var()) - 1.0) < 0.005
    assert abs(float((big**4).mean()) - 3.0) < 0.05  # Gaussian kurtosis


def test_rademacher_statistics() -> None:
    z = DirectionGenerator(3, "rademacher").matrix([32], 0, 0, 8192).double()
    assert z.mean(0).abs().max() < 0.05
    cov = z.T @ z / z.shape[0]
    assert torch.equal(torch.diagonal(cov), torch.ones(32, dtype=torch.float64))
    assert (cov - torch.eye(32, dtype=torch.float64)).abs().max() < 0.06


def test_matrix_rows_equal_per_tensor_directions() -> None:
    g = DirectionGenerator(5)
    numels = [7, 70_000, 1]
    m = g.matrix(numels, 4, 1, 3)
    for j in range(3):
        parts = [g.direction(torch.empty(n), 4, 1, j, i) for i, n in enumerate(numels)]
        assert torch.equal(m[j], torch.cat(parts))


class AB(nn.Module):
    def __init__(self, reverse: bool) -> None:
        super().__init__()
        names = ["b", "a"] if reverse else ["a", "b"]
        for name in names:
            self.add_module(name, nn.Linear(3, 3))


def test_canonical_order_ignores_registration_order() -> None:
    m1, m2 = AB(False), AB(True)
    m2.load_state_dict(m1.state_dict())
    n1 = [name for name, _ in canonical_parameters(m1)]
    n2 = [name for name, _ in canonical_parameters(m2)]
    assert n1 == n2 == ["a.bias", "a.weight", "b.bias", "b.weight"]
    assert next(name for name, _ in m2.named_parameters()) == "b.weight"


def test_perturbed_forward_sees_shifted_weights_and_restores_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = {k: id(p) for k, p in model.named_parameters()}
    x = torch.randn(6, 5)
    g, mu = DirectionGenerator(8), 0.25
    shifted = {
        name: p.detach() + g.direction(p, 2, 0, 1, i).mul_(mu)
        for i, (name, p) in enumerate(canonical_parameters(model))
    }
    expected = torch.func.functional_call(model, shifted, (x,))
    for scale in (mu, -mu):
        with perturbed(model, g, 2, 0, 1, scale), torch.inference_mode():
            out = model(x)
        if scale > 0:
            assert torch.equal(out, expected)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # bitwise: the stored weights were never modified
    assert {k: id(p) for k, p in model.named_parameters()} == ids
    assert not model._forward_hooks and not model[0]._forward_pre_hooks


def test_perturbed_restores_after_an_exception() -> None:
    model = nn.Linear(3, 1)
    weight = model.weight
    with pytest.raises(RuntimeError), perturbed(model, DirectionGenerator(1), 0, 0, 0, 1.0):
        model(torch.randn(2, 4))  # wrong shape: fails inside the forward
    assert model.weight is weight and not model._forward_pre_hooks


def test_apply_directions_is_a_pure_function_of_the_terms() -> None:
    g = DirectionGenerator(21)
    a = [torch.zeros(10), torch.ones(3, 3)]
    b = [t.clone() for t in a]
    terms = [(0, 0, 0.5), (0, 1, -1.25), (1, 0, 3.0)]
    apply_directions_(a, g, 4, terms)
    apply_directions_(b, g, 4, terms)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    expected = torch.zeros(10)
    for step, j, c in terms:
        expected -= g.direction(expected, 4, step, j, 0) * c
    assert torch.equal(a[0], expected)


def test_batched_and_per_term_updates_are_bitwise_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    import cyber0.common.perturbation as perturbation

    g = DirectionGenerator(5)
    terms = [(k, j, 0.1 * (k + 1) - 0.03 * j) for k in range(2) for j in range(5)]
    a = [torch.linspace(-1, 1, 1001), torch.ones(4, 5)]
    b = [t.clone() for t in a]
    apply_directions_(a, g, 9, terms)
    monkeypatch.setattr(perturbation, "BATCH_UPDATE_ELEMENTS", 0)
    apply_directions_(b, g, 9, terms)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
