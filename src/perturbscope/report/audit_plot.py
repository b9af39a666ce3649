"""The audit's figure: the adversarial distance against the random-flip rate (``eps_vs_flip_rate.png``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from perturbscope.audit.schema import alpha_key
from perturbscope.figures import new_figure, save_figure

__all__ = ["plot_eps_vs_flip_rate"]


def plot_eps_vs_flip_rate(records: pd.DataFrame, alphas: Sequence[float], path: str | os.PathLike,
                          title: str = "") -> Path:
    """Two panels, written to ``path`` (PNG): the distribution of ``eps_adv`` (L2, pixel units) per
    split, and each attacked image's fraction of flipping random draws against its ``eps_adv``, one
    colour per alpha (log scale; images with no flip are drawn on the floor line at 1/(2 draws)).
    """
    att = records[records["adv_success"].astype(bool)]
    fig, (ax0, ax1) = new_figure(1, 2, figsize=(12, 4.6))
    for split, grp in att.groupby("split"):
        ax0.hist(grp["eps_l2"], bins=30, alpha=0.6, label=f"{split} (n={len(grp)})")
    ax0.set_xlabel(r"$\varepsilon_{adv}$: L2 norm of the smallest adversarial perturbation (pixels in [0,1])")
    ax0.set_ylabel("images")
    ax0.set_title("adversarial distance")
    if len(att):
        ax0.legend()
    else:
        ax0.text(0.5, 0.5, "no image was flipped by the attack", ha="center", transform=ax0.transAxes)
    fracs = [att[f"rand_frac_{alpha_key(a)}"].to_numpy() for a in alphas]
    positive = np.concatenate([f[f > 0] for f in fracs]) if len(att) else np.array([])
    floor = (positive.min() / 2) if positive.size else 1e-4
    for a, f in zip(alphas, fracs, strict=True):
        ax1.scatter(att["eps_l2"], np.where(f > 0, f, floor), s=10, alpha=0.6,
                    label=rf"$\alpha$={a:g} ({100 * np.mean(f > 0):.1f}% of images flipped)" if len(f)
                    else rf"$\alpha$={a:g}")
    ax1.axhline(floor, color="grey", lw=0.8, ls=":")
    ax1.text(ax1.get_xlim()[0] if len(att) else 0, floor, " no flip in any draw", va="bottom",
             fontsize=8, color="grey")
    ax1.set_yscale("log")
    ax1.set_xlabel(r"$\varepsilon_{adv}$ (L2, pixels)")
    ax1.set_ylabel("fraction of random draws that flip")
    ax1.set_title(r"random perturbations of size $\alpha\,\varepsilon_{adv}$")
    ax1.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
