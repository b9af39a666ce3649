"""The paper's percentages (eqs 6-8), computed from per-image audit records.

With ``T`` the images, ``C`` the correctly classified ones, ``A ⊆ C`` those flipped by some
tested scale of the adversarial line search, and ``R_alpha ⊆ A`` those flipped by at least one
random probe at level ``alpha``::

    accuracy                       = 100 |C| / |T|
    adversarial susceptibility     = 100 |A| / |C|
    random susceptibility (alpha)  = 100 |R_alpha| / |A|

A percentage whose denominator is empty is NaN (reported as such, never as 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

__all__ = ["alpha_key", "flips_column", "summarize_records", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("correct", "adv_success")


def alpha_key(alpha: float) -> str:
    """Column suffix for ``alpha``: ``a1``, ``a2``, ``a2.5``..."""
    alpha = float(alpha)
    return f"a{int(alpha)}" if alpha.is_integer() else f"a{alpha:g}"


def flips_column(alpha: float) -> str:
    return f"flips_{alpha_key(alpha)}"


def _pct(num: int, den: int) -> float:
    return 100.0 * num / den if den else math.nan


def summarize_records(records: pd.DataFrame, alphas: Sequence[float]) -> dict:
    """Summary dict of eqs 6-8 from records (one row per image).

    Needs boolean columns ``correct`` and ``adv_success`` and an int column ``flips_a{alpha}``
    per alpha (number of flipping random draws; ignored where ``adv_success`` is False).
    Returns counts (``n_images``, ``n_correct``, ``n_adversarial``, ``n_random``) and the
    percentages ``accuracy``, ``adversarial_susceptibility`` and ``random_susceptibility``
    (a dict keyed by alpha).
    """
    missing = [c for c in (*REQUIRED_COLUMNS, *(flips_column(a) for a in alphas))
               if c not in records.columns]
    if missing:
        raise ValueError(f"records lack columns {missing}")
    correct = records["correct"].astype(bool)
    adv = records["adv_success"].astype(bool) & correct
    n_t, n_c, n_a = len(records), int(correct.sum()), int(adv.sum())
    n_r = {float(a): int(((records[flips_column(a)].fillna(0) > 0) & adv).sum()) for a in alphas}
    return {
        "n_images": n_t,
        "n_correct": n_c,
        "n_adversarial": n_a,
        "n_random": n_r,
        "accuracy": _pct(n_c, n_t),
        "adversarial_susceptibility": _pct(n_a, n_c),
        "random_susceptibility": {a: _pct(k, n_a) for a, k in n_r.items()},
    }
