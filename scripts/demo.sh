#!/usr/bin/env bash
# Install (if needed) and run the main job: the federation on loopback, every party a process.
# Extra arguments go to cyber0-demo (--rounds, --honest, --byzantine, --attack, --aggregator, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate
exec cyber0-demo "$@"
