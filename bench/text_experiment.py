"""Issue 7's experiment: CYBER-0 fine-tuning MiniLM on Rotten Tomatoes sentences, n=8, f=2.

In-process simulation with the engine's parts (direction generator, vectorised two-point
estimates, robust rules, attacks, aggregate update), next to robust first-order FedSGD.

**What is trained.** ``minilm?head=mean``: MiniLM's 6 layers, masked mean pooling, a linear
head. The trainable subset is the last transformer layer's output LayerNorm (γ, β: 768) and the
head (770): d = 1,538 of 22.7M; everything else is frozen. Because mean pooling is linear and
LayerNorm's normalisation has no parameters, the model's logits are exactly::

    logits = W (γ ⊙ x̄ + β) + b,   x̄ = Σ_t m_t · norm(s_t) / Σ_t m_t

with s_t the last layer's pre-LayerNorm state of token t and ``norm(s) = (s − mean s) /
sqrt(var s + ε)``. x̄ does not depend on any trainable weight, so it is computed once per
sentence by a real MiniLM forward (a forward hook on that LayerNorm) and cached; the script
checks the reduced model against the full model's logits before any training
(``meta.json: reduction_max_abs_diff``). Every ZO evaluation is then a few hundred flops.

**Data.** The fixed split of :mod:`cyber0.common.text` at ``max_length`` 64 tokens: 1,000
validation sentences are held out of the balanced 8,736-sentence training pool (seeded; used only
by ``--sweep``), the other 7,736 are split over the 8 clients by Dirichlet(α=1) label skew
(:func:`~cyber0.common.data.dirichlet_partition`); clients 0 and 1 are Byzantine. Tests run on
the 2,000 balanced test sentences.

**Start.** A closed-form ridge linear probe of the head on the model's pooled sentence vectors
``p = γ ⊙ x̄ + β`` (pretrained γ, β) of the 32 public sentences (16 per class):
``[W b]ᵀ = (AᵀA + λI)⁻¹ Aᵀ T``, ``A = [p 1]``, T one-hot, λ = :data:`PROBE_RIDGE`; float64,
deterministic. Beside it, a reference that is not a federated run: the same closed-form head
fitted centrally on all the clients' training sentences, λ chosen on the validation sentences
(``meta.json: reference``): what the data allows the head alone, without federation or attack.

**Settings.** Batch 128 sentences per client per round, ν=4 for 10,000 rounds and ν=1 for
20,000; η per ν and the first-order lr are chosen by ``--sweep`` on the validation sentences,
never on the test set: every candidate step runs under each rule and each attack of the grid,
and a method takes the step whose worst validation score over those eight runs is highest (one
step for all of a method's cells, attacked or not).

**Objective.** Each client minimises the class-balanced cross-entropy of its batch (the plan's
``loss: balanced_cross_entropy``: the mean over the batch's classes of each class's mean loss),
so neither its label skew nor a label-flipping attacker's flip sets the objective's class prior.
``--loss cross_entropy`` runs the plain mean instead (sweep, grid and few-shot grid) into
``OUT/cross-entropy/``, with its own steps (:data:`ZO_LR`, :data:`FO_LR`).

**Few-shot.** ``--shots 16`` runs the same grid on the few-shot setting of
:mod:`cyber0.common.text` (``rotten_tomatoes?shots=16``: 16·n sentences per class drawn from the
training pool, then split by the same Dirichlet skew; the shards a client daemon gets for that
dataset) into ``OUT/fewshot-16/``, with the full setting's steps (not tuned again).

    python bench/text_experiment.py --sweep              # η, batch, first-order lr (validation)
    python bench/text_experiment.py --budget-minutes 60  # the grid, by priority
    python bench/text_experiment.py --shots 16           # the grid, few-shot
    python bench/text_experiment.py --loss cross_entropy # the same with the plain mean loss
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyber0.common import text
from cyber0.common.aggregators import AggregationError, get_aggregator
from cyber0.common.allocator import keep_freed_memory
from cyber0.common.attacks import Attack, get_attack
from cyber0.common.baseline import apply_update_, flat_gradient
from cyber0.common.data import MIN_SIZE, batch_indices, dirichlet_partition
from cyber0.common.estimator import (
    apply_aggregate_,
    central_differences,
    flat_parameters,
    perturbed_losses,
)
from cyber0.common.hf import TextClassifier, build_text_classifier, tokenizer_folder
from cyber0.common.models import class_balanced_weights, loss_function, model_digest
from cyber0.common.perturbation import DirectionGenerator, canonical_parameters
from cyber0.common.plan import LOSSES, ZOSettings

OUT = Path(__file__).resolve().parent / "results" / "text"
CACHE = Path.home() / ".cache" / "cyber0" / "text"
MODEL = "minilm?head=mean"
MAX_LENGTH = 64
N_CLIENTS, F_BYZ = 8, 2
ALPHA = 1.0
SEED = 0
VALIDATION = 1000
VALIDATION_SEED = 7
#: Sentences per client per round, chosen by ``--sweep`` (128 against 32).
BATCH = 128
PROBE_RIDGE = 10.0
#: The ridges the reference head tries (:func:`reference_probe`), chosen on validation.
REFERENCE_RIDGES = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
#: ZO rounds per ν: ν=1 gets twice the rounds of ν=4 (half its scalars in all).
ZO_ROUNDS = {1: 20000, 4: 10000}
FO_ROUNDS = 500
EVAL_EVERY = 250
MU = 1e-3
NUS = (1, 4)
#: The settings ``--sweep`` tries, each under every rule and attack: ZO (ν, step, batch),
#: first-order step (batch :data:`BATCH`).
ZO_SETTINGS = (
    *((nu, lr, BATCH) for nu in NUS for lr in (0.001, 0.002, 0.005)),
    (1, 0.01, BATCH),
    (4, 0.002, 32),
    (4, 0.005, 32),
)
FO_STEPS = (0.1, 0.3, 1.0)
#: Chosen by ``--sweep`` on the validation sentences, per objective: per method, the step with
#: the highest worst-case score over the rules and attacks; see docs/results-text.md.
ZO_LR = {
    "balanced_cross_entropy": {1: 0.005, 4: 0.002},
    "cross_entropy": {1: 0.002, 4: 0.002},
}
FO_LR = {"balanced_cross_entropy": 0.1, "cross_entropy": 0.1}
AGGREGATORS = ("cwtm", "nnm+cwtm")
#: The clients' objective (the plan's ``loss``): class-balanced cross-entropy, so a client's
#: label skew (and a label-flipping attacker's flip) does not set the objective's class prior.
#: ``--loss cross_entropy`` runs the plain mean into ``OUT/cross-entropy/``.
LOSS = "balanced_cross_entropy"
#: Priority order: no attack and ALIE first, then SF and LF.
ATTACKS = ("none", "alie", "sf", "lf")

log = logging.getLogger("text_experiment")


# ------------------------------------------------------------------------------------------
# The reduced model and its features


class TopHead(nn.Module):
    """``logits = head(γ ⊙ x̄ + β)``: MiniLM's output from the cached pooled normalised states.

    Holds copies of the model's last output LayerNorm (``ln``) and head (``head``), so its
    parameters are the trainable subset, named ``head.*`` and ``ln.*``."""

    def __init__(self, ln: nn.LayerNorm, head: nn.Linear) -> None:
        super().__init__()
        self.ln = copy.deepcopy(ln)
        self.head = copy.deepcopy(head)

    def forward(self, xbar: Tensor) -> Tensor:
        return self.head(xbar * self.ln.weight + self.ln.bias)


def last_layernorm(model: TextClassifier) -> nn.LayerNorm:
    """The output LayerNorm of MiniLM's last transformer layer."""
    layers = model.get_submodule("hf.encoder.layer")
    assert isinstance(layers, nn.ModuleList)
    ln = layers[-1].get_submodule("output.LayerNorm")
    assert isinstance(ln, nn.LayerNorm)
    return ln


@torch.inference_mode()
def pooled_states(model: TextClassifier, x: Tensor, batch: int = 64) -> Tensor:
    """x̄ (N, hidden) for packed inputs x (N, 2, L): the masked mean over tokens of the
    parameter-free normalisation of the last LayerNorm's input. Sentences are processed in
    length order (less padding); the result is returned in input order."""
    ln = last_layernorm(model)
    captured: list[Tensor] = []
    current_mask: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        s = args[0].float()
        normed = F.layer_norm(s, s.shape[-1:], None, None, ln.eps)
        m = current_mask[0][:, : s.shape[1]].unsqueeze(-1).to(normed.dtype)
        captured.append((normed * m).sum(1) / m.sum(1).clamp_min(1.0))

    order = torch.argsort(x[:, 1].sum(1), stable=True)
    handle = ln.register_forward_pre_hook(hook)
    try:
        for start in range(0, x.shape[0], batch):
            chunk = x[order[start : start + batch]]
            current_mask[:] = [chunk[:, 1]]
            model(chunk)
    finally:
        handle.remove()
    out = torch.empty(x.shape[0], captured[0].shape[1])
    out[order] = torch.cat(captured)
    return out


def feature_cache(model: TextClassifier, max_length: int, cache_dir: Path) -> dict[str, Any]:
    """x̄ for every corpus sentence, cached on disk under the model's digest."""
    digest = model_digest(model)[:16]
    path = cache_dir / f"xbar-{digest}-L{max_length}.pt"
    if path.exists():
        data: dict[str, Any] = torch.load(path)
        return data
    corpus = text.load_corpus()
    x = text.tokenize(corpus.texts, tokenizer_folder(MODEL), max_length)
    start = time.perf_counter()
    xbar = pooled_states(model, x)
    data = {
        "xbar": xbar,
        "seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def check_reduction(model: TextClassifier, top: TopHead, x: Tensor, xbar: Tensor) -> float:
    """max |full-model logits − reduced-model logits| on the given sentences."""
    with torch.inference_mode():
        return float((model(x) - top(xbar)).abs().max())


def ridge_probe(xbar: Tensor, y: Tensor, ridge: float, num_classes: int = 2) -> Tensor:
    """``(AᵀA + λI)⁻¹ AᵀT`` in float64 with ``A = [x̄ 1]``, T one-hot: (hidden + 1, C)."""
    a = torch.cat([xbar, torch.ones(len(xbar), 1)], 1).double()
    t = F.one_hot(y, num_classes).double()
    eye = torch.eye(a.shape[1], dtype=torch.float64)
    return torch.linalg.solve(a.T @ a + ridge * eye, a.T @ t).float()


def probe_accuracy(w: Tensor, pooled: Tensor, y: Tensor) -> float:
    """Accuracy of the probe ``w`` (hidden + 1, C) from :func:`ridge_probe` (ties: lowest class)."""
    logits = pooled @ w[:-1] + w[-1]
    return float((logits.argmax(1) == y).double().mean())


def reference_probe(
    pooled: Tensor, labels: Tensor, train: Tensor, validation: Tensor, test: Tensor
) -> dict[str, Any]:
    """What the data allows the head alone, with no federation and no attack: the closed-form
    ridge head fitted centrally on all the clients' sentences ``train``, its λ the one of
    :data:`REFERENCE_RIDGES` with the best ``validation`` accuracy (the smallest on a tie)."""
    fits = [ridge_probe(pooled[train], labels[train], ridge) for ridge in REFERENCE_RIDGES]
    scores = [probe_accuracy(w, pooled[validation], labels[validation]) for w in fits]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    w = fits[best]
    return {
        "ridges": list(REFERENCE_RIDGES),
        "validation_accuracy": scores,
        "ridge": REFERENCE_RIDGES[best],
        "train_sentences": int(train.numel()),
        "test_accuracy": probe_accuracy(w, pooled[test], labels[test]),
    }


# ------------------------------------------------------------------------------------------
# The simulation


@dataclass(frozen=True)
class Cell:
    """One run: a method, ν (ZO only), a robust rule, an attack, its step size, rounds and
    per-client batch."""

    method: str  # "zo" or "first_order"
    aggregator: str
    attack: str
    nu: int = 1
    lr: float = 0.01
    rounds: int = FO_ROUNDS
    split: str = "test"  # or "validation" (the sweep)
    batch: int = BATCH

    @property
    def id(self) -> str:
        head = f"zo-nu{self.nu}" if self.method == "zo" else "fo"
        tail = f"-lr{self.lr:g}-b{self.batch}-{self.split}" if self.split != "test" else ""
        return f"{head}-{self.aggregator}-{self.attack}{tail}"


@dataclass
class Setup:
    """Everything the cells share: features, shards, the initial reduced model."""

    xbar: Tensor
    labels: Tensor
    shards: list[Tensor]
    test: Tensor
    validation: Tensor
    initial: TopHead
    meta: dict[str, Any]
    loss: str = LOSS


def build_setup(cache_dir: Path, max_length: int, shots: int = 0, loss: str = LOSS) -> Setup:
    """Load MiniLM, compute or load the features, split the data, fit the probe; ``shots``
    > 0: the clients hold the few-shot shards instead; ``loss``: the clients' objective."""
    model = build_text_classifier(MODEL + "&train=all")
    features = feature_cache(model, max_length, cache_dir)
    xbar: Tensor = features["xbar"]
    corpus, split = text.load_corpus(), text.corpus_split()
    labels = corpus.labels
    gen = torch.Generator().manual_seed(VALIDATION_SEED)
    pool = split.train[torch.randperm(split.train.numel(), generator=gen)]
    validation, train = pool[:VALIDATION].sort().values, pool[VALIDATION:].sort().values
    if shots:
        shards = [
            text.text_shard_indices(
                text.TextShardSpec(
                    n_clients=N_CLIENTS,
                    client_index=k,
                    seed=SEED,
                    partition="dirichlet",
                    alpha=ALPHA,
                    shots=shots,
                    min_size=min(MIN_SIZE, shots),
                )
            )
            for k in range(N_CLIENTS)
        ]
    else:
        shards = [train[p] for p in dirichlet_partition(labels[train], N_CLIENTS, ALPHA, SEED)]
    probe = split.probe
    ln = last_layernorm(model)
    with torch.no_grad():
        pooled = xbar * ln.weight + ln.bias  # the model's own pooled sentence vectors
    w = ridge_probe(pooled[probe], labels[probe], PROBE_RIDGE)
    reference = reference_probe(pooled, labels, torch.cat(shards), validation, split.test)
    head = model.head
    assert head is not None
    with torch.no_grad():
        head.weight.copy_(w[:-1].T)
        head.bias.copy_(w[-1])
    top = TopHead(ln, head)
    check = split.test[:32]
    x = text.tokenize(
        [corpus.texts[i] for i in check.tolist()], tokenizer_folder(MODEL), max_length
    )
    diff = check_reduction(model, top, x, xbar[check])
    closed = check_closed_form(top, xbar[check], labels[check])
    if diff > 1e-3 or closed > 1e-4:
        raise RuntimeError(f"reduced model differs from the full one by {diff}, {closed}")
    meta = {
        "model": MODEL,
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "trainable": [n for n, _ in canonical_parameters(top)],
        "d": sum(p.numel() for _, p in canonical_parameters(top)),
        "max_length": max_length,
        "feature_seconds": features["seconds"],
        "feature_threads": features["threads"],
        "reduction_max_abs_diff": diff,
        "closed_form_max_abs_diff": closed,
        "n_clients": N_CLIENTS,
        "f": F_BYZ,
        "alpha": ALPHA,
        "shots": shots,
        "train_sentences": sum(int(s.numel()) for s in shards),
        "validation_sentences": int(validation.numel()),
        "test_sentences": int(split.test.numel()),
        "shard_sizes": [int(s.numel()) for s in shards],
        "shard_fresh": [int(labels[s].sum()) for s in shards],
        "probe_sentences": int(probe.numel()),
        "probe_ridge": PROBE_RIDGE,
        "reference": reference,
        "batch": BATCH,
        "zo_rounds": {str(nu): r for nu, r in ZO_ROUNDS.items()},
        "fo_rounds": FO_ROUNDS,
        "mu": MU,
        "seed": SEED,
        "loss": loss,
    }
    return Setup(xbar, labels, shards, split.test, validation, top, meta, loss)


def accuracy(model: nn.Module, xbar: Tensor, y: Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy)."""
    with torch.inference_mode():
        logits = model(xbar)
        return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


def reduced_losses(weights: Tensor, xbar: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy ``(P, B)`` of :class:`TopHead` at each row of ``weights``
    ``(P, d)`` (canonical order: head.bias, head.weight, ln.bias, ln.weight), in closed form:
    ``logits_p = (x̄ ⊙ γ_p + β_p) W_pᵀ + b_p = x̄ (W_p ⊙ γ_p)ᵀ + (W_p β_p + b_p)``, which never
    materialises the ``(P, B, hidden)`` pooled vectors. Equals :func:`perturbed_losses` on the
    module (checked in :func:`build_setup`) at a fraction of its cost."""
    hidden = xbar.shape[1]
    classes = (weights.shape[1] - 2 * hidden) // (hidden + 1)
    b = weights[:, :classes]
    w = weights[:, classes : classes + classes * hidden].reshape(-1, classes, hidden)
    beta = weights[:, classes * (hidden + 1) : classes * (hidden + 1) + hidden]
    gamma = weights[:, classes * (hidden + 1) + hidden :]
    bias = torch.baddbmm(b.unsqueeze(2), w, beta.unsqueeze(2)).transpose(1, 2)  # (P, 1, C)
    scaled = w * gamma.unsqueeze(1)  # (P, C, hidden)
    logits = torch.matmul(xbar, scaled.transpose(1, 2)) + bias  # (P, B, C)
    return F.cross_entropy(logits.transpose(1, 2), y.expand(len(weights), -1), reduction="none")


def per_example_ce(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Unreduced cross-entropy: the loss closure of the engine's vectorised estimate."""
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def client_batches(
    setup: Setup, attack: Attack | None, round: int, batch: int
) -> list[tuple[Tensor, Tensor]]:
    """Every client's minibatch of ``batch`` sentences in the round (labels flipped for
    label-flipping attackers)."""
    out = []
    for i, shard in enumerate(setup.shards):
        idx = shard[batch_indices(shard.numel(), batch, SEED, i, round, 0)]
        y = setup.labels[idx]
        if i < F_BYZ and attack is not None and attack.kind == "data":
            y = 1 - y
        out.append((setup.xbar[idx], y))
    return out


def zo_vectors(
    model: nn.Module,
    generator: DirectionGenerator,
    zo: ZOSettings,
    round: int,
    batches: list[tuple[Tensor, Tensor]],
    loss: str = LOSS,
) -> Tensor:
    """All clients' g (n, ν) from one vectorised call: every client uses the round's same
    directions, so the 2ν perturbed models are evaluated once on the union of the batches.
    Each client's loss is its batch's mean (``cross_entropy``) or class-balanced mean
    (``balanced_cross_entropy``: :func:`~cyber0.common.models.class_balanced_weights`)."""
    flat = flat_parameters(model)
    sizes = [p.numel() for _, p in canonical_parameters(model)]
    z = generator.matrix(sizes, round, 0, zo.nu).mul_(zo.mu)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.inference_mode():
        losses = reduced_losses(torch.cat([flat + z, flat - z]), x, y)
    bounds = np.cumsum([0] + [len(b[1]) for b in batches])
    means = torch.stack(
        [
            losses[:, lo:hi].double().mean(1)
            if loss == "cross_entropy"
            else losses[:, lo:hi].double() @ class_balanced_weights(y[lo:hi])
            for lo, hi in itertools.pairwise(bounds)
        ]
    )  # (n, 2ν)
    return central_differences(means, zo.mu).float()


def check_closed_form(top: TopHead, xbar: Tensor, y: Tensor) -> float:
    """max |closed-form losses − the engine's perturbed_losses| at 3 random weight rows."""
    flat = flat_parameters(top)
    gen = torch.Generator().manual_seed(0)
    rows = flat + 0.01 * torch.randn(3, flat.numel(), generator=gen)
    with torch.inference_mode():
        engine = perturbed_losses(top, per_example_ce, rows, (xbar, y))
        return float((engine - reduced_losses(rows, xbar, y)).abs().max())


def run_cell(setup: Setup, cell: Cell) -> dict[str, Any]:
    """One cell; Byzantine clients are 0 and 1 (omniscient for SF and ALIE). Records the
    accuracy curve, the final model's share of "fresh" predictions on the evaluation sentences
    (the class prior it drifted to), payload bytes and the final digest."""
    aggregator = get_aggregator(cell.aggregator, f=F_BYZ)
    attack = None if cell.attack == "none" else get_attack(cell.attack)
    model = copy.deepcopy(setup.initial)
    evaluate_on = setup.test if cell.split == "test" else setup.validation
    ex, ey = setup.xbar[evaluate_on], setup.labels[evaluate_on]
    d = sum(p.numel() for _, p in canonical_parameters(model))
    zo = ZOSettings(nu=cell.nu, mu=MU, lr=cell.lr, batch_size=cell.batch)
    generator = DirectionGenerator(SEED)
    loss_fn = loss_function(setup.loss)
    m = zo.scalars_per_round if cell.method == "zo" else d

    def step(t: int) -> None:
        batches = client_batches(setup, attack, t, cell.batch)
        if cell.method == "zo":
            rows = zo_vectors(model, generator, zo, t, batches, setup.loss)
        else:
            rows = torch.stack([flat_gradient(model, x, y, loss_fn) for x, y in batches])
        if not torch.isfinite(rows).all():  # the step diverged before any rule could act
            raise AggregationError("non-finite client vectors")
        honest = rows[F_BYZ:]
        byz = rows[:F_BYZ]
        if attack is not None and attack.kind != "data":
            byz = attack(honest, N_CLIENTS, F_BYZ)
        aggregate = aggregator(torch.cat([byz, honest]))
        if cell.method == "zo":
            apply_aggregate_(model, generator, zo, t, aggregate)
        else:
            apply_update_(model, aggregate, cell.lr)

    start_acc, start_loss = accuracy(model, ex, ey)
    history = [{"round": 0, "accuracy": start_acc, "loss": start_loss}]
    start = time.perf_counter()
    diverged = False
    for t in range(cell.rounds):
        try:
            step(t)
        except AggregationError:  # non-finite vectors: the step size diverged
            diverged = True
            history.append({"round": t + 1, "accuracy": float("nan"), "loss": float("nan")})
            break
        if (t + 1) % EVAL_EVERY == 0 or t + 1 == cell.rounds:
            acc, loss = accuracy(model, ex, ey)
            history.append({"round": t + 1, "accuracy": acc, "loss": loss})
    per_round = 4 * m
    with torch.inference_mode():
        predicted_positive = float((model(ex).argmax(1) == 1).float().mean())
    return {
        "cell": asdict(cell),
        "id": cell.id,
        "history": history,
        "initial_accuracy": start_acc,
        "final_accuracy": history[-1]["accuracy"],
        "final_loss": history[-1]["loss"],
        "final_predicted_positive": predicted_positive,
        "diverged": diverged,
        "scalars_per_client_round": m,
        "uplink_bytes_per_client": per_round * cell.rounds,
        "downlink_bytes_per_client": per_round * cell.rounds,
        "total_bytes_per_client": 2 * per_round * cell.rounds,
        "digest": model_digest(model),
        "wall_seconds": time.perf_counter() - start,
    }


def grid(loss: str = LOSS) -> list[Cell]:
    """The cells in priority order: attacks outermost (none, ALIE, SF, LF), at the steps the
    sweep chose for ``loss``."""
    zo_lr, fo_lr = ZO_LR[loss], FO_LR[loss]
    cells = []
    for attack in ATTACKS:
        for aggregator in AGGREGATORS:
            for nu in NUS:
                cells.append(
                    Cell("zo", aggregator, attack, nu=nu, lr=zo_lr[nu], rounds=ZO_ROUNDS[nu])
                )
            cells.append(Cell("first_order", aggregator, attack, lr=fo_lr, rounds=FO_ROUNDS))
    return cells


def sweep() -> list[Cell]:
    """Step sizes (and, for ν=4, the batch) on the validation sentences at the grid's round
    counts: every candidate setting under each rule and attack of the grid, no attack first."""
    cells = []
    for attack, aggregator in itertools.product(ATTACKS, AGGREGATORS):
        cells += [
            Cell("first_order", aggregator, attack, lr=lr, split="validation") for lr in FO_STEPS
        ]
        cells += [
            Cell("zo", aggregator, attack, nu, lr, ZO_ROUNDS[nu], "validation", batch)
            for nu, lr, batch in ZO_SETTINGS
        ]
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache", type=Path, default=CACHE, help="feature cache folder")
    parser.add_argument("--sweep", action="store_true", help="step sizes on validation")
    parser.add_argument("--budget-minutes", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="cell ids to run")
    parser.add_argument(
        "--shots", type=int, default=0, help="few-shot: sentences per class per client"
    )
    parser.add_argument(
        "--loss",
        choices=LOSSES,
        default=LOSS,
        help=f"the clients' objective ({LOSS}); cross_entropy: into OUT/cross-entropy/",
    )
    args = parser.parse_args(argv)
    if args.shots < 0:
        parser.error(f"--shots must be >= 0; got {args.shots}")
    if args.shots and args.sweep:
        parser.error("--sweep tunes the full setting; --shots runs the grid with its steps")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # its feature pass is MiniLM forwards, as in cyber0-client
    began = time.perf_counter()
    setup = build_setup(args.cache, MAX_LENGTH, args.shots, args.loss)
    base = args.out if args.loss == LOSS else args.out / args.loss.replace("_", "-")
    home = base / f"fewshot-{args.shots}" if args.shots else base
    out = home / ("sweep" if args.sweep else "")
    out.mkdir(parents=True, exist_ok=True)
    meta = {**setup.meta, "python": platform.python_version(), "torch": torch.__version__}
    meta["setup_seconds"] = time.perf_counter() - began
    (home / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    log.info("setup done in %.0f s: %s", meta["setup_seconds"], meta["shard_sizes"])
    cells = sweep() if args.sweep else grid(args.loss)
    if args.only:
        cells = [c for c in cells if c.id in args.only]
    skipped = []
    for cell in cells:
        path = out / f"{cell.id}.json"
        if path.exists():
            continue
        if time.perf_counter() - began > 60 * args.budget_minutes:
            skipped.append(cell.id)
            continue
        result = run_cell(setup, cell)
        path.write_text(json.dumps(result, indent=1) + "\n")
        log.info(
            "%s: %.4f → %.4f in %.1f s",
            cell.id,
            result["initial_accuracy"],
            result["final_accuracy"],
            result["wall_seconds"],
        )
    if skipped:
        log.warning("budget spent; not run: %s", ", ".join(skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
