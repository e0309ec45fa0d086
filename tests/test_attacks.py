"""Attacks against their formulas on small explicit inputs, Min-Max / Min-Sum constraints and
maximality, the adaptive search, label flipping, registry errors, shapes and dtypes."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cyber0.common.aggregators import get_aggregator
from cyber0.common.attacks import (
    ATTACK_NAMES,
    Adaptive,
    AttackConfigError,
    LabelFlip,
    alie_z,
    get_attack,
)
from cyber0.common.perturbation import GAMMA, mix64

NDArray = np.ndarray[Any, np.dtype[np.float64]]

# Three honest rows; the columns cover every case of the trimmed-mean attack:
# mean > 0 with min > 0, min = 0, min < 0; mean < 0 with max > 0, max < 0.
H = np.array(
    [
        [1.0, 2.0, -3.0, -1.0, -1.0],
        [3.0, 0.0, -1.0, -2.0, -2.0],
        [2.0, 7.0, 5.0, 0.5, -4.0],
    ]
)
MU = np.array([2.0, 3.0, 1.0 / 3.0, -2.5 / 3.0, -7.0 / 3.0])
SIGMA = np.array(  # ddof = 1, by hand
    [1.0, math.sqrt(13.0), math.sqrt(52.0 / 3.0), math.sqrt(19.0 / 12.0), math.sqrt(7.0 / 3.0)]
)


def attack(name: str, honest: NDArray, n: int, f: int, **params: Any) -> NDArray:
    out = get_attack(name, **params)(torch.from_numpy(honest), n, f)
    assert out.dtype == torch.float64 and out.shape == (f, honest.shape[1])
    return out.numpy()


def phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_statistics_of_the_explicit_input() -> None:
    np.testing.assert_allclose(H.mean(axis=0), MU, rtol=1e-15)
    np.testing.assert_allclose(H.std(axis=0, ddof=1), SIGMA, rtol=1e-15)


# --------------------------------------------------------------------------------------------
# Formulas


def test_sign_flip_and_ipm() -> None:
    np.testing.assert_allclose(attack("sf", H, 7, 2), np.tile(-MU, (2, 1)), rtol=1e-15)
    np.testing.assert_allclose(attack("ipm", H, 7, 3), np.tile(-2.0 * MU, (3, 1)), rtol=1e-15)
    np.testing.assert_allclose(attack("foe", H, 7, 1, tau=0.5), [-0.5 * MU], rtol=1e-15)
    assert get_attack("foe").name == "foe" and get_attack("ipm").name == "ipm"


def test_alie_z_closed_form() -> None:
    # n = 20, f = 5: s = 10 + 1 − 5 = 6, z = Φ⁻¹(14/20)
    z = alie_z(20, 5)
    assert z == pytest.approx(0.524400512708041, abs=1e-12)
    assert phi(z) == pytest.approx(0.7, abs=1e-13)
    # n = 8, f = 2: s = 3, z = Φ⁻¹(5/8)
    assert phi(alie_z(8, 2)) == pytest.approx(5.0 / 8.0, abs=1e-13)
    with pytest.raises(AttackConfigError, match=re.escape("needs 1 <= f <= floor(n/2); got n=9")):
        alie_z(9, 5)


def test_alie() -> None:
    expected = MU + alie_z(8, 2) * SIGMA
    np.testing.assert_allclose(attack("alie", H, 8, 2), np.tile(expected, (2, 1)), rtol=1e-14)
    np.testing.assert_allclose(attack("alie", H, 8, 2, tau=1.5), [MU + 1.5 * SIGMA] * 2)
    # a single row has σ = 0: ALIE sends that row
    np.testing.assert_array_equal(attack("alie", H[:1], 8, 2), H[[0, 0]])


def test_gaussian_is_keyed_by_seed_and_call() -> None:
    def reference(seed: int, call: int, f: int, m: int) -> NDArray:
        key = mix64(mix64(seed + GAMMA * 2) + GAMMA * (call + 1))  # stream 1, then the call
        gen = torch.Generator().manual_seed(key)
        return torch.randn((f, m), generator=gen, dtype=torch.float64).numpy()

    a = get_attack("gaussian", sigma=3.0, seed=7)
    first, second = (a(torch.from_numpy(H), 9, 4).numpy() for _ in range(2))
    np.testing.assert_allclose(first, MU + 3.0 * reference(7, 0, 4, 5), rtol=1e-14)
    np.testing.assert_allclose(second, MU + 3.0 * reference(7, 1, 4, 5), rtol=1e-14)
    # a fresh instance replays the sequence; another seed does not
    np.testing.assert_array_equal(attack("gaussian", H, 9, 4, sigma=3.0, seed=7), first)
    assert not np.allclose(attack("gaussian", H, 9, 4, sigma=3.0, seed=8), first)
    np.testing.assert_array_equal(attack("gaussian", H, 9, 2, sigma=0.0), [MU, MU])


def test_mimic() -> None:
    np.testing.assert_array_equal(attack("mimic", H, 7, 3, target=1), H[[1, 1, 1]])
    np.testing.assert_array_equal(attack("mimic", H, 7, 1), H[[0]])
    with pytest.raises(AttackConfigError, match="target=3 but only h=3 honest rows"):
        attack("mimic", H, 7, 1, target=3)


def test_tma_boundary_and_uniform() -> None:
    # mean > 0 -> below the minimum; mean <= 0 -> above the maximum; factor b = 2
    far = np.array([1.0 / 2.0, 0.0, -3.0 * 2.0, 0.5 * 2.0, -1.0 / 2.0])
    near = np.array([1.0, 0.0, -3.0, 0.5, -1.0])
    np.testing.assert_array_equal(attack("tma", H, 8, 2, mode="boundary"), [far, far])
    np.testing.assert_array_equal(
        attack("tma", H, 8, 1, mode="boundary", b=4.0), [[0.25, 0.0, -12.0, 2.0, -0.25]]
    )
    rows = attack("tma", H, 20, 6, seed=3)
    lo, hi = np.minimum(far, near), np.maximum(far, near)
    assert np.all(rows >= lo) and np.all(rows <= hi)
    assert len({tuple(r) for r in rows}) == 6  # sampled per row
    np.testing.assert_array_equal(attack("tma", H, 20, 6, seed=3), rows)
    assert not np.array_equal(attack("tma", H, 20, 6, seed=4), rows)
    # every Byzantine value is beyond the honest extreme opposite to the honest direction
    assert np.all(np.where(MU > 0, rows <= H.min(axis=0), rows >= H.max(axis=0)))


# --------------------------------------------------------------------------------------------
# Min-Max / Min-Sum


def direction(honest: NDArray, kind: str) -> NDArray:
    mu = honest.mean(axis=0)
    if kind == "std":
        return np.asarray(-honest.std(axis=0, ddof=1))
    if kind == "sign":
        return np.asarray(-np.sign(mu))
    return np.asarray(-mu / np.linalg.norm(mu))


def minmax_ok(honest: NDArray, b: NDArray) -> bool:
    diameter = max(np.linalg.norm(x - y) for x in honest for y in honest)
    return bool(max(np.linalg.norm(b - x) for x in honest) <= diameter * (1 + 1e-12))


def minsum_ok(honest: NDArray, b: NDArray) -> bool:
    bound = max(sum(np.sum((x - y) ** 2) for y in honest) for x in honest)
    return bool(sum(np.sum((b - x) ** 2) for x in honest) <= bound * (1 + 1e-12))


def bisection(honest: NDArray, p: NDArray, ok: Any) -> float:
    """Shejwalkar and Houmansadr's search: grow γ until infeasible, then bisect."""
    mu = honest.mean(axis=0)
    lo, hi = 0.0, 1.0
    while ok(honest, mu + hi * p):
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(honest, mu + mid * p) else (lo, mid)
    return lo


@pytest.mark.parametrize("kind", ["std", "sign", "unit"])
@pytest.mark.parametrize(("name", "ok"), [("minmax", minmax_ok), ("minsum", minsum_ok)])
def test_min_attacks_are_feasible_and_maximal(name: str, ok: Any, kind: str) -> None:
    honest = np.random.default_rng(5).standard_exponential((6, 4)) + np.array([1.0, -2.0, 0, 3])
    rows = attack(name, honest, 10, 3, direction=kind)
    b = rows[0]
    np.testing.assert_array_equal(rows, [b, b, b])
    p = direction(honest, kind)
    gamma = float(np.dot(b - honest.mean(axis=0), p) / np.dot(p, p))
    np.testing.assert_allclose(b, honest.mean(axis=0) + gamma * p, rtol=1e-12, atol=1e-12)
    assert gamma > 0.1
    assert ok(honest, b)
    assert not ok(honest, honest.mean(axis=0) + gamma * (1 + 1e-6) * p)
    assert gamma == pytest.approx(bisection(honest, p, ok), rel=1e-9)


def test_min_attacks_with_degenerate_input_send_the_mean() -> None:
    np.testing.assert_array_equal(attack("minmax", H[:1], 5, 2), H[[0, 0]])
    same = np.tile(H[:1], (4, 1))
    np.testing.assert_allclose(attack("minsum", same, 9, 1, direction="sign"), H[:1])


@settings(max_examples=30, deadline=None)
@given(
    st.integers(2, 7).flatmap(
        lambda h: st.lists(
            st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=3, max_size=3),
            min_size=h,
            max_size=h,
        )
    ),
    st.sampled_from(["std", "sign", "unit"]),
)
def test_min_attacks_respect_their_constraint(values: list[list[float]], kind: str) -> None:
    honest = np.array(values)
    if kind == "unit" and not np.any(honest.mean(axis=0)):
        kind = "std"
    diam = max(np.linalg.norm(x - y) for x in honest for y in honest)
    b = attack("minmax", honest, 10, 1, direction=kind)[0]
    assert max(np.linalg.norm(b - x) for x in honest) <= diam * (1 + 1e-9) + 1e-9
    b = attack("minsum", honest, 10, 1, direction=kind)[0]
    bound = max(sum(np.sum((x - y) ** 2) for y in honest) for x in honest)
    assert sum(np.sum((b - x) ** 2) for x in honest) <= bound * (1 + 1e-9) + 1e-9


# --------------------------------------------------------------------------------------------
# Adaptive


def damage(rows: NDArray, honest: NDArray, rule: Any) -> float:
    agg = rule(torch.from_numpy(np.vstack([rows, honest]))).numpy()
    return float(np.linalg.norm(agg - honest.mean(axis=0)))


@pytest.mark.parametrize(("base", "default"), [("alie", "alie"), ("ipm", "ipm")])
def test_adaptive_is_at_least_as_damaging_as_its_base(base: str, default: str) -> None:
    n, f = 20, 5
    rng = np.random.default_rng(9)
    honest = rng.normal(size=(n - f, 8)) + rng.normal(size=8)
    rule = get_aggregator("cwtm", f=f, n=n)  # n fixed: the search must pass exactly n rows
    adaptive = get_attack("adaptive", base=base, aggregator=rule)
    assert isinstance(adaptive, Adaptive)
    tau, rows_t = adaptive.search(torch.from_numpy(honest), n, f)
    rows = attack("adaptive", honest, n, f, base=base, aggregator=rule)
    np.testing.assert_array_equal(rows, rows_t.numpy())
    assert 0.0 <= tau <= 20.0
    mu, sigma = honest.mean(axis=0), honest.std(axis=0, ddof=1)
    np.testing.assert_allclose(rows[0], mu + tau * sigma if base == "alie" else -tau * mu)
    base_damage = damage(attack(default, honest, n, f), honest, rule)
    assert damage(rows, honest, rule) >= base_damage
    if base == "alie":  # Baruch's z is far from optimal against cwtm
        assert damage(rows, honest, rule) > 1.5 * base_damage


def test_adaptive_colluding_cycles_its_own_rows() -> None:
    rule = get_aggregator("krum", f=3, n=11)
    own = np.random.default_rng(1).normal(size=(3, 4))
    rows = attack("adaptive", own, 11, 3, aggregator=rule, evaluations=8, refine=4)
    assert rows.shape == (3, 4) and np.isfinite(rows).all()


# --------------------------------------------------------------------------------------------
# Label flipping


def test_label_flip() -> None:
    lf = get_attack("lf")
    assert isinstance(lf, LabelFlip) and lf.kind == "data" and lf.name == "lf"
    y = torch.tensor([0, 1, 9, 3, 3])
    assert lf.flip_labels(y).tolist() == [9, 8, 0, 6, 6]
    assert lf.flip_labels(y, num_classes=12).tolist() == [11, 10, 2, 8, 8]
    with pytest.raises(TypeError, match="lf is a data attack: it acts on labels"):
        lf(torch.zeros(3, 2), 5, 1)
    with pytest.raises(TypeError, match="integer tensor"):
        lf.flip_labels(torch.zeros(3))
    with pytest.raises(
        ValueError, match=re.escape("labels must lie in [0, 10); got min=0, max=10")
    ):
        lf.flip_labels(torch.tensor([0, 10]))


# --------------------------------------------------------------------------------------------
# Registry, shapes, dtypes


def model_attacks() -> list[str]:
    return [name for name in ATTACK_NAMES if name != "lf"]


def build(name: str) -> Any:
    if name == "adaptive":
        return get_attack(name, aggregator=get_aggregator("cwtm", f=2), evaluations=4, refine=2)
    return get_attack(name)


@pytest.mark.parametrize("name", model_attacks())
def test_shapes_dtypes_and_f_zero(name: str) -> None:
    a = build(name)
    assert a.kind == "model" and a.name == name
    for dtype in (torch.float32, torch.float64):
        honest = torch.from_numpy(H).to(dtype)
        out = a(honest, 7, 2)
        assert out.shape == (2, 5) and out.dtype == dtype and torch.isfinite(out).all()
        empty = a(honest, 7, 0)
        assert empty.shape == (0, 5) and empty.dtype == dtype


def test_registry_and_parameter_errors() -> None:
    with pytest.raises(AttackConfigError, match="unknown attack 'bitflip'; known: adaptive, alie"):
        get_attack("bitflip")
    with pytest.raises(AttackConfigError, match="ipm: unknown parameter 'z'; accepted: tau"):
        get_attack("ipm", z=1.0)
    with pytest.raises(AttackConfigError, match="lf: unknown parameter 'p'; accepted: none"):
        get_attack("lf", p=0.5)
    with pytest.raises(
        AttackConfigError, match="adaptive: missing required parameter 'aggregator'"
    ):
        get_attack("adaptive")
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("ipm", {"tau": math.nan}, "tau must be finite; got tau=nan"),
        ("tma", {"b": 0.5}, "b must be finite and >= 1.0; got b=0.5"),
        ("tma", {"mode": "edge"}, "mode must be one of ['uniform', 'boundary']"),
        ("minmax", {"direction": "up"}, "direction must be one of ['std', 'sign', 'unit']"),
        ("gaussian", {"sigma": -1.0}, "sigma must be finite and >= 0.0; got sigma=-1.0"),
        ("gaussian", {"seed": 1.5}, "seed must be an integer; got seed=1.5"),
        ("mimic", {"target": -1}, "target must be >= 0; got target=-1"),
        ("adaptive", {"aggregator": 3}, "aggregator must be callable"),
        ("adaptive", {"aggregator": get_aggregator("mean"), "base": "sf"}, "base must be one of"),
    ]
    for name, params, message in bad:
        with pytest.raises(AttackConfigError, match=re.escape(message)):
            get_attack(name, **params)


def test_call_errors() -> None:
    honest = torch.from_numpy(H)
    with pytest.raises(AttackConfigError, match="sf needs n > f; got n=3, f=3"):
        get_attack("sf")(honest, 3, 3)
    with pytest.raises(AttackConfigError, match="f must be >= 0; got f=-1"):
        get_attack("sf")(honest, 3, -1)
    with pytest.raises(AttackConfigError, match=re.escape("f <= floor(n/2); got n=7, f=4")):
        get_attack("alie")(honest, 7, 4)
    with pytest.raises(ValueError, match="must be finite"):
        get_attack("sf")(torch.tensor([[1.0, math.nan]]), 3, 1)
    with pytest.raises(ValueError, match="at least one honest row"):
        get_attack("sf")(torch.zeros(0, 2), 3, 1)
    with pytest.raises(ValueError, match=r"expects an \(h, m\) floating tensor"):
        get_attack("sf")(torch.zeros(3), 3, 1)
