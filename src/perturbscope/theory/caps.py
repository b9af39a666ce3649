"""Exact fraction of a d-ball inside a cap, in linear and log space, and Lemma 23's bound.

Spec: /work/shared/spec/stability-paradox.md sections 2.0 and 2.1.

For ``u`` uniform in the unit ball of ``R^n`` the first coordinate has
``u_1^2 ~ Beta(1/2, (n+1)/2)``, so

    F_n(t) = P(u_1 >= t) = 1/2 * betaincc(1/2, (n+1)/2, t^2)      for t in [0, 1],

``F_n(t) = 1 - F_n(-t)`` for ``t < 0``. ``t`` is the cap's distance from the
centre in units of the radius: the fraction of ``B_n(r)`` with ``x_1 >= s`` is
``F_n(s / r)``; a cap of height ``h`` holds ``F_n(1 - h/r)`` of the ball.

Log space: where ``F_n(t)`` underflows float64 (e.g. ``n = 150528, t = 0.1`` gives
``3.1e-331``) the log is computed from the continued fraction of the regularised
incomplete beta function (Numerical Recipes ``betacf``) with its prefactor in logs,
which is exact to ~1e-13 relative and vectorised.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = [
    "cap_fraction",
    "log_cap_fraction",
    "cap_fraction_array",
    "log_cap_fraction_array",
    "cap_bound",
    "log_cap_bound",
]

# below this the float64 value of F_n is replaced by the log-space continued fraction
_UNDERFLOW = 1e-280


def _check_n(n: int) -> None:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"dimension n must be a positive integer, got {n!r}")


def _as_t(t: np.ndarray | float, name: str = "t") -> np.ndarray:
    arr = np.asarray(t, dtype=np.float64)
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} contains NaN")
    return arr


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


def cap_fraction_array(t: np.ndarray, n: int) -> np.ndarray:
    """Vectorised :func:`cap_fraction` over an array of ``t`` (float64, may underflow)."""
    _check_n(n)
    t = _as_t(t)
    a = np.clip(np.abs(t), 0.0, 1.0)
    upper = 0.5 * special.betaincc(0.5, (n + 1) / 2.0, a * a)
    upper = np.where(a >= 1.0, 0.0, upper)
    return np.where(t >= 0, upper, 1.0 - upper)


def _log_betainc_cf(a: float, b: float, x: np.ndarray) -> np.ndarray:
    """``log I_x(a, b)`` by the continued fraction; valid (fast) for ``x < (a+1)/(a+b+2)``."""
    x = np.asarray(x, dtype=np.float64)
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = np.where(np.abs(d) < tiny, tiny, d)
    d = 1.0 / d
    h = d.copy()
    done = np.zeros(x.shape, dtype=bool)
    for m in range(1, 100000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        h = np.where(done, h, h * d * c)
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        delta = d * c
        h = np.where(done, h, h * delta)
        done |= np.abs(delta - 1.0) < 1e-15
        if done.all():
            break
    with np.errstate(divide="ignore"):
        log_front = (
            a * np.log(x) + b * np.log1p(-x) - math.log(a) - special.betaln(a, b)
        )
    return log_front + np.log(h)


def log_cap_fraction_array(t: np.ndarray, n: int) -> np.ndarray:
    """``log F_n(t)`` for an array ``t``: finite (not ``-inf``) for every ``t < 1``.

    ``-inf`` for ``t >= 1``, ``0`` for ``t <= -1``. Exact far below float64's range.
    """
    _check_n(n)
    t = _as_t(t)
    p = cap_fraction_array(t, n)
    with np.errstate(divide="ignore"):
        out = np.log(p)
    small = (p < _UNDERFLOW) & (t < 1.0)
    if np.any(small):
        ts = t[small]
        # F_n(t) = 1/2 I_{1-t^2}((n+1)/2, 1/2); 1 - t^2 computed as (1-t)(1+t)
        x = (1.0 - ts) * (1.0 + ts)
        out[small] = math.log(0.5) + _log_betainc_cf((n + 1) / 2.0, 0.5, x)
    return out


def log_cap_fraction(t: float, n: int) -> float:
    """Natural log of :func:`cap_fraction`, exact far below double precision's range.

    Returns ``-inf`` for ``t >= 1``. See :func:`log_cap_fraction_array`.
    """
    _check_n(n)
    t = float(t)
    if math.isnan(t):
        raise ValueError("t is NaN")
    return float(log_cap_fraction_array(np.array([t]), n)[0])


def log_cap_bound(t: np.ndarray | float, n: int) -> np.ndarray | float:
    """Log of Lemma 23's bound ``F_n(t) <= 1/2 (1 - t^2)^{n/2}`` for ``t`` in ``[0, 1]``.

    Lemma 23 (spec 2.1): a cap of height ``h <= r`` lies in a half-ball of radius
    ``sqrt(2rh - h^2)``, so ``V_cap(h, r) / (V_n r^n) <= 1/2 (1 - (1 - h/r)^2)^{n/2}``.
    Raises ``ValueError`` for ``t`` outside ``[0, 1]`` (the lemma needs the cap no larger
    than a half-ball).
    """
    _check_n(n)
    arr = _as_t(t)
    if np.any((arr < 0) | (arr > 1)):
        raise ValueError("t must lie in [0, 1] for Lemma 23 (cap no larger than a half-ball)")
    with np.errstate(divide="ignore"):
        out = math.log(0.5) + 0.5 * n * np.log1p(-arr * arr)
    return float(out) if np.ndim(t) == 0 else out


def cap_bound(t: np.ndarray | float, n: int) -> np.ndarray | float:
    """Lemma 23: ``1/2 (1 - t^2)^{n/2}``, an upper bound on :func:`cap_fraction` for ``t`` in [0,1]."""
    out = np.exp(log_cap_bound(t, n))
    return float(out) if np.ndim(t) == 0 else out
