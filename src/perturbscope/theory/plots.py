"""Figures 4(a), 4(b) and 6 of the paper (and Theorem 1), from sweep tables.

Each function takes two tables from :mod:`perturbscope.theory.sweeps`: ``curves`` (exact and
bound on a dense grid of dimensions, ``samples = 0``) and ``points`` (Monte Carlo rows with
confidence intervals, any grid), and writes one PNG atomically. Probabilities that vanish
are drawn as ``log10 P`` on a linear axis, so values far below 1e-308 still show; such axes
stop at ``floor`` (default ``10^-40``) so that the Monte Carlo range stays readable.
Exact values are solid lines, bounds dashed lines of the same colour, Monte Carlo estimates
dots with CI error bars; an estimate with no event is drawn as a down-pointing triangle at
the upper end of its CI.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import pandas as pd

from perturbscope.figures import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_point", "plot_two_balls", "plot_half_balls"]

_COLORS = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def _log10_or_nan(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


def _mc_points(ax: Axes, pts: pd.DataFrame, color: str, *, tail: bool, log: bool,
               label: str | None) -> None:
    """MC estimates with CI bars; ``tail``: plot ``1 - P``; ``log``: plot ``log10``."""
    if pts.empty or pts["trials"].max() <= 0:
        return
    pts = pts[pts["trials"] > 0]
    est, lo, hi = pts["mc"].to_numpy(), pts["ci_low"].to_numpy(), pts["ci_high"].to_numpy()
    if tail:
        est, lo, hi = 1.0 - est, 1.0 - hi, 1.0 - lo
    n = pts["n"].to_numpy()
    if log:
        zero = est <= 0
        y, ylo, yhi = _log10_or_nan(est), _log10_or_nan(lo), _log10_or_nan(hi)
        ylo = np.where(np.isnan(ylo), y - 1.0, ylo)  # CI reaching 0: bar goes one decade down
        ok = ~zero
        if ok.any():
            ax.errorbar(n[ok], y[ok], yerr=[y[ok] - ylo[ok], yhi[ok] - y[ok]], fmt="o", ms=4, color=color,
                        capsize=2, label=label)
        if zero.any():
            ax.scatter(n[zero], yhi[zero], marker="v", s=30, color=color, zorder=3,
                       label=None if ok.any() else f"{label} (no event: CI upper end)" if label else None)
    else:
        ax.errorbar(n, est, yerr=[est - lo, hi - est], fmt="o", ms=4, color=color, capsize=2, label=label)


def _curves(ax: Axes, cur: pd.DataFrame, color: str, *, tail: bool, log: bool,
            exact_label: str | None, bound_label: str | None) -> None:
    cur = cur.sort_values("n")
    n = cur["n"].to_numpy()
    if log:
        ye = cur["log10_exact_tail" if tail else "log10_exact"].to_numpy()
        yb = cur["log10_bound_tail" if tail else "log10_bound"].to_numpy()
        yb = np.minimum(yb, 0.0)  # a bound above 1 (vacuous) is drawn at 1
    else:
        ye, yb = cur["exact"].to_numpy(), cur["bound"].to_numpy()
        yb = np.clip(yb, 0.0, 1.0)  # vacuous lower bounds (< 0) drawn at 0
    ax.plot(n, ye, "-", color=color, lw=1.8, label=exact_label)
    ax.plot(n, yb, "--", color=color, lw=1.3, label=bound_label)


LOG10_FLOOR = -40.0  # default lower end of log10 axes; the curves go on below it


def _finish(ax: Axes, title: str, ylabel: str, *, log: bool, legend_loc: str = "best",
            floor: float = LOG10_FLOOR) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("dimension n")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    if log:
        lo, hi = ax.get_ylim()
        if lo < floor:
            lo = floor
            title += f"\n(axis cut at $10^{{{floor:g}}}$; values below it are in the table)"
        ax.set_ylim(lo, 0.04 * (0.0 - lo) + 0.05)
    ax.set_title(title, fontsize=10.5)
    ax.legend(fontsize=8, loc=legend_loc)


def _select(df: pd.DataFrame, theorem: str | tuple[str, ...], **eq: float) -> pd.DataFrame:
    th = (theorem,) if isinstance(theorem, str) else theorem
    out = df[df["theorem"].isin(th)]
    for k, v in eq.items():
        out = out[np.isclose(out[k].astype(float), v)]
    return out


def _param_panel(ax: Axes, curves: pd.DataFrame, points: pd.DataFrame, theorem: str | tuple[str, ...],
                 pname: str, *, tail: bool, log: bool, eps: float | None = None,
                 fmt: str = "{p}={v:g}") -> list[float]:
    sel = {} if eps is None else {"eps": eps}
    params = sorted(_select(curves, theorem, **sel)["param"].dropna().unique())
    for i, p in enumerate(params):
        c = _COLORS[i % len(_COLORS)]
        name = fmt.format(p=pname, v=p)
        _curves(ax, _select(curves, theorem, param=p, **sel), c, tail=tail, log=log,
                exact_label=f"exact, {name}", bound_label=f"bound, {name}")
        _mc_points(ax, _select(points, theorem, param=p, **sel), c, tail=tail, log=log,
                   label=f"Monte Carlo, {name}")
    return params


def _save(fig: Figure, path: str | os.PathLike, title: str) -> Path:
    """Title ``fig`` (if ``title``), lay it out and save it (PNG, 110 dpi)."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_point(curves: pd.DataFrame, points: pd.DataFrame, path: str | os.PathLike, *,
               title: str = "", floor: float = LOG10_FLOOR) -> Path:
    """Theorem 1: ``log10 P(flip)`` of one point at distance ``eps`` against ``n``, one colour per ``r``."""
    fig, ax = new_figure(figsize=(7.5, 5.0))
    _param_panel(ax, curves, points, "Thm 1", "r", tail=False, log=True)
    eps = float(curves["eps"].iloc[0]) if len(curves) else math.nan
    _finish(ax, f"Thm 1: noise U(B(x, r)) flips a point at distance eps={eps:g} from the plane",
            r"$\log_{10}$ P(label flips)", log=True, legend_loc="lower left", floor=floor)
    return _save(fig, path, title)


def plot_two_balls(curves: pd.DataFrame, points: pd.DataFrame, path: str | os.PathLike, *,
                   title: str = "", floor: float = LOG10_FLOOR) -> Path:
    """Figure 4: (a) accuracy (Thm 4), linear and as ``log10`` misclassification; (b) random
    flips (Thm 6) per radius ``r``; and Theorems 5/8 (susceptibility, universality) as ``log10`` of
    the complement. Lengths in units of the ball radius."""
    eps = float(curves["eps"].iloc[0]) if len(curves) else math.nan
    fig, axes = new_figure(2, 2, figsize=(13, 9.5))
    ax = axes[0, 0]
    c4, p4 = _select(curves, "Thm 4"), _select(points, "Thm 4")
    if len(c4):
        _curves(ax, c4, _COLORS[0], tail=False, log=False, exact_label="exact",
                bound_label="Thm 4 bound (clipped at 0)")
        _mc_points(ax, p4, _COLORS[0], tail=False, log=False, label="Monte Carlo (95% CI)")
    _finish(ax, f"Fig. 4(a): accuracy of f(x) = 1[x_1 >= 0], eps={eps:g}", "P(correct classification)",
            log=False, legend_loc="lower right")
    ax = axes[0, 1]
    if len(c4):
        _curves(ax, c4, _COLORS[0], tail=True, log=True, exact_label="exact",
                bound_label=r"Thm 4 bound $(A^n/2)(1-\varepsilon^2)^{n/2}$")
        _mc_points(ax, p4, _COLORS[0], tail=True, log=True, label="Monte Carlo (95% CI)")
    _finish(ax, "Fig. 4(a), log view: misclassification 1 - P(correct)",
            r"$\log_{10}$ P(misclassified)", log=True, legend_loc="lower left", floor=floor)
    ax = axes[1, 0]
    _param_panel(ax, curves, points, "Thm 6", "r", tail=False, log=True)
    _finish(ax, f"Fig. 4(b): noise U(B(0, r)) flips a sampled point, eps={eps:g}",
            r"$\log_{10}$ P(f(x + $\zeta$) $\neq$ label)", log=True, legend_loc="lower left", floor=floor)
    ax = axes[1, 1]
    k = 0
    for th, what in (("Thm 5", "not susceptible"), ("Thm 8", "y escapes")):
        for p in sorted(_select(curves, th)["param"].dropna().unique()):
            c = _COLORS[k % len(_COLORS)]
            k += 1
            name = f"{th} {what}, delta={p:g}"
            _curves(ax, _select(curves, th, param=p), c, tail=True, log=True,
                    exact_label=f"exact: {name}", bound_label=f"bound: {name}")
            _mc_points(ax, _select(points, th, param=p), c, tail=True, log=True, label=None)
    _finish(ax, "Thm 5 (susceptible to delta) and Thm 8 (universal): 1 - P",
            r"$\log_{10}$ (1 - P)", log=True, legend_loc="lower left", floor=floor)
    return _save(fig, path, title)


def plot_half_balls(curves: pd.DataFrame, points: pd.DataFrame, path: str | os.PathLike, *,
                    limits: dict[float, tuple[float, float]] | None = None, title: str = "",
                    floor: float = LOG10_FLOOR) -> Path:
    """Figure 6 and Theorem 18 for the two-half-balls model, three panels against ``n``:

    1. Fig. 6, linear scale: ``P(flip)`` for each ``(eps, r)``; for ``eps = 0`` the dotted line is
       Theorem 20's liminf bound and the dash-dot line the exact limit ``arctan(r)/pi``, passed as
       ``limits[r] = (liminf_bound, limit)``;
    2. the same for ``eps > 0`` as ``log10 P`` with Theorem 19's bound (dashed);
    3. Theorem 18: ``log10(1 - P(susceptible to delta))`` with its bound.
    """
    fig, (ax0, ax1, ax2) = new_figure(1, 3, figsize=(19, 6.0))
    flip_th = ("Thm 19", "Thm 20")
    flips = _select(curves, flip_th)
    k = 0
    for eps in sorted(flips["eps"].unique()):
        for r in sorted(_select(flips, flip_th, eps=eps)["param"].unique()):
            c = _COLORS[k % len(_COLORS)]
            k += 1
            name = f"eps={eps:g}, r={r:g}"
            cur = _select(flips, flip_th, eps=eps, param=r)
            pts = _select(points, flip_th, eps=eps, param=r)
            _curves(ax0, cur, c, tail=False, log=False, exact_label=f"exact, {name}", bound_label=None)
            ax0.lines[-1].remove()  # bounds (1/2 and above for small n) only in the log panel
            _mc_points(ax0, pts, c, tail=False, log=False, label=None)
            if eps == 0 and limits and r in limits:
                lb, lim = limits[r]
                ax0.axhline(lb, color=c, ls=":", lw=1.3)
                ax0.axhline(lim, color=c, ls="-.", lw=1.0, alpha=0.8)
            if eps > 0:
                _curves(ax1, cur, c, tail=False, log=True, exact_label=f"exact, {name}",
                        bound_label=f"Thm 19 bound, {name}")
                _mc_points(ax1, pts, c, tail=False, log=True, label=None)
    if limits:
        ax0.plot([], [], "k:", lw=1.3, label="Thm 20 liminf bound (eps=0)")
        ax0.plot([], [], "k-.", lw=1.0, label="exact limit arctan(r)/pi (eps=0)")
    ax0.set_ylim(0.0, None)
    _finish(ax0, "Fig. 6: half-balls, noise U(B(0, r)) flips a sampled point\n"
            "eps = 0 (no margin): no decay in n", "P(label flips)", log=False, legend_loc="upper right")
    if ax1.lines:
        _finish(ax1, "Fig. 6, eps > 0 (margin): exponential decay, Thm 19", r"$\log_{10}$ P(label flips)",
                log=True, legend_loc="lower left", floor=floor)
    else:
        ax1.set_visible(False)
    k = 0
    for eps in sorted(_select(curves, "Thm 18")["eps"].unique()):
        for d in sorted(_select(curves, "Thm 18", eps=eps)["param"].unique()):
            c = _COLORS[k % len(_COLORS)]
            k += 1
            name = f"eps={eps:g}, delta={d:g}"
            _curves(ax2, _select(curves, "Thm 18", eps=eps, param=d), c, tail=True, log=True,
                    exact_label=f"exact, {name}", bound_label=f"Thm 18 bound, {name}")
            _mc_points(ax2, _select(points, "Thm 18", eps=eps, param=d), c, tail=True, log=True, label=None)
    if ax2.lines:
        _finish(ax2, "Thm 18: 1 - P(susceptible to delta)", r"$\log_{10}$ P(not susceptible)", log=True,
                legend_loc="lower left", floor=floor)
    else:
        ax2.set_visible(False)
    return _save(fig, path, title)
