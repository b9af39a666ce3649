"""Warnings printed beside the audit's numbers: when they are not comparable with the paper's.

:func:`quality_warnings` reads per-image records (:mod:`perturbscope.audit.schema`) and, where
given, the paper's values, the training histories and the audit settings, and returns one plain
sentence per problem found (each listing the groups it concerns):

* **weak model**: accuracy far below the paper's (our 95% interval ends more than
  :data:`WEAK_MARGIN` points below its value) or near chance (at most :data:`CHANCE` %), or a
  training that collapsed to one class and was retried (``attempts > 1`` in its history);
* **attack failures**: the attack flipped at most ``1 - UNFLIPPED`` of the correctly classified
  images (those it misses are left out of random susceptibility, whose denominator is ``|A|``);
* **zero gradients**: the paper's MSE gradient was exactly zero (a saturated sigmoid) for some
  correctly classified images: their direction came from the logit margin (columns
  ``gradient_fallback``; ``saturated="logit"``) or they had none and count as not susceptible
  (``zero_gradient``; always so with the paper's literal ``saturated="fail"``);
* **probe outside the box**: a median share above :data:`OUTSIDE` of the random perturbations'
  L2 norm lies outside the bounds (column ``probe_outside_a*``): the paper's probe is unclipped,
  so its inputs are not images any more; with ``clip_probe`` the clipped probe is that much
  shorter.

:func:`outside_summary` is the table behind the last one (per group and alpha).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from perturbscope.audit.schema import alpha_key, alphas_of
from perturbscope.audit.summary import proportion

__all__ = ["quality_warnings", "outside_summary", "WEAK_MARGIN", "CHANCE", "UNFLIPPED", "OUTSIDE"]

#: accuracy points between the paper's value and the top of our interval that make a model "weak"
WEAK_MARGIN = 5.0
#: accuracy (%) at or below which a model is near chance (two classes)
CHANCE = 60.0
#: share of correctly classified images left unflipped by the attack that is flagged
UNFLIPPED = 0.5
#: median share of the probe's L2 norm outside the bounds that is flagged
OUTSIDE = 0.05


def _groups(records: pd.DataFrame, by: Sequence[str]) -> list[tuple[str, pd.DataFrame, dict[str, Any]]]:
    keys = [c for c in by if c in records.columns]
    if not keys:
        return [("all images", records, {})]
    out = []
    for k, g in records.groupby(keys, sort=False):
        k = k if isinstance(k, tuple) else (k,)
        d = dict(zip(keys, k, strict=True))
        name = " ".join((f"pair {v}" if c == "pair" else str(v)) for c, v in d.items())
        out.append((name, g, d))
    return out


def _paper_value(paper: pd.DataFrame | None, metric: str, key: Mapping[str, Any]) -> float:
    if paper is None or len(paper) == 0 or "pair" not in key or "split" not in key:
        return math.nan
    hit = paper[(paper["metric"] == metric) & (paper["pair"].astype(str) == str(key["pair"]))
                & (paper["split"] == key["split"])]
    return float(hit["value"].iloc[0]) if len(hit) else math.nan


def _pct(p: Mapping[str, Any]) -> str:
    return f"{p['pct']:.1f}% [{p['lo']:.1f}, {p['hi']:.1f}] ({p['k']}/{p['n']})"


def outside_summary(records: pd.DataFrame, by: Sequence[str] = ("pair", "split")) -> pd.DataFrame:
    """Per group and alpha: how far the random probe leaves the bounds.

    Columns: the ``by`` keys present, ``alpha``, ``images`` (with eps_adv), ``radius_median``
    (median ``alpha * eps_adv``, pixel L2), ``outside_median`` and ``outside_p90`` (median and
    90th percentile over the images of ``probe_outside_a{alpha}``, the share of a draw's L2 norm
    outside the bounds). Empty when the records have no ``probe_outside_a*`` column.
    """
    alphas = [a for a in alphas_of(records.columns) if f"probe_outside_{alpha_key(a)}" in records.columns]
    rows = []
    for _, g, key in _groups(records, by):
        att = g[g["adv_success"].astype(bool) & g["correct"].astype(bool)] if "correct" in g.columns \
            else g[g["adv_success"].astype(bool)]
        for a in alphas:
            v = att[f"probe_outside_{alpha_key(a)}"].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            eps = att["eps_l2"].to_numpy(dtype=float)
            eps = eps[np.isfinite(eps)]
            rows.append({**key, "alpha": a, "images": int(v.size),
                         "radius_median": float(a * np.median(eps)) if eps.size else math.nan,
                         "outside_median": float(np.median(v)) if v.size else math.nan,
                         "outside_p90": float(np.quantile(v, 0.9)) if v.size else math.nan})
    return pd.DataFrame(rows)


def quality_warnings(records: pd.DataFrame, *, by: Sequence[str] = ("pair", "split"),
                     paper: pd.DataFrame | None = None,
                     histories: Mapping[str, Mapping[str, Any]] | None = None,
                     config: Mapping[str, Any] | None = None) -> list[str]:
    """Sentences warning where the numbers are not comparable with the paper's (module docstring).

    Args:
        records: per-image audit records (``correct``, ``adv_success``, ``eps_l2``, optional
            ``probe_outside_a*``), grouped by the ``by`` columns they have.
        paper: the paper's values in long form (``metric, split, pair, value``), e.g.
            :func:`perturbscope.experiments.tables.paper_long`; ``None``: no comparison.
        histories: per pair (``"7-8"``) its training history (``attempts``, ``seed``), e.g. the
            store's ``model/pair=...`` artifact meta.
        config: the audit settings (an ``AuditConfig.to_dict()``: ``s_max``, ``clip_probe``,
            ``bounds``), or a run configuration with an ``audit`` entry.
    """
    cfg = dict(config or {})
    cfg = dict(cfg.get("audit") or cfg)
    weak, retried, unflipped, out = [], [], [], []
    fallback: list[str] = []
    no_gradient: list[str] = []
    for name, g, key in _groups(records, by):
        correct = g["correct"].astype(bool).to_numpy()
        adv = g["adv_success"].astype(bool).to_numpy() & correct
        acc, sus = proportion(int(correct.sum()), len(g)), proportion(int(adv.sum()), int(correct.sum()))
        ref = _paper_value(paper, "accuracy", key)
        if acc["n"] and (acc["pct"] <= CHANCE or (math.isfinite(ref) and acc["hi"] < ref - WEAK_MARGIN)):
            weak.append(f"{name} {_pct(acc)}" + (f" vs the paper's {ref:.2f}%" if math.isfinite(ref) else ""))
        if sus["n"] and 1.0 - sus["pct"] / 100.0 > UNFLIPPED:
            ref = _paper_value(paper, "adversarial_susceptibility", key)
            unflipped.append(f"{name} {_pct(sus)}" + (f" (paper {ref:.2f}%)" if math.isfinite(ref) else ""))
        for col, found in (("gradient_fallback", fallback), ("zero_gradient", no_gradient)):
            if col in g.columns:
                k = int((g[col].fillna(False).astype(bool).to_numpy() & correct).sum())
                if k:
                    found.append(f"{name} {k} of {int(correct.sum())}")
    for pair, hist in (histories or {}).items():
        attempts = int((hist or {}).get("attempts", 1) or 1)
        if attempts > 1:
            retried.append(f"pair {pair} (trained {attempts} times, kept seed {hist.get('seed')})")
    box = outside_summary(records, by)
    if len(box):
        top = box[box["alpha"] == box["alpha"].max()]
        for r in top.itertuples(index=False):
            if math.isfinite(r.outside_median) and r.outside_median > OUTSIDE:
                key = " ".join(f"pair {r.pair}" if c == "pair" else str(getattr(r, c))
                               for c in by if c in box.columns) or "all images"
                out.append(f"{key} {100 * r.outside_median:.0f}% (90th percentile "
                           f"{100 * r.outside_p90:.0f}%)")
    msgs = []
    if weak:
        msgs.append("Weak model: accuracy far below the paper's or near chance in " + "; ".join(weak)
                    + ". Its susceptibilities are not comparable with the paper's.")
    if retried:
        msgs.append("Training collapsed to one class and was retried for " + "; ".join(retried)
                    + " (the paper retrains nothing; its protocol has no restarts).")
    if unflipped:
        msgs.append("The attack flipped at most half of the correctly classified images in "
                    + "; ".join(unflipped)
                    + f" (adversarial susceptibility, up to s_max = {cfg.get('s_max')}). "
                    "The images it misses are left out of random susceptibility (its denominator is the "
                    "flipped images); raise s_max if that is not expected.")
    if fallback:
        msgs.append("The paper's MSE gradient underflowed to zero (a saturated output) for correctly "
                    "classified images in " + "; ".join(fallback) + " (column gradient_fallback): their "
                    "line-search direction came from the logit margin (saturated='logit'); the paper's "
                    "literal rule (--saturated fail) would count them as not susceptible.")
    if no_gradient:
        why = ("the MSE gradient was exactly zero (a saturated output) and the paper's literal rule "
               "(saturated='fail') counts them as not susceptible; --saturated logit takes their direction "
               "from the logit margin" if cfg.get("saturated") == "fail" else
               "neither the MSE loss nor the logit margin has a nonzero gradient there")
        msgs.append("No usable gradient for correctly classified images in " + "; ".join(no_gradient)
                    + f" (column zero_gradient): {why}. They count as not susceptible, so adversarial "
                    "susceptibility is a lower bound.")
    if out:
        alpha = box["alpha"].max()
        lo, hi = (float(b) for b in cfg.get("bounds", (0.0, 1.0)))
        what = (f"the probe clipped them to [{lo:g}, {hi:g}] (clip_probe, not the paper's protocol): its "
                "perturbations are that much shorter than alpha * eps_adv" if cfg.get("clip_probe") else
                "the paper's probe is unclipped and so is this one: its perturbed inputs are not images")
        msgs.append(f"Random perturbations leave [{lo:g}, {hi:g}] by a large margin: at alpha = {alpha:g} "
                    "a median share of each draw's L2 norm lies outside the box in " + "; ".join(out)
                    + f"; {what}.")
    return msgs
