"""The committed generated protobuf code matches the .proto files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PB = ROOT / "src/pykata/protocol/pb"


@pytest.mark.skipif(shutil.which("protoc") is None, reason="protoc (protobuf-compiler) missing")
def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts/gen-protos.sh"), str(tmp_path)], check=True)
    for fresh in sorted(tmp_path.glob("*_pb2.py*")):
        assert fresh.read_text() == (PB / fresh.name).read_text(), (
            f"{fresh.name} is stale: run scripts/gen-protos.sh")
