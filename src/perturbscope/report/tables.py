"""Tables of an audit sweep from its per-image records, laid out as the paper's (Tables 20, 21).

Everything is derived from the records (one row per image per unit of work, with the columns
of :func:`perturbscope.audit.audit` plus a ``pair`` column such as ``"7-8"``):

* :func:`summarize_groups`: one row per group (e.g. pair and split) with eqs 6-8 and the
  mean/sd of the smallest adversarial perturbation's L1, L2 and Linf norms;
* :func:`long_metrics`: the same numbers in long form ``(metric, split, pair, value, sd)``;
* :func:`side_by_side`: ours next to the paper's values and the difference;
* :func:`wide_table`: a display table, rows ``(metric, split)`` and one column per pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["alpha_keys", "summarize_groups", "long_metrics", "side_by_side", "wide_table",
           "METRIC_LABELS", "metric_label", "pair_sort_key"]

NORMS = ("l1", "l2", "linf")
METRIC_LABELS = {
    "accuracy": "Accuracy %",
    "adversarial_susceptibility": "Adv. susceptibility %",
    "eps_l1": "Adv. attack norm L1, mean (sd)",
    "eps_l2": "Adv. attack norm L2, mean (sd)",
    "eps_linf": "Adv. attack norm Linf, mean (sd)",
}


def metric_label(metric: str) -> str:
    """Human label of a metric id (``random_a5`` -> ``Random susceptibility % (alpha=5)``)."""
    if metric.startswith("random_a"):
        return f"Random susceptibility % (alpha={metric[len('random_a'):]})"
    return METRIC_LABELS.get(metric, metric)


def pair_sort_key(pair: str) -> tuple:
    """Sort ``"2-3"`` before ``"10-11"`` (numeric where possible)."""
    parts = str(pair).split("-")
    try:
        return (0, *(int(p) for p in parts))
    except ValueError:
        return (1, str(pair))


def alpha_keys(records: pd.DataFrame) -> list[str]:
    """The alpha suffixes (``a1``, ``a2.5``...) of the ``flips_*`` columns, by increasing alpha."""
    keys = [c[len("flips_"):] for c in records.columns if c.startswith("flips_a")]
    return sorted(keys, key=lambda k: float(k[1:]))


def _check(records: pd.DataFrame, cols: Sequence[str]) -> None:
    if not isinstance(records, pd.DataFrame):
        raise TypeError(f"records must be a pandas DataFrame, got {type(records).__name__}")
    missing = [c for c in cols if c not in records.columns]
    if missing:
        raise ValueError(f"records lack columns {missing}")


def summarize_groups(records: pd.DataFrame, by: Sequence[str] = ("pair", "split")) -> pd.DataFrame:
    """One row per group of ``records`` with the paper's numbers.

    Columns: the ``by`` keys, ``n_images, n_correct, n_adversarial``, ``accuracy`` and
    ``adversarial_susceptibility`` (%, eqs 6-7), ``eps_{l1,l2,linf}_{mean,sd}`` over the
    attacked images (pixel units, sample sd with ddof=1, NaN below 2 images) and
    ``random_a{alpha}`` (%, eq 8, over the attacked images). A percentage with an empty
    denominator is NaN. Groups keep their first-seen order.
    """
    by = list(by)
    _check(records, [*by, "correct", "adv_success", "eps_l1", "eps_l2", "eps_linf"])
    keys = alpha_keys(records)
    rows = []
    for gkey, g in records.groupby(by, sort=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        correct = g["correct"].astype(bool)
        adv = g["adv_success"].astype(bool) & correct
        n, n_c, n_a = len(g), int(correct.sum()), int(adv.sum())
        row: dict[str, Any] = dict(zip(by, gkey, strict=True))
        row.update(n_images=n, n_correct=n_c, n_adversarial=n_a,
                   accuracy=100.0 * n_c / n if n else math.nan,
                   adversarial_susceptibility=100.0 * n_a / n_c if n_c else math.nan)
        for norm in NORMS:
            v = g.loc[adv, f"eps_{norm}"].astype(float)
            row[f"eps_{norm}_mean"] = float(v.mean()) if len(v) else math.nan
            row[f"eps_{norm}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
        for k in keys:
            hit = (g[f"flips_{k}"].fillna(0) > 0) & adv
            row[f"random_{k}"] = 100.0 * int(hit.sum()) / n_a if n_a else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def long_metrics(summary: pd.DataFrame) -> pd.DataFrame:
    """Long form of a ``summarize_groups(records, ("pair", "split"))`` table.

    Columns ``metric, split, pair, value, sd``; metrics ``accuracy``,
    ``adversarial_susceptibility``, ``random_a{alpha}`` and ``eps_{l1,l2,linf}`` (mean, with
    its sd; ``sd`` is NaN for the percentages).
    """
    _check(summary, ["pair", "split"])
    rand = [c for c in summary.columns if c.startswith("random_a")]
    rows = []
    for _, r in summary.iterrows():
        for m in ("accuracy", "adversarial_susceptibility", *rand):
            rows.append((m, r["split"], r["pair"], float(r[m]), math.nan))
        for norm in NORMS:
            rows.append((f"eps_{norm}", r["split"], r["pair"], float(r[f"eps_{norm}_mean"]),
                         float(r[f"eps_{norm}_sd"])))
    return pd.DataFrame(rows, columns=["metric", "split", "pair", "value", "sd"])


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame | None) -> pd.DataFrame:
    """Join our long metrics with the paper's on ``(metric, split, pair)``.

    Args:
        ours: :func:`long_metrics` output.
        paper: same columns (``sd`` optional), or ``None``/empty when the paper has none.

    Returns:
        ``ours`` with ``paper``, ``paper_sd`` and ``diff = value - paper`` (NaN where the paper
        has no value), in the order of ``ours``.
    """
    _check(ours, ["metric", "split", "pair", "value"])
    out = ours.copy()
    if paper is None or len(paper) == 0:
        out["paper"], out["paper_sd"] = math.nan, math.nan
    else:
        _check(paper, ["metric", "split", "pair", "value"])
        p = paper.rename(columns={"value": "paper", "sd": "paper_sd"})
        if "paper_sd" not in p.columns:
            p["paper_sd"] = math.nan
        p = p[["metric", "split", "pair", "paper", "paper_sd"]].drop_duplicates(
            ["metric", "split", "pair"], keep="last")
        out = out.merge(p, on=["metric", "split", "pair"], how="left")
    out["diff"] = out["value"] - out["paper"]
    return out


def _fmt(v: float, sd: float = math.nan) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.2f} ({sd:.2f})" if sd is not None and math.isfinite(sd) else f"{v:.2f}"


def wide_table(long: pd.DataFrame, metrics: Sequence[str] | None = None,
               with_paper: bool = True) -> pd.DataFrame:
    """Display table: rows ``(metric label, split)``, one column per pair (``"7 vs 8"``).

    With ``with_paper`` and a ``paper`` column (see :func:`side_by_side`), each pair gets three
    sub-columns ``ours``, ``paper``, ``diff``; cells are formatted strings ("2.24 (1.01)",
    "n/a" where missing).
    """
    _check(long, ["metric", "split", "pair", "value"])
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(long["metric"]))
    splits = list(dict.fromkeys(long["split"]))
    pairs = sorted(dict.fromkeys(long["pair"]), key=pair_sort_key)
    paper = with_paper and "paper" in long.columns
    lookup = {(r.metric, r.split, r.pair): r for r in long.itertuples(index=False)}
    index, rows = [], []
    for m in metrics:
        for s in splits:
            index.append((metric_label(m), s))
            row = []
            for p in pairs:
                r = lookup.get((m, s, p))
                if r is None:
                    row.extend(["n/a"] * (3 if paper else 1))
                    continue
                row.append(_fmt(r.value, getattr(r, "sd", math.nan)))
                if paper:
                    row.append(_fmt(r.paper, getattr(r, "paper_sd", math.nan)))
                    row.append("n/a" if not math.isfinite(r.diff) else f"{r.diff:+.2f}")
            rows.append(row)
    names = [str(p).replace("-", " vs ") for p in pairs]
    cols = (pd.MultiIndex.from_product([names, ["ours", "paper", "diff"]]) if paper
            else pd.Index(names))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["metric", "split"]),
                        columns=cols)
