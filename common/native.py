"""The CPU generator in one compiled pass, bitwise the eager one (``native_generator.cpp``).

:class:`~cyber0.common.perturbation.DirectionGenerator` computes its values with a few dozen eager
torch ops per block. On CPU, torch's eager ``log_``, ``sqrt_``, ``cos`` and ``sin`` call MKL's
vector math (VML); the compiled kernel makes the same calls on the same float32 inputs, chunk by
chunk while they are in cache, so it returns the same bits in about half the time of
``torch.randn`` (``bench/step.py``). It is built on first use with torch's C++ extension loader
(a C++ compiler and ninja are needed; the build is cached under ``TORCH_EXTENSIONS_DIR``) and
used only when torch has MKL and the built kernel reproduces the eager generator on a probe of
every value path (:func:`kernel`); otherwise, or with ``CYBER0_NATIVE_GENERATOR=0``, the eager
ops run. The result never depends on which path ran.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).with_name("native_generator.cpp")
_log = logging.getLogger(__name__)


@functools.cache
def kernel() -> ModuleType | None:
    """The compiled module (``fill(out, keys, starts, gaussian)``), or None where it cannot be
    built, torch has no MKL, ``CYBER0_NATIVE_GENERATOR=0``, or it disagrees with the eager ops."""
    if os.environ.get("CYBER0_NATIVE_GENERATOR", "1") == "0":
        return None
    if not torch.backends.mkl.is_available():
        return None
    try:
        from torch.utils.cpp_extension import load

        module = load(
            name="cyber0_native_generator",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-ffp-contract=off"],
        )
    except Exception as exc:  # no compiler, no ninja, a read-only cache: the eager ops run
        _log.warning("native direction generator unavailable (%s); using eager torch ops", exc)
        return None
    if not _agrees(module):
        _log.warning("native direction generator disagrees with the eager ops; not used")
        return None
    return module


def _agrees(module: ModuleType) -> bool:
    """Whether the kernel reproduces the eager generator bit for bit on 2^14 + 3 values of each
    distribution, from an even and an odd start."""
    from .perturbation import DirectionGenerator, eager

    n = (1 << 14) + 3
    for distribution in ("gaussian", "rademacher"):
        generator = DirectionGenerator(2024, distribution)
        with eager():
            expected = generator.direction(torch.empty(n + 1), 1, 2, 3, 4)
        got = torch.empty(2, n)
        key = torch.full((2,), generator.key(1, 2, 3, 4), dtype=torch.int64)
        module.fill(got, key, torch.tensor([0, 1]), distribution == "gaussian")
        if not (torch.equal(got[0], expected[:n]) and torch.equal(got[1], expected[1:])):
            return False
    return True
