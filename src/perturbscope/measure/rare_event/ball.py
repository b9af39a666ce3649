"""Coordinates of the uniform L2 ball used by the rare-event estimators.

For ``zeta`` uniform in the ball ``B_d(r)`` and a unit vector ``u``, write
``s = <zeta, u> / r`` (the *along-u coordinate*, in [-1, 1]). Its upper tail is the cap
fraction ``F_d(s) = P(s' >= s)`` of :mod:`perturbscope.theory.caps`, and given ``s`` the rest
``zeta - s r u`` is uniform in the ``(d-1)``-ball of radius ``r sqrt(1 - s^2)`` inside the
hyperplane orthogonal to ``u``.

It is convenient to work with ``lam = -log F_d(s)`` (nats): under the uniform ball law
``F_d(s)`` is uniform on (0, 1), so ``lam ~ Exp(1)`` *whatever the dimension*. A half-space
``{s >= s*}`` has probability ``exp(-lam*)``; proposals are built and weighted in ``lam``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

__all__ = ["LAM_MAX", "lam_from_s", "s_from_lam", "ball_points_given_s"]

#: largest ``lam`` the samplers handle in float64 (``F_d(s) = exp(-lam) >= ~1e-304``).
LAM_MAX = 700.0


def lam_from_s(s: np.ndarray, d: int) -> np.ndarray:
    """``-log F_d(s)`` elementwise for along-u coordinates ``s`` in [-1, 1] (float64)."""
    s = np.asarray(s, dtype=np.float64)
    a = np.clip(np.abs(s), 0.0, 1.0)
    upper = 0.5 * special.betaincc(0.5, (d + 1) / 2.0, a * a)  # F_d(|s|)
    with np.errstate(divide="ignore"):
        return np.where(s >= 0, -np.log(upper), -np.log1p(-upper))


def s_from_lam(lam: np.ndarray, d: int) -> np.ndarray:
    """Inverse of :func:`lam_from_s`: the ``s`` with ``F_d(s) = exp(-lam)``, ``lam >= 0``."""
    lam = np.asarray(lam, dtype=np.float64)
    if np.any(lam < 0) or np.any(lam > LAM_MAX + 1e-9):
        raise ValueError(f"lam must lie in [0, {LAM_MAX}], got range "
                         f"[{lam.min():.4g}, {lam.max():.4g}]")
    b = (d + 1) / 2.0
    tail = np.exp(-lam)  # F_d(s)
    upper = tail <= 0.5
    # F_d(s) = 1/2 betaincc(1/2, b, s^2) for s >= 0; F_d(-s) = 1 - F_d(s).
    arg = np.where(upper, 2.0 * tail, -2.0 * np.expm1(-lam))
    arg = np.clip(arg, 0.0, 1.0)
    root = np.sqrt(special.betainccinv(0.5, b, arg))
    return np.where(upper, root, -root)


def ball_points_given_s(
    s: torch.Tensor,
    radius: torch.Tensor,
    u: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Points ``(B, d)`` of ``B_d(radius)`` with along-u coordinate ``s``, the rest uniform.

    Args:
        s: ``(B,)`` along-u coordinates in [-1, 1].
        radius: ``(B,)`` ball radii (input units).
        u: ``(B, d)`` unit vectors (one per point; rows may repeat).
        generator: source of the orthogonal part (Gaussian on ``u``'s complement, normalised,
            radius ``radius * sqrt(1 - s^2) * V^(1/(d-1))``).

    Returns the points in ``u``'s dtype and device.
    """
    b, d = u.shape
    # g Gaussian; its part orthogonal to u has norm sqrt(|g|^2 - <g,u>^2). The point is
    # along * u + rho * g_perp / |g_perp| = c g + (along - c <g,u>) u with c = rho / |g_perp|,
    # written in two fused passes over the (B, d) block (this is the hot path in large d).
    g = torch.randn((b, d), generator=generator, dtype=u.dtype, device=u.device)
    gu = (g * u).sum(1).to(torch.float64)
    gg = torch.linalg.vector_norm(g, dim=1).to(torch.float64).square()
    perp = (gg - gu * gu).clamp_min(torch.finfo(torch.float64).tiny).sqrt()
    v = torch.rand((b,), generator=generator, dtype=torch.float64, device=u.device)
    s64 = s.to(torch.float64)
    r64 = radius.to(torch.float64)
    rho = r64 * torch.sqrt((1.0 - s64 * s64).clamp_min(0.0)) * v.pow(1.0 / max(d - 1, 1))
    c = rho / perp
    coef = s64 * r64 - c * gu
    g.mul_(c.to(u.dtype).unsqueeze(1))
    return g.addcmul_(coef.to(u.dtype).unsqueeze(1), u)


def log10(x: float) -> float:
    """``log10`` that returns ``-inf`` for 0."""
    return math.log10(x) if x > 0 else -math.inf
