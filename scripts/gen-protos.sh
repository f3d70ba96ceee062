#!/usr/bin/env bash
# Regenerates src/pykata/protocol/pb/*_pb2.py(i) from src/pykata/protocol/proto/*.proto with
# Debian's protoc 3.21.12, the version whose runtime the guest ships (python3-protobuf).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-src/pykata/protocol/pb}
proto=src/pykata/protocol/proto
protoc -I"$proto" -I/usr/include --python_out="$out" --pyi_out="$out" "$proto"/*.proto
