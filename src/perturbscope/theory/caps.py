"""Exact fraction of a d-ball inside a cap, in linear and log space, and Lemma 23's bound.

Spec: /work/shared/spec/stability-paradox.md sections 2.0 and 2.1.

For ``u`` uniform in the unit ball of ``R^n`` the first coordinate has
``u_1^2 ~ Beta(1/2, (n+1)/2)``, so

    F_n(t) = P(u_1 >= t) = 1/2 * betaincc(1/2, (n+1)/2, t^2)      for t in [0, 1],

``F_n(t) = 1 - F_n(-t)`` for ``t < 0``. ``t`` is the cap's distance from the
centre in units of the radius: the fraction of ``B_n(r)`` with ``x_1 >= s`` is
``F_n(s / r)``; a cap of height ``h`` holds ``F_n(1 - h/r)`` of the ball.

Log space: where ``F_n(t)`` is below 1e-280 (where float64 underflows,
e.g. ``n = 150528, t = 0.1`` gives ``3.1e-331``) the log is computed from the continued
fraction of the regularised incomplete beta function (Numerical Recipes ``betacf``) with
its prefactor in logs. The prefactor is where precision is usually lost: ``t^2`` is formed
exactly (Dekker two-product) and ``log B((n+1)/2, 1/2)`` from an asymptotic series of
``log Gamma(a + 1/2) - log Gamma(a)`` instead of a difference of two huge ``gammaln``
values (which loses ~1e-10 absolute at ``n = 10^6``). Measured against mpmath at 50
digits (tests/test_theory_caps.py): relative error of ``log F_n`` below 1e-14 for
``n`` up to ``10^7``.
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
    "inverse_log_cap_fraction",
    "cap_bound",
    "log_cap_bound",
    "log_gamma_half_ratio",
    "log_coord_constant",
]

# below this the float64 value of F_n is replaced by the log-space continued fraction
_UNDERFLOW = 1e-280

# Bernoulli-series coefficients of log Gamma(a + 1/2) - log Gamma(a) - log(a)/2 in odd powers 1/a^k:
# (2^-k - 2) B_{k+1} / (k (k+1)), k = 1, 3, 5, 7, 9, 11
_HALF_RATIO_SERIES = (-1.0 / 8.0, 1.0 / 192.0, -1.0 / 640.0, 17.0 / 14336.0, -31.0 / 18432.0,
                      691.0 / 180224.0)


def log_gamma_half_ratio(a: float) -> float:
    """``log Gamma(a + 1/2) - log Gamma(a)`` for ``a > 0``, to ~1 ulp also for huge ``a``.

    ``gammaln(a + 0.5) - gammaln(a)`` cancels catastrophically for large ``a`` (absolute
    error ~1e-16 * a log a); here a ratio of ``gamma`` values is used for ``a <= 30`` and the
    asymptotic (Bernoulli) series, truncation error < 1e-18, above.
    """
    a = float(a)
    if not a > 0:
        raise ValueError(f"a must be > 0, got {a!r}")
    if a <= 30.0:
        return math.log(float(special.gamma(a + 0.5)) / float(special.gamma(a)))
    inv = 1.0 / a
    inv2 = inv * inv
    acc = 0.0
    for c in reversed(_HALF_RATIO_SERIES):
        acc = acc * inv2 + c
    return 0.5 * math.log(a) + acc * inv


def log_coord_constant(n: int) -> float:
    """``log c_n``, ``c_n = Gamma(n/2 + 1) / (sqrt(pi) Gamma((n+1)/2))``: the normaliser of ``f_n``."""
    _check_n(n)
    return log_gamma_half_ratio((n + 1) / 2.0) - 0.5 * math.log(math.pi)


def _two_square(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``t*t = hi + lo`` exactly (Dekker's two-product with Veltkamp splitting)."""
    hi = t * t
    c = 134217729.0 * t  # 2^27 + 1
    th = c - (c - t)
    tl = t - th
    lo = ((th * th - hi) + 2.0 * th * tl) + tl * tl
    return hi, lo


def _log1m_square(t: np.ndarray) -> np.ndarray:
    """``log(1 - t^2)`` with ``t^2`` taken exactly (error ~1 ulp of the result)."""
    hi, lo = _two_square(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(hi < 1.0, lo / (1.0 - hi), 0.0)
        return np.log1p(-hi) - corr


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
    upper = float(_upper_tail(np.array([abs(t)]), n)[0])
    return upper if t >= 0 else 1.0 - upper


def cap_fraction_array(t: np.ndarray, n: int) -> np.ndarray:
    """Vectorised :func:`cap_fraction` over an array of ``t`` (float64, may underflow)."""
    _check_n(n)
    t = _as_t(t)
    a = np.clip(np.abs(t), 0.0, 1.0)
    upper = _upper_tail(a, n)
    return np.where(t >= 0, upper, 1.0 - upper)


def _upper_tail(a: np.ndarray, n: int, x: np.ndarray | None = None) -> np.ndarray:
    """``F_n(a)`` for ``a`` in ``[0, 1]``: ``1/2 betaincc(1/2, (n+1)/2, a^2)`` for ``a^2 < 1/2``, else
    ``1/2 betainc((n+1)/2, 1/2, (1-a)(1+a))`` (no rounding of ``1 - a^2`` near ``a = 1``); ``x``:
    ``1 - a^2`` if the caller knows it more accurately than from ``a``."""
    b = (n + 1) / 2.0
    small = 0.5 * special.betaincc(0.5, b, a * a)
    large = 0.5 * special.betainc(b, 0.5, (1.0 - a) * (1.0 + a) if x is None else x)
    out = np.where(a * a < 0.5, small, large)
    return np.where(a >= 1.0, 0.0, out)


def _log_cap_cf(t: np.ndarray, n: int, x_given: np.ndarray | None = None) -> np.ndarray:
    """``log F_n(t) = log(1/2 I_{1-t^2}((n+1)/2, 1/2))`` by the continued fraction, ``t`` in (0, 1).

    Valid (fast) for ``x = 1 - t^2 < (a+1)/(a+b+2)``, i.e. where ``F_n(t)`` is small;
    ``x_given``: ``1 - t^2`` when known more accurately than from ``t``.
    """
    a, b = (n + 1) / 2.0, 0.5
    t = np.asarray(t, dtype=np.float64)
    x = (1.0 - t) * (1.0 + t) if x_given is None else np.asarray(x_given, dtype=np.float64)
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
    # prefactor x^a (1-x)^b / (a B(a, b)) with B(a, 1/2) = sqrt(pi) Gamma(a) / Gamma(a + 1/2)
    log_beta = 0.5 * math.log(math.pi) - log_gamma_half_ratio(a)
    with np.errstate(divide="ignore"):
        log1m = _log1m_square(t) if x_given is None else np.log(x)
        log_front = a * log1m + b * 2.0 * np.log(t) - math.log(a) - log_beta
    return math.log(0.5) + log_front + np.log(h)


def log_cap_fraction_array(t: np.ndarray, n: int, *, one_minus_t2: np.ndarray | None = None
                           ) -> np.ndarray:
    """``log F_n(t)`` for an array ``t``: finite (not ``-inf``) for every ``t < 1``.

    ``-inf`` for ``t >= 1``, ``0`` for ``t <= -1``. Exact far below float64's range.

    ``one_minus_t2`` (same shape as ``t``, optional): ``1 - t^2`` computed by the caller without
    rounding, e.g. from a parametrisation ``t = s / sqrt(s^2 + m)`` (``1 - t^2 = m / (s^2 + m)``);
    it replaces ``(1 - |t|)(1 + |t|)``, whose relative error grows like ``eps / (1 - |t|)`` as
    ``|t| -> 1`` once ``t`` itself is rounded.
    """
    _check_n(n)
    t = _as_t(t)
    a = np.clip(np.abs(t), 0.0, 1.0)
    x = None
    if one_minus_t2 is not None:
        x = np.broadcast_to(np.clip(np.asarray(one_minus_t2, dtype=np.float64), 0.0, 1.0), t.shape)
    upper = _upper_tail(a, n, x)
    p = np.where(t >= 0, upper, 1.0 - upper)
    with np.errstate(divide="ignore"):
        out = np.where(t >= 0, np.log(upper), np.log1p(-upper))
    out = np.atleast_1d(out).astype(np.float64)
    p = np.atleast_1d(p)
    t = np.atleast_1d(t)
    small = (p < _UNDERFLOW) & (t > 0.0) & (t < 1.0)
    if np.any(small):
        out[small] = _log_cap_cf(t[small], n, None if x is None else np.atleast_1d(x)[small])
    return out.reshape(np.shape(upper))


def inverse_log_cap_fraction(log_f: np.ndarray, n: int) -> np.ndarray:
    """The ``t`` in ``[-1, 1]`` with ``log F_n(t) = log_f``, elementwise (inverse of
    :func:`log_cap_fraction_array`), for ``log_f`` in ``[log(~1e-304), 0]``.

    For ``F = exp(log_f) <= 1/2`` (``t >= 0``): ``t^2 = betainccinv(1/2, (n+1)/2, 2F)`` where that is
    below 1/2, else ``t = sqrt(1 - y)`` with ``y = 1 - t^2 = betaincinv((n+1)/2, 1/2, 2F)`` (no
    cancellation near ``t = 1``, the split :func:`log_cap_fraction_array` uses); ``F > 1/2`` by
    symmetry, ``t = -t(1 - F)`` with ``1 - F = -expm1(log_f)``.
    """
    _check_n(n)
    log_f = np.asarray(log_f, dtype=np.float64)
    if np.any(np.isnan(log_f)) or np.any(log_f > 0):
        raise ValueError("log_f must be <= 0 (a log probability) and not NaN")
    b = (n + 1) / 2.0
    upper = log_f <= -math.log(2.0)
    tail = np.where(upper, np.exp(log_f), -np.expm1(log_f))  # F_n(|t|) <= 1/2
    arg = np.clip(2.0 * tail, 0.0, 1.0)
    t2 = special.betainccinv(0.5, b, arg)
    y = special.betaincinv(b, 0.5, arg)
    a = np.where(t2 < 0.5, np.sqrt(t2), np.sqrt(np.clip(1.0 - y, 0.0, 1.0)))
    return np.where(upper, a, -a)


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
        out = math.log(0.5) + 0.5 * n * _log1m_square(arr)
    return float(out) if np.ndim(t) == 0 else out


def cap_bound(t: np.ndarray | float, n: int) -> np.ndarray | float:
    """Lemma 23: ``1/2 (1 - t^2)^{n/2}``, an upper bound on :func:`cap_fraction` for ``t`` in [0,1]."""
    out = np.exp(log_cap_bound(t, n))
    return float(out) if np.ndim(t) == 0 else out
