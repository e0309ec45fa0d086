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
``h = x_c >> 40`` and ``low = (x_c >> 8) & 0xFFFFFF`` (24 bits each)::

    v = float32(2**24 - h) * 2**-24                # in (0, 1], exact
    r = sqrt(-2 * ln(v));  theta = 2*pi * low * 2**-24
    z[2c] = r * cos(theta);  z[2c+1] = r * sin(theta)

where ``ln``, ``cos`` and ``sin`` are not a math library's but fixed float32 polynomials
(:func:`_radius`, :func:`_turn`: Cephes' single-precision coefficients, the operations in a fixed
order, each rounded on its own, no fused multiply-add) and ``sqrt`` is correctly rounded. Every
step is an IEEE-754 operation with one right answer, so no device's vector-math library or
instruction set enters: the eager torch ops and the native CPU kernel compute the same bits, and
a GPU running the eager ops should too (``bench/gpu.sh`` checks it; not yet run). Library
``log``, ``cos`` and ``sin`` differ in the last bit between MKL's AVX2 and AVX-512 code paths,
and between CPU and GPU. Accuracy, checked on all 2^24 inputs of each half: r within one
float32 ulp of the exact value, cos and sin within 1.2e-7.

Rademacher: ``z[c] = 1 - 2 * ((x_c >> 32) & 1)``.

Both are bitwise identical across processes, calls, CPU thread counts and CPU instruction sets
(tested against a stored digest under torch's scalar, AVX2 and machine kernels, MKL's oldest
code path, and the native kernel).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import native
from .plan import DISTRIBUTIONS, Distribution

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
MIX_C1 = 0xBF58476D1CE4E5B9
MIX_C2 = 0x94D049BB133111EB
#: Pairs (Gaussian) or elements (Rademacher) generated per block: keeps temporaries in cache.
BLOCK = 1 << 18
#: Below this many elements (terms × tensor size) an update generates all its directions at once.
BATCH_UPDATE_ELEMENTS = 1 << 22
#: Tensors this small get their directions generated together (update, perturbed forward).
SMALL_TENSOR = 1 << 13
#: Byte alignment of the directions in a :class:`DirectionCache`'s arena.
_ALIGN = 64
#: The direction cache a client keeps by default (:class:`DirectionCache`): MiniLM's
#: non-embedding directions (41 MiB) fit; a model 16 times larger keeps a part of them.
DEFAULT_CACHE_BYTES = 64 << 20


def _f32(value: float) -> float:
    """``value`` rounded to float32 (the generator's constants are float32 numbers)."""
    return struct.unpack("f", struct.pack("f", value))[0]


#: The Gaussian derivation this module implements (protocol version 3; results record it).
GAUSSIAN_DERIVATION = "float32-polynomials"
#: ln on [sqrt(1/2), sqrt(2)): ln(1 + f) = f + f^3 P(f) - f^2 / 2, P's coefficients from the
#: highest power (Cephes' single-precision logf); ln 2 = LN2_HI + LN2_LO.
_LOG_P = tuple(
    _f32(c)
    for c in (
        7.0376836292e-2,
        -1.1514610310e-1,
        1.1676998740e-1,
        -1.2420140846e-1,
        1.4249322787e-1,
        -1.6668057665e-1,
        2.0000714765e-1,
        -2.4999993993e-1,
        3.3333331174e-1,
    )
)
_LN2_LO, _LN2_HI = _f32(-2.12194440e-4), _f32(0.693359375)
#: sin x = x + x^3 S(x^2) and cos x = 1 - x^2 / 2 + x^4 C(x^2) on [-pi/4, pi/4] (Cephes).
_SIN_P = tuple(_f32(c) for c in (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1))
_COS_P = tuple(_f32(c) for c in (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2))
_HALF_PI = _f32(math.pi / 2)
_SQRT_HALF_BITS = 0x3F3504F3  # float32 sqrt(1/2)


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
    if index < 0:
        raise ValueError(f"direction coordinates must be >= 0; got {index}")
    return mix64(_direction_key(seed & MASK64, round, step, direction) + GAMMA * (index + 1))


@functools.lru_cache(maxsize=4096)
def _direction_key(seed: int, round: int, step: int, direction: int) -> int:
    """:func:`stream_key`'s fold before the parameter index (shared by a direction's tensors)."""
    key = seed
    for v in (round, step, direction):
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


@dataclass(frozen=True)
class _Scratch:
    """Temporaries for up to ``size`` hashes, reused block after block and call after call
    (:func:`_scratch`): allocating them afresh costs page faults, as much as the arithmetic."""

    hashes: Tensor  # int64: the x_c of one block
    ints: Tensor  # int64: shifted bits
    floats: Tensor  # float32: Rademacher signs before they are cast to the target
    values: Tensor  # float32 (2 · size): a block's values when they cannot go straight out

    @classmethod
    def new(cls, size: int, device: torch.device) -> _Scratch:
        """Normal tensors even when made under ``torch.inference_mode`` (that can write to
        them), so that calls outside it can write to them too."""
        with torch.inference_mode(False):
            ints = torch.empty(2, size, dtype=torch.int64, device=device)
            floats = torch.empty(3, size, device=device)
        return cls(ints[0], ints[1], floats[0], floats[1:].view(-1))

    def shaped(self, rows: int, cols: int) -> _Scratch:
        """Views for ``rows · cols`` hashes as (rows, cols) tensors (values: (rows, 2 · cols))."""
        n = rows * cols
        return _Scratch(
            self.hashes[:n].view(rows, cols),
            self.ints[:n].view(rows, cols),
            self.floats[:n].view(rows, cols),
            self.values[: 2 * n].view(rows, 2 * cols),
        )


_HELD = threading.local()
_MODE = threading.local()


@contextmanager
def eager() -> Iterator[None]:
    """Within it, this thread runs the eager torch ops on CPU too, not the native kernel
    (:mod:`~cyber0.common.native`): the reference the kernel is checked against."""
    previous = getattr(_MODE, "eager", False)
    _MODE.eager = True
    try:
        yield
    finally:
        _MODE.eager = previous


def native_for_cpu(*tensors: Tensor) -> ModuleType | None:
    """The native kernel when ``tensors`` are all float32 on the CPU and :func:`eager` is off,
    else None (its entry points check their own layouts)."""
    if getattr(_MODE, "eager", False):
        return None
    for t in tensors:  # a loop of cheap attributes: this runs several times a step
        if not t.is_cpu or t.dtype != torch.float32:
            return None
    return native.kernel()


def _native_for(out: Tensor) -> ModuleType | None:
    """The native kernel when it may fill ``out`` (float32 on CPU, rows contiguous), else None."""
    if out.dim() == 2 and out.stride(1) != 1:
        return None
    return native_for_cpu(out)


def _native_pass(*tensors: Tensor) -> ModuleType | None:
    """The native kernel when it may run an elementwise pass over ``tensors`` (float32 on CPU,
    contiguous, one size), else None."""
    size = tensors[0].numel()
    for t in tensors:
        if not t.is_contiguous() or t.numel() != size:
            return None
    return native_for_cpu(*tensors)


def shift(z: Tensor, scale: float, w: Tensor, out: Tensor | None = None) -> Tensor:
    """``fl(fl(z · scale) + w)`` into ``out`` (default: a new tensor; it may be ``z`` itself;
    all of one shape): the bits of ``torch.mul(z, scale).add_(w)``, in one pass of the native
    kernel where it applies (no temporary between the two roundings)."""
    target = torch.empty_like(w) if out is None else out
    kernel = _native_pass(target, w, z)
    if kernel is None:
        return torch.mul(z, scale, out=target).add_(w)
    kernel.shift(target, w, z, scale)
    return target


def sub_scaled_(
    w: Tensor, zs: Sequence[Tensor], coefficients: Sequence[float], scratch: bool = False
) -> None:
    """``w ← fl(w − fl(z_j · c_j))`` in place for each term j in order (each ``z_j`` of ``w``'s
    shape): the bits of ``w.sub_(torch.mul(z_j, c_j))`` term after term, in one pass of the
    native kernel over ``w`` where it applies. ``scratch=True``: the torch ops may overwrite
    the ``z_j`` instead of allocating the products."""
    kernel = _native_pass(w, *zs)
    if kernel is None:
        for z, coefficient in zip(zs, coefficients, strict=True):
            w.sub_(z.mul_(coefficient) if scratch else torch.mul(z, coefficient))
    else:
        kernel.sub_scaled_(w, list(zs), list(coefficients))


def _scratch(size: int, device: torch.device) -> _Scratch:
    """This thread's scratch on ``device``, for at least ``size`` hashes. It is kept (28 bytes
    per hash: at most about 7.3 MiB, BLOCK hashes, for every call but a (ν, d) matrix with ν
    above BLOCK) and grown when a call needs more."""
    held: dict[torch.device, _Scratch] = _HELD.__dict__.setdefault("by_device", {})
    found = held.get(device)
    if found is None or found.hashes.numel() < size:
        found = held[device] = _Scratch.new(size, device)
    return found


def _hash_block(keys: Tensor, start: int, scratch: _Scratch) -> Tensor:
    """``x_c`` for counters ``start .. start + count - 1`` under each key of ``keys`` (T, 1),
    written into ``scratch.hashes`` (T, count; the caller shapes it to the block): int64 holding
    the uint64 bits."""
    z = scratch.hashes
    offset = _signed(GAMMA * start & MASK64)
    torch.add(_gamma_steps(keys.device)[: z.shape[1]], keys + offset, out=z)
    _mix64_(z, scratch.ints)
    return z


def _gaussian_block(x: Tensor, out: Tensor, scratch: _Scratch) -> None:
    """Box-Muller from hashes ``x`` (T, c) into float32 ``out`` (T, 2c): pairs (cos, sin)."""
    bits = torch.bitwise_right_shift(x, 40, out=scratch.ints).bitwise_and_(0xFFFFFF)
    radius = _radius(bits.int())
    bits = torch.bitwise_right_shift(x, 8, out=scratch.ints).bitwise_and_(0xFFFFFF)
    cos, sin = _turn(bits.int())
    pairs = out.view(*x.shape, 2)
    torch.mul(radius, cos, out=pairs[..., 0])
    torch.mul(radius, sin, out=pairs[..., 1])


def _radius(h: Tensor) -> Tensor:
    """sqrt(-2 ln v) for v = (2^24 - h) 2^-24, h int32 in [0, 2^24): v = m 2^e with m in
    [sqrt(1/2), sqrt(2)), f = m - 1, ln v = f + (f^3 P(f) + e LN2_LO - f^2 / 2) + e LN2_HI, each
    operation rounded to float32 in this order; then the correctly rounded square root (float64's
    root rounded to float32 is the correctly rounded float32 root of a float32)."""
    v = h.neg().add_(1 << 24).float().mul_(2.0**-24)
    bits = v.view(torch.int32)
    e = torch.sub(bits, _SQRT_HALF_BITS).bitwise_right_shift_(23)
    f = torch.sub(bits, e * (1 << 23)).view(torch.float32).sub_(1.0)
    z = f * f
    y = f * _LOG_P[0]
    for c in _LOG_P[1:]:
        y.add_(c).mul_(f)
    y.mul_(z)
    ef = e.float()
    y.add_(ef * _LN2_LO).sub_(z.mul_(0.5))
    ln = f.add_(y).add_(ef.mul_(_LN2_HI))
    return ln.mul_(-2.0).double().sqrt_().float()


def _turn(low: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of 2 pi low 2^-24, ``low`` int32 in [0, 2^24): the angle is (q + t) pi / 2 with
    q = round(low 2^-22) and t in [-1/2, 1/2); x = t · HALF_PI, then sin x and cos x by their
    polynomials and the quadrant q's swap and signs."""
    q = torch.add(low, 1 << 21).bitwise_right_shift_(22)
    x = torch.sub(low, q * (1 << 22)).float().mul_(2.0**-22).mul_(_HALF_PI)
    z = x * x
    s = z * _SIN_P[0]
    s.add_(_SIN_P[1]).mul_(z).add_(_SIN_P[2]).mul_(z).mul_(x).add_(x)
    c = z * _COS_P[0]
    c.add_(_COS_P[1]).mul_(z).add_(_COS_P[2]).mul_(z).mul_(z).sub_(z.mul_(0.5)).add_(1.0)
    swap = q.bitwise_and(1).bool()
    cos, sin = torch.where(swap, s, c), torch.where(swap, c, s)
    cos = torch.where(q.add(1).bitwise_and_(2).bool(), cos.neg(), cos)
    sin = torch.where(q.bitwise_and_(2).bool(), sin.neg(), sin)
    return cos, sin


def _rademacher_block(x: Tensor, out: Tensor, scratch: _Scratch) -> None:
    """Signs from bit 32 of the hashes (T, c): ``1 - 2 * bit`` as float32 into ``out`` (T, c)."""
    bits = torch.bitwise_right_shift(x, 32, out=scratch.ints).bitwise_and_(1)
    out.copy_(scratch.floats.copy_(bits).mul_(-2.0).add_(1.0))


@dataclass(frozen=True)
class DirectionGenerator:
    """Directions z in R^d keyed by (round, step, direction, parameter index).

    The values are float32 numbers (cast to the target dtype when it differs) generated on the
    target tensor's device, block by block, so no d-sized host-to-device copy ever happens. On
    CPU, float32 targets are filled by the native kernel where it is built
    (:mod:`~cyber0.common.native`), with the same bits as the eager ops (:func:`eager`).
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
        keys = torch.tensor([self.key(*c) for c in coords], dtype=torch.int64)
        kernel = _native_for(out)
        if kernel is not None:
            kernel.fill(out, keys, torch.zeros(rows, dtype=torch.int64), self._gaussian)
            return out
        keys = keys.to(out.device).view(rows, 1)
        per_hash = 2 if self._gaussian else 1
        cols = max(per_hash, BLOCK * per_hash // rows // per_hash * per_hash)
        direct = rows == 1 and out.dtype == torch.float32
        scratch = _scratch(rows * -(-min(cols, n) // per_hash), out.device)
        for start in range(0, n, cols):
            stop = min(n, start + cols)
            block = scratch.shaped(rows, -(-(stop - start) // per_hash))
            hashes = _hash_block(keys, start // per_hash, block)
            width = hashes.shape[1] * per_hash
            fits = direct and stop - start == width
            buf = out[:, start:stop] if fits else block.values[:, :width]
            self._transform(hashes, buf, block)
            if not fits:
                out[:, start:stop].copy_(buf[:, : stop - start])
        return out

    def fill_ranges_(
        self,
        out: Tensor,
        starts: Tensor | Sequence[int],
        round: int,
        step: int,
        direction: int,
        index: int,
    ) -> Tensor:
        """Row i of the 2-D ``out`` (R, w) becomes ``z[starts[i] : starts[i] + w]``, where z is
        the flat direction ``(round, step, direction, index)`` that :meth:`fill_` writes.

        Only the counters of those elements are hashed (values are functions of (key, counter)
        alone), so a few rows of a large tensor cost a few rows; the bits equal the slices of
        :meth:`fill_`'s tensor. Gaussian ranges starting at an odd element take the pair's sine.
        """
        rows, width = out.shape
        first = torch.as_tensor(starts, dtype=torch.int64, device=out.device).reshape(-1)
        if first.numel() != rows:
            raise ValueError(f"{rows} rows but {first.numel()} starts")
        if rows == 0 or width == 0:
            return out
        if bool((first < 0).any()):
            raise ValueError("starts must be >= 0")
        kernel = _native_for(out)
        if kernel is not None:
            keys = torch.full((rows,), self.key(round, step, direction, index), dtype=torch.int64)
            kernel.fill(out, keys, first, self._gaussian)
            return out
        gaussian = self._gaussian
        per_hash = 2 if gaussian else 1
        # Gaussian: counter c holds elements 2c, 2c + 1; a range at an odd start needs one more.
        odd = gaussian and bool((first & 1).any())
        span = BLOCK * per_hash - 2 * odd  # at most BLOCK hashes per row (even: parity kept)
        if width > span:
            for a in range(0, width, span):
                b = min(width, a + span)
                self.fill_ranges_(out[:, a:b], first + a, round, step, direction, index)
            return out
        key = self.key(round, step, direction, index)
        hashes_per_row = (width + odd + per_hash - 1) // per_hash
        chunk = max(1, BLOCK // hashes_per_row)
        steps = _gamma_steps(out.device)[:hashes_per_row]
        direct = out.is_contiguous() and out.dtype == torch.float32
        scratch = _scratch(min(rows, chunk) * hashes_per_row, out.device)
        for lo in range(0, rows, chunk):
            base = first[lo : lo + chunk]
            counters = base >> 1 if gaussian else base
            block = scratch.shaped(base.numel(), hashes_per_row)
            # x_c = mix64(key + GAMMA·(c + 1)) for c = counters + 0, 1, ...: wrapping int64.
            hashes = block.hashes
            torch.add(steps, counters.mul(_signed(GAMMA)).add_(key)[:, None], out=hashes)
            _mix64_(hashes, block.ints)
            target = out[lo : lo + base.numel()]
            width_made = hashes_per_row * per_hash
            fits = direct and width_made == width
            buf = target if fits else block.values[:, :width_made]
            self._transform(hashes, buf, block)
            if odd:
                cols = (base & 1)[:, None] + torch.arange(width, device=out.device)
                target.copy_(buf.gather(1, cols))
            elif not fits:
                target.copy_(buf[:, :width])
        return out

    def fill_many_(
        self, outs: Sequence[Tensor], coords: Sequence[tuple[int, int, int, int]]
    ) -> None:
        """``outs[i]`` (contiguous, any float dtype, all on one device) becomes the direction
        ``coords[i] = (round, step, direction, index)``, bitwise as :meth:`fill_` makes it.

        The tensors' counters are hashed as one concatenated sequence, BLOCK hashes at a time
        (hash j of tensor i is ``key_i + GAMMA·(j − first_i + 1)``), so many small tensors cost
        the same few dozen torch ops as one tensor of their total size.
        """
        if len(outs) != len(coords):
            raise ValueError(f"{len(outs)} tensors but {len(coords)} coordinates")
        for out in outs:
            if not out.is_contiguous():
                raise ValueError("fill_many_ needs contiguous tensors")
        if not outs:
            return
        kernel = native_for_cpu(*outs)  # contiguous: checked above
        if kernel is not None:
            kernel.fill_many(list(outs), [self.key(*c) for c in coords], self._gaussian)
            return
        device = outs[0].device
        per_hash = 2 if self._gaussian else 1
        counts = [-(-out.numel() // per_hash) for out in outs]
        firsts = list(itertools.accumulate(counts, initial=0))
        shifted = torch.tensor(
            [
                _signed((stream_key(self.seed, *c) - GAMMA * first) & MASK64)
                for c, first in zip(coords, firsts[:-1], strict=True)
            ],
            dtype=torch.int64,
        ).to(device)
        total, i = firsts[-1], 0
        scratch = _scratch(min(total, BLOCK), device)
        for a in range(0, total, BLOCK):
            b = min(total, a + BLOCK)
            while firsts[i + 1] <= a:
                i += 1
            last = bisect.bisect_left(firsts, b) - 1  # the last tensor with hashes before b
            overlap = [min(b, firsts[k + 1]) - max(a, firsts[k]) for k in range(i, last + 1)]
            repeats = torch.tensor(overlap, device=device)
            hashes = torch.repeat_interleave(shifted[i : last + 1], repeats, output_size=b - a)
            hashes = hashes.add_(_signed(GAMMA * a & MASK64))
            hashes = hashes.add_(_gamma_steps(device)[: b - a]).view(1, -1)
            block = scratch.shaped(1, b - a)
            _mix64_(hashes, block.ints)
            buf = block.values[:, : (b - a) * per_hash]
            self._transform(hashes, buf, block)
            for k in range(i, last + 1):
                lo = max(a, firsts[k]) - firsts[k]  # the tensor's hashes in this block
                hi = min(b, firsts[k + 1]) - firsts[k]
                flat = outs[k].view(-1)[lo * per_hash : hi * per_hash]
                at = (firsts[k] + lo - a) * per_hash
                flat.copy_(buf[0, at : at + flat.numel()])

    def key(self, round: int, step: int, direction: int, index: int) -> int:
        """The stream key of a direction tensor (:func:`stream_key`) as a signed int64."""
        return _signed(stream_key(self.seed, round, step, direction, index))

    @property
    def _gaussian(self) -> bool:
        """Whether the directions are Gaussian (two values per hash) rather than Rademacher."""
        return self.distribution == "gaussian"

    def _transform(self, hashes: Tensor, out: Tensor, scratch: _Scratch) -> None:
        """The values of ``hashes`` (T, c) into ``out`` (T, 2c Gaussian; T, c Rademacher)."""
        if self._gaussian:
            _gaussian_block(hashes, out, scratch)
        else:
            _rademacher_block(hashes, out, scratch)

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

        Row j equals what the in-place path generates tensor by tensor, bit for bit. A single
        row (ν = 1) hashes its tensors as one sequence (:meth:`fill_many_`: one pass of the
        generator's ops instead of one per tensor); more rows go tensor by tensor, ν rows at a
        time (:meth:`fill_rows_`), which is the faster order there."""
        out = torch.empty(nu, sum(numels), dtype=dtype, device=device)
        if nu == 1:
            coords = [(round, step, 0, index) for index in range(len(numels))]
            self.fill_many_(list(out[0].split_with_sizes(list(numels))), coords)
            return out
        offsets = itertools.accumulate(numels, initial=0)
        for index, (lo, hi) in enumerate(itertools.pairwise(offsets)):
            self.fill_rows_(out[:, lo:hi], [(round, step, j, index) for j in range(nu)])
        return out


Coords = tuple[int, int, int, int]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class _KeptMatrix:
    """A kept (ν, d) direction matrix and where each parameter's part of a row lies in it."""

    matrix: Tensor
    shapes: Sequence[Shape]
    offsets: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, matrix: Tensor, shapes: Sequence[Shape]) -> _KeptMatrix:
        """ValueError unless ``matrix`` is contiguous (ν, d) and ``shapes`` cut d exactly."""
        if matrix.dim() != 2 or not matrix.is_contiguous():
            raise ValueError("keep_matrix needs a contiguous (ν, d) matrix")
        offsets, strides = _layout(tuple(shapes))
        if offsets[-1] != matrix.shape[1]:
            raise ValueError(f"shapes {list(shapes)} do not cut rows of {matrix.shape[1]} elements")
        return cls(matrix, shapes, offsets, strides)

    def part(self, direction: int, index: int) -> Tensor | None:
        """Direction ``direction`` of parameter ``index`` (a view), or None outside the matrix."""
        rows, d = self.matrix.shape
        if not (0 <= direction < rows and 0 <= index < len(self.shapes)):
            return None
        offset = self.matrix.storage_offset() + direction * d + self.offsets[index]
        return self.matrix.as_strided(self.shapes[index], self.strides[index], offset)


@functools.lru_cache(maxsize=64)
def _layout(shapes: tuple[Shape, ...]) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Where each of ``shapes`` starts in a row of them laid end to end, the row's length last,
    and each one's contiguous strides (one model's layout, computed once)."""
    offsets = tuple(itertools.accumulate((math.prod(s) for s in shapes), initial=0))
    return offsets, tuple(_contiguous_strides(s) for s in shapes)


def _contiguous_strides(shape: Shape) -> tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape``."""
    if not shape:
        return ()
    return tuple(itertools.accumulate(reversed(shape[1:]), operator.mul, initial=1))[::-1]


class DirectionCache:
    """One round's directions, kept from their first generation to the round's update, in an
    arena of ``budget`` bytes (the in-place path).

    Without it the in-place path generates each tensor's z three times per direction: for the
    forward at w + μz, for the one at w − μz and for the update. Entries are keyed by
    ``(round, step, direction, index)`` and hold the generator's values in the parameter's
    dtype, so every result is bitwise the same at any budget (0 keeps nothing). The arena is one
    allocation, made at the first kept direction (on that tensor's device; tensors on another
    are not kept), so the memory it costs is exactly ``budget``: give it
    :func:`whole_direction_bytes` of the model, or less. Tensors are kept in the order they are
    first generated until the arena is full; keeping a direction of a new round drops the
    previous round's. Only the tensors :func:`perturbed` generates whole are kept (not those of
    at most SMALL_TENSOR elements, generated together, nor lookup tables' rows). The batched
    path keeps its (ν, d) direction matrices instead (:meth:`keep_matrix`), within the same
    budget.
    """

    def __init__(self, budget: int = 0) -> None:
        if budget < 0:
            raise ValueError(f"the direction cache budget must be >= 0 bytes; got {budget}")
        self.budget = budget
        self._arena: Tensor | None = None
        self._round = -1
        self._entries: dict[Coords, Tensor] = {}
        self._matrices: dict[tuple[int, int], _KeptMatrix] = {}
        self._used = 0
        self._held = 0

    @property
    def used(self) -> int:
        """Bytes holding this round's directions (arena and kept matrices)."""
        return self._used + self._held

    def keep_matrix(self, round: int, step: int, matrix: Tensor, shapes: Sequence[Shape]) -> bool:
        """Keep the batched path's contiguous direction matrix of ``(round, step)``: row j, cut
        at the canonical parameters' ``shapes``, is direction j of each parameter (:meth:`get`
        returns views of it; the caller must not modify it). Its bytes count against the
        budget; False, and nothing kept, when it does not fit."""
        kept = _KeptMatrix.of(matrix, shapes)
        self._begin(round)
        size = matrix.numel() * matrix.element_size()
        if self._used + self._held + size > self.budget:
            return False
        self._held += size
        self._matrices[(round, step)] = kept
        return True

    def get(self, coords: Coords) -> Tensor | None:
        """The kept direction ``(round, step, direction, index)``, or None. Read-only."""
        found = self._entries.get(coords)
        if found is not None or coords[0] != self._round:
            return found
        kept = self._matrices.get((coords[0], coords[1]))
        return None if kept is None else kept.part(coords[2], coords[3])

    def shifted(
        self, generator: DirectionGenerator, param: Tensor, scale: float, coords: Coords
    ) -> Tensor:
        """A new tensor ``w + scale · z`` (bitwise ``fl(fl(z · scale) + w)``), for the
        direction ``coords`` of ``param``, keeping z when it fits."""
        z = self.get(coords)
        if z is None:
            slot = self._slot(coords, param)
            if slot is None:
                z = generator.direction(param, *coords)
                return shift(z, scale, param.detach(), out=z)
            z = generator.fill_(slot, *coords)
        return shift(z, scale, param.detach())

    def _slot(self, coords: Coords, like: Tensor) -> Tensor | None:
        """Arena space for the direction ``coords`` shaped like ``like``, registered under
        ``coords``; None when it does not fit."""
        self._begin(coords[0])
        start = -(-self._used // _ALIGN) * _ALIGN
        size = like.numel() * like.element_size()
        if start + size + self._held > self.budget:
            return None
        if self._arena is None:
            with torch.inference_mode(False):  # writable in and out of inference mode
                self._arena = torch.empty(self.budget, dtype=torch.uint8, device=like.device)
        elif self._arena.device != like.device:
            return None
        slot = self._arena[start : start + size].view(like.dtype).view(like.shape)
        self._entries[coords] = slot
        self._used = start + size
        return slot

    def _begin(self, round: int) -> None:
        """Drop the kept directions when ``round`` is not theirs."""
        if round != self._round:
            self._entries.clear()
            self._matrices.clear()
            self._round, self._used, self._held = round, 0, 0


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
    cache: DirectionCache | None = None,
) -> None:
    """``w ← w − Σ c · z_{round, step, direction}`` for ``terms = [(step, direction, c), ...]``.

    Each term is applied as ``tmp = z * c`` then ``w -= tmp`` (two IEEE-rounded ops, never
    fused), in the order given, element by element, so every party computing the same update on
    the same device gets the same bits. Tensors of at most SMALL_TENSOR elements get their
    directions together (:meth:`DirectionGenerator.fill_many_`). A larger one gets them in the
    native pass that applies them (its z never stored), or where that does not apply (GPU, other
    dtypes) all its terms at once when they fit in BATCH_UPDATE_ELEMENTS, else one term and one
    block of 2·BLOCK elements at a time. About BATCH_UPDATE_ELEMENTS of z is held at a time, at
    most (or one term for all the small tensors, or one block, where that is more). A tensor
    with directions in ``cache`` takes those from there and generates the others (same bits).
    A tensor's terms in hand are applied in one pass (:func:`sub_scaled_`).
    """
    small: dict[torch.device, list[tuple[int, Tensor]]] = {}
    for index, param in enumerate(params):
        kept = [cache.get((round, s, d, index)) for s, d, _ in terms] if cache is not None else []
        found = [z for z in kept if z is not None]
        if found and len(found) == len(terms):
            sub_scaled_(param, found, [c for _, _, c in terms])
        elif found:
            for z, term in zip(kept, terms, strict=True):
                if z is None:
                    _sub_generated_(param, generator, round, [term], index)
                else:
                    sub_scaled_(param, [z], [term[2]])
        elif param.numel() <= SMALL_TENSOR:
            small.setdefault(param.device, []).append((index, param))
        else:
            _sub_generated_(param, generator, round, terms, index)
    for group in small.values():
        size = sum(param.numel() for _, param in group)
        per_call = max(1, BATCH_UPDATE_ELEMENTS // max(1, size))
        for first in range(0, len(terms), per_call):
            chunk = terms[first : first + per_call]
            parts = [
                torch.empty(p.shape, dtype=p.dtype, device=p.device)
                for _ in chunk
                for _, p in group
            ]
            generator.fill_many_(parts, [(round, s, d, i) for s, d, _ in chunk for i, _ in group])
            coefficients = [c for _, _, c in chunk]
            for k, (_, param) in enumerate(group):
                sub_scaled_(param, parts[k :: len(group)], coefficients, scratch=True)


def _sub_generated_(
    param: Tensor,
    generator: DirectionGenerator,
    round: int,
    terms: Sequence[tuple[int, int, float]],
    index: int,
) -> None:
    """:func:`apply_directions_` for one large tensor whose directions are generated here: in
    one native pass that generates each piece's z in cache (``sub_generated_``) where the kernel
    applies; else all terms at once when they fit in BATCH_UPDATE_ELEMENTS, else 2·BLOCK
    elements at a time, each block taking every term in order
    (:meth:`DirectionGenerator.fill_ranges_`). The same bits on every route."""
    coefficients = [c for _, _, c in terms]
    kernel = _native_pass(param)
    if kernel is not None:
        keys = [generator.key(round, step, direction, index) for step, direction, _ in terms]
        kernel.sub_generated_(param, keys, coefficients, generator._gaussian)
        return
    if len(terms) * param.numel() <= BATCH_UPDATE_ELEMENTS:
        coords = [(round, step, direction, index) for step, direction, _ in terms]
        zs = torch.empty(len(terms), param.numel(), dtype=param.dtype, device=param.device)
        generator.fill_rows_(zs, coords)
        rows = list(zs.view(len(terms), *param.shape).unbind(0))
        sub_scaled_(param, rows, coefficients, scratch=True)
        return
    flat = param.view(-1)
    width = min(flat.numel(), 2 * BLOCK)
    buf = torch.empty(1, width, dtype=param.dtype, device=param.device)
    for start in range(0, flat.numel(), width):
        part = flat[start : start + width]
        z = buf[:, : part.numel()]
        for step, direction, coefficient in terms:
            generator.fill_ranges_(z, [start], round, step, direction, index)
            sub_scaled_(part, [z.view(-1)], [coefficient], scratch=True)


def _lookup_table(mod: nn.Module) -> bool:
    """Whether ``mod`` is a plain ``nn.Embedding`` (its own forward, no ``max_norm``, which
    would renormalise the stored table in place): its output is exactly ``weight[ids]``."""
    return (
        isinstance(mod, nn.Embedding)
        and type(mod).forward is nn.Embedding.forward
        and mod.max_norm is None
        and list(mod._parameters) == ["weight"]
    )


def _hooked(
    module: nn.Module,
) -> tuple[dict[int, int], list[nn.Module], list[nn.Module], dict[int, Tensor]]:
    """How :func:`perturbed` treats ``module``: the canonical index of each trainable
    parameter (by id), the lookup tables (rows only), the modules whose parameters it swaps,
    and the swapped tensors small enough to be generated together (by id); the other swapped
    tensors are generated whole, one by one."""
    index_of = {id(p): i for i, (_, p) in enumerate(canonical_parameters(module))}
    lookups = [m for m in module.modules() if _lookup_table(m) and id(m.weight) in index_of]
    row_wise = {id(m) for m in lookups}
    swapped = [
        m
        for m in module.modules()
        if id(m) not in row_wise and any(p is not None for p in m._parameters.values())
    ]
    small: dict[int, Tensor] = {
        id(p): p
        for m in swapped
        if not isinstance(m, nn.Embedding)  # max_norm renormalises its copy in place
        for p in m._parameters.values()
        if p is not None and id(p) in index_of and p.numel() <= SMALL_TENSOR
    }
    return index_of, lookups, swapped, small


def whole_direction_bytes(module: nn.Module) -> int:
    """The :class:`DirectionCache` budget that keeps one direction of every tensor
    :func:`perturbed` generates whole (aligned as the arena lays them out)."""
    index_of, _, swapped, small = _hooked(module)
    whole = {
        id(p): p
        for m in swapped
        for p in m._parameters.values()
        if p is not None and id(p) in index_of and id(p) not in small
    }
    return sum(-(-p.numel() * p.element_size() // _ALIGN) * _ALIGN for p in whole.values())


@contextmanager
def perturbed(
    module: nn.Module,
    generator: DirectionGenerator,
    round: int,
    step: int,
    direction: int,
    scale: float,
    cache: DirectionCache | None = None,
) -> Iterator[set[int]]:
    """Within the block, every forward of ``module`` sees ``w + scale · z`` (the in-place path).

    Each submodule that owns parameters gets a forward pre-hook that swaps each of its own
    parameters for ``w + scale · z`` (z generated for that one tensor) and a forward hook that
    puts the original tensor object back. The stored weights are never modified, so leaving the
    block restores them exactly, and at most one tensor's worth of z (plus its perturbed copy) is
    alive at a time, besides the copies of the tensors of at most SMALL_TENSOR elements, which
    the first pre-hook makes all at once (:meth:`DirectionGenerator.fill_many_`: one pass
    instead of dozens of tiny ones) and which live until the block ends, and besides the
    directions ``cache`` keeps (:class:`DirectionCache`: the next perturbed forward and the
    update of the same direction reuse them). Parameters must be used inside the forward of the
    module that owns them (true of torch.nn layers and Hugging Face models); the block yields
    the set of canonical indices that were perturbed, so callers can detect a parameter used any
    other way.

    A plain ``nn.Embedding`` (see :func:`_lookup_table`) reads only the rows of its ids: its
    forward hook returns ``(scale · Z)[ids] + W[ids]``, generating z for the distinct rows only
    (:meth:`DirectionGenerator.fill_ranges_`). The bits equal those of ``(W + scale · Z)[ids]``:
    the same two IEEE operations per element, and addition commutes.
    """
    index_of, lookups, swapped, small = _hooked(module)
    keeper = cache if cache is not None else DirectionCache()
    handles = []
    ready: dict[int, Tensor] = {}

    def perturb_small() -> None:
        """All small tensors' ``w + scale·z`` at once (made at the first forward, in its mode)."""
        zs = [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in small.values()]
        generator.fill_many_(zs, [(round, step, direction, index_of[k]) for k in small])
        for (key, param), z in zip(small.items(), zs, strict=True):
            ready[key] = shift(z, scale, param.detach(), out=z)

    def pre_hook(mod: nn.Module, args: object) -> None:
        if small and not ready:
            perturb_small()
        for name, param in list(mod._parameters.items()):
            if param is None or id(param) not in index_of:
                continue
            z = ready.get(id(param))
            if z is None:
                coords = (round, step, direction, index_of[id(param)])
                z = keeper.shifted(generator, param, scale, coords)
            mod._parameters[name] = z  # type: ignore[assignment]
            touched.add(index_of[id(param)])
            originals[id(mod)].append((name, param))

    def post_hook(mod: nn.Module, args: object, output: object) -> None:
        for name, param in originals.pop(id(mod), []):
            mod._parameters[name] = param
        originals[id(mod)] = []

    def lookup_hook(
        mod: nn.Module, args: tuple[object, ...], kwargs: dict[str, object], output: Tensor
    ) -> Tensor:
        ids = args[0] if args else kwargs["input"]
        assert isinstance(mod, nn.Embedding) and isinstance(ids, Tensor)
        weight, index = mod.weight, index_of[id(mod.weight)]
        rows, inverse = torch.unique(ids, return_inverse=True)
        width = weight.shape[1]
        z = torch.empty(rows.numel(), width, dtype=weight.dtype, device=weight.device)
        generator.fill_ranges_(z, rows.long() * width, round, step, direction, index)
        touched.add(index)
        return F.embedding(inverse, z.mul_(scale)).add_(output)

    originals: dict[int, list[tuple[str, nn.Parameter]]] = {}
    touched: set[int] = set()
    try:
        for mod in lookups:
            handles.append(mod.register_forward_hook(lookup_hook, with_kwargs=True))
        for mod in swapped:
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
