"""The paper's percentages (eqs 6-8) and norm statistics, computed once from per-image records.

With ``T`` the images, ``C`` the correctly classified ones, ``A ⊆ C`` those flipped by some
tested scale of the adversarial line search, and ``R_alpha ⊆ A`` those flipped by at least one
random probe at level ``alpha``::

    accuracy                       = 100 |C| / |T|
    adversarial susceptibility     = 100 |A| / |C|
    random susceptibility (alpha)  = 100 |R_alpha| / |A|

Every percentage comes with its count ``k / n`` and a 95% Clopper-Pearson interval (exact,
coverage at least 95%). A percentage whose denominator is empty is NaN (never 0). The norms of
Table 21 (mean and sample sd of eps_adv's L1, L2 and Linf over ``A``) are here too, so the
audit, the store, the sweep tables and the report all use this one implementation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from perturbscope.audit.schema import alpha_key, check_records

__all__ = ["summarize_records", "summarize_groups", "proportion", "mean_ci", "alpha_key", "NORMS", "LEVEL"]

NORMS = ("l1", "l2", "linf")
#: the record columns eqs 6-8 need
REQUIRED = ("correct", "adv_success", "flips_{a}")
#: per-image line-search flags counted over the correct images (:mod:`perturbscope.audit.schema`)
GRADIENT_FLAGS = ("gradient_fallback", "zero_gradient")
#: confidence level of every interval in summaries
LEVEL = 0.95


def proportion(k: int, n: int, level: float = LEVEL) -> dict[str, Any]:
    """``{"k", "n", "pct", "lo", "hi"}``: ``100 k / n`` and its Clopper-Pearson interval (%).

    All NaN (``k``, ``n`` kept) when ``n == 0``.
    """
    from perturbscope.stats import binomial_ci

    if n == 0:
        return {"k": int(k), "n": 0, "pct": math.nan, "lo": math.nan, "hi": math.nan}
    lo, hi = binomial_ci(int(k), int(n), level=level, method="clopper-pearson")
    return {"k": int(k), "n": int(n), "pct": 100.0 * k / n, "lo": 100.0 * lo, "hi": 100.0 * hi}


def _norm_stats(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    mean = float(v.mean()) if v.size else math.nan
    sd = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return mean, sd


def mean_ci(mean: float, sd: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Student-t ``level`` interval of a mean from its sample ``sd`` over ``n`` values
    (NaN for ``n < 2``)."""
    if n < 2 or not (math.isfinite(mean) and math.isfinite(sd)):
        return math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def summarize_records(records: pd.DataFrame, alphas: Sequence[float] | None = None) -> dict:
    """Summary dict of eqs 6-8 from records (one row per image).

    Needs boolean columns ``correct`` and ``adv_success`` and an int column ``flips_a{alpha}``
    per alpha (flipping random draws; ignored where ``adv_success`` is False). Returns:

    * counts ``n_images``, ``n_correct``, ``n_adversarial``, ``n_random`` (dict by alpha);
    * percentages ``accuracy``, ``adversarial_susceptibility``, ``random_susceptibility`` (dict
      by alpha), and ``intervals``: the same three as :func:`proportion` dicts (k, n, pct, lo, hi);
    * ``eps_{l1,l2,linf}_{mean,sd}`` over the attacked images, where those columns exist, with
      ``eps_{norm}_n`` (finite values) and the 95% Student-t interval of the mean,
      ``eps_{norm}_mean_lo`` / ``_hi`` (:func:`mean_ci`);
    * ``n_attack_failed`` (correct images the attack did not flip) and, where the records have those
      columns, ``n_gradient_fallback`` / ``n_zero_gradient``: correct images whose MSE gradient was
      zero and whose direction came from the logit margin / that had no usable direction at all.
    """
    alphas = check_records(records, alphas, required=REQUIRED)
    correct = records["correct"].astype(bool).to_numpy()
    adv = records["adv_success"].astype(bool).to_numpy() & correct
    n_t, n_c, n_a = len(records), int(correct.sum()), int(adv.sum())
    n_r = {float(a): int(((records[f"flips_{alpha_key(a)}"].fillna(0).to_numpy() > 0) & adv).sum())
           for a in alphas}
    acc, sus = proportion(n_c, n_t), proportion(n_a, n_c)
    rand = {a: proportion(k, n_a) for a, k in n_r.items()}
    out: dict[str, Any] = {
        "n_images": n_t,
        "n_correct": n_c,
        "n_adversarial": n_a,
        "n_random": n_r,
        "accuracy": acc["pct"],
        "adversarial_susceptibility": sus["pct"],
        "random_susceptibility": {a: r["pct"] for a, r in rand.items()},
        "intervals": {"level": LEVEL, "accuracy": acc, "adversarial_susceptibility": sus,
                      "random_susceptibility": rand},
        "n_attack_failed": n_c - n_a,
    }
    for col in GRADIENT_FLAGS:
        if col in records.columns:
            flag = records[col].fillna(False).astype(bool).to_numpy()
            out[f"n_{col}"] = int((flag & correct).sum())
    for norm in NORMS:
        col = f"eps_{norm}"
        if col in records.columns:
            v = records[col].to_numpy(dtype=np.float64, na_value=np.nan)[adv]
            out[f"{col}_mean"], out[f"{col}_sd"] = _norm_stats(v)
            out[f"{col}_n"] = int(np.isfinite(v).sum())
            out[f"{col}_mean_lo"], out[f"{col}_mean_hi"] = mean_ci(
                out[f"{col}_mean"], out[f"{col}_sd"], out[f"{col}_n"])
    return out


def summarize_groups(records: pd.DataFrame, by: Sequence[str] = ("pair", "split")) -> pd.DataFrame:
    """One row per group of ``records`` (first-seen order) with :func:`summarize_records`' numbers.

    Columns: the ``by`` keys, ``n_images, n_correct, n_adversarial``, ``accuracy`` and
    ``adversarial_susceptibility`` (%), their counts ``*_k`` / ``*_n`` (the percentage is
    ``100 k / n``) and ``*_lo`` / ``*_hi`` interval ends (%), ``eps_{l1,l2,linf}_{mean,sd}`` with
    ``eps_{norm}_n`` and the 95% interval of the mean ``eps_{norm}_mean_lo`` / ``_hi``, and per
    alpha ``random_a{alpha}`` (%), ``n_random_a{alpha}``, ``random_a{alpha}_k`` / ``_n``,
    ``random_a{alpha}_lo`` / ``_hi``.
    """
    by = list(by)
    missing = [c for c in by if c not in records.columns]
    if missing:
        raise ValueError(f"records lack columns {missing}")
    alphas = check_records(records, required=REQUIRED)
    rows = []
    for gkey, g in records.groupby(by, sort=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        s = summarize_records(g, alphas)
        iv = s["intervals"]
        row: dict[str, Any] = dict(zip(by, gkey, strict=True))
        row.update(n_images=s["n_images"], n_correct=s["n_correct"], n_adversarial=s["n_adversarial"])
        for m in ("accuracy", "adversarial_susceptibility"):
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = iv[m]["pct"], iv[m]["lo"], iv[m]["hi"]
            row[f"{m}_k"], row[f"{m}_n"] = iv[m]["k"], iv[m]["n"]
        for norm in NORMS:
            for stat in ("mean", "sd", "n", "mean_lo", "mean_hi"):
                row[f"eps_{norm}_{stat}"] = s.get(f"eps_{norm}_{stat}", 0 if stat == "n" else math.nan)
        for a in alphas:
            r, k = iv["random_susceptibility"][a], alpha_key(a)
            row[f"random_{k}"], row[f"n_random_{k}"] = r["pct"], r["k"]
            row[f"random_{k}_k"], row[f"random_{k}_n"] = r["k"], r["n"]
            row[f"random_{k}_lo"], row[f"random_{k}_hi"] = r["lo"], r["hi"]
        rows.append(row)
    return pd.DataFrame(rows)
