"""``perturbscope theory point|two-balls|half-balls``: the paper's models with numbers and curves.

For each model the command prints a table (bound, exact value and Monte Carlo estimate with
its confidence interval, per dimension) and writes the corresponding figure (Theorem 1,
Figure 4 (a)/(b), Figure 6) as a PNG. Lengths are in units of the ball radius (radius 1).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from perturbscope.cli.common import add_progress_arg
from perturbscope.cli.main import UsageError
from perturbscope.fileio import atomic_write
from perturbscope.progress import progress_bar
from perturbscope.theory import half_balls, plots, sweeps
from perturbscope.theory.engines import ENGINES

_FULL_ENGINE_MAX_ELEMENTS = 4e9  # n * samples above which the full-vector engine is refused


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
    return ENGINES if name == "both" else (name,)


def _check_args(args: argparse.Namespace) -> None:
    for name in ("dims",):
        vals = getattr(args, name)
        if any(d < 1 for d in vals):
            raise UsageError(f"--{name} must be positive integers (dimensions), got {vals}")
    for name in ("radii", "deltas"):
        vals = getattr(args, name, None) or []
        if any(not (math.isfinite(v) and v > 0) for v in vals):
            raise UsageError(f"--{name} must be finite and > 0, got {vals}")
    eps = args.eps if isinstance(args.eps, list) else [args.eps]
    if any(not (math.isfinite(e) and e >= 0) for e in eps):
        raise UsageError(f"--eps must be finite and >= 0, got {eps}")
    if args.samples < 0:
        raise UsageError(f"--samples must be >= 0, got {args.samples}")
    if args.curve_points < 2:
        raise UsageError(f"--curve-points must be >= 2, got {args.curve_points}")
    if "full" in _engines(args.engine) and args.samples * max(args.dims) > _FULL_ENGINE_MAX_ELEMENTS:
        raise UsageError(
            f"the full-vector engine would draw {args.samples} x {max(args.dims)} numbers per point: "
            "use --engine coord (exact first-coordinate laws, any dimension) or fewer --samples/--dims")


def _write_csv(df: pd.DataFrame, path: str) -> Path:
    return atomic_write(path, lambda t: df.to_csv(t, index=False))


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    dims = sorted(set(args.dims))
    curve_dims = sweeps.log_dims(min(dims), max(dims), args.curve_points)
    engines = _engines(args.engine)
    model = args.model
    kw = {}
    if model == "point":
        kw = dict(eps=args.eps, radii=args.radii)
        fn, plot = sweeps.point_sweep, plots.plot_point
        n_rows = len(args.radii) * len(dims)
    elif model == "two-balls":
        kw = dict(eps=args.eps, radii=args.radii, deltas=args.deltas, A=args.A, density=args.density)
        fn, plot = sweeps.two_balls_sweep, plots.plot_two_balls
        n_rows = len(sweeps.two_balls_sweep([1], samples=0, **kw))
        n_rows *= len(dims)
    else:
        kw = dict(eps_values=args.eps, radii=args.radii, deltas=args.deltas)
        fn, plot = sweeps.half_balls_sweep, plots.plot_half_balls
        n_rows = len(sweeps.half_balls_sweep([1], samples=0, **kw)) * len(dims)
    total = n_rows * len(engines) if args.samples > 0 else 0
    show = not args.no_progress and total > 0
    with progress_bar(f"theory {model}: Monte Carlo", total, enabled=show) as adv:
        points = fn(dims, samples=args.samples, engines=engines, seed=args.seed, progress=adv, **kw)
    curves = fn(curve_dims, samples=0, **kw)
    print(format_table(points))
    extra = {}
    if model == "half-balls" and 0.0 in [float(e) for e in args.eps]:
        print("\nThm 20 (eps = 0, n -> inf):")
        for r in args.radii:
            lb, lim = half_balls.no_margin_liminf_bound(r), half_balls.no_margin_limit(r)
            extra[r] = (lb, lim)
            print(f"  r={r:g}: liminf bound sup_a (1-e^(-a^2/2))(1-Phi(a/r)) = {lb:.6f}; "
                  f"exact limit arctan(r)/pi = {lim:.6f}")
        kwp = dict(limits=extra)
    else:
        kwp = {}
    title = (f"perturbscope theory {model}: {args.samples} Monte Carlo samples per point "
             f"({'+'.join(engines)} engine)")
    png = plot(curves, points, args.out, title=title, **kwp)
    print(f"\nplot: {png}")
    if args.csv:
        print(f"table: {_write_csv(points, args.csv)}")
    return 0


def _add_common(p: argparse.ArgumentParser, model: str) -> None:
    g = p.add_argument_group("sweep")
    g.add_argument("--dims", nargs="+", type=int, default=[2, 10, 100, 1000, 10_000, 100_000],
                   metavar="N", help="dimensions of the table and Monte Carlo points "
                   "(default: %(default)s)")
    g.add_argument("--curve-points", type=int, default=40, metavar="K",
                   help="dimensions on the exact/bound curves, log-spaced over the --dims range "
                   "(default: %(default)s)")
    g.add_argument("--samples", type=int, default=100_000,
                   help="Monte Carlo experiments per table row (0: no simulation; default: %(default)s)")
    g.add_argument("--engine", choices=(*ENGINES, "both"), default="coord",
                   help="Monte Carlo engine: 'coord' draws first coordinates from their exact laws (O(1) "
                        "per draw, any n), 'full' draws whole n-dim vectors (practical to a few thousand "
                        "dimensions), 'both' runs both (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="Monte Carlo seed (default: %(default)s)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=f"theory_{model.replace('-', '_')}.png", metavar="PNG",
                   help="figure path (default: %(default)s)")
    o.add_argument("--csv", default=None, metavar="CSV", help="also write the table as CSV")
    add_progress_arg(p)
    p.set_defaults(func=run, model=model)


def register(sub) -> None:
    p = sub.add_parser("theory", help="exact probabilities, bounds and Monte Carlo for the paper's models",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = p.add_subparsers(dest="model", metavar="MODEL")
    models.required = True

    sp = models.add_parser("point", help="Theorem 1: random noise around one point near a plane")
    sp.add_argument("--eps", type=float, default=0.1, help="distance of the point to the plane "
                    "(default: %(default)s)")
    sp.add_argument("--radii", nargs="+", type=float, default=[0.5, 1.0, 2.0, 10.0], metavar="R",
                    help="radii of the noise ball (default: %(default)s)")
    _add_common(sp, "point")

    tb = models.add_parser("two-balls", help="Theorems 4, 5, 6, 8 and Figure 4: two overlapping unit balls")
    tb.add_argument("--eps", type=float, default=0.1,
                    help="half the distance between the centres, in (0, 1) (default: %(default)s)")
    tb.add_argument("--radii", nargs="+", type=float, default=[0.5, 1.0, 2.0, 10.0], metavar="R",
                    help="radii of the random noise (Thm 6; 10 = 50x the centre separation 0.2; "
                         "default: %(default)s)")
    tb.add_argument("--deltas", nargs="+", type=float, default=[0.15, 0.5], metavar="DELTA",
                    help="attack size (Thm 5, needs eps < delta < 1+eps) and universality margin "
                         "(Thm 8, delta <= 2) (default: %(default)s)")
    tb.add_argument("--A", type=float, default=1.0,
                    help="SmAC growth parameter A >= 1 of the class densities (default: %(default)s)")
    tb.add_argument("--density", choices=("uniform", "shifted", "radial"), default="uniform",
                    help="class density: uniform ball, ball of radius 1/A pushed to the plane, or radial "
                         "mass near the sphere (Monte Carlo only) (default: %(default)s)")
    _add_common(tb, "two-balls")

    hb = models.add_parser("half-balls", help="Theorems 18, 19, 20 and Figure 6: two half-balls")
    hb.add_argument("--eps", nargs="+", type=float, default=[0.0, 0.05], metavar="EPS",
                    help="half-gaps between the flat faces; 0 = no margin (Thm 20) (default: %(default)s)")
    hb.add_argument("--radii", nargs="+", type=float, default=[0.5, 1.0, 2.0], metavar="R",
                    help="radii of the random noise (default: %(default)s)")
    hb.add_argument("--deltas", nargs="+", type=float, default=[0.1], metavar="DELTA",
                    help="attack sizes for Thm 18 (rows need eps < delta < 1+eps) (default: %(default)s)")
    _add_common(hb, "half-balls")
