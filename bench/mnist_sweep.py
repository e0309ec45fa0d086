"""The validation sweep's sections of ``docs/results-mnist.md``: the rate, μ and batch comparisons,
the worst-case rate and the class-balanced objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from mnist_runs import TOLERANCE, Run, Study, accuracy_at, drops_by_attack, pct, table


def sweep_findings(sweep: Sequence[Run]) -> list[str]:
    """Sentences read off the sweep: the best rate per method in its longest runs, and the
    effect of μ and of the batch size at fixed rate (ν=64)."""
    from study_mnist import SWEEP_BATCH, ZO_BATCH

    lines = []
    attacked = [r for r in sweep if r.attack != "none"]
    sweep = [r for r in sweep if r.attack == "none"]
    groups: dict[str, list[Run]] = {}
    for r in sweep:
        if r.method == "zo" and r.zo_batch != SWEEP_BATCH:
            continue  # the rates were read at the first sweep's batch
        name = f"CYBER-0 ν={r.nu}" if r.method == "zo" else "first-order"
        groups.setdefault(name, []).append(r)
    for name, runs in sorted(groups.items()):
        longest = max(r.rounds for r in runs)
        best = max((r for r in runs if r.rounds == longest), key=lambda r: r.final)
        lr = best.zo_lr if best.method == "zo" else best.fo_lr
        lines.append(
            f"- {name}: best validation accuracy after {longest} rounds with η={lr:g} "
            f"({pct(best.final)}%)."
        )
    zo64 = [r for r in sweep if r.method == "zo" and r.nu == 64]
    for r in zo64:
        same_lr = [
            q
            for q in zo64
            if q.zo_lr == r.zo_lr and q.rounds == r.rounds and q.zo_batch == r.zo_batch
        ]
        mus = sorted({q.zo_mu for q in same_lr})
        if len(mus) > 1:
            spread = max(q.final for q in same_lr) - min(q.final for q in same_lr)
            lines.append(
                f"- μ ∈ {{{', '.join(f'{m:g}' for m in mus)}}} at η={r.zo_lr:g}, ν=64: accuracies "
                f"within {100 * spread:.2f} points of each other (the central difference of a "
                "smooth loss is insensitive to μ over this range)."
            )
            break
    for r in zo64:
        bigger = [
            q
            for q in zo64
            if q.zo_lr == r.zo_lr
            and q.rounds == r.rounds
            and q.zo_mu == r.zo_mu
            and q.zo_batch > r.zo_batch
        ]
        if bigger:
            q = bigger[0]
            lines.append(
                f"- batch {q.zo_batch} instead of {r.zo_batch} at η={r.zo_lr:g}, ν=64: "
                f"{100 * (q.final - r.final):+.2f} points for {q.zo_batch // r.zo_batch}× the "
                "forward cost per round."
            )
            break
    compared: dict[tuple[str, float], list[Run]] = {}
    for r in attacked:
        compared.setdefault((r.attack, r.zo_lr), []).append(r)
    for (attack, lr), found in sorted(compared.items()):
        if len({r.zo_batch for r in found}) < 2:
            continue  # not a batch comparison (the worst-case sweep: one batch, every attack)
        runs = sorted(found, key=lambda r: r.zo_batch)
        clean = {r.zo_batch: r for r in zo64 if r.rounds == runs[0].rounds and r.zo_lr == lr}
        parts = [
            f"batch {r.zo_batch}: {pct(r.final)}%"
            + (f" (no attack {pct(clean[r.zo_batch].final)}%)" if r.zo_batch in clean else "")
            for r in runs
        ]
        lines.append(
            f"- under {attack.upper()}, CWTM, η={runs[0].zo_lr:g}, {runs[0].rounds} rounds: "
            + "; ".join(parts)
            + "."
        )
        widest = runs[-1]
        chosen = next((r for r in runs if r.zo_batch == ZO_BATCH), None)
        if widest.zo_batch in clean and chosen is not None and widest is not chosen:
            lines.append(
                f"- batches above {ZO_BATCH} were tried afterwards, to see whether the CWTM gap "
                f"closes with less minibatch noise: batch {widest.zo_batch} gains "
                f"{100 * (widest.final - chosen.final):+.2f} points over {ZO_BATCH} under "
                f"{attack.upper()} for up to {widest.zo_batch // ZO_BATCH}× the forward cost "
                "(a client holding fewer examples than the batch uses them all), and "
                f"still trails its own no-attack run by "
                f"{100 * (clean[widest.zo_batch].final - widest.final):.2f} points, so the "
                f"study stays at batch {ZO_BATCH}."
            )
    return lines


BatchDrops = dict[int, tuple[Run, float]]


def _batch_drops(runs: Sequence[Run]) -> BatchDrops:
    """CWTM's runs under TMA among ``runs`` (one seed) by batch (ν=64, the study's rate and
    budget), each with its drop against the same batch's no-attack run."""
    from study_mnist import ROUNDS, ZO_LR

    pick = {
        (r.zo_batch, r.attack): r
        for r in runs
        if r.method == "zo" and (r.nu, r.k, r.zo_lr, r.rounds) == (64, 1, ZO_LR[64], ROUNDS[64])
    }
    return {
        b: (run, base.final - run.final)
        for (b, a), run in sorted(pick.items())
        if a == "tma" and (base := pick.get((b, "none"))) is not None
    }


def tma_batch_drops(study: Study) -> tuple[BatchDrops, BatchDrops]:
    """:func:`_batch_drops` of the sweep's validation runs: (α=1, IID shards), the batches
    both ran."""
    skew, iid = _batch_drops(study.sweep), _batch_drops(study.iid_sweep)
    both = [b for b in iid if b in skew]
    return {b: skew[b] for b in both}, {b: iid[b] for b in both}


def batch_text(batch: int) -> str:
    """``batch 512``, or ``batch 5000 (every client's whole shard)`` for the sweep's
    :data:`study_mnist.WHOLE_SHARD`."""
    from study_mnist import WHOLE_SHARD

    whole = " (every client's whole shard)" if batch == WHOLE_SHARD else ""
    return f"batch {batch}{whole}"


def iid_batch_findings(study: Study) -> list[str]:
    """A line of the sweep: :func:`tma_batch_drops` on IID shards beside α=1, and whether the
    widest batch brings the drop within the tolerance on either."""
    from study_mnist import WHOLE_SHARD

    skew, iid = tma_batch_drops(study)
    batches = list(iid)
    if len(batches) < 2:
        return []

    def series(by_batch: BatchDrops) -> str:
        return " → ".join(f"{100 * by_batch[b][1]:.2f}" for b in batches)

    accuracies = "; ".join(f"batch {b}: {pct(iid[b][0].final)}%" for b in batches)
    line = (
        f"- the same batches on IID shards (group `sweep-batch`, `-iid`), under TMA: "
        f"{accuracies}. CWTM's drop against the same batch's no-attack run, batch "
        f"{' → '.join(map(str, batches))}: α=1 {series(skew)}, IID {series(iid)} points"
    )
    widest = batches[-1]
    if iid[widest][1] <= TOLERANCE < skew[widest][1]:
        line += (
            f": batch {widest} brings the drop within {100 * TOLERANCE:.0f} points without the "
            "label skew but not with it, so what a larger batch leaves at α=1 is the skew's"
        )
    line += "."
    if widest == WHOLE_SHARD:
        line += (
            f" At {batch_text(widest)} no minibatch noise is left, and CWTM loses "
            f"{100 * skew[widest][1]:.2f} points to TMA at α=1, {100 * iid[widest][1]:.2f} on "
            "IID shards: what the clients' different data cost it."
        )
    return [line, *_whole_shard_seeds(study, skew)]


def _whole_shard_seeds(study: Study, skew: BatchDrops) -> list[str]:
    """A line on the whole-shard batch at α=1 at every seed it ran (``skew``: the sweep seed's
    :func:`tma_batch_drops`), or nothing before the further seeds ran."""
    from study_mnist import SEED, WHOLE_SHARD

    drops = {SEED: skew[WHOLE_SHARD][1]} if WHOLE_SHARD in skew else {}
    for seed in sorted({r.seed for r in study.sweep_seeds}):
        by_batch = _batch_drops([r for r in study.sweep_seeds if r.seed == seed])
        if WHOLE_SHARD in by_batch:
            drops[seed] = by_batch[WHOLE_SHARD][1]
    if len(drops) < 2:
        return []
    within = [s for s, d in drops.items() if d <= TOLERANCE]
    return [
        f"- {batch_text(WHOLE_SHARD)} at α=1 under TMA, by seed (group `sweep-batch`, "
        "`-s<seed>`): CWTM's drop "
        + ", ".join(f"{100 * d:.2f} (seed {s})" for s, d in drops.items())
        + f" points, mean {100 * fmean(drops.values()):.2f}; within {100 * TOLERANCE:.0f} "
        + f"points at {len(within)} of {len(drops)} seeds"
        + (f" ({', '.join(map(str, within))})." if within else ".")
    ]


def worst_case_runs(sweep: Sequence[Run]) -> dict[float, list[Run]]:
    """The worst-case sweep's validation runs by rate: ν=64, K=1, CWTM, the study's batch and
    budget, no attack and every attack (group ``sweep-rate``, and the batch comparison's run
    that shares its settings)."""
    from study_mnist import ROUNDS, WORST_CASE_RATES, ZO_BATCH, ZO_MU

    by_rate: dict[float, list[Run]] = {}
    for r in sweep:
        if (
            r.method == "zo"
            and (r.nu, r.k, r.aggregator) == (64, 1, "cwtm")
            and (r.zo_batch, r.rounds, r.zo_mu) == (ZO_BATCH, ROUNDS[64], ZO_MU)
            and r.zo_lr in WORST_CASE_RATES
        ):
            by_rate.setdefault(r.zo_lr, []).append(r)
    return dict(sorted(by_rate.items()))


def complete_worst_cases(sweep: Sequence[Run]) -> dict[float, list[Run]]:
    """:func:`worst_case_runs` of the rates that ran no attack and every attack."""
    from study_mnist import ATTACKS

    return {
        lr: runs
        for lr, runs in worst_case_runs(sweep).items()
        if {r.attack for r in runs} >= set(ATTACKS)
    }


def worst_case_rate(sweep: Sequence[Run]) -> float | None:
    """The rate whose lowest validation accuracy over no attack and every attack is highest,
    among the rates that ran all of them; None before one has."""
    complete = complete_worst_cases(sweep)
    if not complete:
        return None
    return max(complete, key=lambda lr: min(r.final for r in complete[lr]))


def _rate_moves(
    complete: dict[float, list[Run]], base: float
) -> dict[float, tuple[list[str], list[str]]]:
    """For each rate of ``complete`` but ``base``: the attacks whose validation drop (against
    the same rate's no-attack run) it narrows, and those it widens, compared with ``base``."""
    from study_mnist import ATTACKS

    drops = {lr: drops_by_attack(runs) for lr, runs in complete.items()}
    moves = {}
    for lr in complete:
        if lr != base:
            change = {a: round(drops[lr][a] - drops[base][a], 6) for a in ATTACKS[1:]}
            moves[lr] = (
                [a for a, c in change.items() if c < 0],
                [a for a, c in change.items() if c > 0],
            )
    return moves


def worst_case_findings(sweep: Sequence[Run]) -> list[str]:
    """Sentences of the worst-case sweep: per rate its lowest accuracy and largest drop, then
    the rate it picks against the study's."""
    from study_mnist import ATTACKS, ZO_LR

    lines = []
    for lr, runs in worst_case_runs(sweep).items():
        worst = min(runs, key=lambda r: r.final)
        clean = next((r for r in runs if r.attack == "none"), None)
        drop = (
            f", largest drop {100 * (clean.final - worst.final):.2f} points"
            if clean is not None and worst is not clean
            else ""
        )
        lines.append(
            f"- η={lr:g} ({len(runs)} of {len(ATTACKS)} runs): lowest {pct(worst.final)}% "
            f"({worst.attack.upper()}), no attack "
            f"{f'{pct(clean.final)}%' if clean is not None else 'not run yet'}{drop}."
        )
    best = worst_case_rate(sweep)
    if best is not None:
        lines.append(
            f"- the best worst case over every attack: η={best:g}"
            + (
                " (the study's rate)."
                if best == ZO_LR[64]
                else f" (the study ran η={ZO_LR[64]:g})."
            )
        )
    return lines


def sweep_section(study: Study) -> list[str]:
    """The hyperparameter sweep table (validation accuracy)."""
    if not study.sweep:
        return ["No sweep results found."]
    chosen_zo = {(r.nu, r.zo_lr, r.zo_mu, r.zo_batch) for r in study.cells if r.method == "zo"}
    chosen_fo = {(r.fo_lr, r.fo_batch) for r in study.cells if r.method == "first_order"}
    rows = []
    order = sorted(
        study.sweep,
        key=lambda r: (
            r.method != "zo",
            -r.nu,
            r.attack != "none",
            r.attack,
            r.rounds,
            r.zo_lr,
            r.fo_lr,
            r.zo_mu,
            r.zo_batch,
        ),
    )
    for r in order:
        at = [pct(accuracy_at(r, t)) for t in (100, 300, 1000, 3000)]
        if r.method == "zo":
            method, lr, mu, batch = f"CYBER-0 ν={r.nu}", r.zo_lr, f"{r.zo_mu:g}", r.zo_batch
            used = (r.nu, r.zo_lr, r.zo_mu, r.zo_batch) in chosen_zo and r.attack == "none"
        else:
            method, lr, mu, batch = "first-order", r.fo_lr, "—", r.fo_batch
            used = (r.fo_lr, r.fo_batch) in chosen_fo
        rows.append(
            [
                method,
                r.attack,
                f"{lr:g}",
                mu,
                str(batch),
                str(r.rounds),
                *at,
                pct(r.final),
                "**used**" if used else "",
            ]
        )
    header = [
        "method",
        "attack",
        "lr η",
        "μ",
        "batch",
        "rounds",
        "@100",
        "@300",
        "@1000",
        "@3000",
        "final",
        "study",
    ]
    return table(header, rows)


def rate_section(study: Study) -> list[str]:
    """What the worst-case sweep says of the study's rate."""
    from study_mnist import ATTACKS, WORST_CASE_RATES, ZO_LR

    complete = complete_worst_cases(study.sweep)
    rates = ", ".join(f"{lr:g}" for lr in WORST_CASE_RATES)
    lines = [
        "The study's rate was read off a sweep without an attack. A second sweep on the same "
        f"validation split ran ν=64, K=1, CWTM at the study's batch and budget for η ∈ {{{rates}}}"
        " under no attack and every attack, and judged each rate by its lowest accuracy over "
        "them (*How the hyperparameters were chosen*, group `sweep-rate`).",
        "",
    ]
    if len(complete) < len(WORST_CASE_RATES):
        ran = sum(len(runs) for runs in worst_case_runs(study.sweep).values())
        needed = len(WORST_CASE_RATES) * len(ATTACKS)
        return [*lines, f"That sweep has not finished: {ran} of {needed} runs."]
    picked = worst_case_rate(study.sweep)
    if picked != ZO_LR[64]:
        return [
            *lines,
            f"It picks η={picked:g}, not the study's η={ZO_LR[64]:g}: the target block has not "
            "been rerun at that rate, so the table above is the study rate's only.",
        ]
    return [*lines, _own_rate_reading(complete, picked)]


def _objective_runs(study: Study, aggregator: str) -> dict[str, dict[str, Run]]:
    """Validation runs at the study's ν=64 settings with ``aggregator``, by objective (``plain``,
    ``balanced``) and attack: CWTM's plain ones are the worst-case sweep's at the study's rate."""
    from study_mnist import ZO_LR

    if aggregator == "cwtm":
        plain = worst_case_runs(study.sweep).get(ZO_LR[64], [])
    else:
        plain = [r for r in study.objective_runs if r.loss == "cross_entropy"]
    balanced = [r for r in study.objective_runs if r.loss == "balanced_cross_entropy"]
    return {
        name: {r.attack: r for r in runs if r.aggregator == aggregator and r.zo_lr == ZO_LR[64]}
        for name, runs in (("plain", plain), ("balanced", balanced))
    }


def _objective_table(
    runs: dict[str, dict[str, Run]], attacks: Sequence[str]
) -> tuple[list[str], dict[str, list[str]], dict[str, tuple[float, str]]]:
    """Accuracy and drop per attack under each objective: the table, the attacks within the
    tolerance, and the largest drop (points, attack) per objective."""
    plain, balanced = runs["plain"], runs["balanced"]
    rows = [["none", pct(plain["none"].final), "", pct(balanced["none"].final), ""]]
    within: dict[str, list[str]] = {"plain": [], "balanced": []}
    worst = {"plain": (0.0, ""), "balanced": (0.0, "")}
    for attack in attacks:
        drops = {name: 100 * (of["none"].final - of[attack].final) for name, of in runs.items()}
        for name, drop in drops.items():
            if drop <= 100 * TOLERANCE:
                within[name].append(attack.upper())
            worst[name] = max(worst[name], (drop, attack.upper()))
        rows.append(
            [
                attack,
                pct(plain[attack].final),
                f"{drops['plain']:+.2f}",
                pct(balanced[attack].final),
                f"{drops['balanced']:+.2f}",
            ]
        )
    header = ["attack", "mean CE", "drop", "balanced CE", "drop"]
    return table(header, rows), within, worst


def loss_section(study: Study) -> list[str]:
    """The class-balanced objective beside the plain one on the validation split (group
    ``sweep-loss``; CWTM's plain runs are the worst-case sweep's at the study's rate): accuracy
    and drop per attack, CWTM under every attack and NNM+CWTM under the attacks it misses."""
    from study_mnist import ATTACKS

    lines = [
        "Each client minimising the class-balanced cross-entropy (`loss: "
        "balanced_cross_entropy`: the mean over its minibatch's classes of each class's mean "
        "loss) removes the label skew's class prior from its objective: under pure label skew "
        "the clients' objectives then differ only in which classes they hold, and a "
        "label-flipping client no longer moves the prior. On the sentences (docs/"
        "results-text.md) that closed label flipping's gap. Here group `sweep-loss` reruns the "
        "worst-case sweep's runs at the study's rate (ν=64, K=1, CWTM, validation split, seed 0) "
        "with that objective:",
        "",
    ]
    cwtm = _objective_runs(study, "cwtm")
    if any(not set(ATTACKS) <= of.keys() for of in cwtm.values()):
        return [*lines, f"Not run yet: {len(cwtm['balanced'])} of {len(ATTACKS)} runs."]
    rows, within, worst = _objective_table(cwtm, ATTACKS[1:])
    lines += [
        *rows,
        "",
        f"Within {100 * TOLERANCE:.0f} points of the no-attack run: "
        + "; ".join(
            f"{name} {len(found)} of {len(ATTACKS) - 1} ({', '.join(found) or 'none'})"
            for name, found in within.items()
        )
        + f". Largest drop: plain {worst['plain'][0]:.2f} ({worst['plain'][1]}), balanced "
        f"{worst['balanced'][0]:.2f} ({worst['balanced'][1]})."
        + (
            " So on MNIST the balanced objective does not narrow CWTM's drops as a whole, and "
            "the study keeps the plain objective."
            if len(within["balanced"]) <= len(within["plain"])
            or worst["balanced"][0] >= worst["plain"][0]
            else " The balanced objective narrows CWTM's drops here; the test grid has not been "
            "rerun with it."
        ),
    ]
    nnm = _objective_runs(study, "nnm+cwtm")
    ran = [a for a in ATTACKS[1:] if all(a in of for of in nnm.values())]
    if ran and all("none" in of for of in nnm.values()):
        rows, _, _ = _objective_table(nnm, ran)
        moves = [
            f"{a.upper()} {100 * (nnm['plain']['none'].final - nnm['plain'][a].final):+.2f} → "
            f"{100 * (nnm['balanced']['none'].final - nnm['balanced'][a].final):+.2f}"
            for a in ran
        ]
        lines += [
            "",
            f"NNM+CWTM under the attacks it misses in the target block "
            f"({', '.join(a.upper() for a in ran)}), both objectives run by the group at the "
            "same settings:",
            "",
            *rows,
            "",
            f"Drop, plain → balanced: {'; '.join(moves)} points.",
        ]
    return lines


def _own_rate_reading(complete: dict[float, list[Run]], picked: float) -> str:
    """Why the worst-case sweep keeps the study's rate: each rate's lowest accuracy, and the
    attacks whose validation drop another rate narrows or widens."""
    lowest = {lr: min(runs, key=lambda r: r.final) for lr, runs in complete.items()}
    others = []
    for lr, (narrower, wider) in _rate_moves(complete, picked).items():
        moves = [
            f"{verb} the drop under {', '.join(a.upper() for a in found)}"
            for verb, found in (("narrows", narrower), ("widens", wider))
            if found
        ]
        others.append(
            f"η={lr:g} has {pct(lowest[lr].final)}% ({lowest[lr].attack.upper()})"
            + (f" and {' but '.join(moves)}" if moves else "")
        )
    return (
        f"It picks the study's own rate, η={picked:g}: its lowest validation accuracy is "
        f"{pct(lowest[picked].final)}% ({lowest[picked].attack.upper()}); "
        + "; ".join(others)
        + ". So the misses of the table above are not the price of a rate chosen without "
        "attacks: the table above stands."
    )


def rate_reading(study: Study) -> str:
    """One sentence: which attacks' validation drop a larger step narrows (*A rate chosen for
    the worst case*), once the worst-case sweep has run every rate and attack."""
    from study_mnist import WORST_CASE_RATES, ZO_LR

    complete = complete_worst_cases(study.sweep)
    base = ZO_LR[64]
    if base not in complete or len(complete) < len(WORST_CASE_RATES):
        return ""
    parts = [
        f"η={lr:g} narrows it under {', '.join(narrower) or 'none'} and widens it under "
        f"{', '.join(wider) or 'none'}"
        for lr, (narrower, wider) in _rate_moves(complete, base).items()
        if lr > base
    ]
    return (
        f" A larger step than η={base:g} tests it on the validation split (*A rate chosen for "
        f"the worst case*; drop against the same rate's no-attack run): {'; '.join(parts)}."
    )
