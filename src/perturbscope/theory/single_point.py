"""Theorem 1: random probing of one point near a hyperplane (spec 2.2).

``x`` lies at distance ``eps`` from the plane ``{<z, w> = 0}`` with ``<x, w> = -eps``;
``z ~ U(B_n(x, r))``. The probe flips the label iff ``<z, w> >= 0``.

    exact:  P = F_n(eps / r)                  (0 when r <= eps)
    bound:  P <= 1/2 (1 - (eps / r)^2)^{n/2}  (Lemma 23)

``eps`` and ``r`` are lengths in the same units (e.g. pixel units).
"""

from __future__ import annotations

import math

import torch

from perturbscope.theory.caps import _check_n, log_cap_bound, log_cap_fraction
from perturbscope.theory.engines import Sampler, first_axis

__all__ = ["flip_exact", "log_flip_exact", "flip_bound", "log_flip_bound", "simulate_flip"]


def _check(n: int, eps: float, r: float) -> None:
    _check_n(n)
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps (distance to the plane) must be finite and >= 0, got {eps!r}")
    if not (r > 0 and math.isfinite(r)):
        raise ValueError(f"r (probe radius) must be finite and > 0, got {r!r}")


def log_flip_exact(n: int, eps: float, r: float) -> float:
    """``log P(<z, w> >= 0)`` exactly (finite far below 1e-300; ``-inf`` if ``r <= eps``)."""
    _check(n, eps, r)
    return log_cap_fraction(eps / r, n)


def flip_exact(n: int, eps: float, r: float) -> float:
    """Exact flip probability ``F_n(eps / r)`` (float64, may underflow to 0)."""
    return math.exp(log_flip_exact(n, eps, r))


def log_flip_bound(n: int, eps: float, r: float) -> float:
    """Log of Theorem 1's bound ``1/2 (1 - (eps/r)^2)^{n/2}`` (``-inf`` when ``r <= eps``)."""
    _check(n, eps, r)
    if r <= eps:
        return -math.inf
    return float(log_cap_bound(eps / r, n))


def flip_bound(n: int, eps: float, r: float) -> float:
    """Theorem 1's upper bound on the flip probability."""
    return math.exp(log_flip_bound(n, eps, r))


def simulate_flip(sampler: Sampler, size: int, *, eps: float, r: float) -> torch.Tensor:
    """One batch of the Theorem 1 experiment: ``(size,)`` bool, True where the probe flips.

    The point is ``x = -eps e_1``; the classifier is ``1[<z, e_1> >= 0]``.
    """
    _check(sampler.n, eps, r)
    w = first_axis(sampler.width)
    x = -eps * w
    z = x + r * sampler.ball(size)
    return (z @ w >= 0) != (x @ w >= 0)
