"""The two-half-balls model (paper Section 5; spec 1.3, 2.8-2.10).

Class 0 ~ ``U(B^- - eps e_1)``, class 1 ~ ``U(B^+ + eps e_1)`` (unit half-balls whose flat
faces are ``2 eps`` apart), labels equiprobable, classifier ``f(x) = 1[x_1 >= 0]``: every
point is at least ``eps`` from the decision plane and the classifier is always right.
A point's distance to the plane is ``eps + |u_1|`` with ``u ~ U(B_n)``.

- Thm 18 (susceptibility): ``P >= 1 - (1 - (delta - eps)^2)^{n/2}``; exact ``1 - 2 F_n(delta - eps)``.
- Thm 19 (random flips): ``P <= 1/2 (1 - (eps/r)^2)^{n/2}``; exact ``∫_0^1 2 f_n(s) F_n((eps+s)/r) ds``.
- Thm 20 (eps = 0): ``liminf_n P >= sup_{a>0} (1 - e^{-a^2/2})(1 - Phi(a/r))`` [R, flagged];
  the exact limit is ``arctan(r)/pi`` (our derivation; exactly 1/4 for r = 1 at every n).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import integrate, optimize, special

from perturbscope.theory.caps import _check_n, log_cap_fraction, log_cap_fraction_array
from perturbscope.theory.coordinate import log_coord_density
from perturbscope.theory.engines import Sampler, first_axis
from perturbscope.theory.integrals import log_integral_coord
from perturbscope.theory.two_balls import classify

__all__ = [
    "sample_half_balls",
    "classify",
    "susceptibility_bound",
    "susceptibility_exact",
    "log_insusceptibility_exact",
    "log_insusceptibility_bound",
    "flip_bound",
    "log_flip_bound",
    "flip_exact",
    "log_flip_exact",
    "flip_gaussian",
    "no_margin_liminf_bound",
    "no_margin_limit",
    "simulate",
]

EVENTS: tuple[str, ...] = ("correct", "susceptible", "flip")


def _check(n: int, eps: float) -> None:
    _check_n(n)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps (half-gap between the half-balls) must be finite and >= 0, got {eps!r}")


def _check_delta(delta: float) -> None:
    if not (math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be finite and >= 0, got {delta!r}")


def _check_r(r: float) -> None:
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"r (perturbation radius) must be finite and > 0, got {r!r}")


def sample_half_balls(sampler: Sampler, size: int, *,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled points: ``x`` ``(size, width)`` float64 with ``x_1 = ∓(eps + |u_1|)``, labels ``(size,)``."""
    _check(sampler.n, eps)
    labels = sampler.labels(size)
    x = sampler.ball(size)
    sign = 2.0 * labels.to(torch.float64) - 1.0  # -1 for class 0, +1 for class 1
    x[:, 0] = sign * (eps + x[:, 0].abs())
    return x, labels


# --------------------------------------------------------------------------- Theorem 18
def susceptibility_bound(n: int, eps: float, delta: float) -> float:
    """Theorem 18: ``P(susceptible to delta) >= 1 - (1 - (delta - eps)^2)^{n/2}``, delta in (eps, 1+eps)."""
    _check(n, eps)
    if not eps < delta < 1.0 + eps:
        raise ValueError(f"delta must lie in (eps, 1 + eps) = ({eps}, {1 + eps}), got {delta!r}")
    return -math.expm1(log_insusceptibility_bound(n, eps, delta))


def susceptibility_exact(n: int, eps: float, delta: float) -> float:
    """Exact ``P(|u_1| <= delta - eps) = 1 - 2 F_n(delta - eps)`` (0 when ``delta < eps``)."""
    _check(n, eps)
    _check_delta(delta)
    if delta <= eps:
        return 0.0
    q = min(delta - eps, 1.0)
    # P(u_1^2 <= q^2) with u_1^2 ~ Beta(1/2, (n+1)/2): no cancellation in 1 - 2 F_n(q)
    return float(special.betainc(0.5, (n + 1) / 2.0, q * q))


def log_insusceptibility_exact(n: int, eps: float, delta: float) -> float:
    """Exact ``log(1 - P(susceptible)) = log(2 F_n(delta - eps))`` (finite far below 1e-300)."""
    _check(n, eps)
    _check_delta(delta)
    if delta <= eps:
        return 0.0
    return math.log(2.0) + log_cap_fraction(delta - eps, n)


def log_insusceptibility_bound(n: int, eps: float, delta: float) -> float:
    """Log of Theorem 18's bound on the complement, ``(1 - (delta - eps)^2)^{n/2}``."""
    _check(n, eps)
    if not eps < delta < 1.0 + eps:
        raise ValueError(f"delta must lie in (eps, 1 + eps) = ({eps}, {1 + eps}), got {delta!r}")
    q = delta - eps
    return 0.5 * n * math.log1p(-q * q)


# --------------------------------------------------------------------------- Theorem 19
def log_flip_bound(n: int, eps: float, r: float) -> float:
    """Log of Theorem 19's bound ``1/2 (1 - (eps/r)^2)^{n/2}`` (``-inf`` when ``r <= eps``)."""
    _check(n, eps)
    _check_r(r)
    if r <= eps:
        return -math.inf
    q = eps / r
    return math.log(0.5) + 0.5 * n * math.log1p(-q * q)


def flip_bound(n: int, eps: float, r: float) -> float:
    """Theorem 19's upper bound on ``P(f(x + zeta) != l)``, ``zeta ~ U(B_n(r))``."""
    return math.exp(log_flip_bound(n, eps, r))


def log_flip_exact(n: int, eps: float, r: float) -> float:
    """Exact ``log P(r v_1 >= eps + |u_1|) = log ∫_0^1 2 f_n(s) F_n((eps + s)/r) ds``."""
    _check(n, eps)
    _check_r(r)
    if r <= eps:
        return -math.inf

    def log_g(s: np.ndarray) -> np.ndarray:
        return math.log(2.0) + log_coord_density(s, n) + log_cap_fraction_array((eps + s) / r, n)

    return log_integral_coord(log_g, n, 0.0, 1.0, breaks=(r - eps,))


def flip_exact(n: int, eps: float, r: float) -> float:
    """Exact Theorem 19/20 flip probability (float64; may underflow, see :func:`log_flip_exact`)."""
    return math.exp(log_flip_exact(n, eps, r))


def flip_gaussian(n: int, eps: float, r: float) -> float:
    """Gaussian approximation ``P(r Z_2 >= eps sqrt(n+2) + |Z_1|)``, ``Z_1, Z_2`` iid ``N(0, 1)``.

    Equals ``arctan(r)/pi`` at ``eps = 0``.
    """
    _check(n, eps)
    _check_r(r)
    e = eps * math.sqrt(n + 2.0)
    val, _ = integrate.quad(
        lambda z: 2.0 * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        * float(special.ndtr(-(e + z) / r)), 0.0, np.inf)
    return val


# --------------------------------------------------------------------------- Theorem 20
def no_margin_liminf_bound(r: float) -> float:
    """Theorem 20 (eps = 0): ``sup_{a>0} (1 - e^{-a^2/2}) (1 - Phi(a/r))`` [R, flagged in spec].

    Values: r=0.5: 0.0191, r=1: 0.0624, r=2: 0.153, r=5: 0.301.
    """
    _check_r(r)

    def neg(a: float) -> float:
        return math.expm1(-0.5 * a * a) * float(special.ndtr(-a / r))

    grid = np.linspace(1e-3, 12.0 * max(r, 1.0), 4000)
    vals = np.array([neg(a) for a in grid])
    k = int(np.argmin(vals))
    res = optimize.minimize_scalar(neg, bounds=(grid[max(k - 1, 0)], grid[min(k + 1, 3999)]),
                                   method="bounded", options={"xatol": 1e-10})
    return -min(float(res.fun), float(vals[k]))


def no_margin_limit(r: float) -> float:
    """Exact ``lim_n P(f(x + zeta) != l)`` at eps = 0: ``arctan(r)/pi`` (not in the paper)."""
    _check_r(r)
    return math.atan(r) / math.pi


# --------------------------------------------------------------------------- Monte Carlo
def simulate(sampler: Sampler, size: int, event: str, *, eps: float,
             delta: float | None = None, r: float | None = None) -> torch.Tensor:
    """One batch of a half-balls experiment; ``(size,)`` bool.

    Events: ``"correct"`` (always True here), ``"susceptible"`` (Thm 18, needs ``delta``),
    ``"flip"`` (Thms 19/20, needs ``r``).
    """
    if event not in EVENTS:
        raise ValueError(f"event must be one of {EVENTS}, got {event!r}")
    x, lab = sample_half_balls(sampler, size, eps=eps)
    if event == "correct":
        return classify(x) == lab
    if event == "susceptible":
        if delta is None:
            raise ValueError("event 'susceptible' needs delta")
        toward = (1.0 - 2.0 * lab.to(torch.float64))[:, None] * first_axis(sampler.width)
        return classify(x + delta * toward) != lab
    if r is None:
        raise ValueError("event 'flip' needs r")
    _check_r(r)
    return classify(x + r * sampler.ball(size)) != lab
