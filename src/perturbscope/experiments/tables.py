"""Our numbers beside the paper's: Tables 20 and 21 (Fashion-MNIST, class i vs i+1).

The paper's values are data in the package (``perturbscope/reference/paper_tables.json``,
read by :func:`paper_tables`); ours come from :meth:`ResultsStore.summaries
<perturbscope.experiments.store.ResultsStore.summaries>` (one row per pair x split).

* :func:`table20_long` / :func:`table21_long`: long DataFrames, one row per metric x pair x
  split with ``ours``, ``paper`` and ``diff = ours - paper`` (NaN where either is missing).
* :func:`format_table20` / :func:`format_table21`: the paper's layout (pairs as columns, cells
  ``"train, test"``), three lines per metric: ours, paper, diff.
* :func:`protocol_note`: the settings of a run, with the paper's beside any that differ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import pandas as pd

from perturbscope.measure.metrics import alpha_key

__all__ = ["paper_tables", "table20_long", "table21_long", "format_table20", "format_table21",
           "protocol_note", "PAPER_PROTOCOL"]

SPLITS = ("train", "test")
NORMS = (("eps_l1", "L1"), ("eps_l2", "L2"), ("eps_linf", "Linf"))

#: The paper's Fashion-MNIST protocol, for :func:`protocol_note`.
PAPER_PROTOCOL: dict[str, Any] = {"train_images": "all (12000 per pair)", "audit_images": "all",
                                  "width": 1.0, "epochs": 100, "batch_size": 128, "lr": 0.1,
                                  "restarts": 0,
                                  "draws": 2000, "steps": 256, "alphas": [1.0, 2.0, 5.0, 10.0]}


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
    {pair: {split: {"mean", "sd"}}}}}``. Pairs are ``"i-j"``; percentages in %, norms in pixel
    units of [0, 1] images.
    """
    return json.loads(_load())


def _ours(summaries: pd.DataFrame, pair: str, split: str, col: str) -> float:
    if col not in summaries.columns:
        return math.nan
    hit = summaries[(summaries["pair"] == pair) & (summaries["split"] == split)]
    return float(hit[col].iloc[0]) if len(hit) else math.nan


def _paper(ref: dict, pair: str, split: str, *path: str) -> float:
    node: Any = ref
    for p in (*path, pair, split):
        if not isinstance(node, dict) or p not in node:
            return math.nan
        node = node[p]
    return float(node)


def _check_summaries(summaries: pd.DataFrame) -> None:
    if not isinstance(summaries, pd.DataFrame):
        raise TypeError(f"summaries must be a pandas DataFrame, got {type(summaries).__name__}")
    missing = [c for c in ("pair", "split") if c not in summaries.columns]
    if missing:
        raise ValueError(f"summaries lack columns {missing} (use ResultsStore.summaries)")


def _pairs(summaries: pd.DataFrame, pairs: Sequence[str] | None) -> list[str]:
    return list(pairs) if pairs is not None else list(dict.fromkeys(summaries["pair"]))


def table20_long(summaries: pd.DataFrame, alphas: Sequence[float] = (1.0, 2.0, 5.0, 10.0),
                 pairs: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 20 side by side, long form.

    Args:
        summaries: :meth:`ResultsStore.summaries` rows (``pair``, ``split``, ``accuracy``,
            ``adversarial_susceptibility``, ``random_susceptibility_a{alpha}``).
        alphas: random-perturbation levels (paper: 1, 2, 5, 10).
        pairs: column order (default: the pairs of ``summaries`` in order).

    Returns:
        Columns ``metric, label, pair, split, ours, paper, diff`` (percent; diff = ours - paper).
    """
    _check_summaries(summaries)
    ref = paper_tables()["fashion-mnist"]["table20"]
    metrics: list[tuple[str, str, tuple[str, ...]]] = [
        ("accuracy", "Accuracy", ("accuracy",)),
        ("adversarial_susceptibility", "Adversarial susceptibility", ("adversarial_susceptibility",))]
    for a in alphas:
        key = alpha_key(a)
        ref_key = f"{float(a):g}"
        metrics.append((f"random_susceptibility_{key}", f"Random susceptibility (alpha={float(a):g})",
                        ("random_susceptibility", ref_key)))
    rows = []
    for metric, label, path in metrics:
        for pair in _pairs(summaries, pairs):
            for split in SPLITS:
                ours = _ours(summaries, pair, split, metric)
                paper = _paper(ref, pair, split, *path)
                rows.append({"metric": metric, "label": label, "pair": pair, "split": split, "ours": ours,
                             "paper": paper, "diff": ours - paper})
    return pd.DataFrame(rows, columns=["metric", "label", "pair", "split", "ours", "paper", "diff"])


def table21_long(summaries: pd.DataFrame, pairs: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 21 side by side, long form: norms of the smallest adversarial attack per image.

    Returns:
        Columns ``norm, pair, split, ours_mean, ours_sd, paper_mean, paper_sd, diff_mean, diff_sd``
        (pixel units; means and sample sd over the adversarially susceptible images).
    """
    _check_summaries(summaries)
    ref = paper_tables()["fashion-mnist"]["table21"]
    rows = []
    for col, label in NORMS:
        for pair in _pairs(summaries, pairs):
            for split in SPLITS:
                om = _ours(summaries, pair, split, f"{col}_mean")
                osd = _ours(summaries, pair, split, f"{col}_sd")
                pm = _paper_ms(ref, col, pair, split, "mean")
                psd = _paper_ms(ref, col, pair, split, "sd")
                rows.append({"norm": label, "pair": pair, "split": split, "ours_mean": om, "ours_sd": osd,
                             "paper_mean": pm, "paper_sd": psd, "diff_mean": om - pm, "diff_sd": osd - psd})
    return pd.DataFrame(rows, columns=["norm", "pair", "split", "ours_mean", "ours_sd", "paper_mean",
                                       "paper_sd", "diff_mean", "diff_sd"])


def _paper_ms(ref: dict, col: str, pair: str, split: str, stat: str) -> float:
    try:
        return float(ref[col][pair][split][stat])
    except KeyError:
        return math.nan


def _f(v: float, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _pair_label(pair: str) -> str:
    return pair.replace("-", " vs ")


def _grid(title: str, pairs: list[str], blocks: list[tuple[str, list[tuple[str, list[str]]]]]) -> str:
    """Rows: (block label, [(kind, cells per pair)]) -> aligned text."""
    lw = max([len(b[0]) for b in blocks] + [6]) + 8
    cw = max([len(c) for _, lines in blocks for _, cells in lines for c in cells] + [8]) + 2
    head = " " * lw + "".join(f"{_pair_label(p):>{cw}}" for p in pairs)
    out = [title, head, "-" * len(head)]
    for label, lines in blocks:
        for k, (kind, cells) in enumerate(lines):
            left = f"{label if k == 0 else '':<{lw - 7}} {kind:<6}"
            out.append(left + "".join(f"{c:>{cw}}" for c in cells))
    return "\n".join(out)


def format_table20(long: pd.DataFrame) -> str:
    """Text of Table 20 side by side (from :func:`table20_long`): each metric three lines
    (ours, paper, diff), one column per pair, cells ``"train, test"`` in %."""
    pairs = list(dict.fromkeys(long["pair"]))
    blocks = []
    for metric in dict.fromkeys(long["metric"]):
        sub = long[long["metric"] == metric]
        label = sub["label"].iloc[0]
        lines = []
        for kind, col in (("ours", "ours"), ("paper", "paper"), ("diff", "diff")):
            cells = []
            for p in pairs:
                v = {r.split: getattr(r, col) for r in sub[sub["pair"] == p].itertuples()}
                cells.append(", ".join(_f(v.get(s, math.nan), signed=(kind == "diff")) for s in SPLITS))
            lines.append((kind, cells))
        blocks.append((label, lines))
    return _grid("Table 20 (Fashion-MNIST, class i vs i+1): accuracy and susceptibility in %, "
                 "cells 'train, test'; diff = ours - paper", pairs, blocks)


def format_table21(long: pd.DataFrame) -> str:
    """Text of Table 21 side by side (from :func:`table21_long`): per norm and split three lines
    (ours, paper, diff), cells ``"mean (sd)"`` in pixel units."""
    pairs = list(dict.fromkeys(long["pair"]))
    blocks = []
    for norm in dict.fromkeys(long["norm"]):
        for split in SPLITS:
            sub = long[(long["norm"] == norm) & (long["split"] == split)]
            lines = []
            for kind, m, s in (("ours", "ours_mean", "ours_sd"), ("paper", "paper_mean", "paper_sd"),
                               ("diff", "diff_mean", "diff_sd")):
                cells = []
                for p in pairs:
                    r = sub[sub["pair"] == p]
                    mv, sv = (float(r[m].iloc[0]), float(r[s].iloc[0])) if len(r) else (math.nan, math.nan)
                    signed = kind == "diff"
                    cells.append(f"{_f(mv, signed)} ({_f(sv, signed)})")
                lines.append((kind, cells))
            blocks.append((f"{norm} {split}", lines))
    return _grid("Table 21 (Fashion-MNIST, class i vs i+1): norms of the smallest adversarial attack, "
                 "mean (sd) over susceptible images, pixel units; diff = ours - paper", pairs, blocks)


def protocol_note(config: dict[str, Any]) -> str:
    """Plain statement of a reproduction's settings (a ``ReproduceConfig.to_dict()``), each with
    the paper's value beside it where they differ."""
    tr, au, model = config.get("train", {}), config.get("audit", {}), config.get("model", {})
    ours = {"train_images": config.get("train_images") or "all", "audit_images": config.get("audit_images")
            or "all", "width": model.get("width"), "epochs": tr.get("epochs"),
            "batch_size": tr.get("batch_size"), "lr": tr.get("lr"), "restarts": config.get("restarts", 0),
            "draws": au.get("draws"),
            "steps": au.get("steps"), "alphas": au.get("alphas")}
    names = {"train_images": "training images per pair", "audit_images": "images audited per split",
             "width": "network width", "epochs": "epochs", "batch_size": "batch size", "lr": "learning rate",
             "restarts": "restarts of a collapsed training",
             "draws": "random draws per image and alpha", "steps": "line-search steps", "alphas": "alphas"}
    parts, scaled = [], False
    for k, label in names.items():
        v, p = ours[k], PAPER_PROTOCOL[k]
        same = (v == p) or (k == "audit_images" and v == "all") or (
            k == "train_images" and v == "all")
        parts.append(f"{label} {v}" + ("" if same else f" (paper: {p})"))
        scaled |= not same
    head = ("SCALED-DOWN protocol, numbers are not the paper's setting: " if scaled
            else "Paper's full protocol: ")
    return (head + "; ".join(parts) + f"; data {config.get('source')}, device {config.get('device')}, "
            f"s_max {au.get('s_max')}.")
