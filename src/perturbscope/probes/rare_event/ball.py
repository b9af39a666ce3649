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

import numpy as np
import torch

from perturbscope.sampling import uniform_ball
from perturbscope.theory.caps import inverse_log_cap_fraction, log_cap_fraction_array

__all__ = ["LAM_MAX", "lam_from_s", "s_from_lam", "ball_points_given_s"]

#: largest ``lam`` the samplers handle in float64 (``F_d(s) = exp(-lam) >= ~1e-304``).
LAM_MAX = 700.0


def lam_from_s(s: np.ndarray, d: int) -> np.ndarray:
    """``-log F_d(s)`` elementwise for along-u coordinates ``s`` in [-1, 1] (float64, nats).

    :func:`perturbscope.theory.caps.log_cap_fraction_array` (finite far below float64's range;
    ``inf`` for ``s >= 1``, ``0`` for ``s <= -1``).
    """
    return -log_cap_fraction_array(np.asarray(s, dtype=np.float64), int(d))


def s_from_lam(lam: np.ndarray, d: int) -> np.ndarray:
    """Inverse of :func:`lam_from_s`: the ``s`` with ``F_d(s) = exp(-lam)``, ``0 <= lam <= LAM_MAX``
    (:func:`perturbscope.theory.caps.inverse_log_cap_fraction`)."""
    lam = np.asarray(lam, dtype=np.float64)
    if np.any(lam < 0) or np.any(lam > LAM_MAX + 1e-9):
        raise ValueError(f"lam must lie in [0, {LAM_MAX}], got range "
                         f"[{lam.min():.4g}, {lam.max():.4g}]")
    return inverse_log_cap_fraction(-lam, int(d))


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
        generator: source of the orthogonal part (drawn on its device): a point of
            :func:`perturbscope.sampling.uniform_ball` in the ``(d-1)``-ball of radius
            ``radius * sqrt(1 - s^2)`` orthogonal to ``u``.

    Returns ``s * radius * u + rest`` in ``u``'s dtype and device (the Gaussian of the orthogonal
    part is drawn in ``u``'s dtype too).
    """
    b, d = u.shape
    s64 = s.to(torch.float64)
    r64 = radius.to(torch.float64)
    along = (s64 * r64).to(u.dtype).unsqueeze(1)
    if d < 2:  # the hyperplane orthogonal to u is {0}
        return along * u
    rest_r = r64 * torch.sqrt(((1.0 - s64) * (1.0 + s64)).clamp_min(0.0))
    # drawn in u's dtype: two fused passes over the (B, d) block, the hot path in large d
    rest = uniform_ball(b, d, rest_r, seed=generator, dtype=u.dtype, draw_dtype=u.dtype,
                        orthogonal_to=u)
    return rest.to(u.device).addcmul_(along, u)
