"""Small statistics helpers shared across perturbscope.

``binomial_ci`` gives a two-sided confidence interval for a binomial
proportion ``successes / trials``; it is vectorised over numpy arrays (and
accepts python scalars or torch tensors via ``numpy.asarray``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import special, stats

__all__ = ["binomial_ci"]

CIMethod = Literal["wilson", "clopper-pearson"]


def binomial_ci(
    successes: np.ndarray | int,
    trials: np.ndarray | int,
    level: float = 0.95,
    method: CIMethod = "wilson",
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Two-sided confidence interval for a binomial proportion.

    Args:
        successes: count(s) ``k``, integers with ``0 <= k <= trials``; any shape.
        trials: number(s) of trials ``n >= 1``; broadcast against ``successes``.
        level: confidence level in ``(0, 1)``, e.g. ``0.95``.
        method: ``"wilson"`` (score interval, default) or ``"clopper-pearson"``
            (exact, conservative: coverage >= ``level``).

    Returns:
        ``(low, high)``: proportions in ``[0, 1]`` with the broadcast shape of the inputs
        (python floats when both inputs are scalars).

    Raises:
        ValueError: naming the bad argument (negative/non-integer counts, ``k > n``,
            ``n < 1``, ``level`` outside ``(0, 1)``, unknown ``method``).
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    scalar = k.ndim == 0 and n.ndim == 0
    if not (0.0 < float(level) < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if np.any(~np.isfinite(k)) or np.any(k < 0) or np.any(k != np.round(k)):
        raise ValueError("successes must be finite non-negative integers")
    if np.any(~np.isfinite(n)) or np.any(n < 1) or np.any(n != np.round(n)):
        raise ValueError("trials must be finite integers >= 1")
    k, n = np.broadcast_arrays(k, n)
    if np.any(k > n):
        raise ValueError("successes must not exceed trials")
    alpha = 1.0 - float(level)
    if method == "wilson":
        z = special.ndtri(1.0 - alpha / 2.0)
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
        # exact endpoints at the boundaries (avoid rounding noise)
        low = np.where(k == 0, 0.0, low)
        high = np.where(k == n, 1.0, high)
    elif method == "clopper-pearson":
        with np.errstate(invalid="ignore"):
            low = stats.beta.ppf(alpha / 2.0, k, n - k + 1.0)
            high = stats.beta.ppf(1.0 - alpha / 2.0, k + 1.0, n - k)
        low = np.where(k == 0, 0.0, low)
        high = np.where(k == n, 1.0, high)
    else:
        raise ValueError(f"method must be 'wilson' or 'clopper-pearson', got {method!r}")
    if scalar:
        return float(low), float(high)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
