"""Our numbers beside the paper's, built once: long form, side by side, and the two layouts.

Everything starts from per-image records (:mod:`perturbscope.audit.schema`) or their group
summaries (:func:`perturbscope.audit.summary.summarize_groups`, what
:meth:`ResultsStore.summaries <perturbscope.experiments.store.ResultsStore.summaries>` returns):

* :func:`long_metrics`: one row per ``(metric, split, pair)`` with ``value`` and ``sd``;
* :func:`paper_long`: the paper's values in the same long form (package data
  ``perturbscope/reference/paper_tables.json``, read by :func:`paper_tables`);
* :func:`side_by_side`: ours beside the paper's, ``diff = ours - paper``;
* :func:`wide_table`: a display DataFrame (rows ``(metric, split)``, a column per pair; HTML);
* :func:`table20_long` / :func:`table21_long` and :func:`format_table20` / :func:`format_table21`:
  the paper's text layout (pairs as columns, cells ``"train, test"``);
* :func:`protocol_note`: the settings of a run, with the paper's beside any that differ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import pandas as pd

from perturbscope.audit.config import box_mode
from perturbscope.audit.schema import alpha_key
from perturbscope.paper import PAPER_PROTOCOL, PROTOCOL_LABELS
from perturbscope.validation import check_frame

__all__ = ["paper_tables", "paper_long", "long_metrics", "side_by_side", "wide_table", "metric_label",
           "format_ours", "format_diff", "paper_outside",
           "pair_sort_key", "table20_long", "table21_long", "format_table20", "format_table21",
           "protocol_note", "protocol_rows", "NORM_METRICS", "TABLE_TITLES", "table_titles"]

SPLITS = ("train", "test")
NORMS = ("l1", "l2", "linf")
NORM_METRICS = (("eps_l1", "L1"), ("eps_l2", "L2"), ("eps_linf", "Linf"))
METRIC_LABELS = {
    "accuracy": "Accuracy %",
    "adversarial_susceptibility": "Adv. susceptibility %",
    "eps_l1": "Adv. attack norm L1, mean (sd)",
    "eps_l2": "Adv. attack norm L2, mean (sd)",
    "eps_linf": "Adv. attack norm Linf, mean (sd)",
}



@lru_cache(maxsize=1)
def _load() -> str:
    return resources.files("perturbscope").joinpath("reference", "paper_tables.json").read_text()


def paper_tables() -> dict[str, Any]:
    """The paper's reference tables (a fresh copy each call).

    Keys: ``"fashion-mnist"`` -> ``{"table20": {"accuracy" | "adversarial_susceptibility":
    {pair: {"train", "test"}}, "random_susceptibility": {"1" | "2" | "5" | "10": {pair: ...}}},
    "table21": {"eps_l1" | "eps_l2" | "eps_linf": {pair: {split: {"mean", "sd"}}}}}``;
    ``"cifar10-noise"`` -> ``{"13" ... "18": {"noise": "cube" | "ball", "level": 1..3,
    "accuracy", "adversarial_susceptibility": {pair: {split}}, "eps_l1" | "eps_l2" | "eps_linf":
    {pair: {split: {"mean", "sd"}}}}}``. ``"cifar10"`` (Tables 4-12, all 45 pairs) and ``"gtsrb"``
    (Tables 23-24) have the ``"fashion-mnist"`` layout; ``"imagenet-resnet50"`` / ``"imagenet-vgg19"``
    (Table 25) too, with the one pair ``"all"``, split ``"test"`` and alpha 10 only. Pairs are
    ``"i-j"``; percentages in %, norms in pixel units of [0, 1] images.
    """
    return json.loads(_load())


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


def _rand_metrics(summary: pd.DataFrame) -> list[str]:
    """``random_a{alpha}`` metric columns of a group summary, by increasing alpha."""
    keys = [c for c in summary.columns if c.startswith("random_a") and c[len("random_a"):]
            .replace(".", "", 1).isdigit()]
    return sorted(keys, key=lambda c: float(c[len("random_a"):]))


def _num(r: Any, col: str) -> float:
    v = r.get(col, math.nan) if hasattr(r, "get") else math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


#: the counts behind each percentage of a group summary: (k column, n column), for summaries
#: that predate the explicit ``*_k`` / ``*_n`` columns
_COUNTS = {"accuracy": ("n_correct", "n_images"),
           "adversarial_susceptibility": ("n_adversarial", "n_correct")}


def long_metrics(summary: pd.DataFrame) -> pd.DataFrame:
    """Long form of a group summary with ``pair`` and ``split`` columns.

    Columns ``metric, split, pair, value, sd, k, n, lo, hi``; metrics ``accuracy``,
    ``adversarial_susceptibility``, ``random_a{alpha}`` (percent ``value = 100 k / n`` with its
    95% Clopper-Pearson interval ``[lo, hi]``; ``sd`` NaN) and ``eps_{l1,l2,linf}`` (``value``
    the mean with its sd over ``n`` images and the 95% interval of the mean; ``k`` NaN).
    Counts and intervals are NaN where the summary lacks them.
    """
    check_frame(summary, ["pair", "split"], "summary")
    rows = []
    for _, r in summary.iterrows():
        for m in ("accuracy", "adversarial_susceptibility", *_rand_metrics(summary)):
            kc, nc = _COUNTS.get(m, (f"n_{m}", "n_adversarial"))
            k = _num(r, f"{m}_k") if f"{m}_k" in r.index else _num(r, kc)
            n = _num(r, f"{m}_n") if f"{m}_n" in r.index else _num(r, nc)
            rows.append((m, r["split"], r["pair"], float(r[m]), math.nan, k, n,
                         _num(r, f"{m}_lo"), _num(r, f"{m}_hi")))
        for norm in NORMS:
            c = f"eps_{norm}"
            rows.append((c, r["split"], r["pair"], float(r[f"{c}_mean"]), float(r[f"{c}_sd"]), math.nan,
                         _num(r, f"{c}_n"), _num(r, f"{c}_mean_lo"), _num(r, f"{c}_mean_hi")))
    return pd.DataFrame(rows, columns=["metric", "split", "pair", "value", "sd", "k", "n", "lo", "hi"])


def paper_long(dataset: str = "fashion-mnist", doc: Mapping[str, Any] | None = None) -> pd.DataFrame | None:
    """The paper's rate and norm tables in long form ``(metric, split, pair, value, sd)``.

    Read from the package data (:func:`paper_tables`) or ``doc`` (same layout). Metrics as
    :func:`long_metrics`. ``None`` when the paper has no such tables for ``dataset``
    (``fashion-mnist-subset`` is compared with the full data set's values).
    """
    key = "fashion-mnist" if str(dataset).startswith("fashion-mnist") else str(dataset)
    ref = (doc if doc is not None else paper_tables()).get(key)
    if not isinstance(ref, Mapping) or "table20" not in ref:
        return None
    rows: list[tuple[str, str, str, float, float]] = []
    t20, t21 = ref["table20"], ref.get("table21", {})
    for metric in ("accuracy", "adversarial_susceptibility"):
        for pair, cells in t20.get(metric, {}).items():
            rows.extend((metric, s, pair, float(v), math.nan) for s, v in cells.items())
    for a, by_pair in t20.get("random_susceptibility", {}).items():
        metric = f"random_{alpha_key(float(a))}"
        for pair, cells in by_pair.items():
            rows.extend((metric, s, pair, float(v), math.nan) for s, v in cells.items())
    for metric, by_pair in t21.items():
        for pair, cells in by_pair.items():
            rows.extend((metric, s, pair, float(v["mean"]), float(v.get("sd", math.nan)))
                        for s, v in cells.items())
    if not rows:
        return None
    return pd.DataFrame(rows, columns=["metric", "split", "pair", "value", "sd"])


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame | None) -> pd.DataFrame:
    """Join our long metrics with the paper's on ``(metric, split, pair)``.

    Args:
        ours: :func:`long_metrics` output.
        paper: same columns (``sd`` optional), or ``None``/empty when the paper has none.

    Returns:
        ``ours`` with ``paper``, ``paper_sd``, ``diff = value - paper`` (NaN where the paper
        has no value) and ``paper_outside`` (True where the paper's value lies outside our 95%
        interval ``[lo, hi]``, when ``ours`` has one), in the order of ``ours``.
    """
    check_frame(ours, ["metric", "split", "pair", "value"], "ours")
    out = ours.copy()
    if paper is None or len(paper) == 0:
        out["paper"], out["paper_sd"] = math.nan, math.nan
    else:
        check_frame(paper, ["metric", "split", "pair", "value"], "paper")
        p = paper.rename(columns={"value": "paper", "sd": "paper_sd"})
        if "paper_sd" not in p.columns:
            p["paper_sd"] = math.nan
        p = p[["metric", "split", "pair", "paper", "paper_sd"]].drop_duplicates(
            ["metric", "split", "pair"], keep="last")
        out = out.merge(p, on=["metric", "split", "pair"], how="left")
    out["diff"] = out["value"] - out["paper"]
    out["paper_outside"] = paper_outside(out["paper"], out["lo"], out["hi"]) if "lo" in out.columns \
        else False
    return out


def paper_outside(paper: Any, lo: Any, hi: Any) -> Any:
    """True where the paper's value lies outside our interval ``[lo, hi]`` (False where any is NaN).

    The paper prints two decimals: a value within 0.005 of an end counts as inside.
    """
    import numpy as np

    p, lo_, hi_ = (np.asarray(v, dtype=float) for v in (paper, lo, hi))
    with np.errstate(invalid="ignore"):
        out = np.isfinite(p) & np.isfinite(lo_) & np.isfinite(hi_) & ((p < lo_ - 0.005) | (p > hi_ + 0.005))
    return out if out.ndim else bool(out)


def _fmt_cell(v: float, sd: float = math.nan) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.2f} ({sd:.2f})" if sd is not None and math.isfinite(sd) else f"{v:.2f}"


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def format_ours(r: Any, counts: bool = True) -> str:
    """One of our numbers with its uncertainty, from a row of :func:`long_metrics`:
    ``"53.01 [48.1, 57.9] (95/179)"`` (percent, 95% Clopper-Pearson interval, k/n) or
    ``"2.24 (1.01) [2.09, 2.39]"`` (mean (sd) of a norm, 95% interval of the mean)."""
    v, sd = getattr(r, "value", math.nan), getattr(r, "sd", math.nan)
    text = _fmt_cell(v, sd)
    if text == "n/a":
        return text
    lo, hi = getattr(r, "lo", math.nan), getattr(r, "hi", math.nan)
    if _finite(lo) and _finite(hi):
        text += f" [{lo:.1f}, {hi:.1f}]" if not _finite(sd) else f" [{lo:.2f}, {hi:.2f}]"
    k, n = getattr(r, "k", math.nan), getattr(r, "n", math.nan)
    if counts and _finite(k) and _finite(n):
        text += f" ({int(k)}/{int(n)})"
    return text


def format_diff(diff: float, outside: bool = False) -> str:
    """``"+1.99"``; ``"+1.99*"`` when the paper's value lies outside our interval."""
    if diff is None or not math.isfinite(diff):
        return "n/a"
    return f"{diff:+.2f}" + ("*" if outside else "")


def wide_table(long: pd.DataFrame, metrics: Sequence[str] | None = None,
               with_paper: bool = True) -> pd.DataFrame:
    """Display table: rows ``(metric label, split)``, one column per pair (``"7 vs 8"``).

    With ``with_paper`` and a ``paper`` column (see :func:`side_by_side`), each pair gets three
    sub-columns ``ours``, ``paper``, ``diff``; cells are formatted strings: ours with its 95%
    interval and counts (:func:`format_ours`: "53.01 [48.1, 57.9] (95/179)", "2.24 (1.01)
    [2.09, 2.39]"), the paper's value ("2.24 (1.01)"), the difference, marked ``*`` where the
    paper's value lies outside our interval ("+1.99*"); "n/a" where missing.
    """
    check_frame(long, ["metric", "split", "pair", "value"], "long")
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
                row.append(format_ours(r))
                if paper:
                    row.append(_fmt_cell(r.paper, getattr(r, "paper_sd", math.nan)))
                    row.append(format_diff(r.diff, bool(getattr(r, "paper_outside", False))))
            rows.append(row)
    names = [str(p).replace("-", " vs ") for p in pairs]
    cols = (pd.MultiIndex.from_product([names, ["ours", "paper", "diff"]]) if paper
            else pd.Index(names))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["metric", "split"]),
                        columns=cols)


def _pairs(long: pd.DataFrame, pairs: Sequence[str] | None) -> list[str]:
    return list(pairs) if pairs is not None else list(dict.fromkeys(long["pair"]))


def _ours_vs_paper(summaries: pd.DataFrame, dataset: str) -> pd.DataFrame:
    check_frame(summaries, ["pair", "split"], "summaries")
    return side_by_side(long_metrics(summaries.reindex(columns=_summary_columns(summaries))),
                        paper_long(dataset))


def _summary_columns(summaries: pd.DataFrame) -> list[str]:
    need = ["pair", "split", "accuracy", "adversarial_susceptibility",
            *(f"eps_{n}_{s}" for n in NORMS for s in ("mean", "sd"))]
    return list(dict.fromkeys(need + [c for c in summaries.columns if c not in need]))


def table20_long(summaries: pd.DataFrame, alphas: Sequence[float] = (1.0, 2.0, 5.0, 10.0),
                 pairs: Sequence[str] | None = None, dataset: str = "fashion-mnist") -> pd.DataFrame:
    """Table 20 side by side, long form.

    Args:
        summaries: group summaries (``pair``, ``split``, ``accuracy``,
            ``adversarial_susceptibility``, ``random_a{alpha}``), e.g. :meth:`ResultsStore.summaries`.
        alphas: random-perturbation levels (paper: 1, 2, 5, 10).
        pairs: column order (default: the pairs of ``summaries`` in order).

    Returns:
        Columns ``metric, label, pair, split, ours, k, n, lo, hi, paper, diff, paper_outside``
        (percent; ``ours = 100 k / n`` with its 95% Clopper-Pearson interval ``[lo, hi]``;
        diff = ours - paper; ``paper_outside``: the paper's value lies outside ``[lo, hi]``), one
        row per metric x pair x split (NaN where either side is missing).
    """
    sbs = _ours_vs_paper(summaries, dataset).set_index(["metric", "pair", "split"])
    metrics = [("accuracy", "Accuracy"), ("adversarial_susceptibility", "Adversarial susceptibility")]
    metrics += [(f"random_{alpha_key(a)}", f"Random susceptibility (alpha={float(a):g})") for a in alphas]
    rows = []
    for metric, label in metrics:
        for pair in _pairs(summaries, pairs):
            for split in SPLITS:
                r = sbs.loc[(metric, pair, split)] if (metric, pair, split) in sbs.index else None
                ours = float(r["value"]) if r is not None else math.nan
                k, n, lo, hi = ((_num(r, c) for c in ("k", "n", "lo", "hi")) if r is not None
                                else (math.nan,) * 4)
                paper = _paper_value(r, dataset, metric, pair, split)
                rows.append({"metric": metric, "label": label, "pair": pair, "split": split, "ours": ours,
                             "k": k, "n": n, "lo": lo, "hi": hi, "paper": paper, "diff": ours - paper,
                             "paper_outside": bool(paper_outside(paper, lo, hi))})
    return pd.DataFrame(rows, columns=["metric", "label", "pair", "split", "ours", "k", "n", "lo", "hi",
                                       "paper", "diff", "paper_outside"])


def _paper_value(row: Any, dataset: str, metric: str, pair: str, split: str, col: str = "value") -> float:
    if row is not None:
        return float(row["paper" if col == "value" else "paper_sd"])
    ref = paper_long(dataset)
    if ref is None:
        return math.nan
    hit = ref[(ref["metric"] == metric) & (ref["pair"] == pair) & (ref["split"] == split)]
    return float(hit[col].iloc[0]) if len(hit) else math.nan


def table21_long(summaries: pd.DataFrame, pairs: Sequence[str] | None = None,
                 dataset: str = "fashion-mnist") -> pd.DataFrame:
    """Table 21 side by side, long form: norms of the smallest adversarial attack per image.

    Returns:
        Columns ``norm, pair, split, n, ours_mean, ours_sd, ours_mean_lo, ours_mean_hi, paper_mean,
        paper_sd, diff_mean, diff_sd, paper_outside`` (pixel units; means and sample sd over the
        ``n`` adversarially susceptible images, the 95% Student-t interval of our mean;
        ``paper_outside``: the paper's mean lies outside it).
    """
    sbs = _ours_vs_paper(summaries, dataset).set_index(["metric", "pair", "split"])
    rows = []
    for col, label in NORM_METRICS:
        for pair in _pairs(summaries, pairs):
            for split in SPLITS:
                r = sbs.loc[(col, pair, split)] if (col, pair, split) in sbs.index else None
                om, osd = (float(r["value"]), float(r["sd"])) if r is not None else (math.nan, math.nan)
                n, lo, hi = ((_num(r, c) for c in ("n", "lo", "hi")) if r is not None else (math.nan,) * 3)
                pm = _paper_value(r, dataset, col, pair, split)
                psd = _paper_value(r, dataset, col, pair, split, "sd")
                rows.append({"norm": label, "pair": pair, "split": split, "n": n, "ours_mean": om,
                             "ours_sd": osd, "ours_mean_lo": lo, "ours_mean_hi": hi, "paper_mean": pm,
                             "paper_sd": psd, "diff_mean": om - pm, "diff_sd": osd - psd,
                             "paper_outside": bool(paper_outside(pm, lo, hi))})
    return pd.DataFrame(rows, columns=["norm", "pair", "split", "n", "ours_mean", "ours_sd", "ours_mean_lo",
                                       "ours_mean_hi", "paper_mean", "paper_sd", "diff_mean", "diff_sd",
                                       "paper_outside"])


def _f(v: float, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _pair_label(pair: str) -> str:
    return pair.replace("-", " vs ")


def _grid(title: str, pairs: list[str], blocks: list[tuple[str, list[tuple[str, list[str]]]]]) -> str:
    """Rows: (block label, [(kind, cells per pair)]) -> aligned text."""
    kw = max([len(kind) for _, lines in blocks for kind, _ in lines] + [6])
    lw = max([len(b[0]) for b in blocks] + [6]) + kw + 2
    cw = max([len(c) for _, lines in blocks for _, cells in lines for c in cells] + [8]) + 2
    head = " " * lw + "".join(f"{_pair_label(p):>{cw}}" for p in pairs)
    out = [title, head, "-" * len(head)]
    for label, lines in blocks:
        for k, (kind, cells) in enumerate(lines):
            left = f"{label if k == 0 else '':<{lw - kw - 1}} {kind:<{kw}}"
            out.append(left + "".join(f"{c:>{cw}}" for c in cells))
    return "\n".join(out)


def _pct_interval(v: float, lo: float, hi: float) -> str:
    if not _finite(v):
        return "n/a"
    return f"{v:.1f} [{lo:.1f}, {hi:.1f}]" if _finite(lo) and _finite(hi) else f"{v:.2f}"


def _count(k: float, n: float) -> str:
    return f"{int(k)}/{int(n)}" if _finite(k) and _finite(n) else "n/a"


def format_table20(long: pd.DataFrame, *, title: str | None = None) -> str:
    """Text of Table 20 side by side (from :func:`table20_long`), one column per pair, in %.

    Each metric five lines: ``ours <split>`` (our percentage with its 95% Clopper-Pearson
    interval, ``"53.0 [48.1, 57.9]"``), ``k/n`` (the counts, cells ``"train, test"``), ``paper``
    and ``diff`` (cells ``"train, test"``; a difference is marked ``*`` where the paper's value
    lies outside our interval).
    """
    pairs = list(dict.fromkeys(long["pair"]))
    has_iv = {"lo", "hi"} <= set(long.columns) and bool(long["lo"].notna().any())
    blocks = []
    for metric in dict.fromkeys(long["metric"]):
        sub = long[long["metric"] == metric]
        label = sub["label"].iloc[0]
        by = {(r.pair, r.split): r for r in sub.itertuples()}
        lines = []
        for split in SPLITS:
            cells = []
            for p in pairs:
                r = by.get((p, split))
                cells.append("n/a" if r is None else _pct_interval(
                    r.ours, getattr(r, "lo", math.nan), getattr(r, "hi", math.nan)))
            lines.append((f"ours {split}", cells))
        if {"k", "n"} <= set(long.columns):
            lines.append(("k/n", [", ".join(_count(getattr(by.get((p, s)), "k", math.nan),
                                                   getattr(by.get((p, s)), "n", math.nan)) for s in SPLITS)
                                  for p in pairs]))
        lines.append(("paper", [", ".join(_f(getattr(by.get((p, s)), "paper", math.nan)) for s in SPLITS)
                                for p in pairs]))
        lines.append(("diff", [", ".join(format_diff(getattr(by.get((p, s)), "diff", math.nan),
                                                     bool(getattr(by.get((p, s)), "paper_outside", False)))
                                         for s in SPLITS) for p in pairs]))
        blocks.append((label, lines))
    legend = ("ours: % [95% Clopper-Pearson interval]; k/n, paper, diff: cells 'train, test'; "
              "diff = ours - paper, * where the paper's value lies outside our interval" if has_iv
              else "cells 'train, test'; diff = ours - paper")
    head = title or "Table 20 (Fashion-MNIST, class i vs i+1)"
    return _grid(head + ": accuracy and susceptibility in %; " + legend, pairs, blocks)


def format_table21(long: pd.DataFrame, *, title: str | None = None) -> str:
    """Text of Table 21 side by side (from :func:`table21_long`), pixel units.

    Per norm and split four lines: ``ours`` (``"mean (sd) [lo, hi]"``, the 95% interval of the
    mean), ``n`` (images), ``paper`` (``"mean (sd)"``) and ``diff`` (``*`` where the paper's mean
    lies outside our interval).
    """
    pairs = list(dict.fromkeys(long["pair"]))
    has_iv = {"ours_mean_lo", "ours_mean_hi"} <= set(long.columns) \
        and bool(long["ours_mean_lo"].notna().any())
    blocks = []
    for norm in dict.fromkeys(long["norm"]):
        for split in SPLITS:
            sub = long[(long["norm"] == norm) & (long["split"] == split)]
            by = {r.pair: r for r in sub.itertuples()}
            ours, count, paper, diff = [], [], [], []
            for p in pairs:
                r = by.get(p)

                def g(c: str, r: Any = r) -> Any:
                    return getattr(r, c, math.nan)
                cell = f"{_f(g('ours_mean'))} ({_f(g('ours_sd'))})"
                if _finite(g("ours_mean")) and _finite(g("ours_mean_lo")):
                    cell += f" [{g('ours_mean_lo'):.2f}, {g('ours_mean_hi'):.2f}]"
                ours.append(cell)
                count.append(str(int(g("n"))) if _finite(g("n")) else "n/a")
                paper.append(f"{_f(g('paper_mean'))} ({_f(g('paper_sd'))})")
                mark = "*" if r is not None and bool(getattr(r, "paper_outside", False)) else ""
                diff.append(f"{_f(g('diff_mean'), True)} ({_f(g('diff_sd'), True)}){mark}")
            lines = [("ours", ours)] + ([("n", count)] if "n" in long.columns else []) + \
                [("paper", paper), ("diff", diff)]
            blocks.append((f"{norm} {split}", lines))
    legend = ("ours: mean (sd) [95% interval of the mean] over the n susceptible images; diff = ours - "
              "paper, * where the paper's mean lies outside our interval" if has_iv
              else "mean (sd) over susceptible images; diff = ours - paper")
    head = title or "Table 21 (Fashion-MNIST, class i vs i+1)"
    return _grid(head + ": norms of the smallest adversarial attack, pixel units; " + legend, pairs, blocks)


#: the paper's names of the rate and norm tables of each data set (``paper_long`` keys)
TABLE_TITLES: dict[str, tuple[str, str]] = {
    "fashion-mnist": ("Table 20 (Fashion-MNIST, class i vs i+1)", "Table 21 (Fashion-MNIST, class i vs i+1)"),
    "cifar10": ("Tables 4, 5, 9-12 (CIFAR-10, class i vs j)", "Tables 6-8 (CIFAR-10, class i vs j)"),
    "gtsrb": ("Table 23 (GTSRB, the paper's classes i vs i+1)",
              "Table 24 (GTSRB, the paper's classes i vs i+1)"),
    "imagenet-resnet50": ("Table 25 (ImageNet, ResNet50, one vs all)", "ImageNet norms (not in the paper)"),
    "imagenet-vgg19": ("Table 25 (ImageNet, VGG19, one vs all)", "ImageNet norms (not in the paper)"),
}


def table_titles(dataset: str) -> tuple[str, str]:
    """``(rates title, norms title)`` of the paper's tables for ``dataset`` (a :func:`paper_long`
    key; ``fashion-mnist-subset`` is Fashion-MNIST), for ``format_table20(..., title=)`` and
    ``format_table21(..., title=)``; a data set the paper lacks gets plain titles."""
    key = "fashion-mnist" if str(dataset).startswith("fashion-mnist") else str(dataset)
    return TABLE_TITLES.get(key, (f"Rates ({dataset})",
                                  f"Norms of the smallest adversarial attack ({dataset})"))


def protocol_rows(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A run's settings beside the paper's: ``{"key", "setting", "ours", "paper", "same"}`` per setting.

    ``config`` is a ``ReproduceConfig.to_dict()`` or a noise-training / audit configuration
    (keys ``train``/``training``, ``audit``, ``model``, ``train_images``...). Image counts that
    are not given mean "all".
    """
    tr = config.get("train") or config.get("training") or {}
    au, model = config.get("audit") or {}, config.get("model") or {}
    ours = {"train_images": config.get("train_images", config.get("train_limit")) or "all",
            "audit_images": config.get("audit_images", config.get("audit_limit")) or "all",
            "width": model.get("width", config.get("width")), "epochs": tr.get("epochs"),
            "batch_size": tr.get("batch_size"), "lr": tr.get("lr"),
            "dropout": model.get("dropout", config.get("dropout")),
            "restarts": config.get("restarts", 0), "draws": au.get("draws"), "steps": au.get("steps"),
            "s_max": au.get("s_max"), "alphas": au.get("alphas"),
            "attack_box": box_mode(bool(au.get("clip_attack", False)), au.get("bounds", (0.0, 1.0))),
            "probe_box": box_mode(bool(au.get("clip_probe", False)), au.get("bounds", (0.0, 1.0)))}
    rows = []
    paper = {**PAPER_PROTOCOL, **(config.get("paper_protocol") or {})}  # a data set's own paper values
    for k, label in PROTOCOL_LABELS.items():
        v, p = ours[k], paper[k]
        same = v == p or (k.endswith("images") and v == "all") or p is None
        rows.append({"key": k, "setting": label, "ours": v, "paper": "not stated" if p is None else p,
                     "same": same})
    return rows


def protocol_note(config: dict[str, Any]) -> str:
    """Plain statement of a reproduction's settings (a ``ReproduceConfig.to_dict()``), each with
    the paper's value beside it where they differ."""
    rows = protocol_rows(config)
    parts = [f"{r['setting']} {r['ours']}" + ("" if r["same"] else f" (paper: {r['paper']})") for r in rows
             if r["key"] != "s_max"]
    scaled = not all(r["same"] for r in rows)
    head = ("SCALED-DOWN protocol, numbers are not the paper's setting: " if scaled
            else "Paper's full protocol: ")
    au = config.get("audit", {})
    return (head + "; ".join(parts) + f"; data {config.get('source')}, device {config.get('device')}, "
            f"s_max {au.get('s_max')} (the paper does not state its s_max).")
