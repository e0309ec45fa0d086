"""The direction generator: reference derivation, determinism, statistics, canonical order."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cyber0.common import native
from cyber0.common.perturbation import (
    BLOCK,
    GAMMA,
    SMALL_TENSOR,
    DirectionCache,
    DirectionGenerator,
    apply_directions_,
    canonical_parameters,
    eager,
    mix64,
    perturbed,
    shift,
    stream_key,
    sub_scaled_,
    whole_direction_bytes,
)
from cyber0.common.plan import Distribution


def protocol_constants() -> dict[str, list[float]]:
    """docs/protocol.md's table of the Gaussian derivation's constants, read from the document
    (so that the transcription below checks the document itself)."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
    names = ("P0 … P8", "LN2_LO, LN2_HI", "S0, S1, S2", "C0, C1, C2")
    table: dict[str, list[float]] = {}
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] in names:
            table[cells[0]] = [float(v) for v in cells[1].replace("−", "-").split(",")]
    assert len(table) == len(names), f"constants table not found in {doc}"
    return table


def reference_gaussian(seed: int, coords: tuple[int, int, int, int], n: int) -> list[float]:
    """docs/protocol.md's Gaussian derivation transcribed literally, with its constants: Python
    integers, and numpy float32 scalars for every float operation (each IEEE-rounded on its
    own)."""
    f32 = np.float32
    table = {name: [f32(v) for v in values] for name, values in protocol_constants().items()}
    p, (lo, hi) = table["P0 … P8"], table["LN2_LO, LN2_HI"]
    sp, cp = table["S0, S1, S2"], table["C0, C1, C2"]
    half_pi = f32(math.pi / 2)
    key = stream_key(seed, *coords)
    out: list[float] = []
    for c in range((n + 1) // 2):
        x = mix64(key + GAMMA * (c + 1))
        h, low = (x >> 40) & 0xFFFFFF, (x >> 8) & 0xFFFFFF
        v = f32(2**24 - h) * f32(2.0**-24)
        b = int(np.array(v).view(np.int32))
        e = (b - 0x3F3504F3) >> 23
        f = np.array(b - e * 2**23, dtype=np.int32).view(np.float32)[()] - f32(1)
        q = f * f
        y = f * p[0]
        for coefficient in p[1:]:
            y = (y + coefficient) * f
        y = y * q
        y = y + f32(e) * lo
        y = y - q * f32(0.5)
        ln = (f + y) + f32(e) * hi
        r = f32(math.sqrt(float(ln * f32(-2))))  # float64's root, rounded: the float32 one
        k = (low + 2**21) >> 22
        t = (f32(low - k * 2**22) * f32(2.0**-22)) * half_pi
        s2 = t * t
        sn = ((((s2 * sp[0] + sp[1]) * s2 + sp[2]) * s2) * t) + t
        cs = (((((s2 * cp[0] + cp[1]) * s2 + cp[2]) * s2) * s2) - s2 * f32(0.5)) + f32(1)
        cos, sin = [(cs, sn), (-sn, cs), (-cs, -sn), (sn, -cs)][k % 4]
        out += [float(r * cos), float(r * sin)]
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
    ref = torch.tensor(reference_gaussian(1234, (3, 1, 5, 2), n), dtype=torch.float32)
    assert torch.equal(z, ref)


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
    from cyber0.common.perturbation import DirectionGenerator, apply_directions_
    h = hashlib.sha256()
    for dist in ("gaussian", "rademacher"):
        g = DirectionGenerator(2024, dist)
        for idx, n in enumerate((1, 3, 131_073, 1_000_003)):
            h.update(g.direction(torch.empty(n), 7, 2, 3, idx).numpy().tobytes())
        h.update(g.direction(torch.empty(4097, dtype=torch.float64), 7, 2, 3, 9).numpy().tobytes())
        weights = [g.direction(torch.empty(n), 0, 0, 0, 20) for n in (1_000_003, 9_000)]
        apply_directions_(weights, g, 7, [(0, 0, 0.25), (0, 1, -1e-3), (1, 0, 3.0)])
        for w in weights:
            h.update(w.numpy().tobytes())
    print(h.hexdigest())
    """
)
#: GEN_SCRIPT's digest, computed once (2026-12-07, an AVX-512 Xeon; the same under every setting
#: of the test below) and the same on every machine: the directions are a function of the seed
#: and the counters alone, and an update of its terms.
GEN_DIGEST = "593ef4e543c3b64147314d18ab1bf6e815fbaba51b808cd64c84834d8ca81c72"


@pytest.mark.parametrize(
    "threads, env",
    [
        (1, {}),
        (2, {}),
        # torch's scalar kernels, and MKL held to its oldest code path: other CPUs' arithmetic.
        (2, {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}),
        (1, {"ATEN_CPU_CAPABILITY": "default", "CYBER0_NATIVE_GENERATOR": "0"}),
        (2, {"ATEN_CPU_CAPABILITY": "avx2", "CYBER0_NATIVE_GENERATOR": "0"}),
        (2, {"CYBER0_NATIVE_GENERATOR": "0", "MKL_CBWR": "AVX2"}),
    ],
)
def test_directions_are_the_same_bits_on_every_cpu_path(threads: int, env: dict[str, str]) -> None:
    """A fresh process gives the reference digest of directions and of updates applied with
    them (``apply_directions_``, three terms) whatever its thread count, torch's CPU kernel set,
    MKL's code path, and whether the native kernel or the eager ops ran."""
    out = subprocess.run(
        [sys.executable, "-c", GEN_SCRIPT, str(threads)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert out.stdout.strip() == GEN_DIGEST


def test_gaussian_transform_is_accurate_on_every_input() -> None:
    """All 2^24 values of each 24-bit half of a hash, against float64: the radius within one
    float32 ulp, cosine and sine within 1.2e-7 (their float32 polynomials' error plus the
    rounding of the reduced angle)."""
    import cyber0.common.perturbation as perturbation

    h = torch.arange(1 << 24, dtype=torch.int32)
    radius = perturbation._radius(h).double()
    exact = torch.log((2**24 - h.double()) * 2.0**-24).mul_(-2.0).sqrt_()
    ulp = torch.from_numpy(np.spacing(exact.float().numpy())).double()
    assert bool(((radius - exact).abs() <= ulp).all())
    cos, sin = perturbation._turn(h)
    theta = h.double() * (2.0 * math.pi * 2.0**-24)
    assert float((cos.double() - torch.cos(theta)).abs().max()) < 1.2e-7
    assert float((sin.double() - torch.sin(theta)).abs().max()) < 1.2e-7


def test_repeated_calls_and_slices_agree() -> None:
    g = DirectionGenerator(11)
    a = g.direction(torch.empty(200_000), 0, 0, 0, 0)
    b = g.direction(torch.empty(200_000), 0, 0, 0, 0)
    assert torch.equal(a, b)
    # A non-float32 target gets the float32 values cast.
    c = g.direction(torch.empty(200_000, dtype=torch.float64), 0, 0, 0, 0)
    assert torch.equal(c, a.double())
    assert not torch.equal(a, g.direction(torch.empty(200_000), 0, 0, 1, 0))


def test_generation_inside_and_outside_inference_mode_share_the_scratch() -> None:
    """The kept scratch (:func:`_scratch`) serves calls in and out of inference mode, in either
    order, with the same values."""
    import cyber0.common.perturbation as perturbation

    perturbation._HELD.__dict__.clear()  # this thread's scratch is made below, in inference mode
    g = DirectionGenerator(12)
    with torch.inference_mode():
        inside = g.direction(torch.empty(3 * BLOCK + 1), 0, 0, 0, 0)
    outside = g.direction(torch.empty(3 * BLOCK + 1), 0, 0, 0, 0)
    with torch.inference_mode():
        again = g.direction(torch.empty(3 * BLOCK + 1), 0, 0, 0, 0)
    assert torch.equal(inside, outside) and torch.equal(outside, again)


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


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.parametrize("nu", [1, 3])
def test_matrix_rows_equal_per_tensor_directions(nu: int, distribution: Distribution) -> None:
    """One row (hashed as one sequence) and several (tensor by tensor): the same bits as the
    in-place path's per-tensor directions, odd sizes included."""
    g = DirectionGenerator(5, distribution)
    numels = [7, 70_000, 1, 10, 7_840]
    m = g.matrix(numels, 4, 1, nu)
    assert m.shape == (nu, sum(numels))
    for j in range(nu):
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


@pytest.mark.parametrize("together", [True, False])
def test_perturbed_forward_sees_shifted_weights_and_restores_exactly(
    monkeypatch: pytest.MonkeyPatch, together: bool
) -> None:
    import cyber0.common.perturbation as perturbation

    if not together:  # every tensor generated alone, in its module's pre-hook
        monkeypatch.setattr(perturbation, "SMALL_TENSOR", 0)
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


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_every_update_path_gives_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, distribution: str
) -> None:
    """Small tensors together, a large one with its terms generated in the native pass, or
    with the torch ops all at once, or term by term and block by block: the bits of w − Σ c·z
    (by hand, tensor by tensor) every time."""
    import cyber0.common.perturbation as perturbation

    g = DirectionGenerator(5, distribution)  # type: ignore[arg-type]
    terms = [(k, j, 0.1 * (k + 1) - 0.03 * j) for k in range(2) for j in range(2)]
    start = [torch.linspace(-1, 1, 1001), torch.ones(4, 5), torch.linspace(0, 1, 2 * BLOCK + 7)]
    expected = [w.clone() for w in start]
    for i, w in enumerate(expected):
        for step, j, c in terms:
            w -= g.direction(w, 9, step, j, i) * c
    settings = [{}, {"SMALL_TENSOR": 0}, {"SMALL_TENSOR": 0, "BATCH_UPDATE_ELEMENTS": 0}]
    settings.append({"BATCH_UPDATE_ELEMENTS": 0})  # small tensors one term at a time
    for setting, fast in itertools.product(settings, (True, False)):
        for name, value in setting.items():
            monkeypatch.setattr(perturbation, name, value)
        params = [w.clone() for w in start]
        with contextlib.nullcontext() if fast else eager():
            apply_directions_(params, g, 9, terms)
        assert all(torch.equal(p, e) for p, e in zip(params, expected, strict=True)), setting
        monkeypatch.undo()


class Tower(nn.Module):
    """Two tensors above SMALL_TENSOR elements, small ones, and a lookup table."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 128)
        self.wide = nn.Linear(128, 96)  # 12,288 weights
        self.norm = nn.LayerNorm(96)
        self.out = nn.Linear(96, 100)  # 9,600 weights

    def forward(self, ids: Tensor) -> Tensor:
        return self.out(self.norm(torch.tanh(self.wide(self.embed(ids))))).square().mean()


def _round_with_cache(
    model: Tower, g: DirectionGenerator, cache: DirectionCache | None, t: int, x: Tensor
) -> list[Tensor]:
    """ν = 2 directions, losses at w ± μz, then the update with the losses as coefficients."""
    params = [p for _, p in canonical_parameters(model)]
    losses = []
    for j in range(2):
        for scale in (1e-2, -1e-2):
            with perturbed(model, g, t, 0, j, scale, cache), torch.inference_mode():
                losses.append(model(x))
    apply_directions_(params, g, t, [(0, j, 0.1 * float(losses[2 * j])) for j in range(2)], cache)
    return losses


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_direction_cache_changes_no_bit_and_spares_the_regenerations(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    """At budgets 0, one tensor, one direction (:func:`whole_direction_bytes`: the two Linear
    weights, not the lookup table nor the small tensors) and both directions: the same losses
    and weights, bit for bit, as without a cache, never more bytes held than the budget; a kept
    direction is generated once per round instead of three times (two forwards, the update)."""
    generated: list[int] = []
    fill_rows = DirectionGenerator.fill_rows_

    def spy(self: DirectionGenerator, out: Tensor, coords: object) -> Tensor:
        generated.append(out.numel())
        return fill_rows(self, out, coords)  # type: ignore[arg-type]

    monkeypatch.setattr(DirectionGenerator, "fill_rows_", spy)
    kernel = native.kernel()
    if kernel is not None:  # the update's directions generated in the same pass count too
        sub_generated = kernel.sub_generated_

        def spy_update(w: Tensor, keys: list[int], coefficients: list[float], gauss: bool) -> None:
            generated.append(w.numel() * len(keys))
            sub_generated(w, keys, coefficients, gauss)

        monkeypatch.setattr(kernel, "sub_generated_", spy_update)
    x = torch.randint(0, 40, (8, 5))
    g = DirectionGenerator(17)
    large = sum(p.numel() for _, p in canonical_parameters(Tower()) if p.numel() > SMALL_TENSOR)
    size = torch.empty(0, dtype=dtype).element_size()
    everything = whole_direction_bytes(Tower().to(dtype))
    assert everything == (12_288 + 9_600) * size
    runs = {}
    for budget in (None, 0, 12_288 * size, everything, 2 * everything):
        torch.manual_seed(0)
        model = Tower().to(dtype)
        cache = None if budget is None else DirectionCache(budget)
        generated.clear()
        losses = [loss for t in range(2) for loss in _round_with_cache(model, g, cache, t, x)]
        if cache is not None:
            assert cache.used <= cache.budget
        runs[budget] = (losses, [p.detach().clone() for p in model.parameters()], sum(generated))
    reference = runs[None]
    for budget, (losses, weights, _) in runs.items():
        assert all(torch.equal(a, b) for a, b in zip(losses, reference[0], strict=True)), budget
        assert all(torch.equal(a, b) for a, b in zip(weights, reference[1], strict=True)), budget
    # Two rounds of two directions: 3 generations of the large tensors each, or 1.
    # Two rounds of ν = 2 directions: each kept (direction, tensor) spares two generations.
    assert runs[0][2] - runs[2 * everything][2] == 2 * 2 * 2 * large
    assert runs[0][2] - runs[everything][2] == 2 * 1 * 2 * large
    assert runs[0][2] > runs[12_288 * size][2] > runs[everything][2]


def test_a_direction_cache_keeps_one_round_and_refuses_a_negative_budget() -> None:
    g = DirectionGenerator(3)
    w = torch.zeros(SMALL_TENSOR + 1)
    cache = DirectionCache(1 << 20)
    first = cache.shifted(g, w, 1.0, (0, 0, 0, 4))
    assert torch.equal(first, g.direction(w, 0, 0, 0, 4))
    assert cache.get((0, 0, 0, 4)) is not None and cache.used == w.numel() * 4
    cache.shifted(g, w, 1.0, (1, 0, 0, 4))
    assert cache.get((0, 0, 0, 4)) is None and cache.used == w.numel() * 4
    with pytest.raises(ValueError, match="budget must be >= 0"):
        DirectionCache(-1)


def test_a_direction_cache_keeps_the_batched_matrix_within_its_budget() -> None:
    """Row j of a kept (ν, d) matrix, cut at the parameters' sizes, is direction j of each
    parameter; a matrix over the budget is not kept, and a new round drops the kept one."""
    g = DirectionGenerator(5)
    shapes = [(3, 4), (7,), (), (2, 2, 2)]
    matrix = g.matrix([12, 7, 1, 8], 2, 1, 3)
    size = matrix.numel() * 4
    refused = DirectionCache(size - 1)
    assert not refused.keep_matrix(2, 1, matrix, shapes)
    assert refused.used == 0 and refused.get((2, 1, 0, 0)) is None
    cache = DirectionCache(size)
    assert cache.keep_matrix(2, 1, matrix, shapes) and cache.used == size
    for j in range(3):
        for index, shape in enumerate(shapes):
            kept = cache.get((2, 1, j, index))
            assert kept is not None
            assert kept.shape == shape
            assert torch.equal(kept, g.direction(torch.empty(shape), 2, 1, j, index))
    assert cache.get((2, 1, 3, 0)) is None and cache.get((2, 1, 0, 4)) is None
    assert cache.get((2, 0, 0, 0)) is None
    assert not cache.keep_matrix(2, 0, matrix, shapes)  # the budget is spent for round 2
    assert cache.keep_matrix(3, 0, matrix, shapes) and cache.get((2, 1, 0, 0)) is None
    with pytest.raises(ValueError, match="contiguous"):
        DirectionCache(size).keep_matrix(3, 0, matrix.t().contiguous().t(), shapes)
    with pytest.raises(ValueError, match="do not cut rows of 28 elements"):
        DirectionCache(size).keep_matrix(3, 0, matrix, shapes[1:])


def test_fill_many_equals_fill_per_tensor() -> None:
    for distribution in ("gaussian", "rademacher"):
        g = DirectionGenerator(5, distribution)  # type: ignore[arg-type]
        sizes = [1, 3, 0, 384, 7, 2 * BLOCK + 3, 5, BLOCK - 1, 1536, 1]
        dtypes = [
            torch.float64 if n == 384 else torch.bfloat16 if n == 7 else torch.float32
            for n in sizes
        ]
        outs = [torch.empty(n, dtype=d) for n, d in zip(sizes, dtypes, strict=True)]
        coords = [(3, 1, j % 3, j) for j in range(len(sizes))]
        g.fill_many_(outs, coords)
        for out, c in zip(outs, coords, strict=True):
            assert torch.equal(out, g.direction(out, *c))
    with pytest.raises(ValueError, match="2 tensors but 1 coordinates"):
        g.fill_many_([torch.empty(1), torch.empty(2)], [(0, 0, 0, 0)])


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.parametrize("width", [1, 7, 32, 385])
def test_fill_ranges_equals_slices_of_fill(distribution: str, width: int) -> None:
    g = DirectionGenerator(13, distribution)  # type: ignore[arg-type]
    n = 3 * (1 << 18) + 5  # the ranges below cross generator blocks
    full = g.fill_(torch.empty(n), 6, 2, 1, 4)
    gen = torch.Generator().manual_seed(width)
    starts = torch.randint(0, n - width + 1, (40,), generator=gen).tolist()
    starts += [0, 1, 2, 3, n - width, (1 << 18) - 1]  # even and odd offsets, both ends
    expected = torch.stack([full[s : s + width] for s in starts])
    out = g.fill_ranges_(torch.empty(len(starts), width), starts, 6, 2, 1, 4)
    assert torch.equal(out, expected)
    even = [s - s % 2 for s in starts]  # the aligned (one pair per two elements) case
    out = g.fill_ranges_(torch.empty(len(even), width), torch.tensor(even), 6, 2, 1, 4)
    assert torch.equal(out, torch.stack([full[s : s + width] for s in even]))
    wide = g.fill_ranges_(torch.empty(len(starts), width, dtype=torch.float64), starts, 6, 2, 1, 4)
    assert torch.equal(wide, expected.double())
    assert not torch.equal(out, g.fill_ranges_(torch.empty_like(out), even, 6, 2, 2, 4))


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_fill_ranges_wider_than_a_block_and_bad_arguments(distribution: str) -> None:
    g = DirectionGenerator(2, distribution)  # type: ignore[arg-type]
    width, starts = 2 * BLOCK + 3, [0, 5, 2 * BLOCK - 1]  # split into column blocks
    full = g.fill_(torch.empty(4 * BLOCK + 3), 0, 0, 0, 0)
    out = g.fill_ranges_(torch.empty(3, width), starts, 0, 0, 0, 0)
    assert torch.equal(out, torch.stack([full[s : s + width] for s in starts]))
    even = g.fill_ranges_(torch.empty(1, width), [2 * BLOCK], 0, 0, 0, 0)
    assert torch.equal(even[0], full[2 * BLOCK : 2 * BLOCK + width])
    with pytest.raises(ValueError, match="2 rows but 1 starts"):
        g.fill_ranges_(torch.empty(2, 3), [0], 0, 0, 0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        g.fill_ranges_(torch.empty(1, 3), [-1], 0, 0, 0, 0)


class Lookup(nn.Module):
    """Embedding (called with a keyword), a second lookup table, a head tied to the first
    (untied under ``max_norm``)."""

    def __init__(self, vocab: int, width: int, max_norm: float | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width, padding_idx=0, max_norm=max_norm)
        self.position = nn.Embedding(16, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        if max_norm is None:  # max_norm renormalises the shared table before the head reads it
            self.head.weight = self.embed.weight

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(input=ids) + self.position(torch.arange(ids.shape[1]))
        return self.head(torch.tanh(self.mix(x))).mean(dim=1)


def _explicit(model: nn.Module, g: DirectionGenerator, scale: float, x: Tensor) -> Tensor:
    """The model at W + scale·Z, every tensor materialised (the reference of the in-place path)."""
    shifted = {
        name: g.direction(p, 1, 0, 2, i).mul_(scale).add_(p.detach())
        for i, (name, p) in enumerate(canonical_parameters(model))
    }
    return torch.func.functional_call(model, shifted, (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [6, 5])
def test_lookup_tables_perturb_only_the_rows_read_and_match_the_full_table(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, width: int
) -> None:
    import cyber0.common.perturbation as perturbation

    torch.manual_seed(0)
    model = Lookup(50, width).to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 50, (4, 9))
    x[0, :3] = 7  # repeated ids
    g = DirectionGenerator(3)
    ranges: list[int] = []
    fill_ranges = DirectionGenerator.fill_ranges_

    def spy(self: DirectionGenerator, out: Tensor, *args: object) -> Tensor:
        ranges.append(out.shape[0])
        return fill_ranges(self, out, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(DirectionGenerator, "fill_ranges_", spy)
    rows = {}
    for scale in (0.5, -0.5):
        ranges.clear()
        with perturbed(model, g, 1, 0, 2, scale) as touched, torch.inference_mode():
            rows[scale] = model(x)
        assert touched == set(range(len(canonical_parameters(model))))
        assert sorted(ranges) == sorted([len(x.unique()), x.shape[1]])  # distinct rows only
        assert torch.equal(rows[scale], _explicit(model, g, scale, x))
    monkeypatch.setattr(perturbation, "_lookup_table", lambda mod: False)  # whole tables
    for scale in (0.5, -0.5):
        with perturbed(model, g, 1, 0, 2, scale), torch.inference_mode():
            assert torch.equal(model(x), rows[scale])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_lookup_tables_with_max_norm_perturb_the_whole_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(1)
    model = Lookup(40, 4, max_norm=1.0)
    x = torch.randint(0, 40, (3, 5))
    before = model.embed.weight.detach().clone()
    g = DirectionGenerator(4)
    calls: list[int] = []
    fill_ranges = DirectionGenerator.fill_ranges_

    def spy(self: DirectionGenerator, out: Tensor, *args: object) -> Tensor:
        calls.append(out.shape[0])
        return fill_ranges(self, out, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(DirectionGenerator, "fill_ranges_", spy)
    with perturbed(model, g, 1, 0, 2, 2.0), torch.inference_mode():
        out = model(x)
    assert calls == [x.shape[1]]  # only the plain position table went row by row
    assert torch.equal(out, _explicit(model, g, 2.0, x))
    # max_norm renormalises the table it is given in place: the copy, never the stored one.
    assert torch.equal(model.embed.weight, before)


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.usefixtures("native_kernel")
def test_native_kernel_gives_the_eager_generators_bits(distribution: Distribution) -> None:
    """Every access path on CPU float32 (one tensor, strided rows, ranges at odd starts, many
    small tensors, the batched matrix) gives bitwise what the eager ops give, at sizes with
    and without a ragged end and across the kernel's 16K-element pieces."""
    gen = DirectionGenerator(77, distribution)

    def both(make: Callable[[], Tensor]) -> None:
        fast = make()
        with eager():
            slow = make()
        assert torch.equal(fast, slow)

    # 2^25 + 1 elements: 2^24 pairs, about 63% of each 24-bit half's values.
    for n in (1, 3, 7850, (1 << 14) + 1, 1_000_003, (1 << 25) + 1):
        both(lambda n=n: gen.direction(torch.empty(n), 2, 1, 0, 5))
    wide = torch.empty(3, 40_001)
    both(lambda: gen.fill_rows_(wide.clone()[:, :30_001], [(0, 0, j, 1) for j in range(3)]))
    both(lambda: gen.fill_ranges_(torch.empty(4, 999), [0, 1, 5001, 77_777], 3, 0, 2, 0))
    both(lambda: gen.matrix([10, 7840], 4, 0, 1))
    both(lambda: gen.matrix([10, 7840, 3], 4, 1, 5))
    outs = [torch.empty(s) for s in (10, 7840, 1, 0, 40_001, 33)]
    coords = [(1, 0, 0, i) for i in range(len(outs))]

    def many() -> Tensor:
        parts = [o.clone() for o in outs]
        gen.fill_many_(parts, coords)
        return torch.cat(parts)

    both(many)


@pytest.mark.usefixtures("native_kernel")
def test_native_elementwise_passes_give_the_torch_ops_bits() -> None:
    """``shift`` and ``sub_scaled_`` (one native pass each) against ``torch.mul`` then
    ``add_``/``sub_``, bit for bit: odd scales, subnormals, signed zeros, infinities, sizes across
    the kernel's parallel pieces, ``out`` aliasing z, five terms in one pass; and through the
    eager ops."""
    gen = torch.Generator().manual_seed(3)
    for n in (1, 7850, 1_000_003):
        z = torch.randn(n, generator=gen)
        w = torch.randn(n, generator=gen).mul_(100.0)
        if n > 1:
            z[::97], w[::89], w[::83] = 1e-40, -0.0, float("inf")
            w[1::79] = -z[1::79] * 1e-3  # sums that cancel to zero
        for scale in (1e-3, -1e-3, 0.1234567891234, -7.77e5):
            expected_shift = torch.mul(z, scale).add_(w)
            expected_update = w.clone().sub_(torch.mul(z, scale))
            for fast in (True, False):
                with contextlib.nullcontext() if fast else eager():
                    got = shift(z, scale, w)
                    aliased = z.clone()
                    shift(aliased, scale, w, out=aliased)
                    updated = w.clone()
                    version = updated._version
                    sub_scaled_(updated, [z], [scale])
                    assert updated._version > version
                for a, b in ((got, expected_shift), (aliased, expected_shift)):
                    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
                assert torch.equal(updated.view(torch.int32), expected_update.view(torch.int32))
        # Many terms in one pass: each element takes them in order, as term after term does.
        zs = [torch.randn(n, generator=gen) for _ in range(5)]
        coefficients = [1e-3, -0.5, 7.77e5, -1e-30, 0.1234567891234]
        expected = w.clone()
        for z_j, c in zip(zs, coefficients, strict=True):
            expected.sub_(torch.mul(z_j, c))
        for fast in (True, False):
            with contextlib.nullcontext() if fast else eager():
                updated = w.clone()
                sub_scaled_(updated, zs, coefficients)
            assert torch.equal(updated.view(torch.int32), expected.view(torch.int32))


@pytest.mark.usefixtures("native_kernel")
def test_a_compiler_without_openmp_gets_a_one_thread_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the OpenMP build fails (a flag no compiler knows stands in for the OpenMP that
    Apple's clang lacks), the install step builds the kernel for one thread, for real, and the
    generator uses it: the eager ops' bits."""
    monkeypatch.setenv("CYBER0_NATIVE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "OPENMP", ["-fno-such-openmp-flag"])
    flags = list(native.FLAGS)
    native.forget()
    try:
        native.build()
        # torch's load() appends to the flag lists it is given: the names must not move.
        assert native.OPENMP == ["-fno-such-openmp-flag"]
        assert flags == native.FLAGS
        assert native.library() == native.directory(False) / f"{native.name(False)}.so"
        assert native.kernel() is not None
        got = DirectionGenerator(5).direction(torch.empty(100_001), 0, 1, 2, 3)
    finally:
        native.forget()
    with eager():
        expected = DirectionGenerator(5).direction(torch.empty(100_001), 0, 1, 2, 3)
    assert torch.equal(got, expected)


def test_without_a_built_kernel_the_eager_ops_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not built (an empty build folder) or switched off: no kernel, and the generator gives the
    same values through the eager ops."""
    expected = DirectionGenerator(5).direction(torch.empty(1001), 0, 1, 2, 3)
    for env, value in (("CYBER0_NATIVE_DIR", str(tmp_path)), ("CYBER0_NATIVE_GENERATOR", "0")):
        with monkeypatch.context() as patch:
            patch.setenv(env, value)
            native.forget()
            try:
                assert native.kernel() is None
                got = DirectionGenerator(5).direction(torch.empty(1001), 0, 1, 2, 3)
            finally:
                native.forget()
        assert torch.equal(got, expected)
