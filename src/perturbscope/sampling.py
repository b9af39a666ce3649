"""Batched, seeded samplers for perturbations: ball, sphere, cube and Gaussian.

All samplers return float tensors shaped ``(n, *shape)`` whose flattened rows
live in ``R^d`` with ``d = prod(shape)``. Sizes are in the units of the input
(pixel units in [0, 1] for images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "make_generator",
    "uniform_ball",
    "uniform_sphere",
    "uniform_cube",
    "gaussian",
]


def make_generator(seed: int | torch.Generator | None, device: torch.device | str = "cpu"):
    """Return a :class:`torch.Generator` for ``seed``.

    ``seed`` may already be a generator (returned as is), an int, or ``None``
    (a generator seeded from the OS entropy pool).
    """
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, a torch.Generator or None, got {seed!r}")
        gen.manual_seed(seed)
    return gen


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"shape must be a non-empty sequence of positive ints, got {shape}")
    return shape


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n (number of samples) must be a non-negative int, got {n!r}")


def uniform_sphere(
    n: int,
    shape: int | Sequence[int],
    radius: float = 1.0,
    *,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` points uniform on the sphere of L2 radius ``radius`` in ``R^d``.

    Drawn as ``radius * g / ||g||`` with ``g ~ N(0, I_d)`` (computed in float64
    for the normalisation, then cast to ``dtype``). Returns ``(n, *shape)``.
    """
    _check_n(n)
    shape = _shape(shape)
    gen = make_generator(seed, device)
    d = math.prod(shape)
    g = torch.randn((n, d), generator=gen, dtype=torch.float64, device=device)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return (radius * g).to(dtype).reshape((n, *shape))


def uniform_ball(
    n: int,
    shape: int | Sequence[int],
    radius: float = 1.0,
    *,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` points uniform in the closed L2 ball of radius ``radius`` in ``R^d``.

    Direction uniform on the sphere, radius ``radius * U^(1/d)`` with
    ``U ~ U(0, 1)`` (so ``(||x|| / radius)^d`` is uniform on [0, 1]).
    In high ``d`` almost every point lies near the surface. Returns ``(n, *shape)``.
    """
    _check_n(n)
    shape = _shape(shape)
    gen = make_generator(seed, device)
    d = math.prod(shape)
    g = torch.randn((n, d), generator=gen, dtype=torch.float64, device=device)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)
    u = torch.rand((n, 1), generator=gen, dtype=torch.float64, device=device)
    r = radius * u.pow(1.0 / d)
    return (r * g).to(dtype).reshape((n, *shape))


def uniform_cube(
    n: int,
    shape: int | Sequence[int],
    half_width: float = 1.0,
    *,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` points uniform in the cube ``[-half_width, half_width]^d``. Returns ``(n, *shape)``."""
    _check_n(n)
    shape = _shape(shape)
    gen = make_generator(seed, device)
    u = torch.rand((n, *shape), generator=gen, dtype=dtype, device=device)
    return (2.0 * u - 1.0) * half_width


def gaussian(
    n: int,
    shape: int | Sequence[int],
    sigma: float = 1.0,
    *,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` draws of ``N(0, sigma^2 I_d)``. Returns ``(n, *shape)``."""
    _check_n(n)
    shape = _shape(shape)
    gen = make_generator(seed, device)
    return sigma * torch.randn((n, *shape), generator=gen, dtype=dtype, device=device)
