"""Generate ``BENCHMARKS.md`` and ``docs/figures/bench-*.png`` from ``bench/results/*.json``.

    python bench/report.py                  # reads bench/results/, writes BENCHMARKS.md
    python bench/report.py --results DIR --out FILE.md --figures DIR

Reads the documents written by ``bench/wire.py`` (``wire.json``), ``bench/scale.py``
(``scale.json``), ``bench/step.py`` (``step-cpu.json``, ``step-cuda.json``) and
``bench/memory.py`` (``memory-cpu.json``, ``memory-cuda.json``); a missing one is reported as
not run. For every figure: the command, the machine and its load, the median and the spread of
the runs, the target beside it and whether it is met.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT
from figure_tables import Images, figure_table, header, load, machine_line
from memory_report import memory_section, plot_step_memory
from scale_report import scale_section
from step_report import step_section
from wire_report import wire_section


def sim_section(doc: dict[str, Any]) -> list[str]:
    """The simulator's wall time on the MNIST study setting."""
    return [
        "## Simulator speed (`bench/sim_speed.py`)",
        "",
        *header(doc),
        "One process, the simulator as `cyber0-sim` runs it: 20 clients (15 honest, 5 ALIE), "
        "ν = 64, K = 1, CWTM, Dirichlet(1), one evaluation at the end; batch sizes interleaved "
        "run by run. A client's 2ν losses of a step come from one native call "
        "(`logreg_scalars`): the products of W and of the ν directions with the batch, the "
        "losses at a ± μe_j in float64 (section 3).",
        "",
        "The `sim.clients` rows time one round of the 20 clients' K = 5 local rounds (the "
        "study's K = 5 cells, batch 128), grouped as the simulator now runs them "
        "(`ZOEstimator.local_rounds`: a group of clients shares each local step's call and "
        "update, each client's products computed as it alone would: a single batched product "
        "of several clients took other kernels on AVX-512 and changed the last bits) and "
        "client by client (`local_round`), alternating round by round on the same batches; "
        "the script stops if the two ever differ in a bit. A group holds at most 2^20 logit "
        "parts: 50 clients at ν = 64 and batch 32.",
        "",
        *figure_table(doc["figures"]),
        "",
        "**Changed (2026-12-06):** logistic regression's grouped loss "
        "(`LogisticRegression.grouped_cross_entropy_at`) takes `log_softmax` over dimension 1 "
        "of the (G·P, C, B) logits its matrix products lay out, where the kernel vectorises "
        "along the batch, instead of over a last dimension of C = 10 classes (~38 ns an "
        "element, 35 % of a ν = 64, K = 5 study cell's time in a profile); the ± weight rows "
        "are written straight into contiguous bias and weight blocks instead of concatenated "
        "and copied. On this machine the study's losses keep their bits: 40- and 200-round "
        "prefixes of two study cells (ν = 64 and ν = 1, K = 5) end on the same digests with "
        "both codes. Before the change the same command here gave 31.2 s (batch 32), 73.7 s "
        "(batch 128) and 469 ms a grouped ν = 64, K = 5 round (2026-12-06, 04:35 UTC, load "
        "2.7 at the start): not side by side with the table above, whose header gives its "
        "own load.",
        "",
        "**Changed (2026-12-06, evening):** both ways now run the loss, rows and central "
        "differences as one native call (`logreg_scalars`), and one client's `local_round` no "
        "longer copies its weights into a flat row, so client by client gained most: in the "
        "previous run ν = 1 took 20.1 ms client by client and 9.7 ms grouped (2.09×). The "
        "global update applies a tensor's kept directions in one native pass (`sub_scaled_` "
        "over all its terms, each element taking them in order: the same bits): at ν = 64 "
        "0.23 ms against 0.65 ms term by term, side by side in one process.",
        "",
        "**Changed (2026-12-07, night):** the scalars' new formula (section 3: ν + 1 "
        "products instead of 2ν, one ATen product per client above 2^20 multiply-adds, the "
        "float64 losses 8 examples at a time): the previous table run took 19.3 s (batch 32) "
        "and 29.7 s (batch 128), with the same final accuracies to the digit as above. Side "
        "by side (alternating processes, three pairs, 20 clients' grouped rounds): ν = 64, "
        "K = 5, batch 128 109–154 ms a round against 191–239 ms before; ν = 64, K = 1, batch "
        "32 5.3–8.1 ms against 14.5–19.5 ms; ν = 1, K = 5, batch 128 11.0–13.5 ms against "
        "10.2–13.5 ms.",
        "",
    ]


def summary_section(all_figs: list[dict[str, Any]]) -> list[str]:
    targets = [f for f in all_figs if f.get("target")]
    lines = ["## Targets at a glance", ""]
    lines += figure_table(targets)
    lines += [""]
    return lines


def build(results: Path, figures_dir: Path, doc_dir: Path = ROOT) -> str:
    """The document's text; its plots are written to ``figures_dir`` and linked relative to
    ``doc_dir``, where the document will lie."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    images = Images(figures_dir, doc_dir)
    wire = load(results, "wire")
    wire_large = load(results, "wire-large")  # bench/wire.py --baseline-only --send-large
    if wire and wire_large:
        wire = dict(wire)
        wire["large"] = wire_large
    scale = load(results, "scale")
    scale_max = load(results, "scale-max")  # python bench/scale.py --clients N --name scale-max
    if scale and scale_max:
        scale = dict(scale)
        scale["cases"] = [*scale["cases"], *scale_max["cases"]]
        scale["figures"] = [*scale["figures"], *scale_max["figures"]]
        scale["extra_command"] = scale_max.get("command")
        scale["extra_machine"] = machine_line(scale_max)
    gc_ab = load(results, "scale-gc-ab")  # bench/scale.py --compare-prelude (GC tuning off)
    if scale and gc_ab:
        scale = dict(scale)
        scale["gc_ab"] = gc_ab

    def by_name(pattern: str) -> dict[str, dict[str, Any]]:
        """Result documents matching ``pattern``, the plain ``<x>-cpu`` one first."""
        names = sorted((p.stem for p in results.glob(pattern)), key=lambda n: (len(n), n))
        return {n: doc for n in names if (doc := load(results, n))}

    steps = by_name("step-*.json")
    mems = by_name("memory-*.json")
    sim = load(results, "sim-speed")  # python bench/sim_speed.py (issue 2's speed target)
    all_figs: list[dict[str, Any]] = []
    for d in [wire, scale, *steps.values(), *mems.values(), sim]:
        if d:
            all_figs += d["figures"]
    lines = [
        "# CYBER-0 benchmarks",
        "",
        "Generated by `python bench/report.py` from `bench/results/*.json`; do not edit by "
        "hand. Each section gives the command that produced it, the machine and its load "
        "average. The machines are shared: every figure is the median of several runs with "
        "the spread (min – max), and ratios are measured side by side in one run. None of "
        "these figures is asserted by a test (`tests/test_bench.py` only checks that the "
        "scripts run and write well-formed results).",
        "",
    ]
    lines += summary_section(all_figs)
    lines += wire_section(wire, images) if wire else ["## 1. Wire bytes", "", "Not run.", ""]
    lines += scale_section(scale, images) if scale else ["## 2. Scale", "", "Not run.", ""]
    lines += step_section(steps) if steps else ["## 3. Step", "", "Not run.", ""]
    lines += memory_section(mems) if mems else ["## 4. Memory", "", "Not run.", ""]
    if "step-cpu" in steps or "memory-cpu" in mems:
        step, mem = steps.get("step-cpu"), mems.get("memory-cpu")
        lines += images.embed(
            "bench-step-memory.png", "step and memory", lambda png: plot_step_memory(step, mem, png)
        )
    lines += sim_section(sim) if sim else []
    lines += ["## 5. GPU (`bench/gpu.sh`)", ""]
    if "step-cuda" in steps or "memory-cuda" in mems:
        lines += ["See the `step-cuda` and `memory-cuda` parts above.", ""]
    else:
        lines += [
            "Not run: no CUDA device was available when these results were produced. "
            "`bash bench/gpu.sh` runs items 3 and 4 on a CUDA device in under 5 minutes "
            "(`step-cuda.json`, `memory-cuda.json`, `gpu-card.txt` into `$OUT` or "
            "`bench/results/`), including the CPU-vs-GPU agreement of the generator (Gaussian: "
            "max |Δ| and differing elements; Rademacher: bitwise equality); without CUDA it "
            "exits 2 having measured nothing.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    text = build(Path(args.results), Path(args.figures).resolve(), out.parent)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
