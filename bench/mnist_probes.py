"""The probe runs' sections of ``docs/results-mnist.md`` (``bench/probe_mnist.py``): where the
aggregate points against the honest mean, and NNM's neighbours.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean, median_high
from typing import Any

from mnist_runs import history_accuracy, pct, table

#: Probe files (``bench/probe_mnist.py``), beside the current results folder.
PROBES = "probe"
#: Probes that log NNM's neighbours, inside :data:`PROBES` (apart from its older files, which
#: ran with earlier directions and which its sections read).
NEIGHBOURS = "neighbours"


def _probes(folder: Path) -> list[dict[str, Any]]:
    """The probe files in ``folder``, by name."""
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def _along(data: dict[str, Any]) -> list[float]:
    """Per round, the aggregate's component along the honest mean: a·μ_h/|μ_h|."""
    return [p * n for p, n in zip(data["projection"], data["honest_norm"], strict=True)]


def probe_section(folder: Path, windows: int = 8) -> list[str]:
    """Each probe file in ``windows`` stretches of rounds: how much of the honest mean the
    aggregate carries along it, the cosine between them, and the accuracy reached."""
    probes = _probes(folder)
    if not probes:
        return ["No probe has run (`python bench/probe_mnist.py`)."]
    rows: list[list[str]] = []
    summary: list[str] = []
    for data in probes:
        cosine, projection, spread = data["cosine"], data["projection"], data["spread"]
        along = _along(data)
        size = max(1, len(cosine) // windows)
        for lo in range(0, len(cosine), size):
            hi = min(lo + size, len(cosine))
            n = hi - lo
            rows.append(
                [
                    f"`{data['cell']}`",
                    f"{lo + 1}–{hi}",
                    f"{fmean(projection[lo:hi]):+.3f}",
                    f"{fmean(cosine[lo:hi]):+.2f}",
                    f"{100 * sum(c < 0 for c in cosine[lo:hi]) / n:.0f}",
                    f"{median_high(spread[lo:hi]):.2f}",
                    f"{fmean(along[lo:hi]):+.4f}",
                    pct(history_accuracy(data["history"], hi)),
                ]
            )
        half = len(cosine) // 2
        summary.append(
            f"`{data['cell']}` {100 * fmean(projection[half:]):.1f}% over rounds "
            f"{half + 1}–{len(cosine)}"
        )
    lines = table(
        [
            "cell",
            "rounds",
            "projection a·μ_h/|μ_h|²",
            "cos(a, μ_h)",
            "cos < 0 (% of rounds)",
            "median spread / |μ_h|",
            "along μ_h: a·μ_h/|μ_h|",
            "acc. at the end (%)",
        ],
        rows,
    )
    return [
        *lines,
        "",
        "Means over each stretch of rounds (the spread: its median). Share of the honest "
        f"mean the aggregate carries along it: {'; '.join(summary)}.",
        "",
        "Read with the table (side runs of 800 rounds, the same computation as the cells' "
        "first 800 rounds): without an attack, NNM+CWTM carries about half of the honest "
        "mean along it. Under SF the share falls far below the third that mixing alone "
        "would leave (10 honest rows and 5 at −μ_h in each mixed vector: 2/3 − 1/3); the "
        "probe does not tell how much of the rest the trimming and the choice of neighbours "
        "each take. At seed 0 the "
        "share stays positive and training goes on, slowly. At seed 1 it falls to about "
        "zero after round 400, while the honest spread is smaller against |μ_h| than "
        "before: the aggregate is then nearly orthogonal to the honest descent direction "
        "(a negative cosine in about half of the rounds), so the model stops improving and "
        "drifts: the stall *Longer budget* shows at 3000 rounds.",
    ]


def _neighbour_probes(folder: Path) -> list[dict[str, Any]]:
    """The probes in ``folder`` that logged ``byzantine_neighbours``, α=1 first."""
    found = [d for d in _probes(folder) if "byzantine_neighbours" in d]
    return sorted(found, key=lambda d: -d["config"]["data"]["alpha"])


def _neighbour_chance() -> float:
    """The Byzantine share of an honest vector's NNM neighbours if its n − f − 1 others were
    picked at random among the n − 1 other vectors."""
    from study_mnist import N_CLIENTS, F

    return (N_CLIENTS - F - 1) / (N_CLIENTS - 1)


def _neighbour_late(data: dict[str, Any]) -> dict[str, float]:
    """A neighbour probe's later-half means: the Byzantine share of the neighbours, the
    crowded honest vectors, the mixed vectors against μ_h, the carriers, and the cosine."""
    half = len(data["cosine"]) // 2
    late = {
        k: fmean(data[k][half:])
        for k in ("byzantine_neighbours", "crowded", "mixed_against", "carriers")
    }
    return late | {"cosine": _late(data)["cosine"]}


def _reading_key(data: dict[str, Any]) -> tuple[float, str] | None:
    """(α, attack) of a seed-0 NNM+CWTM probe, the ones the readings compare; else None."""
    config = data["config"]
    if config["aggregator"]["name"] != "nnm+cwtm" or config["seed"] != 0:
        return None
    return config["data"]["alpha"], config["attack"]["name"]


def neighbour_shares(folder: Path) -> dict[tuple[float, str], float]:
    """(α, attack) -> the Byzantine share of the honest vectors' NNM neighbours over the later
    half of the seed-0 NNM+CWTM probe of that setting."""
    return {
        key: _neighbour_late(data)["byzantine_neighbours"]
        for data in _neighbour_probes(folder)
        if (key := _reading_key(data)) is not None
    }


def neighbour_section(folder: Path) -> list[str]:
    """The probes that logged NNM's neighbours, over their later half: the Byzantine share of
    an honest vector's neighbours beside chance, how many honest vectors have all f attackers
    among them, how few honest vectors carry half the honest mean, where the aggregate points
    and the test loss."""
    from study_mnist import N_CLIENTS, F

    probes = _neighbour_probes(folder)
    if not probes:
        return ["No probe has logged the Byzantine share of NNM's neighbours yet."]
    rows = []
    late: dict[tuple[float, str], dict[str, float]] = {}
    for data in probes:
        config = data["config"]
        figures = _neighbour_late(data)
        if (key := _reading_key(data)) is not None:
            late[key] = figures
        loss = [h["test_loss"] for h in data["history"]]
        attacked = config["attack"]["name"] != "none"
        rows.append(
            [
                f"`{data['cell']}`",
                f"{config['data']['alpha']:g}",
                f"{100 * figures['byzantine_neighbours']:.1f}" if attacked else "—",
                f"{100 * figures['crowded']:.0f}" if attacked else "—",
                f"{100 * figures['mixed_against']:.0f}",
                f"{figures['carriers']:.1f}",
                f"{figures['cosine']:+.2f}",
                f"{loss[0]:.2f} → {loss[-1]:.2f}",
                pct(history_accuracy(data["history"], len(data["cosine"]))),
            ]
        )
    return [
        "NNM's neighbours, α=1 beside α=0.1 (`bench/probe_mnist.py` logs them from 2026-12-06 "
        "on; these probes ran then, in `bench/results/probe/neighbours/`), means over the later "
        f"half of each run: the share of the {F} Byzantine vectors among an honest vector's "
        f"n − f = {N_CLIENTS - F} nearest vectors, itself included (picked at random, its "
        f"{N_CLIENTS - F - 1} other neighbours out of {N_CLIENTS - 1} would hold "
        f"{100 * _neighbour_chance():.1f}% of them); the share of honest vectors with all {F} "
        "among them; "
        "the share of NNM's mixed vectors that point against the honest mean μ_h; "
        "and how few honest vectors carry half of the honest mean along itself (the smallest k "
        "whose k largest projections x_i·μ_h make half of their sum; the clients 0–4 are honest "
        "in a run without attack, so it has only this figure).",
        "",
        *table(
            [
                "probe",
                "α",
                "Byzantine share of the neighbours (%)",
                "honest vectors with all f (%)",
                "mixed vectors against μ_h (%)",
                f"carriers of half of μ_h (of {N_CLIENTS - F})",
                "cos(a, μ_h)",
                "test loss, first → last evaluation",
                "acc. at the end (%)",
            ],
            rows,
        ),
        *_skew_reading(late),
    ]


def _skew_reading(late: dict[tuple[float, str], dict[str, float]]) -> list[str]:
    """Why NNM+CWTM turns against the honest mean under SF at α=0.1, from the neighbour probes'
    later-half figures keyed by (α, attack); nothing unless both α ran without attack and SF."""
    keys = [(1.0, "none"), (0.1, "none"), (1.0, "sf"), (0.1, "sf")]
    if any(k not in late for k in keys):
        return []
    calm, skew, sf, sf_skew = (late[k] for k in keys)
    crowd = "fewer" if sf_skew["crowded"] < sf["crowded"] else "no fewer"
    rests = "fewer" if skew["carriers"] < calm["carriers"] else "no fewer"
    more = "more" if sf_skew["mixed_against"] > sf["mixed_against"] else "no more"
    return [
        "",
        "What the probes show for NNM+CWTM under SF at α=0.1: the attack turns the aggregate "
        f"against the honest mean (cos {sf_skew['cosine']:+.2f}, against {sf['cosine']:+.2f} "
        "at α=1) and the test loss rises: a reversal, not the slowdown seen at α=1. The "
        f"attackers crowd {crowd} honest vectors' neighbourhoods than at α=1 (all five among "
        f"the neighbours of {100 * sf_skew['crowded']:.0f}% of the honest vectors, against "
        f"{100 * sf['crowded']:.0f}%). The honest mean rests on {rests} clients (without "
        f"attack half of it is carried by {skew['carriers']:.1f} of the 15 honest vectors on "
        f"average, against {calm['carriers']:.1f} at α=1), and {more} of the mixed vectors "
        f"point against it ({100 * sf_skew['mixed_against']:.0f}%, against "
        f"{100 * sf['mixed_against']:.0f}%). A reading consistent with these figures, which "
        "the probe does not isolate: the honest vectors near the attackers carry little of "
        "the honest mean, so mixing them with five copies of −μ_h turns them against it, "
        "while the few long vectors that carry it are dropped by the trim as the extremes of "
        "each coordinate.",
    ]


def _late(data: dict[str, Any]) -> dict[str, Any]:
    """A probe's later half of rounds: mean share, cosine, |μ_h| and component along μ_h,
    the fraction of rounds with a negative cosine, the median spread, and the median |a|
    (from the logged figures: |a| = (a·μ_h/|μ_h|) / cos(a, μ_h), where the cosine is not 0);
    where the probe logged them, the mean effective coordinates of μ_h and the mean share of
    |μ_h|² in coordinates whose honest mean exceeds the honest spread."""
    half, total = len(data["cosine"]) // 2, len(data["cosine"])
    cosine, along = data["cosine"][half:], _along(data)[half:]
    extra = {}
    if "coordinates" in data and "clear_share" in data:
        extra["coordinates"] = fmean(data["coordinates"][half:])
        extra["clear"] = fmean(data["clear_share"][half:])
    return {
        **extra,
        "rounds": f"{half + 1}–{total}",
        "share": fmean(data["projection"][half:]),
        "cosine": fmean(cosine),
        "negative": sum(c < 0 for c in cosine) / len(cosine),
        "spread": median_high(data["spread"][half:]),
        "norm": fmean(data["honest_norm"][half:]),
        "along": fmean(along),
        "size": median_high(abs(x / c) for x, c in zip(along, cosine, strict=True) if c),
    }


def _probe_setting(data: dict[str, Any]) -> tuple[float, str, str, int]:
    config = data["config"]
    return (
        config["data"]["alpha"],
        config["aggregator"]["name"],
        config["attack"]["name"],
        config["seed"],
    )


def _probe_k(data: dict[str, Any]) -> str:
    zo = data["config"]["zo"]
    k = zo["local_steps"]
    return "K=1" if k == 1 else f"K={k} ({zo['variant']})"


def probe_local_steps(folder: Path) -> list[str]:
    """The probes of one setting at different K, side by side over their later half: the
    share of the honest mean, the cosine, the honest spread and |μ_h|, the aggregate's
    component along μ_h (also as a fraction of the same K's no-attack run's) and its size."""
    by_setting: dict[tuple[float, str, str, int], list[dict[str, Any]]] = {}
    for data in _probes(folder):
        by_setting.setdefault(_probe_setting(data), []).append(data)
    rows, readings = [], []
    clear_ends: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for (alpha, aggregator, attack, seed), runs in sorted(by_setting.items()):
        if len({_probe_k(d) for d in runs}) < 2:
            continue
        unattacked = {
            _probe_k(d): _late(d) for d in by_setting.get((alpha, aggregator, "none", seed), [])
        }
        paces: dict[str, float] = {}
        lates: dict[str, dict[str, Any]] = {}
        for data in sorted(runs, key=lambda d: d["config"]["zo"]["local_steps"]):
            k = _probe_k(data)
            late = lates[k] = _late(data)
            if k in unattacked and attack != "none":
                paces[k] = late["along"] / unattacked[k]["along"]
            rows.append(
                [
                    aggregator,
                    attack,
                    str(seed),
                    k,
                    late["rounds"],
                    f"{100 * late['share']:.1f}%",
                    f"{late['cosine']:+.2f}",
                    f"{100 * late['negative']:.0f}",
                    f"{late['spread']:.2f}",
                    f"{late['norm']:.3f}",
                    f"{late['along']:+.4f}",
                    f"{late['size']:.3f}",
                    f"{100 * paces[k]:.0f}%" if k in paces else "",
                    f"{late['coordinates']:.1f}" if "coordinates" in late else "",
                    f"{100 * late['clear']:.1f}%" if "clear" in late else "",
                ]
            )
        if attack != "none":
            name = f"{aggregator} {attack}, seed {seed}"
            readings.append(_k_reading(name, lates, paces))
            first, *_, last = lates.values()
            if "clear" in first and "clear" in last:
                clear_ends.append((name, first, last))
    if not rows:
        return ["No setting has probes at more than one K (`bench/probe_mnist.py --k 5`)."]
    lines = table(
        [
            "rule",
            "attack",
            "seed",
            "K",
            "rounds",
            "share of μ_h",
            "cos(a, μ_h)",
            "cos < 0 (%)",
            "median spread / |μ_h|",
            "mean |μ_h|",
            "along μ_h",
            "median |a|",
            "along μ_h vs no attack",
            "effective coordinates of μ_h",
            "|μ_h|² where |μ_j| > σ_j",
        ],
        rows,
    )
    if not readings:
        return lines
    return [
        *lines,
        "",
        *readings,
        "",
        "Read with the accuracy tables: in these probes the honest spread against |μ_h| "
        "does not shrink with K, so more local steps do not help by making the honest vectors "
        "less noisy against their mean. Two things change instead: the aggregate keeps more "
        "of a larger honest mean (a client's K steps on the same directions add up), and "
        "fewer rounds point against it. The step's size beside its component along μ_h tells "
        "the two attacks apart. SF shrinks the step: |a| stays below the no-attack run's, and "
        "at K=5 what is left keeps moving, consistent with NNM+CWTM coming within 3 points "
        "at every seed. TMA enlarges it with a component across μ_h: |a| is about twice the "
        "no-attack run's at either K, with a cosine under 0.1, and K does not reduce that "
        "part, consistent with CWTM staying beyond 3 points under TMA at K=5."
        + _clear_reading(clear_ends)
        + " The probes do not say why K=5's aggregate keeps a larger share.",
    ]


def _clear_reading(ends: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> str:
    """What the probes that logged where μ_h's energy sits (``(setting, first K, last K)``)
    say about one explanation: that at more local steps μ_h stands out of the honest spread
    in more of its coordinates."""
    if not ends:
        return ""
    settings = f"{len(ends)} attacked setting{'s' if len(ends) > 1 else ''} probed for it"
    grows = [name for name, a, b in ends if b["clear"] > a["clear"]]
    if not grows:
        return (
            " Nor does K=5 let a coordinate-wise rule tell the attack apart more easily: in "
            f"the {settings}, the share of |μ_h|² in coordinates where the honest mean "
            "stands out of the honest spread falls with K (bullets above)"
            + (
                ", and μ_h spreads over about as many coordinates (within 15%)."
                if all(abs(b["coordinates"] / a["coordinates"] - 1) < 0.15 for _, a, b in ends)
                else "."
            )
        )
    if len(grows) == len(ends):
        return (
            f" In the {settings}, the share of |μ_h|² in coordinates where the honest mean "
            "stands out of the honest spread grows with K (bullets above): there a "
            "coordinate-wise rule can tell the attack apart more easily at K=5."
        )
    falls = [name for name, _, _ in ends if name not in grows]
    return (
        " The share of |μ_h|² in coordinates where the honest mean stands out of the honest "
        f"spread grows with K for {', '.join(grows)} but falls for {', '.join(falls)} "
        "(bullets above), so it does not explain the larger share across attacks."
    )


def _k_reading(name: str, lates: dict[str, dict[str, Any]], paces: dict[str, float]) -> str:
    """One attacked setting from its first K to its last: what changes along μ_h."""
    ks = list(lates)
    first, last = ks[0], ks[-1]
    a, b = lates[first], lates[last]
    text = (
        f"- {name}, {first} → {last}: the aggregate moves {b['along'] / a['along']:.1f}× as far "
        f"along μ_h a round ({a['along']:+.4f} → {b['along']:+.4f}"
    )
    if first in paces and last in paces:
        text += f"; {100 * paces[first]:.0f}% → {100 * paces[last]:.0f}% of the no-attack pace"
    spread = (
        "stays"
        if b["spread"] == a["spread"]
        else ("grows" if b["spread"] > a["spread"] else "shrinks")
    )
    return (
        f"{text}) in a step of median size |a| {a['size']:.2f} → {b['size']:.2f}; "
        f"it keeps {100 * a['share']:.1f}% → {100 * b['share']:.1f}% of the honest "
        f"mean, with a negative cosine in {100 * a['negative']:.0f}% → "
        f"{100 * b['negative']:.0f}% of the rounds, while |μ_h| goes {a['norm']:.2f} → "
        f"{b['norm']:.2f} and the honest spread against it {spread} "
        f"({a['spread']:.2f} → {b['spread']:.2f})"
        + (
            f"; μ_h's energy sits in {a['coordinates']:.1f} → {b['coordinates']:.1f} "
            f"effective coordinates, {100 * a['clear']:.1f}% → {100 * b['clear']:.1f}% of it "
            "where the honest mean stands out of the honest spread"
            if all(key in late for late in (a, b) for key in ("coordinates", "clear"))
            else ""
        )
        + "."
    )


def neighbour_reading(shares: dict[tuple[float, str], float]) -> str:
    """How often SF's and FOE's vectors were among an honest vector's NNM neighbours at α=1
    (:func:`neighbour_shares`), or nothing when no probe logged it."""
    from study_mnist import N_CLIENTS, F

    found = [(a, shares[(1.0, a)]) for a in ("sf", "foe") if (1.0, a) in shares]
    if not found:
        return ""
    parts = [f"{100 * v:.0f}% of {a.upper()}'s" for a, v in found]
    return (
        " Seed-0 probes (*Heterogeneous data*) find that over the later half of 800 rounds an "
        f"honest vector's {N_CLIENTS - F} neighbours hold on average {' and '.join(parts)} "
        "five vectors, where neighbours picked at random would hold "
        f"{100 * _neighbour_chance():.1f}%."
    )
