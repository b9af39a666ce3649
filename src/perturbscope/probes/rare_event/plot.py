"""Plot of the estimated flip probability against alpha (log scale)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from perturbscope.figures import new_figure, save_figure

__all__ = ["plot_flip_probability"]


def plot_flip_probability(table: pd.DataFrame, path: str | os.PathLike, title: str = "",
                          probe_draws: int | None = 2000, max_images: int = 30) -> Path:
    """Write a PNG of ``log10 p`` against ``alpha`` (atomically) and return its path.

    ``table`` is :func:`flip_probability_table`'s output or :func:`records_to_table` of audit
    records (columns ``image, alpha, log10_p_hat, log10_ci_low, log10_ci_high,
    log10_first_order_p``).

    Each image (up to ``max_images``) is a thin line with its confidence band; the median over
    images is thick; the first-order (plane) estimate is dashed. A horizontal line marks
    ``1 / probe_draws``, the smallest probability the paper's random probe can see.
    """
    need = {"image", "alpha", "log10_p_hat", "log10_ci_low", "log10_ci_high",
            "log10_first_order_p"}
    missing = need - set(table.columns)
    if missing:
        raise ValueError(f"table lacks columns {sorted(missing)}; pass flip_probability_table()")
    tab = table[np.isfinite(table["alpha"])]
    fig, ax = new_figure(figsize=(7, 4.8))
    floor = None
    finite = tab["log10_p_hat"].to_numpy()
    finite = finite[np.isfinite(finite)]
    if finite.size:
        floor = float(np.floor(finite.min())) - 1
    for k, (_, g) in enumerate(tab.groupby("image")):
        if k >= max_images:
            break
        g = g.sort_values("alpha")
        y = g["log10_p_hat"].to_numpy(dtype=float)
        if floor is not None:
            y = np.where(np.isneginf(y), floor, y)
        ax.plot(g["alpha"], y, color="tab:blue", alpha=0.35, lw=0.8)
        lo = g["log10_ci_low"].to_numpy(dtype=float)
        hi = g["log10_ci_high"].to_numpy(dtype=float)
        if floor is not None:
            lo = np.where(np.isneginf(lo), floor, lo)
        ax.fill_between(g["alpha"], lo, hi, color="tab:blue", alpha=0.06, lw=0)
    med = tab.groupby("alpha")[["log10_p_hat", "log10_first_order_p"]].median()
    ax.plot(med.index, med["log10_p_hat"], color="tab:blue", lw=2.5, marker="o",
            label="rare-event estimate (median over images)")
    ax.plot(med.index, med["log10_first_order_p"], color="tab:orange", lw=2, ls="--",
            marker="s", label="first-order (plane) estimate, median")
    if probe_draws:
        ax.axhline(-np.log10(probe_draws), color="grey", ls=":", lw=1)
        ax.text(med.index.min() if len(med) else 1, -np.log10(probe_draws),
                f" 1/{probe_draws}: smallest p a {probe_draws}-draw probe sees", va="bottom",
                fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel(r"$\alpha$ (ball radius / $\varepsilon_{adv}$)")
    ax.set_ylabel(r"$\log_{10}$ P(uniform noise in the ball flips the prediction)")
    ax.set_title(title or "flip probability of random noise against its size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
