"""``perturbscope rare-event``: how likely is uniform L2 noise to flip each image's prediction?

Runs the paper's gradient line search for ``eps_adv``, then estimates
``p = P(f(x + zeta) != f(x))``, ``zeta`` uniform in the L2 ball of radius ``alpha * eps_adv``,
for every image and alpha with a rare-event estimator (far below the ~1/draws floor of plain
sampling), beside the first-order (plane) estimate. ``--linear D`` instead runs a linear
model in dimension D where the exact answer is known, to see the estimator at work.
"""

from __future__ import annotations

import argparse

from perturbscope.cli import options as o
from perturbscope.cli.common import load_model, load_task, place, set_threads, use_device
from perturbscope.cli.main import UsageError

__all__ = ["register", "run"]

# the work: perturbscope.experiments.rare_event.run_rare_event


def run(args: argparse.Namespace) -> int:
    from perturbscope.experiments.rare_event import run_rare_event

    set_threads(args.threads)
    model = x = y = None
    title = ""
    device = use_device(args.device)
    if not args.linear:
        if not args.checkpoint:
            raise UsageError("give --checkpoint FILE.pt (with --classes if it does not record "
                             "them) or --linear D")
        model, _, classes = load_model(args)
        task = load_task(args, args.split, classes)
        model, x, y = place(args, model, task.x[:args.images], task.y[:args.images])
        title = f"{args.checkpoint}: class {classes[0]} vs {classes[1]} ({args.split})"
    run_rare_event(model=model, x=x, y=y, linear=args.linear, distance=args.distance, alphas=args.alphas,
                   title=title, method=args.method, budget=args.budget, n_per_level=args.n_per_level,
                   direction=args.direction, level=args.level, seed=args.seed, s_max=args.s_max,
                   steps=args.steps, refine_tol=args.refine_tol, batch_size=args.forward_batch,
                   out=args.out, device=device, progress=not args.no_progress)
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
    o.add_checkpoint_args(src)
    src.add_argument("--linear", type=o.NONNEG_INT, default=0, metavar="D",
                     help="instead: a linear model in dimension D >= 2 with a known exact answer")
    src.add_argument("--distance", type=o.POSITIVE, default=0.5, metavar="L2",
                     help="with --linear: L2 distance of the input to the boundary, pixel units "
                          "(default: %(default)s)")
    o.add_data_args(p, classes_required=False)
    o.SPLIT.add(p)
    p.add_argument("--images", type=o.COUNT, default=10, metavar="N",
                   help="first N images of the split (default: %(default)s)")
    g = p.add_argument_group("estimator")
    o.ALPHAS.add(g, help="ball radii as multiples of each image's eps_adv (L2, pixel units; "
                         "default: %(default)s)")
    g.add_argument("--method", choices=o.RARE_METHODS, default=o.AUDIT.rare_event_method,
                   help=o.RARE_METHODS_HELP)
    g.add_argument("--budget", type=o.int_type(minimum=2), default=o.AUDIT.rare_event_budget, metavar="F",
                   help="forward passes per image and alpha (default: %(default)s; splitting "
                        "stops at the last level it can afford and reports an upper bound)")
    g.add_argument("--n-per-level", type=o.COUNT, default=200, metavar="N",
                   help="splitting: draws per level; relative error ~ sqrt(9 levels / N) "
                        "(default: %(default)s)")
    g.add_argument("--direction", choices=("gradient", "attack"), default="gradient",
                   help="importance-sampling direction: margin gradient at the image (default) "
                        "or the attack's perturbation")
    o.LEVEL.add(g)
    o.SEED.add(g)
    a = p.add_argument_group("attack (gradient line search, for eps_adv)")
    o.S_MAX.add(a)
    o.STEPS.add(a)
    o.REFINE_TOL.add(a, default=1e-3,
                     help="bisect eps_adv to this L2 width, pixel units (default: %(default)s)")
    o.add_runtime_args(p, forward_batch=True)
    o.OUT.add(p, help="folder for flip_probability.csv and flip_probability.png (default: not written)")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
