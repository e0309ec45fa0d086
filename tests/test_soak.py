"""A small soak in CI: bench/soak.py with 100 streaming clients for 30 rounds (the documented
run, 1,000 x 200, is in docs/security.md). Figures are not asserted; the checks are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


def test_100_clients_30_rounds_no_dropped_round_and_flat_memory(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--clients", "100", "--rounds", "30", "--per-process", "50",
         "--timeout", "240", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["ok"] and all(result["checks"].values()), result["checks"]
    assert (result["clients"], result["rounds"], result["client_processes"]) == (100, 30, 2)
    assert result["federator_rss_mb"]["growth"] <= 32
