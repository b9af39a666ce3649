"""Measured widening of the rare-event intervals, so that a "95%" interval covers about 95%.

Each estimator's own interval is log-normal, ``log p_hat +- z sd``, with ``sd`` from its own
error formula. Measured against exact answers (``benchmarks/calibrate_intervals.py``: linear
models in d = 100 and 2352 and the paper's two-balls model, p = 1e-2 ... 1e-12, 100 - 300
runs per case; results in docs/rare_event.md, "Interval calibration") and on the pair CNNs
(docs/rare_event.md, "Careful measurement", "Line sampling: measured"), those intervals are
too narrow for subset simulation (its formula ignores the correlation between levels, which
grows with their number) and for line sampling on curved boundaries (a heavy upper tail of the
line values). :func:`estimate_flip_probability <perturbscope.probes.rare_event.estimate_flip_probability>`
therefore multiplies the half-width ``z sd`` in log space (and ``rel_error``) by:

* splitting: ``sqrt(1 + SPLITTING_LEVEL_VAR * levels)``, ``levels`` the intermediate levels
  passed (the variance of ``log p_hat`` grows by that factor: a between-level correlation the
  Au-Beck formula leaves out);
* lines: :data:`LINES_FACTOR` (the paper-width CNN's measured error was 1 - 3.4x the
  estimated one; linear and two-balls intervals are then very conservative);
* importance sampling: :data:`IS_FACTOR`.

Bounds (no flip seen) and binomial intervals (the plain-sampling finish of line sampling) are
left as they are. ``interval_factor=1.0`` gives the methods' own intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SPLITTING_LEVEL_VAR", "LINES_FACTOR", "IS_FACTOR", "default_factors", "widen"]

#: growth of the variance of log p_hat per intermediate level that the splitting formula misses
SPLITTING_LEVEL_VAR = 0.35
#: widening of the line-sampling interval (log-normal part)
LINES_FACTOR = 2.0
#: widening of the importance-sampling interval
IS_FACTOR = 1.15


def default_factors(method: str, outcome: Any) -> np.ndarray:
    """Per task, the measured widening of ``method``'s interval (1 where it is not log-normal)."""
    log_p = np.asarray(outcome.log_p)
    if method == "splitting":
        levels = np.asarray(outcome.levels, dtype=float)
        return np.sqrt(1.0 + SPLITTING_LEVEL_VAR * levels)
    if method == "lines":
        lines = np.asarray(outcome.lines)
        return np.where(lines > 0, LINES_FACTOR, 1.0)  # lines == 0: finished by plain sampling
    if method == "is":
        return np.full(log_p.shape, IS_FACTOR)
    raise ValueError(f"unknown method {method!r}")


def widen(log_p: np.ndarray, lo: np.ndarray, hi: np.ndarray, rel: np.ndarray, factor: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The log-normal intervals ``[lo, hi]`` around ``log_p`` with half-width times ``factor``
    (the upper end kept <= 0: a probability), and ``rel`` times ``factor``; entries without a
    finite estimate and lower end (bounds only) unchanged."""
    factor = np.broadcast_to(np.asarray(factor, dtype=float), np.shape(log_p))
    ok = np.isfinite(log_p) & np.isfinite(lo) & (factor != 1.0)
    with np.errstate(invalid="ignore"):
        half = np.where(ok, log_p - lo, 0.0)  # the lower half is never clipped
        new_lo = np.where(ok, log_p - factor * half, lo)
        new_hi = np.where(ok, np.minimum(log_p + factor * half, 0.0), hi)
        new_rel = np.where(ok, factor * rel, rel)
    return new_lo, new_hi, new_rel, np.where(ok, factor, 1.0)
