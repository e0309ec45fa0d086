#!/usr/bin/env bash
# Build the cyber0 wheel into OUT from a fresh copy of the package's sources (pyproject.toml,
# README.md, LICENSE and the proto/, common/, server/, client/ folders), never in place:
# setuptools reuses an in-tree build/lib, so a module deleted from the sources would still ship
# from an earlier build. Extra arguments go to `pip wheel` (e.g. --no-build-isolation).
#
#   bash scripts/build-wheel.sh OUT [PIP_WHEEL_ARGS...]     # PYTHON picks the interpreter
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT [PIP_WHEEL_ARGS...]" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$root/pyproject.toml" "$root/README.md" "$root/LICENSE" "$stage/"
for folder in proto common server client; do
  cp -r "$root/$folder" "$stage/$folder"
done
find "$stage" -name __pycache__ -type d -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel -q --no-deps -w "$out" "$@" "$stage"
