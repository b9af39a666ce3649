"""A counter-based random stream: draw ``k`` of a seed is a pure function of ``(seed, k)``.

Every number is ``splitmix64(key(seed, stream) + counter * golden)``, computed with int64
tensor arithmetic on the tensor's own device (CPU, CUDA, MPS), so the same seed gives the same
numbers whatever the device, the chunk size or the order in which chunks are made. This is what
lets the random probe generate its 2000 draws in small chunks, on the model's device, for any
input size, and still use the same draws for every image (paper Section 7.1.3).

SplitMix64 (Steele, Lea and Flood 2014; Vigna's constants) is a 64-bit mixing function whose
outputs over consecutive counters pass BigCrush; uniforms take its top 53 bits, normals are the
inverse normal CDF of those uniforms (``torch.special.ndtri``, float64). The samplers built on it
are in :mod:`perturbscope.sampling`.
"""

from __future__ import annotations

import torch

__all__ = ["mix64", "stream_key", "uniform01", "standard_normal", "row_normals", "row_uniforms",
           "row_uniform_block", "STREAMS"]

_MASK64 = (1 << 64) - 1


def _signed(v: int) -> int:
    v &= _MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_C1 = _signed(0xBF58476D1CE4E5B9)
_C2 = _signed(0x94D049BB133111EB)


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (wrapping arithmetic), elementwise; ``z`` is
    overwritten (pass a tensor you own)."""
    for shift, mult in ((30, _C1), (27, _C2), (31, None)):
        t = z >> shift
        t &= (1 << (64 - shift)) - 1
        z ^= t
        if mult is not None:
            z *= mult
    return z


def _mix64_int(v: int) -> int:
    v &= _MASK64
    v = ((v ^ (v >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    v = ((v ^ (v >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _signed(v ^ (v >> 31))


def stream_key(seed: int, stream: int) -> int:
    """The int64 key of sub-stream ``stream`` of ``seed`` (both non-negative ints)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return _mix64_int(_mix64_int(seed) + 0x632BE59BD9B4E019 * (stream + 1))


def _bits(key: int, counters: torch.Tensor) -> torch.Tensor:
    z = counters * _GOLDEN
    z += key
    return mix64(z)


def uniform01(key: int, counters: torch.Tensor) -> torch.Tensor:
    """Uniforms in the open interval (0, 1), float64, one per int64 counter."""
    z = _bits(key, counters)
    z >>= 11
    z &= (1 << 53) - 1
    u = z.double()
    u += 0.5
    u *= 2.0 ** -53
    return u


def standard_normal(key: int, counters: torch.Tensor) -> torch.Tensor:
    """Standard normals, float64, one per int64 counter."""
    return torch.special.ndtri(uniform01(key, counters))


def _counters(start: int, count: int, d: int, device: torch.device | str) -> torch.Tensor:
    rows = torch.arange(start, start + count, dtype=torch.int64, device=device)
    return rows.view(-1, 1) * d + torch.arange(d, dtype=torch.int64, device=device).view(1, -1)


#: sub-streams of one seed, one per kind of number (so two samplers with one seed are independent)
STREAMS = {"ball_normals": 0, "ball_radii": 1, "cube": 2, "gaussian": 3}


def row_normals(seed: int, start: int, count: int, d: int, device: torch.device | str = "cpu",
                stream: int = STREAMS["ball_normals"]) -> torch.Tensor:
    """``(count, d)`` float64 standard normals: row ``k`` uses counters ``k*d .. k*d + d - 1``."""
    return standard_normal(stream_key(seed, stream), _counters(start, count, d, device))


def row_uniforms(seed: int, start: int, count: int, device: torch.device | str = "cpu",
                 stream: int = STREAMS["ball_radii"]) -> torch.Tensor:
    """``(count,)`` float64 uniforms in (0, 1), one per row ``start .. start + count - 1``."""
    return uniform01(stream_key(seed, stream), torch.arange(start, start + count, dtype=torch.int64,
                                                            device=device))


def row_uniform_block(seed: int, start: int, count: int, d: int, device: torch.device | str = "cpu",
                      stream: int = STREAMS["cube"]) -> torch.Tensor:
    """``(count, d)`` float64 uniforms in (0, 1), row-addressed like :func:`row_normals`."""
    return uniform01(stream_key(seed, stream), _counters(start, count, d, device))
