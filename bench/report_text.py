"""Builds ``docs/results-text.md`` and ``docs/figures/text-*.png`` from ``bench/results/text``.

    python bench/report_text.py

Every figure in the document comes from the JSON files the experiment wrote (``meta.json``, one
file per cell, ``sweep/*.json``, and ``gpu_text.json`` when a GPU run was recorded).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import ROOT, pyplot

RESULTS = ROOT / "bench" / "results" / "text"
DOC = ROOT / "docs" / "results-text.md"
FIGURES = ROOT / "docs" / "figures"
ATTACKS = ("none", "alie", "sf", "lf")
AGGREGATORS = ("cwtm", "nnm+cwtm")
METHODS = (("zo", 1), ("zo", 4), ("first_order", 1))
#: Targets of issue 7.
TARGET_ACCURACY = 0.75
TARGET_GAP = 0.03
#: The margin above the starting point this document commits to.
TARGET_MARGIN = 0.05
#: A sweep cell's score: the mean validation accuracy of its last evaluations (the last 1,250
#: rounds of a ZO run), less noisy than the single final evaluation.
SCORE_LAST = 5
#: The previous grid on the same pool (batch 32, 2,000 ZO rounds), kept for comparison.
PREVIOUS = "batch32-2000"
#: The grid run with the steps chosen without attack (CWTM only), kept for comparison.
NO_ATTACK_STEPS = "no-attack-steps"
#: Sentences per class per client of the few-shot grid (``text_experiment.py --shots``).
FEWSHOT = 16
#: The grid (with its sweep and few-shot grid) run with the plain mean cross-entropy objective
#: (``text_experiment.py --loss cross_entropy``), kept beside the class-balanced one.
PLAIN = "cross-entropy"


USAGE = [
    "## Running text plans through the service",
    "",
    "A plan names a model id, never a path, so it stays portable: `model: minilm` or",
    "`model: hf:<id>`, with options after `?` (`head=auto|mean|cls|prompt`,",
    "`dtype=float32|bfloat16|float16`, `train=all|head|top<N>`, `digest=<hex prefix>`), and",
    "`dataset: rotten_tomatoes` (options `shots=S`, `max_length=L`). Each client maps the id",
    "to a local folder: `$CYBER0_MODEL_MAP` (YAML `id: folder`), else",
    "`$CYBER0_MODEL_DIR/<id>`, else the built-in `minilm` (the offline package), else the id as",
    "a literal folder. Loading is `local_files_only`; weights a checkpoint lacks (the new head)",
    "are drawn from a seeded generator, so every party starts bitwise equal, and `digest=`",
    "makes a client with different local weights refuse to start.",
    "",
    "`head=prompt` classifies as MeZO fine-tunes RoBERTa: it loads the checkpoint's masked-LM",
    "model, turns each tokenised sentence into `<sentence> It was <mask>.` and reads the",
    "masked-LM logits of one label word per class at the mask (`words=terrible,great` by",
    "default for two classes; each must be one token of the model's tokenizer). It starts from",
    "the pretrained model's zero-shot guess instead of a random head, and adds no weights. A",
    "checkpoint without its masked-LM head (MiniLM's package, for one) is refused: use",
    "`head=mean` there. `tests/test_text.py` checks it on tiny BERT (WordPiece) and RoBERTa",
    "(byte-level BPE) models against the full masked-LM forward of the prompted string.",
    "Example plan:",
    "",
    "```yaml",
    "seed: 0",
    "model: minilm?head=mean",
    "dataset: rotten_tomatoes?shots=16&max_length=64",
    "partition: dirichlet",
    "alpha: 1.0",
    "n_clients: 8",
    "f: 2",
    "aggregator: nnm+cwtm",
    "loss: balanced_cross_entropy",
    "rounds: 1000",
    "zo: {nu: 4, local_steps: 1, mu: 0.001, lr: 1.0e-6, batch_size: 16}",
    "```",
    "",
    "`cyber0-client --target HOST:PORT --id c0 [--device cuda]` then fine-tunes the whole",
    "model in place (hooks swap w + μz into each module's forward; no gradients, no optimizer",
    "state, no weight copy; K = 1 keeps it that way, K > 1 snapshots the weights once).",
    "Half-precision weights (`dtype=bfloat16`) halve memory but round small updates away",
    "(bf16 keeps 8 significant bits: an update below about 2⁻⁹ of a weight is lost);",
    "`float16` keeps 11 bits. `tests/test_text_e2e.py` runs such a plan on loopback with a tiny",
    "BERT. The Compose stack runs a text plan with `docker compose --env-file docker/text.env up`",
    "(MiniLM in every client container; see docs/docker.md, *The text stack*).",
]


def load(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def score(cell: dict[str, Any]) -> float:
    """Mean accuracy of the last :data:`SCORE_LAST` evaluations after round 0; 0 for a run
    that diverged (its accuracies are NaN)."""
    tail = [p["accuracy"] for p in cell["history"][1:]][-SCORE_LAST:]
    mean = sum(tail) / len(tail)
    return 0.0 if mean != mean else mean


Setting = tuple[str, int, float, int]  # method, ν (1 for first-order), step, batch


def sweep_settings(
    sweep: dict[str, dict[str, Any]],
) -> dict[Setting, dict[tuple[str, str], dict[str, Any]]]:
    """The sweep's runs by setting, then by (rule, attack)."""
    settings: dict[Setting, dict[tuple[str, str], dict[str, Any]]] = {}
    for cell in sweep.values():
        c = cell["cell"]
        key = (c["method"], c["nu"] if c["method"] == "zo" else 1, c["lr"], c["batch"])
        settings.setdefault(key, {})[(c["aggregator"], c["attack"])] = cell
    return settings


def worst(runs: dict[tuple[str, str], dict[str, Any]]) -> float | None:
    """A setting's lowest score over every rule and attack; None until all of them ran."""
    if len(runs) < len(AGGREGATORS) * len(ATTACKS):
        return None
    return min(score(r) for r in runs.values())


def chosen_settings(sweep: dict[str, dict[str, Any]]) -> dict[tuple[str, int], Setting]:
    """Per method: among the settings that ran under every rule and attack, the one whose
    worst score is highest (ties: the smaller step)."""
    best: dict[tuple[str, int], tuple[float, Setting]] = {}
    for key, runs in sorted(sweep_settings(sweep).items()):
        low = worst(runs)
        method = key[:2]
        if low is not None and (method not in best or low > best[method][0]):
            best[method] = (low, key)
    return {method: key for method, (_, key) in best.items()}


def sweep_section(sweep: dict[str, dict[str, Any]], cells: dict[str, dict[str, Any]]) -> list[str]:
    """The sweep table (validation score of every setting under every rule and attack), the
    choice per method (:func:`chosen_settings`), and whether the grid's cells use it."""
    settings = sweep_settings(sweep)
    chosen = chosen_settings(sweep)
    columns = [(a, attack) for a in AGGREGATORS for attack in ATTACKS]
    lines = [
        "## Step sizes and batch (validation sentences, every rule and attack)",
        "",
        "Chosen on the 1,000 validation sentences only (held out of the training pool, never",
        f"the test set). A run's score is its mean validation accuracy over its last {SCORE_LAST}",
        "evaluations. Each candidate setting runs under both rules and all four attacks, and a",
        "method takes the setting with the highest **worst** score over those eight runs: one",
        "step for all of a method's cells, chosen for the threat model rather than for the",
        "attack-free run. Scores (%):",
        "",
        "| method | step | batch | "
        + " | ".join(f"{a} {attack}" for a, attack in columns)
        + " | worst | chosen |",
        "|---|---|---|" + "---|" * (len(columns) + 2),
    ]
    for key in sorted(settings):
        runs = settings[key]
        row = [pct(score(r)) if (r := runs.get(col)) else "" for col in columns]
        shown = "" if (w := worst(runs)) is None else pct(w)
        mark = "**yes**" if chosen.get(key[:2]) == key else ""
        lines.append(
            f"| {method_label(key[0], key[1])} | {key[2]:g} | {key[3]} | {' | '.join(row)} | "
            f"{shown} | {mark} |"
        )
    notes = []
    for method, pick in sorted(chosen.items()):
        low = worst(settings[pick])
        assert low is not None  # chosen settings ran everywhere
        free = max(
            (k for k in settings if k[:2] == method and ("cwtm", "none") in settings[k]),
            key=lambda k: score(settings[k][("cwtm", "none")]),
        )
        partial = [k for k in settings if k[:2] == method and len(settings[k]) < len(columns)]
        # A setting's worst case is at most the lowest score it has so far.
        bounded = [k for k in partial if min(map(score, settings[k].values())) < low]
        text = (
            f"{method_label(*method)}: step {pick[2]:g}, batch {pick[3]} (worst score "
            f"{pct(low)}%; without attacks, CWTM alone would pick step {free[2]:g}, batch "
            f"{free[3]})"
        )
        if partial:
            text += (
                "; the settings not yet run under every rule and attack ("
                + ", ".join(f"step {k[2]:g} batch {k[3]}" for k in partial)
                + ") "
                + (
                    "already score below that worst case in some run, so none could win"
                    if len(bounded) == len(partial)
                    else "include one scoring above it without attack: the choice is open there"
                )
            )
        notes.append(text)
    lines += [
        "",
        "Chosen: " + "; ".join(notes) + "."
        if notes
        else "No setting has run under every rule and attack yet (`--sweep` resumes where it "
        "stopped): no worst-case choice is made, and the grid keeps the steps chosen without "
        "attack (CWTM only, the `cwtm none` column).",
        "",
    ]
    used = []
    for method, pick in sorted(chosen.items()):
        grid = cells.get(cell_id(method[0], method[1], "cwtm", "none"))
        if grid is None:
            continue
        g = grid["cell"]
        same = (g["lr"], g["batch"]) == (pick[2], pick[3])
        used.append(
            f"{method_label(*method)}: step {g['lr']:g}, batch {g['batch']}"
            + ("" if same else f" (**not** the sweep's choice {pick[2]:g}, {pick[3]})")
        )
    if used:
        lines += ["The grid below runs with " + "; ".join(used) + ".", ""]
    return lines


def class_prior(meta: dict[str, Any], flipped: int) -> float:
    """The share of "fresh" labels a rule that weighs clients equally trains on, when the first
    ``flipped`` clients flip their labels."""
    shares = [f / n for f, n in zip(meta["shard_fresh"], meta["shard_sizes"], strict=True)]
    return sum(1 - s if i < flipped else s for i, s in enumerate(shares)) / len(shares)


def method_label(method: str, nu: int) -> str:
    return f"CYBER-0 ν={nu}" if method == "zo" else "first-order FedSGD"


def cell_id(method: str, nu: int, aggregator: str, attack: str) -> str:
    head = f"zo-nu{nu}" if method == "zo" else "fo"
    return f"{head}-{aggregator}-{attack}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def plot(cells: dict[str, dict[str, Any]], figures: Path) -> list[str]:
    plt = pyplot()

    figures.mkdir(parents=True, exist_ok=True)
    names = []
    fig, axes = plt.subplots(len(AGGREGATORS), len(METHODS), figsize=(13, 7), sharey=True)
    for r, aggregator in enumerate(AGGREGATORS):
        for c, (method, nu) in enumerate(METHODS):
            ax = axes[r][c]
            for attack in ATTACKS:
                cell = cells.get(cell_id(method, nu, aggregator, attack))
                if cell is None:
                    continue
                h = cell["history"]
                ax.plot([p["round"] for p in h], [p["accuracy"] for p in h], label=attack)
            ax.axhline(TARGET_ACCURACY, color="grey", lw=0.8, ls="--")
            ax.set_title(f"{method_label(method, nu)}, {aggregator}", fontsize=10)
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel("test accuracy")
            ax.legend(fontsize=8)
    fig.suptitle("MiniLM on Rotten Tomatoes, n=8, f=2 (dashed: the 75% target)")
    fig.tight_layout()
    fig.savefig(figures / "text-accuracy.png", dpi=110)
    plt.close(fig)
    names.append("text-accuracy.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"none": "o", "alie": "^", "sf": "s", "lf": "x"}
    colors = {"zo1": "C0", "zo4": "C1", "first_order1": "C2"}
    for method, nu in METHODS:
        for attack in ATTACKS:
            for aggregator in AGGREGATORS:
                cell = cells.get(cell_id(method, nu, aggregator, attack))
                if cell is None:
                    continue
                ax.scatter(
                    cell["total_bytes_per_client"],
                    cell["final_accuracy"],
                    marker=markers[attack],
                    color=colors[f"{method}{nu}"],
                    label=f"{method_label(method, nu)}, {attack}" if aggregator == "cwtm" else None,
                )
    ax.set(xscale="log", xlabel="bytes sent + received per client (payload, whole run)")
    ax.set_ylabel("final test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(figures / "text-bytes.png", dpi=110)
    plt.close(fig)
    names.append("text-bytes.png")
    return names


def lf_history(cells: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]]) -> str:
    """The ν=4 label-flipping gaps of the previous grid (batch 32, 2,000 rounds) against this
    one's, as a sentence; empty without the previous grid."""

    def gap(group: dict[str, dict[str, Any]], aggregator: str) -> float | None:
        base = group.get(cell_id("zo", 4, aggregator, "none"))
        hit = group.get(cell_id("zo", 4, aggregator, "lf"))
        return (
            None
            if base is None or hit is None
            else 100 * (hit["final_accuracy"] - base["final_accuracy"])
        )

    pairs = [(gap(previous, a), gap(cells, a)) for a in AGGREGATORS]
    if any(old is None or new is None for old, new in pairs):
        return ""
    return (
        " Batch 128 and five times the rounds moved the ν=4 LF gaps from "
        + " / ".join(f"{old:+.1f}" for old, _ in pairs)
        + " (batch 32, 2,000 rounds) to "
        + " / ".join(f"{new:+.1f}" for _, new in pairs)
        + " points (CWTM / NNM+CWTM) but did not close them: less noise lets the model reach "
        "the attacked objective's optimum, and that optimum is biased."
    )


def alie_decay(cells: dict[str, dict[str, Any]], sweep: dict[str, dict[str, Any]]) -> list[str]:
    """One line per ALIE cell whose final accuracy is more than 3 points under its own best
    evaluation (the run peaked and then decayed), with the same cell's validation runs at the
    sweep's steps."""
    out = []
    for nu in (1, 4):
        for a in AGGREGATORS:
            cell = cells.get(cell_id("zo", nu, a, "alie"))
            if cell is None:
                continue
            peak = max(cell["history"], key=lambda p: p["accuracy"])
            if peak["accuracy"] - cell["final_accuracy"] <= TARGET_GAP:
                continue
            steps = sorted(
                (
                    c
                    for c in sweep.values()
                    if (c["cell"]["method"], c["cell"]["nu"], c["cell"]["aggregator"])
                    == ("zo", nu, a)
                    and c["cell"]["attack"] == "alie"
                    and c["cell"]["batch"] == cell["cell"]["batch"]
                ),
                key=lambda c: c["cell"]["lr"],
            )
            tried = "; ".join(
                f"step {c['cell']['lr']:g}: peak {pct(max(p['accuracy'] for p in c['history']))}%"
                f", final {pct(c['final_accuracy'])}%"
                for c in steps
            )
            out.append(
                f"- ALIE, ν={nu} {a}: the run peaked at {pct(peak['accuracy'])}% (round "
                f"{peak['round']}) and decayed to {pct(cell['final_accuracy'])}% by round "
                f"{cell['cell']['rounds']}, at step {cell['cell']['lr']:g}. ALIE's rows sit "
                "z·σ above the honest mean in every coordinate, so the aggregate carries a bias "
                "of size ∝ σ along each round's fresh random direction: zero on average over "
                "rounds, but it accumulates like a random walk whose size grows with the step."
                + (f" The same cell on the validation sentences: {tried}." if tried else "")
            )
    return out


def summary(
    cells: dict[str, dict[str, Any]],
    meta: dict[str, Any],
    previous: dict[str, dict[str, Any]],
    sweep: dict[str, dict[str, Any]],
    plain: dict[str, dict[str, Any]],
) -> list[str]:
    """Per attack: how many CYBER-0 cells stay within 3 points of their no-attack run, and the
    first-order baseline's drops; why label flipping costs what it does (``plain``: the plain
    objective's cells beside a class-balanced grid); bytes. All from the results."""

    def final(method: str, nu: int, aggregator: str, attack: str) -> float | None:
        cell = cells.get(cell_id(method, nu, aggregator, attack))
        return None if cell is None else float(cell["final_accuracy"])

    out = []
    zo_none = [(final("zo", nu, a, "none"), nu, a) for nu in (1, 4) for a in AGGREGATORS]
    best = max((v, nu, a) for v, nu, a in zo_none if v is not None)
    fo_none = [final("first_order", 1, a, "none") for a in AGGREGATORS]
    tails = []
    for nu in (1, 4):
        for a in AGGREGATORS:
            cell = cells.get(cell_id("zo", nu, a, "none"))
            if cell is not None:
                h = cell["history"]
                late = next(p for p in h if p["round"] >= 0.8 * h[-1]["round"])
                tails.append(
                    f"ν={nu} {a} {100 * (h[-1]['accuracy'] - late['accuracy']):+.1f} over rounds "
                    f"{late['round']}-{h[-1]['round']}"
                )
    out.append(
        f"- No attack: best CYBER-0 cell {pct(best[0])}% (ν={best[1]}, {best[2]}), the "
        f"first-order baseline {' / '.join(pct(v) for v in fo_none if v is not None)}% "
        f"(CWTM / NNM+CWTM)"
        + (
            f", the head fitted centrally on all the clients' sentences (Setup) "
            f"{pct(meta['reference']['test_accuracy'])}%"
            if "reference" in meta
            else ""
        )
        + f". Change over the last fifth of the run: {', '.join(tails)}."
    )
    for attack in ATTACKS[1:]:
        drops = zo_gaps(cells, attack)
        ok, total = sum(-d <= 100 * TARGET_GAP for d in drops), len(drops)
        fo = [
            100 * (h - b)
            for a in AGGREGATORS
            if (b := final("first_order", 1, a, "none")) is not None
            and (h := final("first_order", 1, a, attack)) is not None
        ]
        out.append(
            f"- {attack.upper()}: {ok} of {total} CYBER-0 cells within 3 points of no attack "
            f"(changes {', '.join(f'{d:+.1f}' for d in drops)}); first-order "
            f"{', '.join(f'{d:+.1f}' for d in fo)} points."
        )
    out += alie_decay(cells, sweep)
    if meta.get("loss", "cross_entropy") == "cross_entropy":
        out.append(lf_prior_reading(cells, meta, previous))
    else:
        out.append(lf_balanced_reading(cells, meta, plain))
    out.append(bytes_reading(cells, meta))
    return out


def predicted_fresh(cells: dict[str, dict[str, Any]], attack: str) -> list[str]:
    """The final ZO models' shares of test sentences labelled fresh under ``attack``, in the
    order ν=1 CWTM, ν=1 NNM+CWTM, ν=4 CWTM, ν=4 NNM+CWTM."""
    return [
        f"{pct(c['final_predicted_positive'])}%"
        for nu in (1, 4)
        for a in AGGREGATORS
        if (c := cells.get(cell_id("zo", nu, a, attack))) is not None
        and "final_predicted_positive" in c
    ]


def zo_gaps(cells: dict[str, dict[str, Any]], attack: str) -> list[float]:
    """The ZO cells' changes against their no-attack runs under ``attack`` (points), in the
    order of :func:`predicted_fresh`."""
    return [
        100 * (hit["final_accuracy"] - base["final_accuracy"])
        for nu in (1, 4)
        for a in AGGREGATORS
        if (base := cells.get(cell_id("zo", nu, a, "none"))) is not None
        and (hit := cells.get(cell_id("zo", nu, a, attack))) is not None
    ]


def lf_balanced_reading(
    cells: dict[str, dict[str, Any]], meta: dict[str, Any], plain: dict[str, dict[str, Any]]
) -> str:
    """Label flipping under the class-balanced objective, beside the plain objective's grid
    (``plain``: its cells; empty when it was not kept)."""
    gaps = ", ".join(f"{g:+.1f}" for g in zo_gaps(cells, "lf"))
    before = ", ".join(f"{g:+.1f}" for g in zo_gaps(plain, "lf"))
    return (
        "- Label flipping under the class-balanced objective: a flipping client's loss weighs "
        "its two classes equally, like every honest client's, so the flip no longer moves the "
        "class prior the rules train on (with the plain mean loss, weighting clients equally, "
        f"the training target's share of fresh labels moved from {pct(class_prior(meta, 0))}% "
        f"to {pct(class_prior(meta, meta['f']))}% under LF; *The plain cross-entropy "
        "objective* below). The final models label "
        f"{', '.join(predicted_fresh(cells, 'none'))} of the test sentences fresh with no "
        f"attack and {', '.join(predicted_fresh(cells, 'lf'))} under LF (ν=1 CWTM, ν=1 "
        "NNM+CWTM, ν=4 CWTM, ν=4 NNM+CWTM); what is left is the flipped clients' pull on the "
        f"sentiment direction itself. LF changes: {gaps} points"
        + (f", against {before} with the plain mean loss." if before else ".")
    )


def lf_prior_reading(
    cells: dict[str, dict[str, Any]], meta: dict[str, Any], previous: dict[str, dict[str, Any]]
) -> str:
    """Why label flipping costs most under the plain mean loss: the class prior it moves."""
    shares = [f / n for f, n in zip(meta["shard_fresh"], meta["shard_sizes"], strict=True)]
    honest = shares[meta["f"] :]
    return (
        "- Why label flipping costs most: it is not an outlier attack. With Dirichlet"
        f"(α={meta['alpha']}) skew the clients' shares of fresh sentences are "
        f"{', '.join(f'{100 * s:.0f}%' for s in shares)}, so the honest vectors are themselves "
        "far apart, and the Byzantine clients' shares after flipping "
        f"({', '.join(f'{100 * (1 - s):.0f}%' for s in shares[: meta['f']])}) lie inside the "
        f"honest range ({100 * min(honest):.0f}% to {100 * max(honest):.0f}%): their vectors "
        "look like honest clients with another skew, and the trimmed mean keeps them. "
        "Weighting clients equally, as both rules do, the training target's share of fresh "
        f"labels moves from {pct(class_prior(meta, 0))}% with no attack to "
        f"{pct(class_prior(meta, meta['f']))}% under LF, against a balanced test set; the "
        "flipped labels also pull the sentiment direction itself. The final models label "
        f"{', '.join(predicted_fresh(cells, 'none'))} of the test sentences fresh with no "
        f"attack and {', '.join(predicted_fresh(cells, 'lf'))} under LF (ν=1 CWTM, ν=1 "
        "NNM+CWTM, ν=4 CWTM, ν=4 NNM+CWTM)." + lf_history(cells, previous)
    )


def bytes_reading(cells: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """What a client sends and receives, CYBER-0 against the first-order baseline."""
    zo_bytes = sorted(
        {
            (c["cell"]["nu"], c["cell"]["rounds"], c["total_bytes_per_client"])
            for c in cells.values()
            if c["cell"]["method"] == "zo"
        }
    )
    baseline = next((c for c in cells.values() if c["cell"]["method"] == "first_order"), None)
    fo_text = ""
    if baseline is not None:
        d, rounds = baseline["scalars_per_client_round"], baseline["cell"]["rounds"]
        fo_text = (
            f"; the baseline 4d = {4 * d:,} bytes each way a round for this {d:,}-parameter "
            f"subset, {human_bytes(baseline['total_bytes_per_client'])} for its {rounds} rounds, "
            f"and would need 4 × {meta['model_parameters'] / 1e6:.1f}M ≈ "
            f"{human_bytes(4 * meta['model_parameters'])} a round to train all of MiniLM"
        )
    return (
        "- Bytes: a CYBER-0 client sends and receives 4ν bytes of payload a round ("
        + ", ".join(f"ν={nu}: {human_bytes(b)} for {r:,} rounds" for nu, r, b in zo_bytes)
        + f"){fo_text}. gRPC framing adds about 49 bytes each way per message at ν=1 (a "
        "grpc.aio stream measured on loopback on this machine kind)."
    )


def history_section(folder: Path, title: str, intro: str) -> list[str]:
    """An earlier grid kept in ``folder``: its final test accuracies, as a table (rows with
    no cell kept are left out)."""
    if not folder.is_dir():
        return []
    old = load(folder)
    lines = ["", f"## History: {title}", "", intro, ""]
    lines += ["| method | aggregator | " + " | ".join(ATTACKS) + " |"]
    lines += ["|---|---|" + "---|" * len(ATTACKS)]
    for method, nu in METHODS:
        for aggregator in AGGREGATORS:
            kept = [old.get(cell_id(method, nu, aggregator, a)) for a in ATTACKS]
            if not any(kept):
                continue
            row = [pct(c["final_accuracy"]) if c else "-" for c in kept]
            lines.append(f"| {method_label(method, nu)} | {aggregator} | {' | '.join(row)} |")
    return lines


def steps_used(folder: Path) -> str:
    """The steps of the grid kept in ``folder``, per method, as text."""
    used = {}
    for cell in load(folder).values():
        c = cell.get("cell")
        if c is not None:
            used[method_label(c["method"], c["nu"])] = c["lr"]
    return ", ".join(f"{m} {lr:g}" for m, lr in sorted(used.items()))


def results_table(
    cells: dict[str, dict[str, Any]],
) -> tuple[list[str], list[str], list[tuple[str, bool]]]:
    """The grid's test accuracies as a table, the cell ids that did not run, and the target
    checks of the CYBER-0 cells (label, met)."""
    lines = [
        "| method | aggregator | attack | rounds | start | final | Δ start | Δ no attack | "
        "scalars/round | bytes per client (up+down) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    missing = []
    checks: list[tuple[str, bool]] = []
    for method, nu in METHODS:
        for aggregator in AGGREGATORS:
            base = cells.get(cell_id(method, nu, aggregator, "none"))
            for attack in ATTACKS:
                cell = cells.get(cell_id(method, nu, aggregator, attack))
                if cell is None:
                    missing.append(cell_id(method, nu, aggregator, attack))
                    continue
                final = cell["final_accuracy"]
                d_base = "" if base is None else f"{100 * (final - base['final_accuracy']):+.1f}"
                lines.append(
                    f"| {method_label(method, nu)} | {aggregator} | {attack} | "
                    f"{cell['cell']['rounds']} | {pct(cell['initial_accuracy'])} | "
                    f"**{pct(final)}** | {100 * (final - cell['initial_accuracy']):+.1f} | "
                    f"{d_base} | {cell['scalars_per_client_round']:,} | "
                    f"{human_bytes(cell['total_bytes_per_client'])} |"
                )
                if method == "zo":
                    tag = f"ν={nu} {aggregator} {attack}"
                    if attack == "none":
                        checks.append(
                            (f"{tag}: ≥ {pct(TARGET_ACCURACY)}%", final >= TARGET_ACCURACY)
                        )
                    elif base is not None:
                        gap = base["final_accuracy"] - final
                        checks.append((f"{tag}: within 3 points of no attack", gap <= TARGET_GAP))
                    checks.append(
                        (
                            f"{tag}: ≥ start + {pct(TARGET_MARGIN)} points",
                            final >= cell["initial_accuracy"] + TARGET_MARGIN,
                        )
                    )
    return lines, missing, checks


def checks_by_target(checks: Sequence[tuple[str, bool]]) -> list[str]:
    """Target checks labelled ``"<cell>: <target>"`` as one line per target: how many cells
    met it and which did not."""
    targets: dict[str, list[tuple[str, bool]]] = {}
    for label, ok in checks:
        cell, target = label.split(": ", 1)
        targets.setdefault(target, []).append((cell, ok))
    lines = []
    for target, results in targets.items():
        failed = [cell for cell, ok in results if not ok]
        lines.append(
            f"- {target}: {len(results) - len(failed)} of {len(results)} met"
            + (f"; not met: {', '.join(failed)}" if failed else "")
        )
    return lines


def _finals(cells: dict[str, dict[str, Any]], method: str, attack: str) -> list[float]:
    """Final test accuracies (%) of one method's cells under ``attack``, every ν and rule."""
    return [
        100 * cell["final_accuracy"]
        for m, nu in METHODS
        for aggregator in AGGREGATORS
        if m == method and (cell := cells.get(cell_id(m, nu, aggregator, attack))) is not None
    ]


def _mean_drop(cells: dict[str, dict[str, Any]], method: str, attack: str) -> float | None:
    """Mean drop (points) of one method's cells under ``attack`` against their no-attack run."""
    drops = [
        100 * (base["final_accuracy"] - cell["final_accuracy"])
        for m, nu in METHODS
        for aggregator in AGGREGATORS
        if m == method
        and (cell := cells.get(cell_id(m, nu, aggregator, attack))) is not None
        and (base := cells.get(cell_id(m, nu, aggregator, "none"))) is not None
    ]
    return sum(drops) / len(drops) if drops else None


def fewshot_reading(
    cells: dict[str, dict[str, Any]], full: dict[str, dict[str, Any]], meta: dict[str, Any]
) -> list[str]:
    """What the few-shot grid shows beside the full setting: how far the no-attack runs get,
    and whether first-order FedSGD loses as much under each attack."""
    zo, fo, zo_full = (
        _finals(cells, "zo", "none"),
        _finals(cells, "first_order", "none"),
        _finals(full, "zo", "none"),
    )
    if not zo or not fo:
        return []
    start = 100 * next(iter(cells.values()))["initial_accuracy"]
    reach = (
        f"Reading: without an attack CYBER-0 ends at {min(zo):.1f}–{max(zo):.1f}% "
        f"({min(zo) - start:+.1f} to {max(zo) - start:+.1f} points over the start) and "
        f"first-order FedSGD at {min(fo):.1f}–{max(fo):.1f}%"
        + (
            f", against {min(zo_full):.1f}–{max(zo_full):.1f}% for CYBER-0 in the full setting"
            if zo_full
            else ""
        )
        + f": with {meta['train_sentences']} training sentences and the full setting's steps, "
        "neither method comes near the accuracy level or the margin over the start, whatever "
        "the rule, so this setting is reported as it comes."
        + (
            f" For reference, {reference_sentence(meta['reference'])}."
            if "reference" in meta
            else ""
        )
    )
    pairs: list[str] = []
    beyond: dict[str, list[str]] = {"zo": [], "first_order": []}
    for attack in ATTACKS[1:]:
        means = {m: _mean_drop(cells, m, attack) for m in beyond}
        if any(v is None for v in means.values()):
            continue
        pairs.append(f"{attack} {means['zo']:+.1f} / {means['first_order']:+.1f}")
        for m, v in means.items():
            if v is not None and v > 100 * TARGET_GAP:
                beyond[m].append(attack)
    attacks = (
        f" Mean drop against the no-attack run, CYBER-0 / first-order: {', '.join(pairs)} "
        f"points; beyond {100 * TARGET_GAP:.0f} points on average: CYBER-0 "
        f"{', '.join(beyond['zo']) or 'none'}, first-order "
        f"{', '.join(beyond['first_order']) or 'none'} (same rules, same shards)."
    )
    return ["", reach + attacks]


def reference_sentence(ref: dict[str, Any]) -> str:
    """The centrally fitted head (``meta.json``'s ``reference``) in words."""
    ridges = ", ".join(f"{r:g}" for r in ref["ridges"])
    return (
        f"the same closed-form head fitted centrally on all {ref['train_sentences']:,} of the "
        f"clients' training sentences (λ={ref['ridge']:g}, the best of {ridges} on the "
        f"validation sentences) reaches **{pct(ref['test_accuracy'])}%** test accuracy: what "
        "the data allows the head alone, with no federation and no attack (CYBER-0 also trains "
        "the LayerNorm's γ, β)"
        + (
            f", below the {pct(TARGET_ACCURACY)}% target level"
            if ref["test_accuracy"] < TARGET_ACCURACY
            else ""
        )
    )


def fewshot_section(folder: Path, full: dict[str, dict[str, Any]]) -> list[str]:
    """The grid rerun on a few-shot setting kept in ``folder`` (``fewshot-<shots>``), with
    its target checks counted apart from the full setting's (``full``: its cells)."""
    if not (folder / "meta.json").exists():
        return []
    meta = json.loads((folder / "meta.json").read_text())
    cells = {k: v for k, v in load(folder).items() if k != "meta"}
    if not cells:
        return []
    table, missing, checks = results_table(cells)
    shots = meta["shots"]
    lines = [
        "",
        f"## Few-shot: {shots} sentences per class per client",
        "",
        f"The same grid on `rotten_tomatoes?shots={shots}` (the shards a client daemon gets "
        f"for that dataset): {shots}·{meta['n_clients']} = {shots * meta['n_clients']} "
        f"sentences per class drawn from the training pool, split by the same "
        f"Dirichlet(α={meta['alpha']}) skew: sizes {meta['shard_sizes']}, fresh counts "
        f"{meta['shard_fresh']}. A client's batch is its whole shard (at most "
        f"{meta['batch']}). Steps, rounds, start and Byzantine clients are the full setting's; "
        "the steps were not tuned again (a few-shot user has no validation sentences to spare). "
        f"`bench/results/text/{folder.name}/`.",
        "",
        *table,
        *fewshot_reading(cells, full, meta),
        "",
        f"Targets on this setting (CYBER-0 cells): {sum(ok for _, ok in checks)} of "
        f"{len(checks)} checks met." + (f" Not run: {', '.join(missing)}." if missing else ""),
        "",
        *checks_by_target(checks),
    ]
    return lines


def plain_section(folder: Path, previous: dict[str, dict[str, Any]]) -> list[str]:
    """The grid run with the plain mean cross-entropy objective, kept in ``folder``: its results
    and target checks, why label flipping cost what it did, and its few-shot grid's finals
    (``previous``: the batch-32 grid's cells, for the LF history)."""
    if not (folder / "meta.json").exists():
        return []
    meta = json.loads((folder / "meta.json").read_text())
    cells = {k: v for k, v in load(folder).items() if k != "meta"}
    table, missing, checks = results_table(cells)
    lines = [
        "",
        "## The plain cross-entropy objective",
        "",
        "The same grid with each client's loss the plain mean cross-entropy of its batch (the "
        "plan's default `loss: cross_entropy`), steps chosen by its own sweep on the "
        f"validation sentences by the same rule ({steps_used(folder)}; `bench/results/text/"
        f"{folder.name}/`, sweep in `{folder.name}/sweep/`):",
        "",
        *table,
        "",
        f"Targets with this objective (CYBER-0 cells): {sum(ok for _, ok in checks)} of "
        f"{len(checks)} checks met." + (f" Not run: {', '.join(missing)}." if missing else ""),
        "",
        *checks_by_target(checks),
        "",
        lf_prior_reading(cells, meta, previous),
    ]
    lines += history_section(
        folder / f"fewshot-{FEWSHOT}",
        f"few-shot ({FEWSHOT} per class per client) with the plain objective",
        "The few-shot grid above with the plain mean cross-entropy "
        f"(`bench/results/text/{folder.name}/fewshot-{FEWSHOT}/`). Final test accuracy:",
    )
    return lines


def setup_section(meta: dict[str, Any], start: float) -> list[str]:
    """The title, then the setup: model, trained parameters, data, attackers, budget and the
    probe's starting accuracy ``start``."""
    return [
        "# Federated zero-order fine-tuning of MiniLM on Rotten Tomatoes (issue 7)",
        "",
        "Generated by `python bench/report_text.py` from `bench/results/text/` (written by",
        "`python bench/text_experiment.py`). Do not edit by hand.",
        "",
        "## Setup",
        "",
        f"- Model `{meta['model']}`: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, "
        f"{meta['model_parameters'] / 1e6:.1f}M parameters) from the offline package folder,",
        f"  masked mean pooling and a linear head; `max_length` {meta['max_length']} tokens.",
        f"- Trained (CYBER-0 and the baseline alike): the last layer's output LayerNorm and the "
        f"head, d = {meta['d']:,} parameters ({', '.join(meta['trainable'])}); all other "
        "weights frozen. Mean pooling is linear and LayerNorm's normalisation has no "
        "parameters, so logits = W(γ ⊙ x̄ + β) + b with x̄ computed once per sentence by a real "
        "MiniLM forward and cached; checked against the full model before training: max |Δ "
        f"logit| = {meta['reduction_max_abs_diff']:.1e}. Feature pass: "
        f"{meta['feature_seconds']:.0f} s on {meta['feature_threads']} "
        f"thread{'s' if meta['feature_threads'] != 1 else ''} (shared machine).",
        f"- Data: the fixed split of `cyber0.common.text` — {meta['test_sentences']:,} balanced "
        f"test sentences, {meta['probe_sentences']} public probe sentences, "
        f"{meta['validation_sentences']:,} validation sentences held out of the training pool "
        f"(step sizes and batch only), {meta['train_sentences']:,} training sentences split over "
        f"n={meta['n_clients']} clients by Dirichlet(α={meta['alpha']}) label skew: sizes "
        f"{meta['shard_sizes']}, fresh counts {meta['shard_fresh']}.",
        f"- f={meta['f']} Byzantine clients (0 and 1); SF and ALIE are omniscient (they see the "
        "honest vectors of the round), LF computes honestly on flipped labels. Batch "
        f"{meta['batch']} sentences per client per round, K=1, μ={meta['mu']}, seed "
        f"{meta['seed']}; "
        + ", ".join(f"ν={nu}: {r:,} rounds" for nu, r in meta["zo_rounds"].items())
        + f", first-order: {meta['fo_rounds']:,} rounds.",
        f"- Start: closed-form ridge probe (λ={meta['probe_ridge']}) of the head on the public "
        f"sentences: **{pct(start)}%** test accuracy. MiniLM has no masked-LM head in its "
        "package, so no prompt-based zero-shot point exists for it (`head=prompt` serves "
        "checkpoints that have one, such as RoBERTa-large; see the end of this page).",
        *(
            [f"- Reference, not a federated run: {reference_sentence(meta['reference'])}."]
            if "reference" in meta
            else []
        ),
        *(
            [
                "- Objective: each client's loss is class-balanced cross-entropy (the plan's "
                "`loss: balanced_cross_entropy`): the mean over its batch's classes of each "
                "class's mean loss, so a client's label skew does not set its objective's class "
                "prior; the test set is balanced. The same grid with the plain mean "
                "cross-entropy is kept below (*The plain cross-entropy objective*)."
            ]
            if meta.get("loss") == "balanced_cross_entropy"
            else []
        ),
        "",
    ]


def what_ran_section(
    results: Path,
    meta: dict[str, Any],
    cells: dict[str, dict[str, Any]],
    sweep: dict[str, dict[str, Any]],
    missing: Sequence[str],
) -> list[str]:
    """Wall time, the exploratory runs that set the sweep, the cells that ran, and the earlier
    grids kept beside this one."""
    lines = ["", "## What ran", ""]
    wall = sum(c["wall_seconds"] for c in cells.values())
    sweep_wall = sum(c["wall_seconds"] for c in sweep.values())
    lines.append(
        f"Wall time on the shared 2-core machine (other experiments running beside it): feature "
        f"pass {meta['feature_seconds']:.0f} s (once, cached), sweep {sweep_wall:.0f} s, grid "
        f"{wall:.0f} s, one thread per run. "
        "Before the plain objective's sweep, twelve exploratory runs on the "
        "validation sentences (ν=4, CWTM and NNM+CWTM, no attack, ALIE and LF, step 0.002 and "
        "0.005, batch 32 and 128, 2,000 to 10,000 rounds; not kept) showed the no-attack curves "
        "still rising at 2,000 rounds and batch 128 ahead of 32, which set the sweep's ranges. "
        "Before the class-balanced objective's sweep (the same candidates), ten exploratory runs "
        "on the validation sentences at step 0.002, batch 128 (ν=1 and ν=4; CWTM and NNM+CWTM "
        "without attack and under LF, CWTM under ALIE and SF; not kept) showed LF's validation "
        "gap at 0.9 to 1.6 points, against 2.1 to 4.2 with the plain objective, which is why the "
        "objective was swept and the grid rerun."
    )
    lines.append("")
    lines.append(
        f"{len(cells)} cells ran"
        + (f"; not run: {', '.join(missing)}." if missing else "; every cell of the grid ran.")
    )
    if (results / NO_ATTACK_STEPS).is_dir():
        lines += history_section(
            results / NO_ATTACK_STEPS,
            "the grid with steps chosen without attack",
            "The same grid (plain cross-entropy objective) with each method's step chosen on "
            "the validation sentences without attack, CWTM only; kept for the methods whose "
            "step that choice changed "
            f"({steps_used(results / NO_ATTACK_STEPS)}; "
            f"`bench/results/text/{NO_ATTACK_STEPS}/`). Final test accuracy:",
        )
    lines += history_section(
        results / PREVIOUS,
        "the previous grid (batch 32, 2,000 ZO rounds)",
        "The same pool and split (plain cross-entropy objective) with batch 32 per client, "
        "2,000 ZO rounds (ν=1 and ν=4 at "
        "step 0.005, chosen on the earlier pool) and 500 first-order rounds "
        f"(`bench/results/text/{PREVIOUS}/`). Final test accuracy:",
    )
    return lines


def natural_prior_section(folder: Path) -> list[str]:
    """The first grid, trained with the pool's natural class prior (where it is kept)."""
    natural = load(folder) if folder.is_dir() else {}
    natural.pop("meta", None)
    lines: list[str] = []
    if natural:
        lines += [
            "",
            "## History: a first grid with the natural class prior",
            "",
            "The first grid trained on the whole 10,720-sentence pool (59% fresh) and tested on",
            "the balanced test set. Training pulled every model towards the majority class",
            "(the probe, fitted on balanced public sentences, lost 10 points in the first 100",
            "ZO rounds), so the pool was balanced like the original MR data and the grid rerun.",
            "Its step sizes were swept on that pool (`natural-prior/sweep/`). Cells of that",
            "first grid that finished (`bench/results/text/natural-prior/`):",
            "",
        ]
        for name, cell in sorted(natural.items()):
            lines.append(
                f"- {name}: {pct(cell['initial_accuracy'])} → {pct(cell['final_accuracy'])}"
            )
    return lines


def gpu_section(results: Path) -> list[str]:
    """The RoBERTa-large-shaped GPU run (``gpu_text.json``), or how to make it."""
    path = results / "gpu_text.json"
    gpu = json.loads(path.read_text()) if path.exists() else None
    lines = ["", "## GPU (RoBERTa-large shape, in-place ZO)", ""]
    if gpu is None:
        lines.append(
            "Not measured: no GPU was lent to this session. Run `python bench/gpu_text.py --out "
            "bench/results/text/gpu_text.json` on a CUDA machine and regenerate."
        )
    else:
        lines += [
            f"- device {gpu['device']}, dtype {gpu['dtype']}, {gpu['parameters'] / 1e6:.0f}M "
            f"parameters, batch {gpu['batch'][0]}×{gpu['batch'][1]} tokens, ν={gpu['nu']}",
            f"- weights {human_bytes(gpu['weight_bytes'])}; peak during ZO steps "
            f"{human_bytes(gpu['zo_peak_bytes'])} ({gpu['zo_peak_over_weights']:.2f}× the "
            f"weights); one backprop step {human_bytes(gpu['backprop_peak_bytes'])} "
            f"({gpu['backprop_peak_over_zo_peak']:.2f}× the ZO peak)",
            f"- {gpu['median_seconds_per_zo_step']:.3f} s per ZO step (median); estimate left "
            f"the weights bitwise unchanged: {gpu['estimate_left_weights_unchanged']}; the "
            f"updates moved them: {gpu['update_moved_weights']}",
        ]
    return lines


def render(results: Path) -> str:
    """The whole of ``docs/results-text.md`` from the results folder ``results``."""
    meta = json.loads((results / "meta.json").read_text())
    cells = {k: v for k, v in load(results).items() if k not in ("meta", "gpu_text")}
    sweep = load(results / "sweep") if (results / "sweep").is_dir() else {}
    start = next(iter(cells.values()))["initial_accuracy"] if cells else float("nan")
    lines = setup_section(meta, start)
    if sweep:
        lines += sweep_section(sweep, cells)
    table, missing, checks = results_table(cells)
    lines += ["## Results (test accuracy after training)", "", *table]
    lines += ["", "![accuracy](figures/text-accuracy.png)", "", "![bytes](figures/text-bytes.png)"]
    previous = load(results / PREVIOUS) if (results / PREVIOUS).is_dir() else {}
    plain = {k: v for k, v in load(results / PLAIN).items() if k != "meta"}
    lines += ["", "## Reading", "", *summary(cells, meta, previous, sweep, plain)]
    lines += ["", "## Targets (CYBER-0 cells)", ""]
    met = sum(ok for _, ok in checks)
    lines.append(f"{met} of {len(checks)} checks met.")
    lines.append("")
    for label, ok in checks:
        lines.append(f"- {'met' if ok else '**not met**'}: {label}")
    lines += fewshot_section(results / f"fewshot-{FEWSHOT}", cells)
    lines += plain_section(results / PLAIN, previous)
    lines += what_ran_section(results, meta, cells, sweep, missing)
    lines += natural_prior_section(results / "natural-prior")
    lines += gpu_section(results)
    lines += ["", *USAGE]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--figures", type=Path, default=FIGURES)
    args = parser.parse_args(argv)
    cells = {k: v for k, v in load(args.results).items() if k not in ("meta", "gpu_text")}
    if cells:
        plot(cells, args.figures)
    args.doc.write_text(render(args.results))
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
