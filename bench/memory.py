"""Peak memory of a ZO client step against an inference forward and a backprop + Adam step.

    python bench/memory.py                          # MiniLM and RoBERTa-large-shaped, CPU
    python bench/memory.py --device cuda            # the same on a GPU (bench/gpu.sh)
    python bench/memory.py --quick                  # tiny sizes (the smoke test)

Every measurement runs in a fresh process (``_measure``): build the model and the batch, record
the memory, run the operation twice (the second run is the steady state: Adam's moments exist),
record the peak. Same model, same batch for the three modes:

* ``inference``: the loss under ``torch.inference_mode``;
* ``zo``: one ZO step with ν = 1 on the in-place path (two perturbed forwards through
  :meth:`~cyber0.common.estimator.ZOEstimator.step_scalars`) and the update
  :func:`~cyber0.common.perturbation.apply_directions_`, with the client's default direction
  cache (``DEFAULT_CACHE_BYTES``, held from the first forward to the update);
* ``backprop_adam``: forward, backward, ``torch.optim.Adam.step`` (what a first-order client
  needs).

CPU: the process's peak resident set (``VmHWM``), which includes the Python interpreter and
torch's own footprint; the report also gives the peak above the process's resident set just
after the model was built (``above_model``), where the three modes differ. GPU:
``torch.cuda.max_memory_allocated`` (tensors only).

The RoBERTa-large-shaped model (355M parameters, random weights from ``RobertaConfig``) takes
about 3 s per forward of batch 32 × 64 on 2 CPU cores and the backprop + Adam step needs about
4× the weights (5.7 GB): on CPU it runs at batch ``--large-batch`` (default 8) × 64 tokens,
which the report states.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, command_line, figure, machine, started, write_result

MODES = ("inference", "zo", "backprop_adam")
#: MeZO (Malladi et al., 2023), Figure/Table on memory: backprop fine-tuning of OPT-13B needs
#: about 12× the memory of inference (and of MeZO, which matches inference).
MEZO_BACKPROP_OVER_ZO = 12.0


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux ≥ 4.0); False if it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def tiny_classifier() -> Any:
    """The smoke test's model: embedding → mean → linear, answering like a Hugging Face
    sequence classifier (``.logits``, ``.config.vocab_size``) without importing transformers."""
    from types import SimpleNamespace

    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = SimpleNamespace(vocab_size=1000)
            self.embed = nn.Embedding(1000, 64)
            self.head = nn.Linear(64, 2)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return SimpleNamespace(logits=self.head(self.embed(input_ids).mean(dim=1)))

    return Tiny()


def build(model_name: str, batch: int, tokens: int, device: Any) -> tuple[Any, Any, Any]:
    """(model, loss_fn, batch) for ``minilm``, ``roberta_large_shape`` or ``tiny`` (tests)."""
    import torch
    from step import freeze_unreached, hf_loss, load_minilm, text_batch

    if model_name == "minilm":
        model = load_minilm(device)
    elif model_name == "tiny":  # the smoke test: no transformers import
        torch.manual_seed(0)
        model = tiny_classifier().to(device).eval()
    else:
        from transformers import RobertaConfig, RobertaForSequenceClassification
        from wire import roberta_large_config

        config = (
            roberta_large_config()
            if model_name == "roberta_large_shape"
            else RobertaConfig(
                vocab_size=1000,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                max_position_embeddings=80,
                type_vocab_size=1,
                num_labels=2,
            )
        )
        torch.manual_seed(0)
        with device:
            model = RobertaForSequenceClassification(config)
        model = freeze_unreached(model.eval())
    vocab = model.config.vocab_size
    return model, hf_loss, text_batch(batch, tokens, vocab, device)


def measure_main(args: argparse.Namespace) -> int:
    """``_measure``: one mode in this (fresh) process; prints one JSON line."""
    import torch

    from cyber0.common.allocator import keep_freed_memory
    from cyber0.common.estimator import ZOEstimator
    from cyber0.common.perturbation import (
        DirectionGenerator,
        apply_directions_,
        canonical_parameters,
    )
    from cyber0.common.plan import ZOSettings

    device = torch.device(args.device)
    kept = keep_freed_memory()  # as the client daemon does
    if args.threads:
        torch.set_num_threads(args.threads)
    model, loss_fn, batch = build(args.model, args.batch, args.tokens, device)
    params = [p for _, p in canonical_parameters(model)]
    weights_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        before = _rss_mib()
        hwm_reset = _reset_hwm()

    if args.mode == "inference":

        def op() -> None:
            with torch.inference_mode():
                loss_fn(model, batch)

    elif args.mode == "zo":
        zo = ZOSettings(nu=1, local_steps=1, mu=1e-3, lr=1e-6)
        generator = DirectionGenerator(seed=1234)
        estimator = ZOEstimator(model, loss_fn, generator, zo, "inplace")
        state = {"t": 0}

        def op() -> None:
            g = estimator.step_scalars(state["t"], 0, batch)
            with torch.no_grad():
                terms = [(0, 0, zo.lr * float(g[0]))]
                apply_directions_(params, generator, state["t"], terms, estimator.cache)
            state["t"] += 1

    else:
        optimizer = torch.optim.Adam(params, lr=1e-6)

        def op() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            optimizer.step()

    for _ in range(args.iterations):
        op()
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        result = {"peak_mib": peak, "before_mib": before, "hwm_reset": True}
    else:
        peak = _hwm_mib()
        result = {"peak_mib": peak, "before_mib": before, "hwm_reset": hwm_reset}
    result.update(
        {
            "model": args.model,
            "mode": args.mode,
            "device": str(device),
            "batch": [args.batch, args.tokens],
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in params),
            "weights_mib": weights_mib,
            "keep_freed_memory": kept,
            "above_model_mib": peak - before,
        }
    )
    print(json.dumps(result), flush=True)
    return 0


def run_one(model: str, mode: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "_measure", "--model", model,
        "--mode", mode, "--batch", str(batch), "--tokens", str(args.tokens),
        "--device", args.device, "--iterations", str(args.iterations),
        "--threads", str(args.threads),
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parent) + os.pathsep + env.get("PYTHONPATH", "")
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{model} {mode}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    return dict(json.loads(line))


def figures(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    figs = []
    models = sorted({r["model"] for r in runs})
    for model in models:
        by_mode = {m: [r for r in runs if r["model"] == model and r["mode"] == m] for m in MODES}
        if not all(by_mode.values()):
            continue
        dev = by_mode["inference"][0]["device"].split(":")[0]
        batch = by_mode["inference"][0]["batch"]
        kind = "peak RSS" if dev == "cpu" else "max_memory_allocated"
        pairs = list(
            zip(by_mode["inference"], by_mode["zo"], by_mode["backprop_adam"], strict=False)
        )
        for mode in MODES:
            figs.append(
                figure(
                    f"memory.{dev}.{model}.{mode}.peak_mib",
                    f"{model}, batch {batch[0]}×{batch[1]}, {dev}: {mode} {kind}",
                    "MiB",
                    [r["peak_mib"] for r in by_mode[mode]],
                    note=(
                        f"above the built model: "
                        f"{statistics.median(r['above_model_mib'] for r in by_mode[mode]):.0f} "
                        f"MiB; weights {by_mode[mode][0]['weights_mib']:.0f} MiB"
                    ),
                )
            )
        figs.append(
            figure(
                f"memory.{dev}.{model}.zo_over_inference",
                f"{model}, batch {batch[0]}×{batch[1]}, {dev}: ZO step peak / inference peak",
                "×",
                [z["peak_mib"] / i["peak_mib"] for i, z, _ in pairs],
                target="<= 1.15",
                note=(
                    "above the built model: ZO "
                    f"{statistics.median(z['above_model_mib'] for _, z, _ in pairs):.0f} MiB vs "
                    f"inference {statistics.median(i['above_model_mib'] for i, _, _ in pairs):.0f}"
                    " MiB"
                ),
            )
        )
        figs.append(
            figure(
                f"memory.{dev}.{model}.backprop_over_zo",
                f"{model}, batch {batch[0]}×{batch[1]}, {dev}: backprop + Adam peak / ZO peak",
                "×",
                [b["peak_mib"] / z["peak_mib"] for _, z, b in pairs],
                note=f"MeZO reports about {MEZO_BACKPROP_OVER_ZO:g}× (OPT-13B, GPU)",
            )
        )
    return figs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    m = sub.add_parser("_measure")
    m.add_argument("--model", required=True)
    m.add_argument("--mode", choices=MODES, required=True)
    m.add_argument("--batch", type=int, default=32)
    m.add_argument("--tokens", type=int, default=64)
    m.add_argument("--device", default="cpu")
    m.add_argument("--iterations", type=int, default=2)
    m.add_argument("--threads", type=int, default=0)
    p.add_argument("--models", nargs="+", default=["minilm", "roberta_large_shape"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--large-batch", type=int, default=None, help="batch of the 355M model")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per (model, mode)")
    p.add_argument("--quick", action="store_true", help="tiny model (smoke test)")
    p.add_argument("--out", help="results folder (default bench/results)")
    p.add_argument("--name", default=None, help="result name (default memory-<device type>)")
    args = p.parse_args(argv)
    if args.cmd == "_measure":
        return measure_main(args)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench/memory.py: --device cuda but CUDA is not available")
    if args.quick:
        args.models, args.batch, args.tokens, args.repeats, args.iterations = ["tiny"], 4, 16, 1, 2
    large_batch = args.large_batch or (args.batch if args.device.startswith("cuda") else 8)
    doc: dict[str, Any] = {"command": command_line(), "machine": machine(), "started": started()}
    runs = []
    jobs = [
        (repeat, model, mode, large_batch if model == "roberta_large_shape" else args.batch)
        for repeat in range(args.repeats)
        for model in args.models
        for mode in MODES
    ]
    # One measurement at a time (they would compete for memory and cores), except in the smoke
    # test, where the three tiny ones run side by side.
    workers = len(jobs) if args.quick else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(lambda job: run_one(job[1], job[2], job[3], args), jobs)
        for (repeat, model, mode, batch), r in zip(jobs, done, strict=True):
            r["repeat"] = repeat
            runs.append(r)
            print(
                f"{model} {mode} batch {batch}: peak {r['peak_mib']:.0f} MiB "
                f"(+{r['above_model_mib']:.0f} above the model)",
                flush=True,
            )
    doc["runs"] = runs
    doc["figures"] = figures(runs)
    name = args.name or f"memory-{args.device.split(':')[0]}"
    print(f"wrote {write_result(name, doc, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
