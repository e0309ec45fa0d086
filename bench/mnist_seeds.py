"""The test-split reruns of ``docs/results-mnist.md``: further seeds, more local steps, colluding
attackers, IID shards, whole shards and the longer budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

from mnist_runs import (
    AGGREGATORS,
    ATTACKS,
    FO_BLOCK,
    GOAL,
    HEADLINE_AGGREGATORS,
    IID_BLOCKS,
    K5_BLOCK,
    K5_UNBIASED_BLOCK,
    TARGET_BLOCK,
    TOLERANCE,
    Run,
    Study,
    accuracy_at,
    attack_drops,
    attacks_verdict,
    block_name,
    drop_points,
    drop_text,
    drops_by_seed,
    paired,
    pct,
    seed_drops,
    seeds_text,
    table,
)
from mnist_sweep import batch_text, tma_batch_drops


def local_steps_verdict(study: Study) -> str:
    """The target's test on the K=5 (biased) block, over every seed that ran: per headline
    rule, the runs beyond the tolerance, or that there are none."""
    parts = []
    for agg in HEADLINE_AGGREGATORS:
        drops = {a: seed_drops(study, agg, a, K5_BLOCK) for a in ATTACKS[1:]}
        ran = [a for a, d in drops.items() if d]
        if not ran:
            continue
        seeds = sorted({s for d in drops.values() for s in d})
        beyond = [
            f"{a} {100 * d:+.2f} (seed {s})"
            for a, by_seed in drops.items()
            for s, d in by_seed.items()
            if d > TOLERANCE
        ]
        runs = sum(len(d) for d in drops.values())
        plural = "s" if len(seeds) > 1 else ""
        where = f"{len(ran)} of {len(ATTACKS) - 1} attacks, seed{plural} "
        where += ", ".join(map(str, seeds))
        parts.append(
            f"{agg} ({where}; {runs} runs): "
            + (f"beyond under {', '.join(beyond)}" if beyond else "every run within")
        )
    if not parts:
        return ""
    return (
        f"The same test with K=5 local steps (biased variant: the same ν scalars a round), over "
        f"the seeds that ran (*More local steps across seeds*): {'; '.join(parts)}."
    )


def seed_section(
    study: Study,
    block: tuple[float, int, int, str] = TARGET_BLOCK,
    aggregators: Sequence[str] = HEADLINE_AGGREGATORS,
) -> list[str]:
    """A block again at further seeds (by default the target block): each attack's drop
    against the no-attack run of the same seed, and how the verdict reads over seeds."""
    from study_mnist import SEED

    if not any(r.block == block for r in study.spread):
        return ["Not run: every cell ran at seed 0 only."]
    seeds = _block_seeds(study, block, aggregators)
    rows: list[list[str]] = []
    beyond: list[str] = []
    mixed: list[str] = []
    within: list[str] = []
    lucky: list[str] = []
    for agg in aggregators:
        for attack in ATTACKS:
            runs = {s: study.by_seed.get((block, agg, attack, s)) for s in seeds}
            if all(runs[s] is None for s in seeds if s != SEED):
                continue
            accs = " / ".join(pct(r.final if r else None) for r in runs.values())
            if attack == "none":
                finals = [r.final for r in runs.values() if r]
                spread = f"spread {100 * (max(finals) - min(finals)):.2f} pts"
                rows.append([agg, attack, accs, "", spread, ""])
                continue
            by_seed = seed_drops(study, agg, attack, block)
            drops = [by_seed.get(s) for s in seeds]
            known = [d for d in drops if d is not None]
            mean = sum(known) / len(known)
            name = f"{agg} {attack}"
            if all(d <= TOLERANCE for d in known):
                within.append(name)
            elif mean > TOLERANCE:
                beyond.append(name)
            else:
                mixed.append(name)
            if drops[0] is not None and drops[0] <= TOLERANCE < mean:
                lucky.append(name)
            rows.append(
                [
                    agg,
                    attack,
                    accs,
                    " / ".join("—" if d is None else f"{100 * d:+.2f}" for d in drops),
                    f"{100 * mean:+.2f} ({len(known)} seeds)",
                    "yes" if all(d <= TOLERANCE for d in known) else "no",
                ]
            )
    header = [
        "rule",
        "attack",
        f"test acc. (%), seeds {' / '.join(map(str, seeds))}",
        "drop vs same-seed no attack (pts)",
        "mean drop",
        f"within {100 * TOLERANCE:.0f} at every seed",
    ]
    lines = table(header, rows)
    lines += [
        "",
        f"Within {100 * TOLERANCE:.0f} points at every seed: {', '.join(within) or 'none'}. "
        f"Beyond it on average: {', '.join(beyond) or 'none'}. Beyond it at some seeds but "
        f"within on average: {', '.join(mixed) or 'none'}. A seed changes the Dirichlet "
        "partition, the minibatches, the directions and the attack's noise.",
    ]
    if lucky:
        lines[-1] += (
            f" Met at seed 0 ({block_name(block)}) but beyond {100 * TOLERANCE:.0f} points on "
            f"average over the seeds: {', '.join(lucky)}; for these the seed-0 verdict is "
            "luck, not robustness."
        )
    return lines


def _block_seeds(
    study: Study, block: tuple[float, int, int, str], aggregators: Sequence[str]
) -> list[int]:
    """The seeds at which any of ``aggregators`` ran in ``block``, in order."""
    runs = [*study.cells, *study.spread]
    return sorted({r.seed for r in runs if r.block == block and r.aggregator in aggregators})


def local_steps_section(study: Study) -> list[str]:
    """The headline rules at K=5 (biased) across seeds, and each attack's mean drop over seeds
    against the target block's (K=1) over the same seeds."""
    sf = " / ".join(f"{100 * d:+.2f}" for d in seed_drops(study, "nnm+cwtm", "sf").values())
    rules = [
        rule
        for rule in HEADLINE_AGGREGATORS
        if any(r.block == K5_BLOCK and r.aggregator == rule for r in study.spread)
    ]
    from study_mnist import EXTRA_SEEDS, SPREAD_SEEDS

    extra = [s for s in _block_seeds(study, K5_BLOCK, ("nnm+cwtm",)) if s in EXTRA_SEEDS]
    lines = [
        f"NNM+CWTM's misses in the target block depend on the seed (SF drop by seed: {sf} "
        "points). Group `k5seeds` reruns NNM+CWTM with K=5 local steps, biased variant, at "
        "seeds 1 and 2, then CWTM, its misses at K=5 and seed 0 (LF, TMA) first: each client "
        "sums its K steps' scalars on the same ν directions, so it sends the ν scalars a round "
        "of K=1 while each vector averages K minibatches. Same rates as K=1 (not tuned); the "
        "seed-0 runs are the grid's cells."
        + (
            f" NNM+CWTM, within {100 * TOLERANCE:.0f} points under every attack at seeds "
            f"0–{max(SPREAD_SEEDS)}, "
            f"then ran at seed{'s' if len(extra) > 1 else ''} {' and '.join(map(str, extra))} "
            "too, to see whether that holds."
            if extra
            else ""
        ),
        "",
    ]
    table_lines = seed_section(study, K5_BLOCK, rules)
    lines += table_lines
    if len(table_lines) == 1:
        return lines
    for rule in rules:
        pairs = []
        for attack in ATTACKS[1:]:
            common, fives, ones = paired(
                seed_drops(study, rule, attack, K5_BLOCK), seed_drops(study, rule, attack)
            )
            if len(common) >= 2:
                pairs.append(
                    f"{attack} {100 * fmean(ones):+.2f} → {100 * fmean(fives):+.2f} (max "
                    f"{100 * max(ones):+.2f} → {100 * max(fives):+.2f}, {len(common)} seeds)"
                )
        if pairs:
            lines += [
                "",
                f"Mean drop over the seeds both ran, K=1 → K=5 ({rule}, points; the worst seed "
                f"in brackets): {'; '.join(pairs)}.",
            ]
    if any(r.block == K5_UNBIASED_BLOCK for r in study.spread):
        lines += [
            "",
            "NNM+CWTM with K=5 in the unbiased variant (fresh directions at every local step: "
            "each client sends K·ν scalars a round, five times K=1's), at the same seeds:",
            "",
            *seed_section(study, K5_UNBIASED_BLOCK, ("nnm+cwtm",)),
        ]
    return lines


def colluding_section(study: Study) -> list[str]:
    """The target block at seed 0 with colluding attackers beside the omniscient ones: each
    attack's drop against the no-attack run."""
    from study_mnist import COLLUDING_ATTACKS, SEED

    block = TARGET_BLOCK
    colluding = {
        (r.aggregator, r.attack): r for r in study.colluding if r.block == block and r.seed == SEED
    }
    if not colluding:
        return ["Not run."]
    rows: list[list[str]] = []
    within: list[str] = []
    beyond: list[str] = []
    both: list[str] = []
    sends: list[tuple[float, float]] = []  # SF and FOE: (omniscient, colluding) drops
    weaker: list[str] = []
    stronger: list[str] = []
    for agg in HEADLINE_AGGREGATORS:
        base = study.get(block, agg, "none")
        for attack in COLLUDING_ATTACKS:
            run, omni = colluding.get((agg, attack)), study.get(block, agg, attack)
            if run is None:
                continue
            drops = [drop_points(base, r) for r in (omni, run)]
            shown = ["—" if d is None else f"{100 * d:+.2f}" for d in drops]
            name = f"{agg} {attack}"
            if drops[1] is not None:
                (within if drops[1] <= TOLERANCE else beyond).append(name)
            if drops[0] is not None and drops[1] is not None:
                if drops[0] > TOLERANCE and drops[1] > TOLERANCE:
                    both.append(name)
                if attack in ("sf", "foe"):
                    sends.append((drops[0], drops[1]))
                seeds = list(seed_drops(study, agg, attack).values())
                if len(seeds) >= 2 and abs(drops[1] - drops[0]) > max(seeds) - min(seeds):
                    change = f"{name} ({100 * drops[0]:+.2f} → {100 * drops[1]:+.2f})"
                    (weaker if drops[1] < drops[0] else stronger).append(change)
            rows.append(
                [
                    agg,
                    attack,
                    pct(omni.final if omni else None),
                    shown[0],
                    pct(run.final),
                    shown[1],
                    "—" if drops[1] is None else ("yes" if drops[1] <= TOLERANCE else "no"),
                ]
            )
    header = [
        "rule",
        "attack",
        "omniscient: test acc. (%)",
        "drop (pts)",
        "colluding: test acc. (%)",
        "drop (pts)",
        f"colluding within {100 * TOLERANCE:.0f}",
    ]
    lines = table(header, rows)
    lines += [
        "",
        f"Colluding attackers within {100 * TOLERANCE:.0f} points of the no-attack run: "
        f"{', '.join(within) or 'none'}; beyond: {', '.join(beyond) or 'none'}.",
        "",
        "A colluding attack's drop differs from the omniscient one's by more than the "
        "omniscient drop moves over seeds (*Seed spread*) for: "
        f"{', '.join(weaker) or 'none'} weaker without the honest vectors; "
        f"{', '.join(stronger) or 'none'} stronger. Beyond {100 * TOLERANCE:.0f} points in "
        f"both modes: {', '.join(both) or 'none'}.",
    ]
    if sends:
        omni_mean, coll_mean = (100 * sum(d) / len(sends) for d in zip(*sends, strict=True))
        lines[-1] += (
            f" Over the SF and FOE cells the mean drop is {omni_mean:+.2f} points omniscient "
            f"and {coll_mean:+.2f} colluding: both attacks send a multiple of −μ_h, and the mean "
            "of the colluders' own vectors points almost where the honest mean does when their "
            "shards are drawn like everyone else's, so the target's misses under these attacks "
            "do not come from granting the attackers the honest vectors."
        )
    return lines


def iid_section(study: Study) -> list[str]:
    """The target block's rules on IID shards beside the same cells at α=1 (seed 0), with
    first-order CWTM on IID shards: each attack's drop against its own partition's no-attack
    run, and which of the α=1 misses close without the label skew."""
    from study_mnist import SEED

    if not study.iid:
        return ["Not run."]

    def iid(block: tuple[float, int, int, str], agg: str, attack: str) -> Run | None:
        return study.iid_by_seed.get((block, agg, attack, SEED))

    rows: list[list[str]] = []
    within: list[str] = []
    beyond: list[str] = []
    closed: list[str] = []
    kept: list[str] = []
    for agg in HEADLINE_AGGREGATORS:
        skew_base = study.get(TARGET_BLOCK, agg, "none")
        iid_base, fo_base = iid(TARGET_BLOCK, agg, "none"), iid(FO_BLOCK, agg, "none")
        if iid_base is None and fo_base is None:
            continue
        for attack in ATTACKS:
            skew, run = study.get(TARGET_BLOCK, agg, attack), iid(TARGET_BLOCK, agg, attack)
            fo = iid(FO_BLOCK, agg, attack)
            if run is None and fo is None:
                continue
            drops = [drop_points(b, r) for b, r in ((skew_base, skew), (iid_base, run))]
            fo_drop = drop_points(fo_base, fo)
            shown = [
                "" if attack == "none" or d is None else f"{100 * d:+.2f}"
                for d in (*drops, fo_drop)
            ]
            name = f"{agg} {attack}"
            if attack != "none" and drops[1] is not None:
                (within if drops[1] <= TOLERANCE else beyond).append(name)
                if drops[0] is not None and drops[0] > TOLERANCE:
                    change = f"{name} ({100 * drops[0]:+.2f} → {100 * drops[1]:+.2f})"
                    (closed if drops[1] <= TOLERANCE else kept).append(change)
            rows.append(
                [
                    agg,
                    attack,
                    pct(skew.final if skew else None),
                    shown[0],
                    pct(run.final if run else None),
                    shown[1],
                    pct(fo.final if fo else None),
                    shown[2],
                ]
            )
    header = [
        "rule",
        "attack",
        "α=1: test acc. (%)",
        "drop (pts)",
        "IID: test acc. (%)",
        "drop (pts)",
        "first-order, IID (%)",
        "drop (pts)",
    ]
    tol = f"{100 * TOLERANCE:.0f}"
    return [
        *table(header, rows),
        "",
        f"CYBER-0 on IID shards, within {tol} points of its no-attack run: "
        f"{', '.join(within) or 'none'}; beyond: {', '.join(beyond) or 'none'}.",
        "",
        f"Beyond {tol} points at α=1 and within on IID shards (seed 0 on both sides): "
        f"{', '.join(closed) or 'none'}; beyond on both: {', '.join(kept) or 'none'}.",
        *_iid_seeds(study),
    ]


def _iid_seed_drops(
    study: Study, aggregator: str, attack: str, block: tuple[float, int, int, str] = TARGET_BLOCK
) -> dict[int, float]:
    """:func:`seed_drops` of the CYBER-0 runs on IID shards."""
    return drops_by_seed(study.iid_by_seed, block, aggregator, attack)


def _iid_drops(
    study: Study, aggregator: str, block: tuple[float, int, int, str] = TARGET_BLOCK
) -> dict[str, dict[int, float]]:
    """:func:`_iid_seed_drops` of every attack that ran with ``aggregator`` in ``block``."""
    return attack_drops(study.iid_by_seed, block, aggregator)


def _iid_rule(aggregator: str, block: tuple[float, int, int, str]) -> str:
    """``cwtm``, or ``cwtm at K=5 biased`` outside the target block's K."""
    _, _, k, variant = block
    return aggregator if block == TARGET_BLOCK else f"{aggregator} at K={k} {variant}"


def iid_verdict(study: Study) -> str:
    """One sentence: the target's test on IID shards, per block and headline rule over the
    seeds it ran (*Without label skew*); empty before the group ran."""
    parts = []
    for block in IID_BLOCKS:
        for agg in HEADLINE_AGGREGATORS:
            drops = _iid_drops(study, agg, block)
            if drops:
                parts.append(attacks_verdict(_iid_rule(agg, block), drops))
    if not parts:
        return ""
    return (
        "The same test on IID shards, without label skew (*Without label skew*): "
        f"{'; '.join(parts)}."
    )


def _iid_seeds(study: Study) -> list[str]:
    """Per block and headline rule that ran on IID shards at several seeds: the attacks within
    the tolerance at every seed, the others' mean and worst drops, and each attack's mean drop
    at α=1 (same block) beside its IID one over the seeds both ran."""
    lines: list[str] = []
    for block in IID_BLOCKS:
        for agg in HEADLINE_AGGREGATORS:
            drops = _iid_drops(study, agg, block)
            seeds = sorted({s for d in drops.values() for s in d})
            if len(seeds) < 2:
                continue
            held = [a for a, d in drops.items() if max(d.values()) <= TOLERANCE]
            others = [drop_text(a, d) for a, d in drops.items() if a not in held]
            pairs = []
            for attack, by_seed in drops.items():
                both, iid, skew = paired(by_seed, seed_drops(study, agg, attack, block))
                if len(both) >= 2:
                    pairs.append(f"{attack} {100 * fmean(skew):+.2f} → {100 * fmean(iid):+.2f}")
            lines += [
                "",
                f"{_iid_rule(agg, block)} on IID shards at {seeds_text(seeds)}: within "
                f"{100 * TOLERANCE:.0f} points at every seed: {', '.join(held) or 'none'}; the "
                f"others: {', '.join(others) or 'none'}.",
            ]
            if pairs:
                lines[-1] += (
                    f" Mean drop over the seeds both ran, α=1 → IID (points): {'; '.join(pairs)}."
                )
    return lines


def _whole_seeds(study: Study) -> list[int]:
    """The seeds at which CWTM's whole-shard no-attack run ran (group ``whole``)."""
    return sorted(
        s for (_, agg, attack, s) in study.whole_by_seed if (agg, attack) == ("cwtm", "none")
    )


def whole_section(study: Study) -> list[str]:
    """CWTM in the target block with every client's whole shard a step (group ``whole``), at
    every seed it ran: test accuracies, each attack's drop against the same seed's no-attack
    run, and its mean drop at the grid's batch over the same seeds."""
    from study_mnist import ZO_BATCH

    seeds = _whole_seeds(study)
    if not seeds:
        return ["Not run."]
    drops = attack_drops(study.whole_by_seed, TARGET_BLOCK, "cwtm")
    rows: list[list[str]] = []
    for attack in ATTACKS:
        runs = [study.whole_by_seed.get((TARGET_BLOCK, "cwtm", attack, s)) for s in seeds]
        if all(r is None for r in runs):
            continue
        accs = " / ".join(pct(r.final if r else None) for r in runs)
        by_seed = drops.get(attack)
        if attack == "none" or not by_seed:
            rows.append([attack, accs, "", "", "", ""])
            continue
        both, whole, grid = paired(by_seed, seed_drops(study, "cwtm", attack))
        rows.append(
            [
                attack,
                accs,
                " / ".join("—" if s not in by_seed else f"{100 * by_seed[s]:+.2f}" for s in seeds),
                f"{100 * fmean(by_seed.values()):+.2f} ({seeds_text(list(by_seed))})",
                f"{100 * fmean(grid):+.2f} → {100 * fmean(whole):+.2f}" if both else "—",
                "yes" if max(by_seed.values()) <= TOLERANCE else "no",
            ]
        )
    bases = [study.whole_by_seed[(TARGET_BLOCK, "cwtm", "none", s)] for s in seeds]
    header = [
        "attack",
        f"test acc. (%), seeds {' / '.join(map(str, seeds))}",
        "drop vs same-seed no attack (pts)",
        "mean drop",
        f"mean drop, batch {ZO_BATCH} → whole shards (same seeds)",
        f"within {100 * TOLERANCE:.0f} at every seed",
    ]
    goal_met = all(r.final >= GOAL for r in bases)
    return [
        *table(header, rows),
        "",
        f"Without an attack: {' / '.join(pct(r.final) for r in bases)}% "
        f"({'at least' if goal_met else 'not at every seed'} {pct(GOAL)}%). Under attack: "
        f"{attacks_verdict('cwtm with whole shards', drops) if drops else 'none ran yet'}.",
    ]


def whole_verdict(study: Study) -> str:
    """One sentence: the target's test on CWTM's whole-shard runs over the seeds they ran
    (*Every client's whole shard*); empty before group ``whole`` ran an attack."""
    from study_mnist import WHOLE_SHARD

    drops = attack_drops(study.whole_by_seed, TARGET_BLOCK, "cwtm")
    if not drops:
        return ""
    return (
        f"The same test with every client's whole shard a step (batch {WHOLE_SHARD}, the "
        "validation sweep's closest batch to the target; *Every client's whole shard*): "
        f"{attacks_verdict('cwtm', drops)}."
    )


def colluding_k5_section(study: Study) -> list[str]:
    """NNM+CWTM with K=5 (biased), the block within the tolerance at every seed, against
    colluding attackers at each seed they ran: each attack's drop against the same seed's
    no-attack run beside the omniscient attack's."""
    from study_mnist import COLLUDING_ATTACKS

    block, agg = K5_BLOCK, "nnm+cwtm"
    colluding = {
        (r.attack, r.seed): r for r in study.colluding if r.block == block and r.aggregator == agg
    }
    seeds = sorted({seed for _, seed in colluding})
    if not seeds:
        return ["Not run."]
    rows: list[list[str]] = []
    held: list[str] = []
    missed: list[str] = []

    def shown(drops: dict[int, float]) -> str:
        return " / ".join("—" if s not in drops else f"{100 * drops[s]:+.2f}" for s in seeds)

    for attack in COLLUDING_ATTACKS:
        by_mode: dict[str, dict[int, float]] = {"omniscient": {}, "colluding": {}}
        for seed in seeds:
            base = study.by_seed.get((block, agg, "none", seed))
            omni = study.by_seed.get((block, agg, attack, seed))
            for mode, run in (("omniscient", omni), ("colluding", colluding.get((attack, seed)))):
                if (drop := drop_points(base, run)) is not None:
                    by_mode[mode][seed] = drop
        drops = by_mode["colluding"]
        if not drops:
            continue
        within = max(drops.values()) <= TOLERANCE
        (held if within else missed).append(drop_text(attack, drops))
        rows.append(
            [
                agg,
                attack,
                shown(by_mode["omniscient"]),
                shown(drops),
                f"{100 * fmean(drops.values()):+.2f}",
                "yes" if within else "no",
            ]
        )
    by_seed = " / ".join(map(str, seeds))
    header = [
        "rule",
        "attack",
        f"omniscient: drop, seeds {by_seed} (pts)",
        f"colluding: drop, seeds {by_seed} (pts)",
        "colluding: mean drop",
        f"colluding within {100 * TOLERANCE:.0f} at every seed",
    ]
    return [
        *table(header, rows),
        "",
        f"Colluding attackers against {agg} at {block_name(block)}, within "
        f"{100 * TOLERANCE:.0f} points at every seed: {', '.join(held) or 'none'}; beyond at "
        f"some seed: {', '.join(missed) or 'none'}.",
    ]


def _standard(study: Study, run: Run) -> Run | None:
    """The grid's run of the same cell and seed as a long run."""
    return study.by_seed.get((run.block, run.aggregator, run.attack, run.seed))


def _long_accuracy(study: Study, run: Run, round: int) -> float | None:
    """A long run's accuracy at ``round``, read from its standard run up to that run's end (the
    same computation, evaluated every round the grid evaluates, so exact at the budget)."""
    standard = _standard(study, run)
    source = standard if standard is not None and round <= standard.rounds else run
    return accuracy_at(source, round)


@dataclass(frozen=True)
class LongRead:
    """The long runs read at ``marks`` (the grid's budget, halfway, the end): per run, in
    reading order (rule, seed, attack), its accuracies and its drops against the same seed's
    no-attack long run (None for that run, or where a mark is missing)."""

    marks: tuple[int, ...]
    rows: tuple[tuple[Run, tuple[float | None, ...], tuple[float, ...] | None], ...]

    @classmethod
    def of(cls, study: Study) -> LongRead:
        runs = sorted(
            study.long,
            key=lambda r: (AGGREGATORS.index(r.aggregator), r.seed, ATTACKS.index(r.attack)),
        )
        standards = [s for r in runs if (s := _standard(study, r)) is not None]
        short = min((s.rounds for s in standards), default=0)
        end = max((r.rounds for r in runs), default=0)
        marks = (short, (short + end) // 2, end) if short else (end,)
        accs = {r.id: tuple(_long_accuracy(study, r, m) for m in marks) for r in runs}
        bases = {(r.block, r.aggregator, r.seed): accs[r.id] for r in runs if r.attack == "none"}
        rows = []
        for run in runs:
            base = bases.get((run.block, run.aggregator, run.seed))
            ours = accs[run.id]
            gaps = None if run.attack == "none" or base is None else _drops(ours, base)
            rows.append((run, ours, gaps))
        return cls(marks, tuple(rows))

    def ends(self, within: bool) -> list[tuple[Run, tuple[float, ...]]]:
        """The attacked runs whose last drop is (``within``) or is not within the tolerance."""
        return [(r, g) for r, _, g in self.rows if g and (g[-1] <= TOLERANCE) == within]

    def names(self, within: bool) -> str:
        """``cwtm sf +2.89 → +1.92, …`` (drop at the budget → at the end) or ``none``."""
        return (
            ", ".join(
                f"{_seed_name(r)} {100 * g[0]:+.2f} → {100 * g[-1]:+.2f}"
                for r, g in self.ends(within)
            )
            or "none"
        )


def _drops(ours: Sequence[float | None], base: Sequence[float | None]) -> tuple[float, ...] | None:
    """``base − ours`` mark by mark; None if either misses one."""
    drops = []
    for a, b in zip(ours, base, strict=True):
        if a is None or b is None:
            return None
        drops.append(b - a)
    return tuple(drops)


def _seed_name(run: Run) -> str:
    """``nnm+cwtm sf (seed 1)``; seed 0 unnamed."""
    return f"{run.aggregator} {run.attack}" + (f" (seed {run.seed})" if run.seed else "")


def long_section(study: Study) -> list[str]:
    """The long-budget group: each run beside the standard run of the same cell and seed (the
    first rounds are the same computation), and whether its gap to no attack closes."""
    if not study.long:
        return ["Not run."]
    read = LongRead.of(study)
    marks = read.marks
    rows: list[list[str]] = []
    same: list[bool] = []
    compared = 0
    for run, accs, gaps in read.rows:
        standard = _standard(study, run)
        if standard is not None:
            ours = {h["round"]: h["test_accuracy"] for h in run.history}
            shared = [h for h in standard.history if h["round"] in ours]
            same.append(all(ours[h["round"]] == h["test_accuracy"] for h in shared))
            compared += len(shared)
        rows.append(
            [
                run.aggregator,
                run.attack,
                str(run.seed),
                *map(pct, accs),
                "" if gaps is None else " / ".join(f"{100 * g:+.2f}" for g in gaps),
                "" if gaps is None else ("yes" if gaps[-1] <= TOLERANCE else "no"),
            ]
        )
    header = [
        "rule",
        "attack",
        "seed",
        *(f"acc. @{m} (%)" for m in marks),
        f"drop @{' / '.join(map(str, marks))} (pts)",
        f"within {100 * TOLERANCE:.0f} @{marks[-1]}",
    ]
    lines = table(header, rows)
    lines += [
        "",
        "Each value is the last evaluation at or before that round (up to the grid's budget, "
        "the standard run's). Drop against the same seed's no-attack run, at the budget → at "
        f"round {marks[-1]}: within {100 * TOLERANCE:.0f} points at the end: "
        f"{read.names(True)}; beyond: {read.names(False)}.",
    ]
    if stays := read.ends(False):
        best = [(r, max(r.history, key=lambda h: h["test_accuracy"])) for r, _ in stays]
        lines[-1] += " The best accuracy of each run that ends beyond, and its round: " + (
            ", ".join(
                f"{_seed_name(r)} {pct(h['test_accuracy'])} at {h['round']:.0f}" for r, h in best
            )
            + "."
        )
    if same:
        lines[-1] += (
            f" The long runs repeat their {marks[0]}-round runs exactly: at every evaluation "
            f"round a long run shares with its standard run ({compared} in all) the accuracies "
            "are "
            + ("equal in every run" if all(same) else f"equal in {sum(same)} of {len(same)} runs")
            + " (same seed, same plan; the budget only adds rounds)."
        )
    return lines


def iid_reading(study: Study) -> str:
    """A few sentences: CWTM's drop under TMA on IID shards beside α=1's, over the seeds both
    ran, at K=1 and at K=5 (biased), first-order CWTM's at seed 0 (*Without label skew*), and
    the batch sweep's on both partitions."""
    from study_mnist import SEED

    seeds, iid, skew = paired(
        _iid_seed_drops(study, "cwtm", "tma"), seed_drops(study, "cwtm", "tma")
    )
    if not seeds:
        return ""
    mean_iid, mean_skew = fmean(iid), fmean(skew)
    text = (
        f" On IID shards, where the honest spread is minibatch noise alone, CWTM under TMA "
        f"loses {100 * mean_iid:.2f} points on average over {seeds_text(seeds)} against "
        f"{100 * mean_skew:.2f} at α=1 (*Without label skew*)"
    )
    fo_skew = drop_points(study.fo(1.0, "cwtm", "none"), study.fo(1.0, "cwtm", "tma"))
    fo_iid = drop_points(
        *(study.iid_by_seed.get((FO_BLOCK, "cwtm", a, SEED)) for a in ("none", "tma"))
    )
    if fo_skew is not None and fo_iid is not None:
        text += (
            f"; first-order CWTM loses {100 * fo_iid:.2f} there against {100 * fo_skew:.2f} "
            "at α=1 (seed 0)"
        )
    if mean_iid >= mean_skew / 2:
        text += (
            ": at the study's batch most of the gap TMA opens in CYBER-0 is there without the "
            f"label skew, which adds {100 * (mean_skew - mean_iid):.2f} points to it."
        )
    else:
        text += ": most of the gap TMA opens in CYBER-0 comes with the label skew."
    k5_seeds, iid_k5, skew_k5 = paired(
        _iid_seed_drops(study, "cwtm", "tma", K5_BLOCK),
        seed_drops(study, "cwtm", "tma", K5_BLOCK),
    )
    if k5_seeds:
        mean_iid_k5, mean_skew_k5 = fmean(iid_k5), fmean(skew_k5)
        text += (
            f" With K=5 (biased) it loses {100 * mean_iid_k5:.2f} points on IID shards against "
            f"{100 * mean_skew_k5:.2f} at α=1 ({seeds_text(k5_seeds)}): the local steps cut "
            f"the part without skew from {100 * mean_iid:.2f} to {100 * mean_iid_k5:.2f} "
            f"points, and the label skew adds {100 * (mean_skew_k5 - mean_iid_k5):.2f} where "
            f"it added {100 * (mean_skew - mean_iid):.2f} at K=1."
        )
    batch_skew, batch_iid = tma_batch_drops(study)
    if len(batch_iid) >= 2:
        widest = max(batch_iid)
        text += (
            f" On the validation split (the sweep, seed 0), at {batch_text(widest)} the drop is "
            f"{100 * batch_iid[widest][1]:.2f} points on IID shards against "
            f"{100 * batch_skew[widest][1]:.2f} at α=1: a larger batch shrinks the minibatch "
            "noise's part, not the skew's."
        )
    return text


def whole_reading(study: Study) -> str:
    """A sentence: CWTM's drop under TMA with every client's whole shard on the test split
    (*Every client's whole shard*) beside the grid batch's over the seeds both ran."""
    from study_mnist import ZO_BATCH

    whole = drops_by_seed(study.whole_by_seed, TARGET_BLOCK, "cwtm", "tma")
    seeds, ours, grid = paired(whole, seed_drops(study, "cwtm", "tma"))
    if not seeds:
        return ""
    held = [s for s in seeds if whole[s] <= TOLERANCE]
    text = (
        f" On the test split with every client's whole shard a step (*Every client's whole "
        f"shard*), CWTM under TMA loses {100 * fmean(ours):.2f} points on average over "
        f"{seeds_text(seeds)} (worst {100 * max(ours):.2f}) against {100 * fmean(grid):.2f} "
        f"at batch {ZO_BATCH}; within {100 * TOLERANCE:.0f} points at {len(held)} of "
        f"{len(seeds)} seeds"
    )
    if len(held) < len(seeds):
        return text + (
            ": with no minibatch noise left, what the clients' different data leave of the "
            "gap is enough to miss the target, so no batch makes CWTM alone hold TMA off at every "
            "seed under this label skew."
        )
    return text + ": without minibatch noise CWTM holds TMA off at every seed that ran."


def long_reading(study: Study) -> str:
    """One sentence: which lagging cells catch up with more rounds (*Longer budget*)."""
    if not study.long:
        return ""
    read = LongRead.of(study)
    return (
        f" *Longer budget* puts this reading to the test with {read.marks[-1]} rounds "
        "(drop at the budget → at the end, points): the gap ends within "
        f"{100 * TOLERANCE:.0f} points for {read.names(True)} (a slower run, not a worse one), "
        f"and ends beyond for {read.names(False)}."
    )
