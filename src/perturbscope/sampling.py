"""Batched, seeded samplers for perturbations: ball, sphere, cube and Gaussian.

All samplers return float tensors shaped ``(n, *shape)`` whose flattened rows
live in ``R^d`` with ``d = prod(shape)``. Sizes are in the units of the input
(pixel units in [0, 1] for images).

Seed convention (every sampler here): draw ``k`` of an integer seed ``s`` is a pure function of
``(s, k)`` (the counter-based stream of :mod:`perturbscope.rng`), computed on ``device``. So the
same seed gives the same draws whatever the device, and ``start=k`` gives draws ``k, k+1, ...``
of the same set: a large set can be made in chunks. ``seed`` may also be a
:class:`torch.Generator`, which is advanced by one integer draw that becomes the seed (so one
generator feeds several calls in turn, each with new numbers), or ``None`` (a seed from the OS).

:func:`uniform_ball` and :func:`uniform_sphere` are the package's only ball / sphere samplers
(with ``orthogonal_to``: in the hyperplane orthogonal to a given unit vector per row).
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


def make_generator(seed: int | torch.Generator | None,
                   device: torch.device | str | None = "cpu") -> torch.Generator:
    """Return a :class:`torch.Generator` for ``seed`` (the module's seed convention).

    ``seed`` may already be a generator (returned as is), an int, or ``None``
    (a generator seeded from the OS entropy pool); a new generator lives on ``device``
    (``None``: the CPU).
    """
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator(device="cpu" if device is None else device)
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


def _radii(radius: float | torch.Tensor, n: int, device: torch.device | str) -> torch.Tensor | float:
    """A scalar radius as a float; per-row radii as ``(n, 1)`` float64."""
    if isinstance(radius, torch.Tensor) and radius.numel() != 1:
        if radius.numel() != n:
            raise ValueError(f"radius must be a scalar or have {n} values, got shape {tuple(radius.shape)}")
        return radius.to(device=device, dtype=torch.float64).reshape(n, 1)
    return float(radius)


def seed_int(seed: int | torch.Generator | None) -> int:
    """The integer seed a sampler call uses: ``seed`` itself, one draw of a generator, or OS entropy."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=seed, device=seed.device).item())
    if seed is None:
        import secrets

        return secrets.randbits(62)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, a torch.Generator or None, got {seed!r}")
    return seed


def _setup(n: int, shape: int | Sequence[int], seed, device, orthogonal_to, draw_dtype, start: int = 0
           ) -> tuple[tuple[int, ...], int, torch.device | str, int]:
    _check_n(n)
    shape = _shape(shape)
    if device is None:
        device = seed.device if isinstance(seed, torch.Generator) else "cpu"
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start (index of the first draw) must be an int >= 0, got {start!r}")
    key = seed_int(seed)
    d = math.prod(shape)
    if orthogonal_to is not None:
        if d < 2:
            raise ValueError("orthogonal_to needs inputs with at least 2 values")
        if orthogonal_to.numel() not in (d, n * d):
            raise ValueError(f"orthogonal_to must have shape ({n}, {d}) or ({d},), got "
                             f"{tuple(orthogonal_to.shape)}")
    if draw_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"draw_dtype must be torch.float32 or torch.float64, got {draw_dtype}")
    return shape, key, device, d


#: float64 values generated at once inside a sampler (bounds its temporaries to ~100 MB)
_BLOCK = 2**22


def _draw(n: int, d: int, key: int, device: torch.device | str, radius,
          orthogonal_to: torch.Tensor | None, ball: bool, draw_dtype: torch.dtype, start: int = 0,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(n, d)`` points of the sphere / ball of ``radius`` in ``dtype`` (default ``draw_dtype``):
    draws ``start .. start + n - 1`` of seed ``key``, made in blocks of rows so that the
    float64 temporaries never exceed :data:`_BLOCK` values."""
    rows = max(1, _BLOCK // max(d, 1))
    if n <= rows:
        return _draw_rows(n, d, key, device, radius, orthogonal_to, ball, draw_dtype, start).to(
            dtype or draw_dtype)
    out = torch.empty((n, d), dtype=dtype or draw_dtype, device=device)
    per_row = isinstance(radius, torch.Tensor) and radius.numel() != 1
    for a in range(0, n, rows):
        b = min(n, a + rows)
        r = radius.reshape(-1)[a:b] if per_row else radius
        e = orthogonal_to
        if e is not None and e.numel() == n * d:
            e = e.reshape(n, d)[a:b]
        out[a:b] = _draw_rows(b - a, d, key, device, r, e, ball, draw_dtype, start + a)
    return out


def _draw_rows(n: int, d: int, key: int, device: torch.device | str, radius,
               orthogonal_to: torch.Tensor | None, ball: bool, draw_dtype: torch.dtype, start: int = 0
               ) -> torch.Tensor:
    """``(n, d)`` points (``draw_dtype``) of the sphere / ball of ``radius``: draws
    ``start .. start + n - 1`` of seed ``key`` (normals of stream 0, radii of stream 1)."""
    from perturbscope.rng import row_normals, row_uniforms

    g = row_normals(key, start, n, d, device).to(draw_dtype)
    if orthogonal_to is None:
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)
        if not ball:
            return _radii(radius, n, device) * g
        u = row_uniforms(key, start, n, device).unsqueeze(1)
        return (_radii(radius, n, device) * u.pow(1.0 / d)) * g
    # orthogonal part of g, scaled, in two fused passes over the (n, d) block (the hot path in
    # large d): c g - c <g, e> e with c = rho / ||g - <g, e> e||
    e = orthogonal_to.to(device=device, dtype=draw_dtype).reshape(-1, d).expand(n, d)
    ge = torch.linalg.vecdot(g, e, dim=1).to(torch.float64)
    gg = torch.linalg.vector_norm(g, dim=1).to(torch.float64).square()
    perp = (gg - ge * ge).clamp_min(torch.finfo(torch.float64).tiny).sqrt()
    rho = _radii(radius, n, device)
    rho = torch.full((n,), rho, dtype=torch.float64, device=device) if isinstance(rho, float) \
        else rho[:, 0]
    if ball:
        v = row_uniforms(key, start, n, device)
        rho = rho * v.pow(1.0 / (d - 1))
    c = rho / perp
    g.mul_(c.to(draw_dtype).unsqueeze(1))
    return g.addcmul_((-c * ge).to(draw_dtype).unsqueeze(1), e)


def uniform_sphere(
    n: int,
    shape: int | Sequence[int],
    radius: float | torch.Tensor = 1.0,
    *,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    orthogonal_to: torch.Tensor | None = None,
    draw_dtype: torch.dtype = torch.float64,
    start: int = 0,
) -> torch.Tensor:
    """``n`` points uniform on the sphere of L2 radius ``radius`` in ``R^d``.

    Drawn as ``radius * g / ||g||`` with ``g ~ N(0, I_d)`` (drawn and normalised in
    ``draw_dtype``, then cast to ``dtype``). Returns ``(n, *shape)``.

    Args:
        radius: a scalar or ``n`` per-row radii (input units).
        seed, device: see the module docstring (the draws are made on the generator's device).
        orthogonal_to: ``(n, d)`` (or ``(d,)``) unit vectors; row ``i`` is then uniform on the
            ``(d-2)``-sphere of radius ``radius`` orthogonal to ``orthogonal_to[i]``.
        draw_dtype: dtype of the arithmetic on the ``(n, d)`` block (float64; float32 halves the
            memory traffic in large ``d``; the normals themselves are always made in float64).
        start: index of the first draw (draws ``start .. start + n - 1`` of the seed's set).
    """
    shape, key, device, d = _setup(n, shape, seed, device, orthogonal_to, draw_dtype, start)
    return _draw(n, d, key, device, radius, orthogonal_to, False, draw_dtype, start, dtype).reshape(
        (n, *shape))


def uniform_ball(
    n: int,
    shape: int | Sequence[int],
    radius: float | torch.Tensor = 1.0,
    *,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    orthogonal_to: torch.Tensor | None = None,
    draw_dtype: torch.dtype = torch.float64,
    start: int = 0,
) -> torch.Tensor:
    """``n`` points uniform in the closed L2 ball of radius ``radius`` in ``R^d``.

    Direction uniform on the sphere, radius ``radius * U^(1/k)`` with ``U ~ U(0, 1)`` and ``k``
    the ball's dimension (so ``(||x|| / radius)^k`` is uniform on [0, 1]); one ``randn((n, d))``
    draw (``draw_dtype``) then one float64 ``rand((n, 1))``. In high ``d`` almost every point
    lies near the surface. Returns ``(n, *shape)``.

    Args:
        radius: a scalar or ``n`` per-row radii (input units).
        seed, device: see the module docstring (the draws are made on the generator's device).
        orthogonal_to: ``(n, d)`` (or ``(d,)``) unit vectors; row ``i`` is then uniform in the
            ``(d-1)``-ball of radius ``radius`` inside the hyperplane orthogonal to
            ``orthogonal_to[i]`` (``k = d - 1``).
        draw_dtype, start: as :func:`uniform_sphere`.
    """
    shape, key, device, d = _setup(n, shape, seed, device, orthogonal_to, draw_dtype, start)
    return _draw(n, d, key, device, radius, orthogonal_to, True, draw_dtype, start, dtype).reshape(
        (n, *shape))


def uniform_cube(
    n: int,
    shape: int | Sequence[int],
    half_width: float = 1.0,
    *,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` points uniform in the cube ``[-half_width, half_width]^d``. Returns ``(n, *shape)``."""
    from perturbscope.rng import row_uniform_block

    shape, key, device, d = _setup(n, shape, seed, device, None, torch.float64)
    u = row_uniform_block(key, 0, n, d, device).to(dtype).reshape((n, *shape))
    return (2.0 * u - 1.0) * half_width


def gaussian(
    n: int,
    shape: int | Sequence[int],
    sigma: float = 1.0,
    *,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` draws of ``N(0, sigma^2 I_d)``. Returns ``(n, *shape)``."""
    from perturbscope.rng import STREAMS, row_normals

    shape, key, device, d = _setup(n, shape, seed, device, None, torch.float64)
    g = row_normals(key, 0, n, d, device, stream=STREAMS["gaussian"])
    return sigma * g.to(dtype).reshape((n, *shape))
