"""First-order (local-linear) flip probability: the boundary as a plane.

Replace the decision boundary by the plane through the adversarial point ``x + delta`` whose
normal is the margin gradient ``n`` at ``x``. Its distance from ``x`` is
``dist = <delta, n> / ||n||`` (``= ||delta||`` for the paper's gradient line search), and a
perturbation uniform in ``B_d(r)`` crosses it with probability exactly the cap fraction

    p_1 = F_d(dist / r) = 1/2 I_{1 - (dist/r)^2}((d+1)/2, 1/2)     (0 when dist >= r),

computed in log space (exact far below 1e-300) by :mod:`perturbscope.theory.caps`.
"""

from __future__ import annotations

import numpy as np

from perturbscope.theory.caps import log_cap_fraction_array

__all__ = ["first_order_log_p", "first_order_flip_probability"]


def first_order_log_p(distance: np.ndarray, radius: np.ndarray, d: int) -> np.ndarray:
    """Natural log of ``F_d(distance / radius)`` elementwise (``-inf`` where ``distance >= radius``).

    Args:
        distance: distances of the plane from the input (input units); NaN gives NaN.
        radius: ball radii (input units, > 0), broadcast against ``distance``.
        d: input dimension.
    """
    distance, radius = np.broadcast_arrays(np.asarray(distance, dtype=np.float64),
                                           np.asarray(radius, dtype=np.float64))
    if np.any(radius <= 0) or np.any(np.isnan(radius)):
        raise ValueError("radius must be > 0")
    if d < 1 or int(d) != d:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    t = distance / radius
    nan = np.isnan(t)
    out = log_cap_fraction_array(np.where(nan, 0.0, t), int(d))
    return np.where(nan, np.nan, out)


def first_order_flip_probability(distance: np.ndarray, radius: np.ndarray, d: int
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(p, log10 p)`` of :func:`first_order_log_p` (``p`` may underflow to 0; ``log10 p`` not)."""
    lp = first_order_log_p(distance, radius, d)
    return np.exp(lp), lp / np.log(10.0)
