#!/bin/sh
# Image build step 1 (docker/Dockerfile): torch (TORCH_SPEC) and cyber0's declared dependencies,
# plus those of the extras in CYBER0_EXTRAS, into the venv /opt/cyber0, then the packages in
# CYBER0_NODEPS (space-separated requirements) with --no-deps. From
# /tmp/wheelhouse/deps with --no-index when wheels are there (docker/build-wheelhouse.sh), else
# from the package index. Reads the dependencies from /tmp/src/pyproject.toml.
set -eu
wheels=/tmp/wheelhouse/deps
pip="/opt/cyber0/bin/python -m pip --disable-pip-version-check --no-cache-dir"
/opt/cyber0/bin/python - "$CYBER0_EXTRAS" >/tmp/requirements.txt <<'PY'
import sys
import tomllib

project = tomllib.load(open("/tmp/src/pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[1].split(",")):
    reqs += [r for r in project["optional-dependencies"][extra] if not r.startswith("cyber0")]
print("\n".join(reqs))
PY
if ls "$wheels"/*.whl >/dev/null 2>&1; then
  echo "installing the dependencies from the wheelhouse (--no-index)"
  index_args="--no-index --find-links $wheels"
else
  echo "no wheelhouse: installing the dependencies from the package index"
  index_args=
fi
# shellcheck disable=SC2086
$pip install $index_args "$TORCH_SPEC" -r /tmp/requirements.txt
if [ -n "${CYBER0_NODEPS:-}" ]; then
  echo "installing with --no-deps: $CYBER0_NODEPS"
  # shellcheck disable=SC2086
  $pip install $index_args --no-deps $CYBER0_NODEPS
fi
rm -rf /tmp/wheelhouse /tmp/requirements.txt
