"""``perturbscope rare-event``: how likely is uniform L2 noise to flip each image's prediction?

Runs the paper's gradient line search for ``eps_adv``, then estimates
``p = P(f(x + zeta) != f(x))``, ``zeta`` uniform in the L2 ball of radius ``alpha * eps_adv``,
for every image and alpha with a rare-event estimator (far below the ~1/draws floor of plain
sampling), beside the first-order (plane) estimate. ``--linear D`` instead runs a linear
model in dimension D where the exact answer is known, to see the estimator at work.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from perturbscope.cli.common import add_data_args, add_progress_arg, load_task
from perturbscope.cli.main import UsageError
from perturbscope.fileio import atomic_write
from perturbscope.measure.rare_event import (
    METHODS,
    flip_probability_table,
    plot_flip_probability,
)

__all__ = ["register", "run"]


def _linear_problem(d: int, distance: float, seed: int):
    from perturbscope.models.pair_cnn import LinearBinary

    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    x = torch.full((1, d), 0.5, dtype=torch.float64)
    # boundary at L2 distance `distance` from x, prediction of x is class 0
    bias = -(float(x[0] @ w) + distance * float(w.norm()))
    return LinearBinary(w, bias=bias), x, torch.tensor([distance], dtype=torch.float64)


def _attack(model, x, y, args):
    from perturbscope.attacks.line_search import gradient_line_search

    res = gradient_line_search(model, x, y, output="sigmoid", s_max=args.s_max, steps=args.steps,
                               refine_tol=args.refine_tol, batch_size=args.forward_batch)
    eps = torch.where(res.success, res.eps_l2, torch.full_like(res.eps_l2, math.nan))
    return eps, res.perturbation


def _print_table(tab: pd.DataFrame, exact: np.ndarray | None) -> None:
    show = tab[["image", "alpha", "radius", "log10_p_hat", "log10_ci_low", "log10_ci_high",
                "log10_first_order_p", "hits", "forwards"]].copy()
    if exact is not None:
        show["log10_exact"] = exact
    show["expected_draws"] = tab["expected_draws"].map(lambda v: f"{v:.3g}")
    with pd.option_context("display.width", 140, "display.max_rows", 200,
                           "display.float_format", "{:.3f}".format):
        print(show.to_string(index=False))
    ok = tab[np.isfinite(tab["eps_adv"])]
    if len(ok):
        med = ok.groupby("alpha")[["log10_p_hat", "log10_first_order_p"]].median()
        print("\nmedian over images (log10 p): rare-event | first-order")
        for a, row in med.iterrows():
            print(f"  alpha={a:g}: {row['log10_p_hat']:.2f} | {row['log10_first_order_p']:.2f}")
        print(f"forward passes: {int(tab['forwards'].sum())} in all")
    if np.isneginf(tab["log10_p_hat"]).any():
        print("log10_p_hat = -inf: no flip reached within the budget; p is below 10^log10_ci_high "
              "(raise --budget to resolve it)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.budget < 2:
        raise UsageError(f"--budget must be >= 2, got {args.budget}")
    if args.method == "splitting" and args.budget < args.n_per_level:
        raise UsageError(f"--budget ({args.budget}) must be >= --n-per-level ({args.n_per_level})")
    if any(a <= 0 for a in args.alphas):
        raise UsageError(f"--alphas must be positive, got {args.alphas}")
    out = Path(args.out) if args.out else None
    exact = None
    common = dict(budget=args.budget, seed=args.seed, method=args.method, level=args.level,
                  batch_size=args.forward_batch, progress=not args.no_progress,
                  n_per_level=args.n_per_level)
    if args.linear:
        if args.linear < 2:
            raise UsageError(f"--linear D needs D >= 2, got {args.linear}")
        from perturbscope.measure.rare_event import first_order_log_p

        model, x, eps = _linear_problem(args.linear, args.distance, args.seed)
        tab = flip_probability_table(model, x, None, eps, args.alphas, bounds=None, **common)
        exact = first_order_log_p(tab["eps_adv"].to_numpy(), tab["radius"].to_numpy(),
                                  args.linear) / math.log(10)
        title = f"linear model, d={args.linear}, distance {args.distance:g}"
    else:
        if not args.checkpoint:
            raise UsageError("give --checkpoint FILE.pt (with --classes if it does not record "
                             "them) or --linear D")
        from perturbscope.models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(args.checkpoint)
        classes = tuple(args.classes) if args.classes else tuple(meta.get("classes") or ())
        if len(classes) != 2:
            raise UsageError("--classes I J is required: the checkpoint does not record its task")
        task = load_task(args, args.split, classes)
        x, y = task.x[:args.images], task.y[:args.images]
        if args.images < 1:
            raise UsageError(f"--images must be >= 1, got {args.images}")
        eps, delta = _attack(model, x, y, args)
        direction = delta if args.direction == "attack" else None
        tab = flip_probability_table(model, x, None, eps, args.alphas, direction=direction,
                                     **common)
        tab.insert(1, "label", y.numpy()[tab["image"].to_numpy()])
        title = f"{args.checkpoint}: class {classes[0]} vs {classes[1]} ({args.split})"
    _print_table(tab, exact)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if exact is not None:
            tab["log10_exact"] = exact
        atomic_write(out / "flip_probability.csv", lambda t: tab.to_csv(t, index=False))
        plot = plot_flip_probability(tab, out / "flip_probability.png", title=title)
        print(f"\ntable: {out / 'flip_probability.csv'}\nplot:  {plot}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "rare-event", help="probability that uniform L2 noise flips a prediction (down to 1e-12+)",
        description="Estimate, per image and alpha, the probability p that noise uniform in the "
                    "L2 ball of radius alpha * eps_adv flips the prediction, with a confidence "
                    "interval, using subset simulation on the model's margin (or importance "
                    "sampling along the boundary normal), plus the first-order plane estimate. "
                    "Norms are in pixel units of images in [0, 1].")
    src = p.add_argument_group("model")
    src.add_argument("--checkpoint", metavar="FILE.pt", help="checkpoint written by "
                     "'perturbscope train'")
    src.add_argument("--linear", type=int, default=0, metavar="D",
                     help="instead: a linear model in dimension D with a known exact answer")
    src.add_argument("--distance", type=float, default=0.5, metavar="L2",
                     help="with --linear: L2 distance of the input to the boundary, pixel units "
                          "(default: %(default)s)")
    add_data_args(p, classes_required=False)
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="images to use (default: %(default)s)")
    p.add_argument("--images", type=int, default=10, metavar="N",
                   help="first N images of the split (default: %(default)s)")
    g = p.add_argument_group("estimator")
    g.add_argument("--alphas", nargs="+", type=float, default=[1.0, 2.0, 5.0, 10.0],
                   help="ball radii as multiples of each image's eps_adv (L2, pixel units; "
                        "default: 1 2 5 10)")
    g.add_argument("--method", choices=METHODS, default="splitting",
                   help="splitting: subset simulation on the margin, no direction assumed "
                        "(default); lines: adaptive line sampling along a learned direction, "
                        "~3e3-6e3 forwards for 20%% at p ~ 1e-6 on the pair CNNs, no floor on p, "
                        "assumes the flip set on each line is one ray; is: importance sampling "
                        "along the gradient / boundary normal, ~300 forwards at any p for "
                        "near-linear boundaries but unreliable for strongly non-linear ones "
                        "(see docs/rare_event.md)")
    g.add_argument("--budget", type=int, default=2000, metavar="F",
                   help="forward passes per image and alpha (default: %(default)s; splitting "
                        "stops at the last level it can afford and reports an upper bound)")
    g.add_argument("--n-per-level", type=int, default=200, metavar="N",
                   help="splitting: draws per level; relative error ~ sqrt(9 levels / N) "
                        "(default: %(default)s)")
    g.add_argument("--direction", choices=("gradient", "attack"), default="gradient",
                   help="importance-sampling direction: margin gradient at the image (default) "
                        "or the attack's perturbation")
    g.add_argument("--level", type=float, default=0.95,
                   help="confidence level of the intervals (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    a = p.add_argument_group("attack (gradient line search, for eps_adv)")
    a.add_argument("--s-max", type=float, default=10.0,
                   help="largest L2 scale tried, pixel units (default: %(default)s)")
    a.add_argument("--steps", type=int, default=256,
                   help="scales tried in (0, s-max] (paper: 256)")
    a.add_argument("--refine-tol", type=float, default=1e-3, metavar="L2",
                   help="bisect eps_adv to this L2 width, pixel units (default: %(default)s)")
    p.add_argument("--forward-batch", type=int, default=256,
                   help="inputs per forward pass (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for flip_probability.csv and flip_probability.png")
    add_progress_arg(p)
    p.set_defaults(func=run)
