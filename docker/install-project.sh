#!/bin/sh
# Image build step 2 (docker/Dockerfile): cyber0 itself, --no-deps, into /opt/cyber0. From
# /tmp/wheelhouse/project/cyber0-*.whl when there (and checked against the source in /tmp/src:
# a wheel built before the last edit would run old code), else built from /tmp/src offline
# (setuptools came with the dependencies).
set -eu
wheels=/tmp/wheelhouse/project
pip="/opt/cyber0/bin/python -m pip --disable-pip-version-check --no-cache-dir"
if ls "$wheels"/cyber0-*.whl >/dev/null 2>&1; then
  echo "installing cyber0 from the wheelhouse"
  $pip install --no-index --no-deps "$wheels"/cyber0-*.whl
  /opt/cyber0/bin/python - <<'PY'
import filecmp
import sys
from pathlib import Path

import cyber0

installed = Path(cyber0.__file__).parent
src = Path("/tmp/src")
trees = {src / "proto" / "cyber0": installed}
trees |= {src / name: installed / name for name in ("common", "server", "client")}
stale = [
    str(path.relative_to(src))
    for tree, target in trees.items()
    for path in sorted(tree.rglob("*.py"))
    if not (target / path.relative_to(tree)).exists()
    or not filecmp.cmp(path, target / path.relative_to(tree), shallow=False)
]
expected = {
    target.relative_to(installed) / path.relative_to(tree)
    for tree, target in trees.items()
    for path in tree.rglob("*.py")
}
stale += [
    f"{path.relative_to(installed)} (not in the source)"
    for path in sorted(installed.rglob("*.py"))
    if path.relative_to(installed) not in expected
]
if stale:
    more = " ..." if len(stale) > 8 else ""
    sys.exit(
        f"the wheelhouse's cyber0 wheel differs from the source in {', '.join(stale[:8])}{more}: "
        "rebuild it (bash docker/build-wheelhouse.sh)"
    )
PY
else
  echo "no wheelhouse: building cyber0 from the source"
  $pip install --no-index --no-deps --no-build-isolation /tmp/src
fi
# The native direction generator the wheelhouse compiled for this torch and CPython (the image
# has no compiler), where CYBER0_NATIVE_DIR (set by the Dockerfile) points.
if ls /tmp/wheelhouse/native/*/*.so >/dev/null 2>&1; then
  mkdir -p "$CYBER0_NATIVE_DIR"
  cp -R /tmp/wheelhouse/native/*/ "$CYBER0_NATIVE_DIR"/
fi
/opt/cyber0/bin/python -c "import cyber0.server.cli, cyber0.client.cli, grpc_health.v1, torch"
/opt/cyber0/bin/python -c "from cyber0.common import native
print('native direction generator:', 'used' if native.kernel() else 'not shipped or not loaded: the eager torch ops run')"
rm -rf /tmp/src /tmp/wheelhouse
