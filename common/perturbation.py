"""Counter-based perturbation directions that every party regenerates from one master seed.

Each direction tensor is a pure function of ``(seed, round, step, direction, index)`` where
``index`` is the parameter's position in the canonical order (parameters sorted by name). No
hidden generator state exists, so any process on any device derives the same directions, in any
order, as often as it likes.

Derivation (exact enough to re-implement; all arithmetic modulo 2**64)::

    mix64(z)  = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
                z ^= z >> 31                                  (SplitMix64's finaliser)
    GAMMA     = 0x9E3779B97F4A7C15
    key       = seed; for v in (round, step, direction, index): key = mix64(key + GAMMA * (v + 1))
    x_c       = mix64(key + GAMMA * (c + 1))                 for counter c = 0, 1, 2, ...

Gaussian: each x_c gives one pair (z[2c], z[2c+1]) by Box-Muller in float32 with
``h = x_c >> 40`` and ``l = (x_c >> 8) & 0xFFFFFF`` (24 bits each)::

    v = float32(2**24 - h) * 2**-24            # in (0, 1], exact
    r = sqrt(-2 * log(v));  theta = float32(l) * float32(2*pi * 2**-24)
    z[2c] = r * cos(theta);  z[2c+1] = r * sin(theta)

Rademacher: ``z[c] = 1 - 2 * ((x_c >> 32) & 1)``.

The integer part is exact on every device. Rademacher directions are therefore bitwise identical
everywhere; Gaussian ones are bitwise identical across processes, calls and CPU thread counts
(tested), and may differ by a few ulps between devices whose ``log``/``cos``/``sin`` round
differently (measured in ``bench/gpu.sh``).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .plan import DISTRIBUTIONS, Distribution

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
MIX_C1 = 0xBF58476D1CE4E5B9
MIX_C2 = 0x94D049BB133111EB
#: Pairs (Gaussian) or elements (Rademacher) generated per block: keeps temporaries in cache.
BLOCK = 1 << 18
#: Below this many elements (terms × tensor size) an update generates all its directions at once.
BATCH_UPDATE_ELEMENTS = 1 << 22
_TWO_PI_2M24 = 2.0 * math.pi / float(1 << 24)


def _signed(value: int) -> int:
    """The int64 with the same bits as the uint64 ``value``."""
    return value - (1 << 64) if value >= 1 << 63 else value


def mix64(z: int) -> int:
    """SplitMix64's finaliser on a Python int (the reference for the tensor version)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX_C1) & MASK64
    z = ((z ^ (z >> 27)) * MIX_C2) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, round: int, step: int, direction: int, index: int) -> int:
    """The 64-bit key of one direction tensor: ``mix64`` folded over the coordinates."""
    key = seed & MASK64
    for v in (round, step, direction, index):
        if v < 0:
            raise ValueError(f"direction coordinates must be >= 0; got {v}")
        key = mix64(key + GAMMA * (v + 1))
    return key


def _mix64_(z: Tensor, tmp: Tensor) -> None:
    """In-place SplitMix64 finaliser on an int64 tensor (wrapping arithmetic, logical shifts)."""
    for shift, mult in ((30, MIX_C1), (27, MIX_C2), (31, None)):
        torch.bitwise_right_shift(z, shift, out=tmp)
        tmp.bitwise_and_((1 << (64 - shift)) - 1)
        z.bitwise_xor_(tmp)
        if mult is not None:
            z.mul_(_signed(mult))


@functools.cache
def _gamma_steps(device: torch.device) -> Tensor:
    """``GAMMA * (c + 1)`` for c = 0 .. BLOCK - 1 (wrapping int64), cached per device."""
    return torch.arange(1, BLOCK + 1, dtype=torch.int64, device=device).mul_(_signed(GAMMA))


def _hash_block(keys: Tensor, start: int, count: int) -> Tensor:
    """``x_c`` for counters ``start .. start + count - 1`` under each key of ``keys`` (T, 1):
    a (T, count) int64 tensor holding the uint64 bits."""
    offset = _signed(GAMMA * start & MASK64)
    z = torch.add(keys, offset).add(_gamma_steps(keys.device)[:count])
    _mix64_(z, torch.empty_like(z))
    return z


def _gaussian_block(x: Tensor, out: Tensor) -> None:
    """Box-Muller from hashes ``x`` (T, c) into float32 ``out`` (T, 2c): pairs (cos, sin)."""
    h = (x >> 40).bitwise_and_(0xFFFFFF)
    low = (x >> 8).bitwise_and_(0xFFFFFF)
    v = h.to(torch.float32).mul_(-(2.0**-24)).add_(1.0)  # 1 - h / 2**24, exact
    r = v.log_().mul_(-2.0).sqrt_()
    theta = low.to(torch.float32).mul_(_TWO_PI_2M24)
    pairs = out.view(*x.shape, 2)
    torch.mul(r, torch.cos(theta), out=pairs[..., 0])
    torch.mul(r, theta.sin_(), out=pairs[..., 1])


def _rademacher_block(x: Tensor, out: Tensor) -> None:
    """Signs from bit 32 of the hashes (T, c): ``1 - 2 * bit`` as float32 into ``out`` (T, c)."""
    bits = (x >> 32).bitwise_and_(1)
    torch.sub(1.0, bits.to(torch.float32).mul_(2.0), out=out)


@dataclass(frozen=True)
class DirectionGenerator:
    """Directions z in R^d keyed by (round, step, direction, parameter index).

    The values are float32 numbers (cast to the target dtype when it differs) generated on the
    target tensor's device, block by block, so no d-sized host-to-device copy ever happens.
    """

    seed: int
    distribution: Distribution = "gaussian"

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MASK64:
            raise ValueError(f"seed must be in [0, 2**64); got {self.seed}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {DISTRIBUTIONS}; got {self.distribution!r}"
            )

    def fill_(self, out: Tensor, round: int, step: int, direction: int, index: int) -> Tensor:
        """Overwrite ``out`` (any float dtype, any device, contiguous) with one direction tensor."""
        if not out.is_contiguous():
            raise ValueError("fill_ needs a contiguous tensor")
        self.fill_rows_(out.view(1, -1), [(round, step, direction, index)])
        return out

    def fill_rows_(self, out: Tensor, coords: Sequence[tuple[int, int, int, int]]) -> Tensor:
        """Row i of the 2-D ``out`` (rows may be strided, each row contiguous) becomes the
        direction with coordinates ``coords[i] = (round, step, direction, index)``.

        Generating many small rows in one pass is what makes the batched path cheap; values are
        elementwise functions of (key, counter), so they equal the one-row results bit for bit.
        """
        rows, n = out.shape
        if rows != len(coords):
            raise ValueError(f"{rows} rows but {len(coords)} coordinates")
        keys = torch.tensor([_signed(stream_key(self.seed, *c)) for c in coords], dtype=torch.int64)
        keys = keys.to(out.device).view(rows, 1)
        gaussian = self.distribution == "gaussian"
        per_hash = 2 if gaussian else 1
        cols = max(per_hash, BLOCK * per_hash // rows // per_hash * per_hash)
        direct = rows == 1 and out.dtype == torch.float32
        for start in range(0, n, cols):
            stop = min(n, start + cols)
            hashes = _hash_block(keys, start // per_hash, -(-(stop - start) // per_hash))
            width = hashes.shape[1] * per_hash
            fits = direct and stop - start == width
            buf = out[:, start:stop] if fits else torch.empty(rows, width, device=out.device)
            if gaussian:
                _gaussian_block(hashes, buf)
            else:
                _rademacher_block(hashes, buf)
            if not fits:
                out[:, start:stop].copy_(buf[:, : stop - start])
        return out

    def direction(self, like: Tensor, round: int, step: int, direction: int, index: int) -> Tensor:
        """A new tensor shaped like ``like`` holding direction ``(round, step, direction)`` of
        parameter ``index``."""
        out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        return self.fill_(out, round, step, direction, index)

    def matrix(
        self,
        numels: Sequence[int],
        round: int,
        step: int,
        nu: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """The batched path: a (ν, d) matrix whose row j is the concatenation, in canonical
        parameter order, of the per-parameter directions ``(round, step, j, index)``.

        Row j equals what the in-place path generates tensor by tensor, bit for bit."""
        offsets = [0]
        for n in numels:
            offsets.append(offsets[-1] + n)
        out = torch.empty(nu, offsets[-1], dtype=dtype, device=device)
        for index, (lo, hi) in enumerate(itertools.pairwise(offsets)):
            self.fill_rows_(out[:, lo:hi], [(round, step, j, index) for j in range(nu)])
        return out


def canonical_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Trainable parameters sorted by name: the order every party indexes directions by.

    Independent of module registration order; shared (tied) parameters appear once."""
    return sorted(
        ((name, p) for name, p in module.named_parameters() if p.requires_grad),
        key=lambda item: item[0],
    )


@torch.no_grad()
def apply_directions_(
    params: Sequence[Tensor],
    generator: DirectionGenerator,
    round: int,
    terms: Sequence[tuple[int, int, float]],
) -> None:
    """``w ← w − Σ c · z_{round, step, direction}`` for ``terms = [(step, direction, c), ...]``.

    One tensor's worth of z is held at a time. Each term is applied as ``tmp = z * c`` then
    ``w -= tmp`` (two IEEE-rounded ops, never fused), in the order given, parameter by parameter,
    so every party computing the same update on the same device gets the same bits.
    """
    for index, param in enumerate(params):
        if len(terms) * param.numel() <= BATCH_UPDATE_ELEMENTS:
            coords = [(round, step, direction, index) for step, direction, _ in terms]
            zs = torch.empty(len(terms), param.numel(), dtype=param.dtype, device=param.device)
            generator.fill_rows_(zs, coords)
            for z, (_, _, coefficient) in zip(zs, terms, strict=True):
                param.sub_(z.view_as(param).mul_(coefficient))
            continue
        z = torch.empty_like(param)
        for step, direction, coefficient in terms:
            generator.fill_(z, round, step, direction, index)
            param.sub_(z.mul_(coefficient))


@contextmanager
def perturbed(
    module: nn.Module,
    generator: DirectionGenerator,
    round: int,
    step: int,
    direction: int,
    scale: float,
) -> Iterator[set[int]]:
    """Within the block, every forward of ``module`` sees ``w + scale · z`` (the in-place path).

    Each submodule that owns parameters gets a forward pre-hook that swaps each of its own
    parameters for ``w + scale · z`` (z generated for that one tensor) and a forward hook that
    puts the original tensor object back. The stored weights are never modified, so leaving the
    block restores them exactly, and at most one tensor's worth of z (plus its perturbed copy) is
    alive at a time. Parameters must be used inside the forward of the module that owns them
    (true of torch.nn layers and Hugging Face models); the block yields the set of canonical
    indices that were perturbed, so callers can detect a parameter used any other way.
    """
    index_of = {id(p): i for i, (_, p) in enumerate(canonical_parameters(module))}
    handles = []

    def pre_hook(mod: nn.Module, args: object) -> None:
        for name, param in list(mod._parameters.items()):
            if param is None or id(param) not in index_of:
                continue
            z = generator.direction(param, round, step, direction, index_of[id(param)])
            # w + scale·z written into z's own buffer: one tensor's worth of extra memory, not
            # two (IEEE addition commutes, so the bits equal param + z·scale).
            mod._parameters[name] = z.mul_(scale).add_(param.detach())  # type: ignore[assignment]
            touched.add(index_of[id(param)])
            originals[id(mod)].append((name, param))

    def post_hook(mod: nn.Module, args: object, output: object) -> None:
        for name, param in originals.pop(id(mod), []):
            mod._parameters[name] = param
        originals[id(mod)] = []

    originals: dict[int, list[tuple[str, nn.Parameter]]] = {}
    touched: set[int] = set()
    try:
        for mod in module.modules():
            if any(p is not None for p in mod._parameters.values()):
                originals[id(mod)] = []
                handles.append(mod.register_forward_pre_hook(pre_hook))
                handles.append(mod.register_forward_hook(post_hook))
        yield touched
    finally:
        for handle in handles:
            handle.remove()
        for mod in module.modules():
            for name, param in originals.get(id(mod), []):
                mod._parameters[name] = param
