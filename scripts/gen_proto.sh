#!/usr/bin/env bash
# Regenerate the protocol code beside its .proto files (proto/cyber0/v1/*_pb2*.py, *.pyi).
# The output is committed; tests/test_proto_generated.py fails when it is stale.
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: proto, i.e. in place)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-proto}
if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python; fi
"$python" -m grpc_tools.protoc -I proto \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  proto/cyber0/v1/*.proto
