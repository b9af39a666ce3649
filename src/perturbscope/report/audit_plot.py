"""The audit's figure (``eps_vs_flip_rate.png``): the paradox in numbers, and each image's eps_adv
against its random-flip rate."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from perturbscope.audit.schema import alpha_key
from perturbscope.audit.summary import proportion
from perturbscope.figures import new_figure, save_figure

__all__ = ["plot_eps_vs_flip_rate", "infer_draws"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_SPLIT_COLORS = {"train": "#1f77b4", "test": "#ff7f0e"}


def infer_draws(records: pd.DataFrame, alphas: Sequence[float]) -> int | None:
    """The probe's draws per image and alpha, ``flips / rand_frac`` of any record with a flip
    (``None`` when no draw flipped anything)."""
    for a in alphas:
        k = alpha_key(a)
        if f"flips_{k}" not in records.columns or f"rand_frac_{k}" not in records.columns:
            continue
        f, r = records[f"flips_{k}"].to_numpy(dtype=float), records[f"rand_frac_{k}"].to_numpy(dtype=float)
        ok = (f > 0) & np.isfinite(r) & (r > 0)
        if ok.any():
            return int(round(float(np.median(f[ok] / r[ok]))))
    return None


def _splits(records: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(records["split"])) if "split" in records.columns else ["all"]
    return [s for s in ("train", "test") if s in present] + [s for s in present if s not in ("train", "test")]


def _contrast(ax, records: pd.DataFrame, alphas: Sequence[float], splits: list[str],
              draws: int | None) -> None:
    """Bars: adversarial share of the correct images, random share of the attacked ones per alpha,
    with 95% Clopper-Pearson intervals and k/n."""
    labels = ["adversarial\n(of correct)"] + [f"random\nalpha={a:g}\n(of attacked)" for a in alphas]
    width = 0.8 / max(len(splits), 1)
    for si, split in enumerate(splits):
        g = records[records["split"] == split] if "split" in records.columns else records
        correct = g["correct"].astype(bool).to_numpy()
        adv = g["adv_success"].astype(bool).to_numpy() & correct
        props = [proportion(int(adv.sum()), int(correct.sum()))]
        for a in alphas:
            fl = g[f"flips_{alpha_key(a)}"].fillna(0).to_numpy() > 0
            props.append(proportion(int((fl & adv).sum()), int(adv.sum())))
        x = np.arange(len(props)) + (si - (len(splits) - 1) / 2) * width
        pct = np.array([p["pct"] if p["n"] else 0.0 for p in props])
        err = np.array([[p["pct"] - p["lo"], p["hi"] - p["pct"]] if p["n"] else [0.0, 0.0] for p in props]).T
        color = _SPLIT_COLORS.get(split, f"C{si + 2}")
        ax.bar(x, pct, width * 0.92, color=color, alpha=0.75, label=f"{split}")
        ax.errorbar(x, pct, yerr=err, fmt="none", ecolor="black", elinewidth=1, capsize=3)
        for xi, p in zip(x, props, strict=True):
            text = f"{p['k']}/{p['n']}" if p["n"] else "n/a"
            top = p["hi"] if p["n"] else 0.0
            ax.text(xi, min(top + 2.0, 103.0), text, ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=8)
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("% of images (95% Clopper-Pearson interval)")
    ax.set_title("the paradox: flipped by the attack vs by random noise of size alpha * eps_adv"
                 + (f"\n(random: at least one flip in {draws} draws)" if draws else ""), fontsize=9)
    ax.axhline(100, color="grey", lw=0.5)
    ax.legend(fontsize=8, loc="upper right", ncol=len(splits))
    ax.grid(axis="y", alpha=0.3)


def _histogram(ax, records: pd.DataFrame, splits: list[str], s_max: float | None) -> None:
    ok = records["adv_success"].astype(bool) & records["correct"].astype(bool)
    flipped = records.loc[ok, "eps_l2"].dropna()
    bins = np.histogram_bin_edges(flipped, bins=30) if len(flipped) else 30
    for si, split in enumerate(splits):
        g = records[records["split"] == split] if "split" in records.columns else records
        correct = g["correct"].astype(bool)
        att = g[g["adv_success"].astype(bool) & correct]
        missed = int(correct.sum()) - len(att)
        label = f"{split}: {len(att)} flipped" + (f", {missed} correct but not flipped (not shown)" if missed
                                                  else "")
        color = _SPLIT_COLORS.get(split, f"C{si + 2}")
        ax.hist(att["eps_l2"].dropna(), bins=bins, alpha=0.3, color=color)
        ax.hist(att["eps_l2"].dropna(), bins=bins, histtype="step", lw=1.5, color=color, label=label)
    ax.set_xlabel(r"$\varepsilon_{adv}$: L2 norm of the smallest adversarial perturbation (pixels in [0, 1])")
    ax.set_ylabel("images")
    ax.set_title("adversarial distance of the flipped images"
                 + (f" (attack searched up to {s_max:g})" if s_max else ""), fontsize=9)
    if len(records[records["adv_success"].astype(bool)]):
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no image was flipped by the attack", ha="center", transform=ax.transAxes)


def _scatter(ax, g: pd.DataFrame, alphas: Sequence[float], split: str, draws: int | None) -> None:
    """Fraction of flipping draws against eps_adv; images with no flip sit in one row per alpha
    below the 1/draws line, so no alpha hides another."""
    att = g[g["adv_success"].astype(bool) & g["correct"].astype(bool)]
    res = 1.0 / draws if draws else None
    fracs = {a: att[f"rand_frac_{alpha_key(a)}"].to_numpy(dtype=float) for a in alphas}
    positive = np.concatenate([f[f > 0] for f in fracs.values()]) if len(att) else np.array([])
    line = res if res is not None else (positive.min() if positive.size else 1e-3)
    step = 2.2  # rows of the no-flip strip, a factor apart on the log axis
    eps = att["eps_l2"].to_numpy(dtype=float)
    for j, a in reversed(list(enumerate(alphas))):  # small alphas drawn last, on top
        f = fracs[a]
        hit = f > 0
        color, marker = f"C{j}", _MARKERS[j % len(_MARKERS)]
        n_hit = int(hit.sum())
        ax.scatter(eps[hit], f[hit], s=18, marker=marker, facecolors="none", edgecolors=color, linewidths=0.9,
                   alpha=0.8, label=rf"$\alpha$={a:g}: {n_hit} of {len(f)} images flipped"
                   + (f" ({100 * n_hit / len(f):.0f}%)" if len(f) else ""))
        row = line / step ** (len(alphas) - j)
        miss = int((~hit).sum())
        if miss:
            ax.scatter(eps[~hit], np.full(miss, row), s=14, marker=marker, color=color, alpha=0.5)
        ax.text(1.01, row, rf"$\alpha$={a:g}: {miss}", transform=ax.get_yaxis_transform(),
                va="center", fontsize=7, color=color)
    floor_text = (f"1 flip in {draws} draws; below: no flip in {draws}\n(one row per alpha, counts at right)"
                  if draws else "below: no flip in any draw\n(one row per alpha, counts at right)")
    ax.axhline(line, color="grey", lw=0.8, ls="--", label=floor_text)
    ax.axhline(1.0, color="grey", lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_ylim(line / step ** (len(alphas) + 1), 12.0)
    decades = [10.0 ** k for k in range(int(math.ceil(math.log10(line))), 1)]
    strip = line / step ** ((len(alphas) + 1) / 2)
    ax.set_yticks([strip, *decades], ["no flip", *(f"{d:g}" for d in decades)])
    ax.minorticks_off()
    ax.set_xlabel(r"$\varepsilon_{adv}$ (L2, pixels)")
    ax.set_ylabel("fraction of random draws that flip")
    pooled = ""
    if "pair" in g.columns and g["pair"].nunique() > 1:
        pooled = f", {g['pair'].nunique()} pairs pooled"
    ax.set_title(rf"{split}: random perturbations of size $\alpha\,\varepsilon_{{adv}}$ ({len(att)} attacked "
                 f"images{pooled})", fontsize=9)
    if len(att):
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    else:
        ax.text(0.5, 0.5, "no image was flipped by the attack", ha="center", transform=ax.transAxes)


def plot_eps_vs_flip_rate(records: pd.DataFrame, alphas: Sequence[float], path: str | os.PathLike,
                          title: str = "", draws: int | None = None, s_max: float | None = None) -> Path:
    """The audit's figure, written to ``path`` (PNG).

    Top left, the headline contrast per split: the share of correctly classified images the
    attack flips (adversarial susceptibility) beside the share of those that at least one random
    draw of size ``alpha * eps_adv`` flips (random susceptibility), with 95% Clopper-Pearson
    intervals and counts ``k/n``. Top right, the distribution of ``eps_adv`` per split, with the
    number of correctly classified images the attack did not flip. Below, one panel per split
    (train and test are never pooled; pairs are, and the title says so): each attacked image's
    fraction of flipping draws against its ``eps_adv``, one marker per alpha; images with no flip
    sit in one row per alpha below the ``1 / draws`` line, so no alpha hides another.

    ``draws``: the probe's draws per image and alpha (default: inferred from the records);
    ``s_max``: the attack's largest scale, for the caption.
    """
    alphas = [float(a) for a in alphas]
    if draws is None:
        draws = infer_draws(records, alphas)
    splits = _splits(records)
    n = len(splits)
    fig, axes = new_figure(2, max(2, n), figsize=(6.5 * max(2, n), 10.0), squeeze=False,
                           gridspec_kw={"height_ratios": [1.0, 1.15]})
    _contrast(axes[0, 0], records, alphas, splits, draws)
    _histogram(axes[0, 1], records, splits, s_max)
    for extra in axes[0, 2:]:
        extra.remove()
    bottom = list(axes[1])
    if n == 1:
        gs = bottom[0].get_gridspec()
        for ax in bottom:
            ax.remove()
        bottom = [fig.add_subplot(gs[1, :])]
    for ax, split in zip(bottom, splits, strict=False):
        g = records[records["split"] == split] if "split" in records.columns else records
        _scatter(ax, g, alphas, split, draws)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
