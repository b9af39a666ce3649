"""Exact fraction of a d-ball inside a cap (spec section 2.0).

For ``u`` uniform in the unit ball of ``R^n`` the first coordinate has
``u_1^2 ~ Beta(1/2, (n+1)/2)``, so

    F_n(t) = P(u_1 >= t) = 1/2 * betaincc(1/2, (n+1)/2, t^2)      for t in [0, 1],

``F_n(t) = 1 - F_n(-t)`` for ``t < 0``. ``t`` is the cap's distance from the
centre in units of the radius: the fraction of ``B_n(r)`` with ``x_1 >= s`` is
``F_n(s / r)``.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from scipy import special

__all__ = ["cap_fraction", "log_cap_fraction"]


def _check_n(n: int) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"dimension n must be a positive integer, got {n!r}")


def cap_fraction(t: float, n: int) -> float:
    """``P(u_1 >= t)`` for ``u`` uniform in the unit ball of ``R^n`` (float64; may underflow to 0).

    Use :func:`log_cap_fraction` when the value can be below ~1e-300.
    """
    _check_n(n)
    t = float(t)
    if math.isnan(t):
        raise ValueError("t is NaN")
    if t >= 1.0:
        return 0.0
    if t <= -1.0:
        return 1.0
    upper = 0.5 * float(special.betaincc(0.5, (n + 1) / 2.0, t * t))
    return upper if t >= 0 else 1.0 - upper


def log_cap_fraction(t: float, n: int) -> float:
    """Natural log of :func:`cap_fraction`, exact far below double precision's range.

    Uses scipy when the value is representable (> 1e-280), else mpmath's
    regularised incomplete beta at 50 significant digits. Returns ``-inf`` for ``t >= 1``.
    """
    _check_n(n)
    t = float(t)
    if math.isnan(t):
        raise ValueError("t is NaN")
    if t >= 1.0:
        return -math.inf
    if t <= 0.0:
        return math.log(cap_fraction(t, n))
    p = cap_fraction(t, n)
    if p > 1e-280:
        return math.log(p)
    with mpmath.workdps(50):
        a = mpmath.mpf(n + 1) / 2
        x = 1 - mpmath.mpf(t) ** 2
        val = mpmath.betainc(a, mpmath.mpf(1) / 2, 0, x, regularized=True) / 2
        return float(mpmath.log(val))


def cap_fraction_array(t: np.ndarray, n: int) -> np.ndarray:
    """Vectorised :func:`cap_fraction` over an array of ``t`` (float64, may underflow)."""
    _check_n(n)
    t = np.asarray(t, dtype=np.float64)
    a = np.clip(np.abs(t), 0.0, 1.0)
    upper = 0.5 * special.betaincc(0.5, (n + 1) / 2.0, a * a)
    upper = np.where(a >= 1.0, 0.0, upper)
    return np.where(t >= 0, upper, 1.0 - upper)
