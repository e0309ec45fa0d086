#!/usr/bin/env bash
# Lint, format check and type check of the package (the checks CI runs besides the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate
ruff check .
ruff format --check .
# The package's folders are remapped (common/ -> cyber0.common, ...); give mypy a link tree
# with the installed layout so that module names match the import names.
rm -rf .typecheck && mkdir -p .typecheck/cyber0
for entry in proto/cyber0/*; do ln -s "../../$entry" ".typecheck/cyber0/$(basename "$entry")"; done
for pkg in common server client; do ln -s "../../$pkg" ".typecheck/cyber0/$pkg"; done
MYPYPATH=.typecheck mypy -p cyber0
