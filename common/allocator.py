"""The process's memory allocator, tuned for repeated forward passes.

glibc's malloc serves a block above its mmap threshold (128 KiB, raised up to the largest block
freed so far) with a fresh mapping and unmaps it when freed, and returns the top of its heap to
the kernel once more than its trim threshold (twice the mmap threshold) lies free there. A
forward pass frees its activations at its end and allocates them again in the next one, so every
pass faults zeroed pages in anew: about 25,000 minor page faults (~100 MiB) per MiniLM forward at
batch 32 × 64 tokens, about 11% of its time on this project's 2-core machine (BENCHMARKS.md,
section 4).
:func:`keep_freed_memory` makes freed memory stay in the process for the next pass.
"""

from __future__ import annotations

import ctypes
import os

#: The mmap threshold it sets: glibc's largest on 64-bit systems. Larger blocks are still mapped
#: and unmapped (MiniLM's activations at batch 32 × 64 tokens are at most 12.6 MiB each).
MMAP_THRESHOLD = 32 << 20
#: The trim threshold it sets: up to this much free memory stays at the top of the heap.
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def keep_freed_memory() -> bool:
    """Set glibc's mmap threshold to MMAP_THRESHOLD and its trim threshold to TRIM_THRESHOLD
    for this process, so blocks a forward pass frees are reused by the next one instead of being
    returned to the kernel and faulted in again. The resident memory stays near its peak: the
    peak itself is what it was. True when set; False, changing nothing, where the C library is
    not glibc or the environment has ``CYBER0_KEEP_FREED_MEMORY=0``."""
    if os.environ.get("CYBER0_KEEP_FREED_MEMORY", "1") == "0" or not _glibc():
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def _glibc() -> bool:
    """Whether this process runs on glibc."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False
