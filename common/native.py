"""The CPU generator in one compiled pass, bitwise the eager one (``native_generator.cpp``).

:class:`~cyber0.common.perturbation.DirectionGenerator` computes its values with a few dozen eager
torch ops per block. The compiled kernel runs the same float32 operations (additions,
multiplications and a correctly rounded square root, each rounded on its own, no fused
multiply-add) pair by pair while they are in cache, in a copy per instruction set, so it returns
the same bits several times faster (``bench/step.py``). It also runs the in-place path's two
elementwise passes (:func:`~cyber0.common.perturbation.shift` and
:func:`~cyber0.common.perturbation.sub_scaled_`: ``w + s·z`` and ``w − c·z``), each in one pass
with the roundings of the two torch ops it replaces and no temporary between them (an update
whose directions are not kept also generates them in that pass: ``sub_generated_``), and
logistic regression's batched ZO scalars (``logreg_scalars``: the central differences of
:meth:`~cyber0.common.models.LogisticRegression.directional_differences`, its products in
4 × 4 tiles of float32 sums in a fixed order, or one ATen matrix product per client where a
client's are many, and its losses in float64, in one call).

Building it is an install step: ``python -m cyber0.common.native`` (run by
``scripts/bootstrap.sh``; a C++ compiler and ninja are needed) compiles it with torch's C++
extension loader into ``CYBER0_NATIVE_DIR`` (default ``~/.cache/cyber0/native``), one folder per
version of the source and of torch. It is compiled and linked with OpenMP: without it torch's
``at::parallel_for`` (in the headers) runs its whole range on the calling thread. Linked, it uses
the ``libgomp.so.1`` torch has already loaded (the same soname), so ``torch.set_num_threads``
governs it as it does torch's own kernels. Where the compiler has no OpenMP it is built for one
thread instead (the same bits). At run time :func:`kernel` only imports a built library, and
uses it only when the library reproduces the eager generator on a probe of both distributions.
Otherwise, or with ``CYBER0_NATIVE_GENERATOR=0``, the eager ops run. The directions and the
updates never depend on which path ran; a client's scalars (``logreg_scalars``) agree with the
torch ops' to float32 rounding of the products, not bit for bit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).with_name("native_generator.cpp")
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno"]
#: Compile and link flags tried first: without OpenMP the kernel runs on one thread.
OPENMP = ["-fopenmp"]
#: A build lock older than this is a killed build's and is removed (a build takes under a minute).
STALE_LOCK_SECONDS = 900
_log = logging.getLogger(__name__)
_LOADED: dict[str, ModuleType | None] = {}
_LOADING = threading.Lock()


def name(openmp: bool = True) -> str:
    """The extension's name: a digest of the source, the flags and the torch version."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join([*FLAGS, *(OPENMP if openmp else []), torch.__version__]).encode())
    return f"cyber0_native_{digest.hexdigest()[:16]}"


def directory(openmp: bool = True) -> Path:
    """Where this version of the extension is built."""
    root = os.environ.get("CYBER0_NATIVE_DIR") or Path.home() / ".cache" / "cyber0" / "native"
    return Path(root) / name(openmp)


def library() -> Path | None:
    """The built library :func:`kernel` imports: the OpenMP build, else the one-thread build."""
    for openmp in (True, False):
        path = directory(openmp) / f"{name(openmp)}.so"
        if path.exists():
            return path
    return None


def build() -> ModuleType:
    """Compile the kernel, or reuse the build of this version (the install step): with OpenMP,
    or on one thread where the compiler has no OpenMP (Apple's clang without libomp)."""
    try:
        return _build(openmp=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or ["?"])[-1]
        _log.warning("native generator not built with OpenMP (%s); built for one thread", reason)
        return _build(openmp=False)


def _build(openmp: bool) -> ModuleType:
    """:func:`build` with or without the OPENMP flags."""
    from torch.utils.cpp_extension import load

    folder = directory(openmp)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
        lock.unlink(missing_ok=True)
    extra = OPENMP if openmp else []
    return load(  # copies of the flag lists: load() appends torch's libraries to the ldflags
        name=name(openmp),
        sources=[str(SOURCE)],
        extra_cflags=[*FLAGS, *extra],
        extra_ldflags=[*extra],
        build_directory=str(folder),
    )


def kernel() -> ModuleType | None:
    """The built module (``fill(out, keys, starts, gaussian)``, ``fill_many(outs, keys,
    gaussian)``, ``shift(out, w, z, scale)``, ``sub_scaled_(w, zs, coefficients)``,
    ``sub_generated_(w, keys, coefficients, gaussian)``, ``logreg_scalars(bias, weight, z, x,
    y, mu)``), or None: not built, ``CYBER0_NATIVE_GENERATOR=0``, or it disagrees with the eager
    ops. Looked up once per process (threads wait for the first lookup); :func:`forget` looks
    again."""
    if "kernel" not in _LOADED:
        with _LOADING:
            if "kernel" not in _LOADED:
                _LOADED["kernel"] = _load()
    return _LOADED["kernel"]


def forget() -> None:
    """Drop the looked-up kernel: the next :func:`kernel` looks again (after an environment
    change)."""
    with _LOADING:
        _LOADED.clear()


def _load() -> ModuleType | None:
    """:func:`kernel`'s lookup: import the built library and check it."""
    if os.environ.get("CYBER0_NATIVE_GENERATOR", "1") == "0":
        return None
    path = library()
    if path is None:
        _log.info("native direction generator not built (python -m cyber0.common.native)")
        return None
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # a library built for another platform: the eager ops run
        _log.warning("native direction generator not loaded (%s); using eager torch ops", exc)
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
        gaussian = distribution == "gaussian"
        module.fill(got, key, torch.tensor([0, 1]), gaussian)
        if not (torch.equal(got[0], expected[:n]) and torch.equal(got[1], expected[1:])):
            return False
        if not _elementwise_agrees(module, got[0], got[1].mul(1e3), int(key[0]), gaussian):
            return False
    return True


def _elementwise_agrees(
    module: ModuleType, z: torch.Tensor, w: torch.Tensor, key: int, gaussian: bool
) -> bool:
    """Whether ``shift`` and ``sub_scaled_`` (two terms), and ``sub_generated_`` with ``z`` the
    stream under ``key``, give the bits of the torch ops they replace."""
    scales = (1e-3, -0.1234567891234)
    expected_update = w.clone()
    for scale in scales:
        shifted = torch.empty_like(w)
        module.shift(shifted, w, z, scale)
        if not torch.equal(shifted, torch.mul(z, scale).add_(w)):
            return False
        expected_update.sub_(torch.mul(z, scale))
    updated = w.clone()
    module.sub_scaled_(updated, [z, z], list(scales))
    generated = w.clone()
    module.sub_generated_(generated, [key, key], list(scales), gaussian)
    return torch.equal(updated, expected_update) and torch.equal(generated, expected_update)


def main() -> int:
    """``python -m cyber0.common.native``: build the kernel and say whether it is used."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build()
    except Exception as exc:  # no compiler or ninja: say so, the eager ops will run
        print(f"native direction generator not built ({exc}); the eager torch ops will run")
        return 0
    used = kernel() is not None
    print(f"native direction generator {'built and used' if used else 'built but not used'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
