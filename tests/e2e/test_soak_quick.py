"""`bench/soak.py --quick` as a test: a few sequential runs, pods at once and execs into one
task under a real containerd; it exits non-zero on any failure or anything left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from containerd_support import missing_reason

pytestmark = pytest.mark.e2e

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def test_soak_quick_leaves_nothing_and_fails_nothing() -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    r = subprocess.run([sys.executable, str(SOAK), "--quick"], capture_output=True,
                       timeout=600, stdin=subprocess.DEVNULL, env=dict(os.environ))
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out[-4000:] + r.stderr.decode(errors="replace")[-2000:]
    assert "failures: none" in out, out[-4000:]
