"""GPU check for issue 7: a few in-place ZO steps of a RoBERTa-large-shaped model in bf16.

Random weights from ``RobertaConfig(hidden_size=1024, num_hidden_layers=24,
num_attention_heads=16, intermediate_size=4096)`` (355M parameters; no download), built on the
GPU in the requested dtype and wrapped as :class:`cyber0.common.hf.TextClassifier`. It then runs
the client's path: ``ZOEstimator(path="inplace")`` under ``torch.inference_mode`` with the
direction generator on the device, applies each round's aggregate, and records

- the weights' bytes, the peak CUDA memory of the ZO steps (``torch.cuda.max_memory_allocated``)
  and their ratio (MeZO's claim: about inference memory);
- the same peak for one backpropagation step (forward + backward, gradients in the same dtype,
  no optimizer state) for comparison;
- seconds per ZO step, whether the estimate left the weights bitwise unchanged (SHA-256 before
  and after) and whether the update moved them.

    python bench/gpu_text.py --out gpu_text.json [--dtype bfloat16] [--steps 5]

Exits 2 with a message when CUDA is not available.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cyber0.common.estimator import ZOEstimator, apply_aggregate_
from cyber0.common.hf import DTYPES, TextClassifier
from cyber0.common.models import cross_entropy_loss, model_digest
from cyber0.common.perturbation import DirectionGenerator, canonical_parameters
from cyber0.common.plan import ZOSettings


def roberta_large(dtype: torch.dtype, device: torch.device, tiny: bool = False) -> TextClassifier:
    """A random RoBERTa-large-shaped classifier (2 labels), built directly on ``device``
    (``tiny``: hidden 32, 2 layers, for a CPU smoke run of this script)."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(
        hidden_size=32 if tiny else 1024,
        num_hidden_layers=2 if tiny else 24,
        num_attention_heads=2 if tiny else 16,
        intermediate_size=64 if tiny else 4096,
        num_labels=2,
        vocab_size=1000 if tiny else 50265,
        max_position_embeddings=514,
        pad_token_id=1,
    )
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(0)
        hf = RobertaForSequenceClassification(config).to(dtype)
    return TextClassifier(hf.eval(), "auto", None)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak() -> int:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0


def allocated() -> int:
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0


def batch(
    size: int, length: int, device: torch.device, vocab: int
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (size, length), generator=gen)
    mask = torch.ones(size, length, dtype=torch.long)
    x = torch.stack([ids, mask], 1).to(device)
    return x, (torch.arange(size) % 2).to(device)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-6, help="MeZO's RoBERTa-large step")
    parser.add_argument("--nu", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_text: CUDA is not available on this machine; nothing measured", file=sys.stderr)
        return 2
    device = torch.device("cpu" if smoke else "cuda")
    cuda = device.type == "cuda"
    dtype = DTYPES[args.dtype]
    model = roberta_large(dtype, device, tiny=smoke)
    params = [p for _, p in canonical_parameters(model)]
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    x, y = batch(args.batch, args.length, device, int(model.hf.config.vocab_size))
    zo = ZOSettings(nu=args.nu, mu=1e-3, lr=args.lr, batch_size=args.batch)
    generator = DirectionGenerator(0)
    estimator = ZOEstimator(model, cross_entropy_loss, generator, zo, "inplace")
    sync()
    reset_peak()
    base = allocated()
    seconds, unchanged, scalars = [], [], []
    initial = model_digest(model)
    for t in range(args.steps):
        before = model_digest(model) if t == 0 else None
        sync()
        start = time.perf_counter()
        g = estimator.local_round(t, [(x, y)])
        sync()
        seconds.append(time.perf_counter() - start)
        if before is not None:
            unchanged.append(model_digest(model) == before)
        scalars.append(g.tolist())
        apply_aggregate_(model, generator, zo, t, g, estimator.cache)
    moved = model_digest(model) != initial
    zo_peak = peak()
    # one backpropagation step for comparison (gradients in the weights' dtype, no optimizer)
    for p in params:
        p.requires_grad_(True)
    reset_peak()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    sync()
    bp_peak = peak()
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu (smoke run)",
        "dtype": args.dtype,
        "parameters": sum(p.numel() for p in params),
        "weight_bytes": weight_bytes,
        "allocated_before_steps": base,
        "zo_peak_bytes": zo_peak,
        "zo_peak_over_weights": zo_peak / weight_bytes if cuda else None,
        "backprop_peak_bytes": bp_peak,
        "backprop_peak_over_zo_peak": bp_peak / zo_peak if cuda else None,
        "batch": [args.batch, args.length],
        "nu": args.nu,
        "seconds_per_zo_step": seconds,
        "median_seconds_per_zo_step": sorted(seconds)[len(seconds) // 2],
        "estimate_left_weights_unchanged": all(unchanged),
        "update_moved_weights": moved,
        "scalars": scalars,
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "scalars"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
