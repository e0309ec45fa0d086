"""keep_freed_memory: freed blocks stay in the process (glibc), and the opt-out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cyber0.common.allocator import _glibc

# 32 blocks of 1 MiB alive at once, then freed, eight times: the faults of each round. glibc's
# own thresholds fault the blocks in again in some rounds after the first, depending on the
# heap's layout; with the thresholds kept, the heap settles within a few rounds and the later
# rounds reuse its memory.
ROUNDS = """
import json, resource, torch
from cyber0.common.allocator import keep_freed_memory
kept = keep_freed_memory()
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(1 << 18) for _ in range(32)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


def _rounds(keep: str) -> dict[str, object]:
    env = dict(os.environ, CYBER0_KEEP_FREED_MEMORY=keep, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    kept = _rounds("1")
    faults = kept["faults"]
    assert kept["kept"] is True and isinstance(faults, list)
    assert faults[0] >= 32 * 256  # the first round faults its 32 MiB in (4 KiB pages)
    # The last rounds reuse them: a few pages of Python objects at most, not 8,192.
    assert all(f < 64 for f in faults[-4:]), faults


def test_the_environment_opts_out() -> None:
    assert _rounds("0")["kept"] is False
