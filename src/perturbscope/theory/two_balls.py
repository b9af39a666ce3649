"""The two-balls model (paper Section 4.2; spec 1.2, 2.3-2.7).

Class 0 lives in ``B_n(-eps e_1, 1)``, class 1 in ``B_n(+eps e_1, 1)``, labels equiprobable,
classifier ``f(x) = 1[x_1 >= 0]``. Each class is ``x = c_l + M_l u`` where ``u`` follows a
SmAC law in the unit ball (Definition 3: density ``<= A^n / V_n``) and ``M_1`` mirrors the
first axis, so ``u_1 > 0`` always points *toward* the decision plane. Densities:

- ``"uniform"``: ``U(B_n)`` (any ``A >= 1``; ``A = 1`` forces it).
- ``"shifted"``: uniform on the ball of radius ``1/A`` centred ``(1 - 1/A) e_1``, i.e.
  pushed against the plane-side of the unit ball; density exactly ``A^n / V_n`` on its
  support. The worst case for Theorems 4-6 among SmAC laws with parameter ``A``.
- ``"radial"``: ``p(u) = A^n ||u||^k / V_n`` with ``k = n (A^n - 1)`` (mass pushed to the
  sphere; max density ``A^n / V_n``). Exact values not implemented (Monte Carlo only).

Events in terms of the toward-plane coordinate ``u_1`` (class 0; class 1 mirrors):
correct iff ``u_1 < eps`` (Thm 4); susceptible to ``delta`` iff ``u_1 >= eps - delta``
(Thm 5); flipped by ``zeta ~ U(B_n(r))`` iff ``u_1 + zeta_1 >= eps`` (Thm 6); for ``x, y``
iid, every ``zeta`` that pushes ``x`` past the plane by margin ``delta`` also flips ``y``
iff ``u^x_1 - u^y_1 < delta`` (Thm 8). Bounds can be vacuous (> 1, or < 0 for lower bounds);
they are returned as computed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import optimize, special

from perturbscope.theory.caps import _check_n, log_cap_fraction, log_cap_fraction_array
from perturbscope.theory.coordinate import log_coord_density
from perturbscope.theory.engines import Sampler, first_axis
from perturbscope.theory.integrals import log_integral_coord

__all__ = [
    "DENSITIES",
    "sample_smac",
    "sample_two_balls",
    "classify",
    "log_tail",
    "accuracy_bound",
    "accuracy_exact",
    "log_misclassification_exact",
    "log_misclassification_bound",
    "susceptibility_bound",
    "susceptibility_exact",
    "flip_bound",
    "log_flip_bound",
    "flip_bound_closed",
    "log_flip_bound_closed",
    "flip_exact",
    "log_flip_exact",
    "flip_gaussian",
    "universality_bound",
    "universality_exact",
    "log_universality_miss_exact",
    "log_universality_miss_bound",
    "log_insusceptibility_exact",
    "log_insusceptibility_bound",
    "universality_gaussian",
    "simulate",
]

DENSITIES: tuple[str, ...] = ("uniform", "shifted", "radial")
EVENTS: tuple[str, ...] = ("correct", "susceptible", "flip", "universal")


def _check_common(n: int, A: float, density: str = "uniform") -> None:
    _check_n(n)
    if not (math.isfinite(A) and A >= 1.0):
        raise ValueError(f"A (SmAC growth parameter) must be finite and >= 1, got {A!r}")
    if density not in DENSITIES:
        raise ValueError(f"density must be one of {DENSITIES}, got {density!r}")


def _check_pos(name: str, value: float, *, strict: bool = True) -> None:
    ok = value > 0 if strict else value >= 0
    if not (math.isfinite(value) and ok):
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} 0, got {value!r}")


def _log_A_term(n: int, A: float) -> float:
    """``log(A^n / 2)``."""
    return n * math.log(A) - math.log(2.0)


def _exact_density(density: str) -> None:
    if density == "radial":
        raise NotImplementedError(
            "exact values are implemented for density 'uniform' and 'shifted'; "
            "use Monte Carlo (simulate) for 'radial'"
        )


# --------------------------------------------------------------------------- samplers
def sample_smac(sampler: Sampler, size: int, *, A: float = 1.0,
                density: str = "uniform") -> torch.Tensor:
    """Offsets ``u`` in the unit ball from the SmAC law ``density`` with parameter ``A``.

    Returns ``(size, width)`` float64 (``width = n`` for the full engine, 1 for ``coord``).
    """
    _check_common(sampler.n, A, density)
    n = sampler.n
    if density == "uniform" or A == 1.0:
        return sampler.ball(size)
    if density == "shifted":
        u = sampler.ball(size) / A
        u[:, 0] += 1.0 - 1.0 / A
        return u
    # radial: ||u|| = U^{1/(n A^n)}, direction uniform on the sphere
    log_nk = math.log(n) + n * math.log(A)
    radius = torch.exp(torch.log(sampler.uniform(size)) * math.exp(-log_nk))
    return radius[:, None] * sampler.sphere(size)


def sample_two_balls(sampler: Sampler, size: int, *, eps: float, A: float = 1.0,
                     density: str = "uniform") -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled points of the two-balls model: ``x`` ``(size, width)`` float64, labels ``(size,)``.

    Class 0: ``x = -eps e_1 + u``; class 1: ``x = +eps e_1 + mirror(u)``.
    """
    _check_pos("eps", eps, strict=False)
    labels = sampler.labels(size)
    u = sample_smac(sampler, size, A=A, density=density)
    sign = 1.0 - 2.0 * labels.to(torch.float64)  # +1 for class 0, -1 for class 1
    u[:, 0] = sign * u[:, 0] - sign * eps
    return u, labels


def classify(x: torch.Tensor) -> torch.Tensor:
    """The models' linear classifier ``f(x) = 1[<x, e_1> >= 0]``; ``x`` ``(N, width)`` -> ``(N,)``."""
    return (x @ first_axis(x.shape[1]).to(x.dtype) >= 0).long()


# --------------------------------------------------------------------------- exact tails
def log_tail(t: float, n: int, A: float = 1.0, density: str = "uniform") -> float:
    """``log P(u_1 >= t)`` for ``u`` from the SmAC law (``uniform`` or ``shifted``)."""
    _check_common(n, A, density)
    _exact_density(density)
    if density == "shifted":
        t = A * (t - (1.0 - 1.0 / A))
    return log_cap_fraction(t, n)


# --------------------------------------------------------------------------- Theorem 4
def log_misclassification_bound(n: int, eps: float, A: float = 1.0) -> float:
    """Log of Theorem 4's misclassification bound ``(A^n/2)(1 - eps^2)^{n/2}``, eps in (0, 1)."""
    _check_common(n, A)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1) for Theorem 4, got {eps!r}")
    return _log_A_term(n, A) + 0.5 * n * math.log1p(-eps * eps)


def accuracy_bound(n: int, eps: float, A: float = 1.0) -> float:
    """Theorem 4: ``P(f(x) = l) >= 1 - (A^n/2)(1 - eps^2)^{n/2}`` (may be negative: vacuous)."""
    return 1.0 - math.exp(min(log_misclassification_bound(n, eps, A), 700.0))


def log_misclassification_exact(n: int, eps: float, A: float = 1.0,
                                density: str = "uniform") -> float:
    """Exact ``log P(f(x) != l) = log P(u_1 >= eps)``."""
    _check_pos("eps", eps, strict=False)
    return log_tail(eps, n, A, density)


def accuracy_exact(n: int, eps: float, A: float = 1.0, density: str = "uniform") -> float:
    """Exact accuracy ``1 - P(u_1 >= eps)`` (``1 - F_n(eps)`` for the uniform law)."""
    return -math.expm1(log_misclassification_exact(n, eps, A, density))


# --------------------------------------------------------------------------- Theorem 5
def _check_delta(eps: float, delta: float) -> None:
    if not eps < delta < 1.0 + eps:
        raise ValueError(f"delta must lie in (eps, 1 + eps) = ({eps}, {1 + eps}), got {delta!r}")


def susceptibility_bound(n: int, eps: float, delta: float, A: float = 1.0) -> float:
    """Theorem 5: ``P(susceptible to delta) >= 1 - (A^n/2)(1 - (delta - eps)^2)^{n/2}``."""
    _check_common(n, A)
    _check_pos("eps", eps)
    _check_delta(eps, delta)
    return 1.0 - math.exp(min(log_insusceptibility_bound(n, eps, delta, A), 700.0))


def susceptibility_exact(n: int, eps: float, delta: float, A: float = 1.0,
                         density: str = "uniform") -> float:
    """Exact ``P(exists ||zeta|| <= delta with f(x + zeta) != l) = P(u_1 >= eps - delta)``."""
    _check_pos("eps", eps, strict=False)
    _check_pos("delta", delta, strict=False)
    return math.exp(log_tail(eps - delta, n, A, density))


def log_insusceptibility_exact(n: int, eps: float, delta: float, A: float = 1.0,
                               density: str = "uniform") -> float:
    """Exact ``log(1 - P(susceptible to delta)) = log P(u_1 < eps - delta)`` (finite far below 1e-300).

    Uses the symmetry of the unit-ball law: ``P(v_1 < c) = F_n(-c)`` for ``v ~ U(B_n)``.
    """
    _check_common(n, A, density)
    _exact_density(density)
    _check_pos("eps", eps, strict=False)
    _check_pos("delta", delta, strict=False)
    c = eps - delta
    if density == "shifted":
        c = A * (c - (1.0 - 1.0 / A))
    return log_cap_fraction(-c, n)


def log_insusceptibility_bound(n: int, eps: float, delta: float, A: float = 1.0) -> float:
    """Log of Theorem 5's bound on the complement, ``(A^n/2)(1 - (delta - eps)^2)^{n/2}``."""
    _check_common(n, A)
    _check_pos("eps", eps)
    _check_delta(eps, delta)
    q = delta - eps
    return _log_A_term(n, A) + 0.5 * n * math.log1p(-q * q)


# --------------------------------------------------------------------------- Theorem 6
def _log_flip_terms(n: int, eps: float, r: float, tau: np.ndarray) -> np.ndarray:
    """``log[(1-(eps-tau)^2)_+^{n/2} + (1-(tau/r)^2)_+^{n/2}]`` for an array of ``tau``."""
    a = eps - tau
    b = tau / r
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(np.abs(a) < 1, 0.5 * n * np.log1p(-np.minimum(a * a, 1.0)), -np.inf)
        t2 = np.where(b < 1, 0.5 * n * np.log1p(-np.minimum(b * b, 1.0)), -np.inf)
    return np.logaddexp(t1, t2)


def log_flip_bound(n: int, eps: float, r: float, A: float = 1.0) -> float:
    """Log of Theorem 6's bound, the infimum over ``tau in (0, eps)`` (numerically minimised).

    ``P(f(x + zeta) != l) <= inf_tau (A^n/2)[(1-(eps-tau)^2)^{n/2} + (1-(tau/r)^2)_+^{n/2}]``.
    Never larger than :func:`flip_bound_closed` (its value at ``tau = eps r / (1 + r)``).
    """
    _check_common(n, A)
    _check_pos("eps", eps)
    _check_pos("r", r)
    tau = np.linspace(0.0, eps, 2003)[1:-1]
    vals = _log_flip_terms(n, eps, r, tau)
    k = int(np.argmin(vals))
    lo, hi = tau[max(k - 1, 0)], tau[min(k + 1, len(tau) - 1)]
    best = float(vals[k])
    if hi > lo:
        res = optimize.minimize_scalar(
            lambda t: float(_log_flip_terms(n, eps, r, np.array([t]))[0]),
            bounds=(lo, hi), method="bounded", options={"xatol": 1e-12 * max(eps, 1e-300)},
        )
        best = min(best, float(res.fun))
    closed = _log_flip_terms(n, eps, r, np.array([eps * r / (1.0 + r)]))[0]
    return _log_A_term(n, A) + min(best, float(closed))


def flip_bound(n: int, eps: float, r: float, A: float = 1.0) -> float:
    """Theorem 6's bound (inf over tau); may exceed 1 (vacuous) in low dimension."""
    return math.exp(min(log_flip_bound(n, eps, r, A), 700.0))


def log_flip_bound_closed(n: int, eps: float, r: float, A: float = 1.0) -> float:
    """Log of Theorem 6's closed form ``A^n (1 - (eps/(1+r))^2)^{n/2}`` (``tau = eps r/(1+r)``)."""
    _check_common(n, A)
    _check_pos("eps", eps)
    _check_pos("r", r)
    q = eps / (1.0 + r)
    if q >= 1:
        return -math.inf
    return n * math.log(A) + 0.5 * n * math.log1p(-q * q)


def flip_bound_closed(n: int, eps: float, r: float, A: float = 1.0) -> float:
    """Theorem 6's closed form ``A^n (1 - (eps/(1+r))^2)^{n/2}``; may exceed 1 (vacuous)."""
    return math.exp(min(log_flip_bound_closed(n, eps, r, A), 700.0))


def log_flip_exact(n: int, eps: float, r: float, A: float = 1.0,
                   density: str = "uniform") -> float:
    """Exact ``log P(f(x + zeta) != l)``, ``zeta ~ U(B_n(r))``, by a log-space 1-D integral.

    ``P(u_1 + r v_1 >= eps) = ∫ f_n(s) F_n((eps - a - s/A)/r) ds`` with ``a = 1 - 1/A`` for
    the shifted law (``a = 0, A = 1`` for the uniform law).
    """
    _check_common(n, A, density)
    _exact_density(density)
    _check_pos("eps", eps, strict=False)
    _check_pos("r", r)
    scale = A if density == "shifted" else 1.0
    shift = 1.0 - 1.0 / A if density == "shifted" else 0.0

    def log_g(s: np.ndarray) -> np.ndarray:
        return log_coord_density(s, n) + log_cap_fraction_array(
            (eps - shift - s / scale) / r, n)

    kinks = (scale * (eps - shift - r), scale * (eps - shift + r))
    return log_integral_coord(log_g, n, breaks=kinks)


def flip_exact(n: int, eps: float, r: float, A: float = 1.0, density: str = "uniform") -> float:
    """Exact Theorem 6 probability (float64, may underflow; see :func:`log_flip_exact`)."""
    return math.exp(log_flip_exact(n, eps, r, A, density))


def flip_gaussian(n: int, eps: float, r: float) -> float:
    """Gaussian approximation ``1 - Phi(eps sqrt(n+2) / sqrt(1 + r^2))`` (uniform law)."""
    _check_n(n)
    return float(special.ndtr(-eps * math.sqrt(n + 2.0) / math.sqrt(1.0 + r * r)))


# --------------------------------------------------------------------------- Theorem 8
def universality_bound(n: int, delta: float, A: float = 1.0) -> float:
    """Theorem 8: ``P >= ((1 - (A^n/2)(1 - delta^2/4)^{n/2})_+)^2`` for ``delta`` in (0, 2].

    The ``(.)_+`` is ours [I]: without it a negative inner term would square to a false bound.
    """
    _check_common(n, A)
    if not 0.0 < delta <= 2.0:
        raise ValueError(f"delta must lie in (0, 2] for Theorem 8, got {delta!r}")
    log_q = 0.5 * n * math.log1p(-delta * delta / 4) if delta < 2.0 else -math.inf
    inner = 1.0 - math.exp(min(_log_A_term(n, A) + log_q, 700.0))
    return max(inner, 0.0) ** 2


def _universality_logs(n: int, delta: float, A: float, density: str) -> tuple[float, float]:
    """``(log P, log(1 - P))`` for Theorem 8's event ``u^x_1 - u^y_1 < delta``."""
    _check_common(n, A, density)
    _exact_density(density)
    _check_pos("delta", delta)
    d = delta * (A if density == "shifted" else 1.0)

    def log_hit(s: np.ndarray) -> np.ndarray:  # f_n(s) P(u_1 < d + s)
        return log_coord_density(s, n) + log_cap_fraction_array(-(d + s), n)

    def log_miss(s: np.ndarray) -> np.ndarray:  # f_n(s) P(u_1 >= d + s)
        return log_coord_density(s, n) + log_cap_fraction_array(d + s, n)

    kinks = (-d - 1.0, -d + 1.0)
    lm = log_integral_coord(log_miss, n, breaks=kinks)
    if lm < math.log(0.5):
        return math.log1p(-math.exp(lm)), lm
    lh = log_integral_coord(log_hit, n, breaks=kinks)
    return lh, math.log1p(-math.exp(lh))


def universality_exact(n: int, delta: float, A: float = 1.0, density: str = "uniform") -> float:
    """Exact ``P(u^x_1 - u^y_1 < delta) = ∫ f_n(s) (1 - F_n(A delta + s)) ds`` (iid ``x, y``)."""
    return math.exp(_universality_logs(n, delta, A, density)[0])


def log_universality_miss_exact(n: int, delta: float, A: float = 1.0,
                                density: str = "uniform") -> float:
    """Exact ``log(1 - P)`` for Theorem 8 (the chance that ``y`` escapes), finite below 1e-300."""
    return _universality_logs(n, delta, A, density)[1]


def log_universality_miss_bound(n: int, delta: float, A: float = 1.0) -> float:
    """Log of ``1 - bound`` for Theorem 8: ``X (2 - X)`` with ``X = (A^n/2)(1 - delta^2/4)^{n/2}``.

    ``0`` (i.e. ``1 - bound = 1``, vacuous) when ``X >= 1``.
    """
    _check_common(n, A)
    if not 0.0 < delta <= 2.0:
        raise ValueError(f"delta must lie in (0, 2] for Theorem 8, got {delta!r}")
    log_x = _log_A_term(n, A) + (0.5 * n * math.log1p(-delta * delta / 4) if delta < 2 else -math.inf)
    if log_x >= 0.0:
        return 0.0
    return log_x + math.log(2.0 - math.exp(log_x))


def universality_gaussian(n: int, delta: float) -> float:
    """Gaussian approximation ``Phi(delta sqrt((n + 2)/2))`` (uniform law)."""
    _check_n(n)
    return float(special.ndtr(delta * math.sqrt((n + 2.0) / 2.0)))


# --------------------------------------------------------------------------- Monte Carlo
def simulate(sampler: Sampler, size: int, event: str, *, eps: float, A: float = 1.0,
             density: str = "uniform", delta: float | None = None,
             r: float | None = None) -> torch.Tensor:
    """One batch of a two-balls experiment; returns ``(size,)`` bool (True = event happened).

    Events: ``"correct"`` (Thm 4), ``"susceptible"`` (Thm 5, needs ``delta``: the attack
    moves ``x`` by ``delta`` along the optimal direction ``±e_1``), ``"flip"`` (Thm 6, needs
    ``r``: ``f(x + zeta) != l``), ``"universal"`` (Thm 8, needs ``delta``: the smallest
    ``zeta`` with margin ``D_l(x, zeta) = delta`` is applied to an independent ``y``).
    """
    if event not in EVENTS:
        raise ValueError(f"event must be one of {EVENTS}, got {event!r}")
    x, lab = sample_two_balls(sampler, size, eps=eps, A=A, density=density)
    w = first_axis(sampler.width)
    toward = (1.0 - 2.0 * lab.to(torch.float64))[:, None] * w  # optimal attack direction
    if event == "correct":
        return classify(x) == lab
    if event == "susceptible":
        if delta is None:
            raise ValueError("event 'susceptible' needs delta")
        _check_pos("delta", delta, strict=False)
        return (classify(x + delta * toward) != lab) | (classify(x) != lab)
    if event == "flip":
        if r is None:
            raise ValueError("event 'flip' needs r")
        _check_pos("r", r)
        return classify(x + r * sampler.ball(size)) != lab
    if delta is None:
        raise ValueError("event 'universal' needs delta")
    _check_pos("delta", delta)
    # y: an independent point of the same class
    y = sample_smac(sampler, size, A=A, density=density)
    sign = (1.0 - 2.0 * lab.to(torch.float64))
    y[:, 0] = sign * y[:, 0] - sign * eps
    margin_x = sign * (x @ w)  # D_l(x, 0) = x_1 for class 0, -x_1 for class 1
    zeta = (delta - margin_x)[:, None] * toward
    return classify(y + zeta) != lab
