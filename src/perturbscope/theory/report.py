"""The paper's models with numbers and curves (``perturbscope theory point|two-balls|half-balls``).

For each model :func:`run_theory` prints a table (bound, exact value and Monte Carlo estimate
with its confidence interval, per dimension) and writes the corresponding figure (Theorem 1,
Figure 4 (a)/(b), Figure 6) as a PNG, optionally the table as CSV. Lengths are in units of the
ball radius (radius 1). :func:`format_table` is the printed table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perturbscope.fileio import atomic_write
from perturbscope.progress import progress_bar

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MODELS", "ENGINE_CHOICES", "FULL_ENGINE_MAX_ELEMENTS", "format_table", "run_theory"]

#: the paper's models: a point near a plane (Thm 1), two balls (Thms 4-8), two half-balls (Thms 18-20)
MODELS: tuple[str, ...] = ("point", "two-balls", "half-balls")
#: Monte Carlo engines (:data:`perturbscope.theory.engines.ENGINES`) and "both"
ENGINE_CHOICES: tuple[str, ...] = ("full", "coord", "both")
#: ``n * samples`` above which the full-vector engine is refused (memory and time)
FULL_ENGINE_MAX_ELEMENTS = 4e9


def _fmt_prob(p: float, log10p: float) -> str:
    if math.isnan(p) and math.isnan(log10p):
        return "-"
    if p >= 1e-300 or log10p == -math.inf:
        return f"{p:.6g}"
    return f"10^{log10p:.3f}"


def _fmt_row_value(row: pd.Series, which: str) -> str:
    p, lg, lg_tail = row[which], row[f"log10_{which}"], row[f"log10_{which}_tail"]
    if row["side"] == "lower" and not math.isnan(p) and p > 0.999 and math.isfinite(lg_tail):
        return f"1 - {_fmt_prob(10.0 ** lg_tail if lg_tail > -300 else 0.0, lg_tail)}"
    return _fmt_prob(p, lg)


def format_table(df: pd.DataFrame) -> str:
    """The sweep table as fixed-width text: one line per theorem, parameter, dimension and engine."""
    head = (f"{'theorem':<7} {'side':<5} {'eps':>6} {'param':>10} {'n':>8}  {'bound':>22}  {'exact':>22}  "
            f"{'Monte Carlo [95% CI]':<40} {'engine':<6}")
    lines = [head, "-" * len(head)]
    for _, row in df.iterrows():
        param = "-" if row["param_name"] == "-" else f"{row['param_name']}={row['param']:g}"
        if row["trials"] > 0:
            mc = f"{row['mc']:.6g} [{row['ci_low']:.6g}, {row['ci_high']:.6g}]"
        else:
            mc = "-"
        lines.append(f"{row['theorem']:<7} {row['side']:<5} {row['eps']:>6g} {param:>10} {row['n']:>8d}  "
                     f"{_fmt_row_value(row, 'bound'):>22}  {_fmt_row_value(row, 'exact'):>22}  "
                     f"{mc:<40} {row['engine']:<6}")
    return "\n".join(lines)


def _engines(name: str) -> tuple[str, ...]:
    from perturbscope.theory.engines import ENGINES

    return ENGINES if name == "both" else (name,)


def run_theory(model: str, out: str | os.PathLike, *, dims: Sequence[int], eps: float | Sequence[float],
               radii: Sequence[float], deltas: Sequence[float] = (), A: float = 1.0,
               density: str = "uniform", samples: int = 100_000, curve_points: int = 40,
               engine: str = "coord", seed: int = 0, csv: str | os.PathLike | None = None,
               progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Sweep one of the paper's models over ``dims``; print the table, write the PNG (and CSV).

    Args:
        model: one of :data:`MODELS`.
        out: the figure (PNG).
        dims: dimensions of the table and Monte Carlo points; the curves use ``curve_points``
            log-spaced dimensions over their range.
        eps, radii, deltas, A, density: the model's parameters (``eps`` a list for half-balls).
        samples: Monte Carlo experiments per table row (0: none).
        engine: ``"coord"``, ``"full"`` or ``"both"`` (:data:`ENGINE_CHOICES`).
        seed: Monte Carlo seed. csv: also write the table here.
        progress: show a progress bar. echo: receives the printed lines.

    Returns:
        ``{"points": table, "curves": dense table, "png": Path, "csv": Path | None}``.

    Raises:
        ValueError: a bad parameter, or a full-vector sweep too large to draw.
    """
    from perturbscope.theory import half_balls, plots, sweeps

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {ENGINE_CHOICES}, got {engine!r}")
    if curve_points < 2:
        raise ValueError(f"--curve-points must be >= 2, got {curve_points}")
    engines = _engines(engine)
    if "full" in engines and samples * max(dims) > FULL_ENGINE_MAX_ELEMENTS:
        raise ValueError(
            f"the full-vector engine would draw {samples} x {max(dims)} numbers per point: "
            "use --engine coord (exact first-coordinate laws, any dimension) or fewer --samples/--dims")
    dims = sorted(set(dims))
    curve_dims = sweeps.log_dims(min(dims), max(dims), curve_points)
    if model == "point":
        kw: dict[str, Any] = dict(eps=eps, radii=radii)
        fn, plot = sweeps.point_sweep, plots.plot_point
        n_rows = len(radii) * len(dims)
    elif model == "two-balls":
        kw = dict(eps=eps, radii=radii, deltas=deltas, A=A, density=density)
        fn, plot = sweeps.two_balls_sweep, plots.plot_two_balls
        n_rows = len(sweeps.two_balls_sweep([1], samples=0, **kw)) * len(dims)
    else:
        kw = dict(eps_values=eps, radii=radii, deltas=deltas)
        fn, plot = sweeps.half_balls_sweep, plots.plot_half_balls
        n_rows = len(sweeps.half_balls_sweep([1], samples=0, **kw)) * len(dims)
    total = n_rows * len(engines) if samples > 0 else 0
    with progress_bar(f"theory {model}: Monte Carlo", total, enabled=progress and total > 0) as adv:
        points = fn(dims, samples=samples, engines=engines, seed=seed, progress=adv, **kw)
    curves = fn(curve_dims, samples=0, **kw)
    echo(format_table(points))
    kwp: dict[str, Any] = {}
    eps_list = eps if isinstance(eps, list | tuple) else [eps]
    if model == "half-balls" and 0.0 in [float(e) for e in eps_list]:
        echo("\nThm 20 (eps = 0, n -> inf):")
        extra = {}
        for r in radii:
            lb, lim = half_balls.no_margin_liminf_bound(r), half_balls.no_margin_limit(r)
            extra[r] = (lb, lim)
            echo(f"  r={r:g}: liminf bound sup_a (1-e^(-a^2/2))(1-Phi(a/r)) = {lb:.6f}; "
                 f"exact limit arctan(r)/pi = {lim:.6f}")
        kwp = dict(limits=extra)
    title = (f"perturbscope theory {model}: {samples} Monte Carlo samples per point "
             f"({'+'.join(engines)} engine)")
    png = plot(curves, points, out, title=title, **kwp)
    echo(f"\nplot: {png}")
    csv_path = None
    if csv:
        csv_path = atomic_write(csv, lambda t: points.to_csv(t, index=False))
        echo(f"table: {csv_path}")
    return {"points": points, "curves": curves, "png": Path(png), "csv": csv_path}
