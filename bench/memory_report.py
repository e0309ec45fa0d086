"""Section 4 of ``BENCHMARKS.md``: peak memory of inference, the ZO step and a backprop step
(``bench/memory.py``), and the plot it shares with section 3."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from _common import pyplot
from figure_tables import figure_table, header


def memory_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## 4. Peak memory (`bench/memory.py`)", ""]
    for name, doc in docs.items():
        lines += [f"### {name}", ""]
        lines += header(doc)
        batches = sorted({(r["model"], tuple(r["batch"])) for r in doc["runs"]})
        lines += [
            "Each measurement in a fresh process; the operation runs twice (Adam's moments "
            "exist in the second). CPU: peak RSS (`VmHWM`), which includes the interpreter and "
            "torch (~350 MiB); the note gives the peak above the resident set once the model "
            "is built. ZO step = ν = 1 on the in-place path plus the update. Batches: "
            + ", ".join(f"{m} {b[0]} × {b[1]}" for m, b in batches)
            + " (the 355M-parameter model runs at a smaller batch on CPU: a backprop step at "
            "32 × 64 on 2 cores takes minutes).",
            "",
            *figure_table(doc["figures"]),
            "",
        ]
    if docs:
        lines += [
            "The CPU measurements ran with `OMP_WAIT_POLICY=PASSIVE` (it changes timing, not "
            "memory: the 355M model's ZO steps take minutes with the default spin-waiting "
            "under this machine's load).",
            "",
            "**Changed (2026-12-06, night):** the client daemon and `cyber0-sim` keep the "
            "memory a forward pass frees for the next one "
            "(`cyber0.common.allocator.keep_freed_memory`: glibc's mmap threshold raised to 32 "
            "MiB and its trim threshold to 1 GiB; `CYBER0_KEEP_FREED_MEMORY=0` turns it off), "
            "and these measurements do as the client does. Without it glibc returns the "
            "activations' pages to the kernel after each pass and faults them in again in the "
            "next: MiniLM at batch 32 × 64 took about 25,000 minor faults (~100 MiB) a forward, "
            "under 600 with it, and its forward ran 11% faster (medians of six process pairs "
            "alternating the setting: 274 ms without, 245 ms with). The same command with the "
            "setting off, just before this run: MiniLM inference 499 MiB, ZO 550 MiB (1.10×); "
            "the 355M model 1763 MiB and 1860 MiB (1.06×). With it the peaks are up to 3% "
            "higher, and the ZO step's ratio to inference is unchanged within the runs' spread.",
            "",
            "**Changed:** the ZO step now holds, at its peak, the client's direction cache "
            "(section 3; one allocation of min(`--direction-cache`, one direction of every "
            "tensor generated whole): 41 MiB for MiniLM, the 64 MiB default for the 355M "
            "model) and the generator's per-thread scratch (at most 7.3 MiB). The previous "
            "run, without them: MiniLM ZO peak 512 MiB (+119 above the model, 1.04× the "
            "inference peak), RoBERTa-large-shaped 1783 MiB (+74, 1.02×). "
            "`--direction-cache 0` gives the cache's share back, at the speed of section 3's "
            "row without the cache.",
            "",
            "**Changed (earlier):** the in-place path writes w + μz into z's own buffer when "
            "z is not kept (`shift(z, scale, w, out=z)` in `DirectionCache.shifted`, bitwise "
            "equal to the former `param + z·scale`): one tensor's worth of extra memory instead "
            "of two. MiniLM's largest tensor is the 30,522 × 384 word embedding (45 MiB): the "
            "ZO peak went from 1.15× to ~1.06× the inference peak (CPU RSS).",
            "",
            "The run before this one (2026-12-06, 04:27 UTC, the code before the native "
            "kernel's OpenMP and one-pass changes) measured MiniLM at 1.10× (ZO 649 MiB, "
            "inference 589 MiB) and the 355M model at 1.06×. This run's processes are about 90 "
            "MiB smaller throughout, the built model included, while the ZO step's peak over "
            "the inference peak is 62 MiB against 60 then: the same extra memory, a larger "
            "share of a smaller process.",
            "",
            "MeZO's 12× is measured on a GPU with OPT-13B, where weights, gradients and Adam "
            "state dominate; on CPU the interpreter and torch's own footprint are in every "
            "figure, so the backprop/ZO ratio is smaller (the GPU script measures tensors "
            "only).",
            "",
        ]
    return lines


def plot_step_memory(step: dict[str, Any] | None, mem: dict[str, Any] | None, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    if step:
        figs = [f for f in step["figures"] if f["id"].endswith(".ratio")]
        ax = axes[0]
        ax.bar(
            [f["id"].split(".", 2)[2].removesuffix(".ratio") for f in figs],
            [f["median"] for f in figs],
            yerr=[
                [f["median"] - f["min"] for f in figs],
                [f["max"] - f["median"] for f in figs],
            ],
            capsize=3,
        )
        ax.axhline(2, color="k", linestyle=":", linewidth=1, label="floor 2 (two forwards)")
        ax.axhline(2.3, color="r", linestyle="--", linewidth=1, label="target 2.3")
        ax.set_ylabel("ZO step time / forward time")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.set_title("client step cost (CPU)")
    if mem:
        ax = axes[1]
        models = sorted({r["model"] for r in mem["runs"]})
        modes = ("inference", "zo", "backprop_adam")
        width = 0.25
        for i, mode in enumerate(modes):
            vals = [
                statistics.median(
                    r["peak_mib"] for r in mem["runs"] if (r["model"], r["mode"]) == (m, mode)
                )
                for m in models
            ]
            ax.bar([j + i * width for j in range(len(models))], vals, width, label=mode)
        ax.set_xticks([j + width for j in range(len(models))], models)
        ax.set_ylabel("peak memory (MiB)")
        ax.legend(fontsize=8)
        ax.set_title("peak memory (CPU: peak RSS)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
