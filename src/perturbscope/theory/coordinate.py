"""Exact law of one coordinate of a point uniform in the unit n-ball, and O(1) samplers.

Spec 2.0: ``u ~ U(B_n)`` has first coordinate density
``f_n(s) = c_n (1 - s^2)^{(n-1)/2}`` on ``[-1, 1]`` with
``c_n = Gamma(n/2 + 1) / (sqrt(pi) Gamma((n+1)/2))``, and ``u_1^2 ~ Beta(1/2, (n+1)/2)``.
A point uniform on the unit sphere ``S^{n-1}`` has ``theta_1^2 ~ Beta(1/2, (n-1)/2)`` (``n >= 2``).
So one draw costs O(1) in any dimension (tested up to ``n = 10^7``).
"""

from __future__ import annotations

import numpy as np

from perturbscope.theory.caps import _check_n, log_coord_constant

__all__ = [
    "log_coord_density",
    "coord_density",
    "sample_ball_coord",
    "sample_sphere_coord",
]


def _log_cn(n: int) -> float:
    return log_coord_constant(n)


def log_coord_density(s: np.ndarray | float, n: int) -> np.ndarray:
    """``log f_n(s)`` (``-inf`` outside ``[-1, 1]``); ``s`` any shape, float64 out."""
    _check_n(n)
    s = np.asarray(s, dtype=np.float64)
    if np.any(np.isnan(s)):
        raise ValueError("s contains NaN")
    inside = np.abs(s) < 1.0
    sc = np.where(inside, s, 0.0)
    val = _log_cn(n) + 0.5 * (n - 1) * np.log1p(-sc * sc)
    if n == 1:  # f_1 = 1/2 on [-1, 1] including the endpoints
        inside = np.abs(s) <= 1.0
    return np.where(inside, val, -np.inf)


def coord_density(s: np.ndarray | float, n: int) -> np.ndarray:
    """``f_n(s)``: density of the first coordinate of ``U(B_n)`` (units: 1 / radius)."""
    return np.exp(log_coord_density(s, n))


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def sample_ball_coord(
    n: int, size: int, *, seed: int | np.random.Generator | None = None
) -> np.ndarray:
    """``size`` draws of ``u_1`` for ``u ~ U(B_n)``: ``±sqrt(Beta(1/2, (n+1)/2))``, shape ``(size,)``."""
    _check_n(n)
    if int(size) != size or size < 0:
        raise ValueError(f"size must be a non-negative int, got {size!r}")
    rng = _rng(seed)
    mag = np.sqrt(rng.beta(0.5, (n + 1) / 2.0, size=int(size)))
    sign = rng.integers(0, 2, size=int(size)) * 2 - 1
    return sign * mag


def sample_sphere_coord(
    n: int, size: int, *, seed: int | np.random.Generator | None = None
) -> np.ndarray:
    """``size`` draws of ``theta_1`` for ``theta`` uniform on ``S^{n-1}``; shape ``(size,)``.

    ``theta_1^2 ~ Beta(1/2, (n-1)/2)`` for ``n >= 2``; ``theta_1 = ±1`` for ``n = 1``.
    """
    _check_n(n)
    if int(size) != size or size < 0:
        raise ValueError(f"size must be a non-negative int, got {size!r}")
    rng = _rng(seed)
    sign = rng.integers(0, 2, size=int(size)) * 2 - 1
    if n == 1:
        return sign.astype(np.float64)
    return sign * np.sqrt(rng.beta(0.5, (n - 1) / 2.0, size=int(size)))
