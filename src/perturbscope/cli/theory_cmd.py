"""``perturbscope theory point|two-balls|half-balls``: the paper's models with numbers and curves.

For each model the command prints a table (bound, exact value and Monte Carlo estimate with
its confidence interval, per dimension) and writes the corresponding figure (Theorem 1,
Figure 4 (a)/(b), Figure 6) as a PNG. Lengths are in units of the ball radius (radius 1).
"""
# (the docstring is the command's --help text; the work is perturbscope.theory.report.run_theory)

from __future__ import annotations

import argparse

from perturbscope.cli import options as o

#: Monte Carlo engines (perturbscope.theory.engines.ENGINES) and "both"; not imported from there,
#: which would import scipy and torch while the parser is built (tests/test_cli_options.py checks it)
ENGINE_CHOICES: tuple[str, ...] = ("full", "coord", "both")

#: dimensions: at least 1; radii and margins: finite and > 0; eps: finite and >= 0
DIM = o.COUNT
CURVE_POINTS = o.int_type(minimum=2)


def run(args: argparse.Namespace) -> int:
    from perturbscope.theory.report import run_theory

    run_theory(args.model, args.out, dims=args.dims, eps=args.eps, radii=args.radii,
               deltas=getattr(args, "deltas", None) or (), A=getattr(args, "A", 1.0),
               density=getattr(args, "density", "uniform"), samples=args.samples,
               curve_points=args.curve_points, engine=args.engine, seed=args.seed, csv=args.csv,
               progress=not args.no_progress)
    return 0


def _add_common(p: argparse.ArgumentParser, model: str) -> None:
    g = p.add_argument_group("sweep")
    g.add_argument("--dims", nargs="+", type=DIM, default=[2, 10, 100, 1000, 10_000, 100_000],
                   metavar="N", help="dimensions of the table and Monte Carlo points "
                   "(default: %(default)s)")
    g.add_argument("--curve-points", type=CURVE_POINTS, default=40, metavar="K",
                   help="dimensions on the exact/bound curves, log-spaced over the --dims range "
                   "(default: %(default)s)")
    g.add_argument("--samples", type=o.NONNEG_INT, default=100_000,
                   help="Monte Carlo experiments per table row (0: no simulation; default: %(default)s)")
    g.add_argument("--engine", choices=ENGINE_CHOICES, default="coord",
                   help="Monte Carlo engine: 'coord' draws first coordinates from their exact laws (O(1) "
                        "per draw, any n), 'full' draws whole n-dim vectors (practical to a few thousand "
                        "dimensions), 'both' runs both (default: %(default)s)")
    o.SEED.add(g, help="Monte Carlo seed (default: %(default)s)")
    out = p.add_argument_group("output")
    o.OUT.add(out, default=f"theory_{model.replace('-', '_')}.png", metavar="PNG", type=o.out_file_type(),
              help="figure path (default: %(default)s)")
    out.add_argument("--csv", default=None, metavar="CSV", type=o.out_file_type(".csv"),
                     help="also write the table as CSV")
    o.add_progress_arg(p)
    p.set_defaults(func=run, model=model)


def register(sub) -> None:
    p = sub.add_parser("theory", help="exact probabilities, bounds and Monte Carlo for the paper's models",
                       description=__doc__, formatter_class=o.RawDescriptionHelpFormatter)
    models = p.add_subparsers(dest="model", metavar="MODEL")
    models.required = True

    sp = models.add_parser("point", help="Theorem 1: random noise around one point near a plane")
    sp.add_argument("--eps", type=o.NONNEG, default=0.1, help="distance of the point to the plane "
                    "(default: %(default)s)")
    sp.add_argument("--radii", nargs="+", type=o.POSITIVE, default=[0.5, 1.0, 2.0, 10.0], metavar="R",
                    help="radii of the noise ball (default: %(default)s)")
    _add_common(sp, "point")

    tb = models.add_parser("two-balls", help="Theorems 4, 5, 6, 8 and Figure 4: two overlapping unit balls")
    tb.add_argument("--eps", type=o.NONNEG, default=0.1,
                    help="half the distance between the centres, in (0, 1) (default: %(default)s)")
    tb.add_argument("--radii", nargs="+", type=o.POSITIVE, default=[0.5, 1.0, 2.0, 10.0], metavar="R",
                    help="radii of the random noise (Thm 6; 10 = 50x the centre separation 0.2; "
                         "default: %(default)s)")
    tb.add_argument("--deltas", nargs="+", type=o.POSITIVE, default=[0.15, 0.5], metavar="DELTA",
                    help="attack size (Thm 5, needs eps < delta < 1+eps) and universality margin "
                         "(Thm 8, delta <= 2) (default: %(default)s)")
    tb.add_argument("--A", type=o.FINITE, default=1.0,
                    help="SmAC growth parameter A >= 1 of the class densities (default: %(default)s)")
    tb.add_argument("--density", choices=("uniform", "shifted", "radial"), default="uniform",
                    help="class density: uniform ball, ball of radius 1/A pushed to the plane, or radial "
                         "mass near the sphere (Monte Carlo only) (default: %(default)s)")
    _add_common(tb, "two-balls")

    hb = models.add_parser("half-balls", help="Theorems 18, 19, 20 and Figure 6: two half-balls")
    hb.add_argument("--eps", nargs="+", type=o.NONNEG, default=[0.0, 0.05], metavar="EPS",
                    help="half-gaps between the flat faces; 0 = no margin (Thm 20) (default: %(default)s)")
    hb.add_argument("--radii", nargs="+", type=o.POSITIVE, default=[0.5, 1.0, 2.0], metavar="R",
                    help="radii of the random noise (default: %(default)s)")
    hb.add_argument("--deltas", nargs="+", type=o.POSITIVE, default=[0.1], metavar="DELTA",
                    help="attack sizes for Thm 18 (rows need eps < delta < 1+eps) (default: %(default)s)")
    _add_common(hb, "half-balls")
