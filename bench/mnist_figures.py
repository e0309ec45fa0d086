"""The figures of ``docs/results-mnist.md``: accuracy against rounds and uplink bytes, per block
and rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _common import pyplot
from mnist_runs import AGGREGATORS, ATTACKS, TARGET, Run, Study, block_name


def _curves(ax_round: Any, ax_bytes: Any, run: Run, **style: Any) -> None:
    rounds = [h["round"] for h in run.history]
    acc = [100 * h["test_accuracy"] for h in run.history]
    sent = [h["uplink_bytes_cum"] for h in run.history]
    ax_round.plot(rounds, acc, **style)
    ax_bytes.plot(sent, acc, **style)


def plot_block(study: Study, alpha: float, aggregator: str, path: Path) -> bool:
    """Three panels, one colour per attack: CYBER-0 (ν=64, K=1) against rounds, first-order
    against rounds, and both against cumulative uplink bytes (CYBER-0 solid, first-order
    dashed)."""
    plt = pyplot()

    block = (alpha, 64, 1, "")
    pairs = [(a, study.get(block, aggregator, a), study.fo(alpha, aggregator, a)) for a in ATTACKS]
    if not any(z for _, z, _ in pairs):
        return False
    finals = [r.final for _, z, f in pairs for r in (z, f) if r is not None]
    low = max(0.0, min(60.0, 100 * min(finals) - 5))
    fig, (zo_ax, fo_ax, bytes_ax) = plt.subplots(1, 3, figsize=(16, 4.8))
    colours = plt.get_cmap("tab10")
    for i, (attack, zo, fo) in enumerate(pairs):
        if zo:
            _curves(zo_ax, bytes_ax, zo, color=colours(i), label=f"CYBER-0 {attack}")
        if fo:
            _curves(fo_ax, bytes_ax, fo, color=colours(i), ls="--", label=f"first-order {attack}")
    zo_ax.set(title="CYBER-0 (ν=64, K=1)", xlabel="round", ylabel="test accuracy (%)")
    fo_ax.set(title="first-order FedSGD", xlabel="round", ylabel="test accuracy (%)")
    bytes_ax.set(
        title="both, against uplink bytes",
        xlabel="uplink bytes per client (cumulative)",
        ylabel="test accuracy (%)",
        xscale="log",
    )
    for ax in (zo_ax, fo_ax, bytes_ax):
        ax.set_ylim(low, 95)
        ax.axhline(100 * TARGET, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    for ax in (zo_ax, fo_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"MNIST, n=20, f=5, α={alpha}, {aggregator}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_variants(study: Study, path: Path) -> bool:
    """No-attack CWTM at α=1: ν=64, ν=1, K=5 variants and first-order."""
    plt = pyplot()

    blocks = [(1.0, 64, 1, ""), (1.0, 1, 1, ""), (1.0, 64, 5, "unbiased"), (1.0, 64, 5, "biased")]
    runs = [(block_name(b), study.get(b, "cwtm", "none")) for b in blocks]
    runs.append(("first-order FedSGD", study.fo(1.0, "cwtm", "none")))
    present = [(name, r) for name, r in runs if r is not None]
    if len(present) < 2:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, run in present:
        _curves(left, right, run, label=name.replace(", α=1.0", ""))
    left.set(xlabel="round", ylabel="test accuracy (%)", xscale="log", ylim=(0, 95))
    right.set(
        xlabel="uplink bytes per client (cumulative)",
        ylabel="test accuracy (%)",
        xscale="log",
        ylim=(0, 95),
    )
    for ax in (left, right):
        ax.axhline(100 * TARGET, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle("MNIST, n=20, f=5, α=1, CWTM, no attack")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def make_figures(study: Study, folder: Path) -> list[Path]:
    """All figures; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for alpha in (1.0, 0.1):
        for agg in AGGREGATORS:
            path = folder / f"mnist-a{alpha}-{agg.replace('+', '_')}.png"
            if plot_block(study, alpha, agg, path):
                written.append(path)
    path = folder / "mnist-variants.png"
    if plot_variants(study, path):
        written.append(path)
    return written
