"""``perturbscope categorize``: which of the four robustness categories a saved model is in,
at each perturbation size eps (robust / adversarial / universal / everything fools)."""

from __future__ import annotations

import argparse

from perturbscope.cli import options as o
from perturbscope.cli.common import load_model, load_task, place, set_threads
from perturbscope.cli.main import UsageError

# the work, its files and its figures: perturbscope.experiments.categorize.run_categorize


def run(args: argparse.Namespace) -> int:
    from perturbscope.analyses.categories import CategoryThresholds
    from perturbscope.experiments.categorize import run_categorize

    try:
        thresholds = CategoryThresholds(delta_r=args.delta_r, delta_u=args.delta_u,
                                        delta_a=args.delta_a, tau_1=args.tau1)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    set_threads(args.threads)
    model, _, classes = load_model(args)
    task = load_task(args, args.split, classes)
    model, task.x, task.y = place(args, model, task.x, task.y)
    run_categorize(model, task, args.out, checkpoint=args.checkpoint, eps=args.eps, norm=args.norm,
                   thresholds=thresholds, all_images=args.all_images, build_fraction=args.build_fraction,
                   draws=args.draws, restarts=args.restarts, max_passes=args.max_passes, level=args.level,
                   ci=args.ci, clip=args.clip, normals=args.normals, seed=args.seed,
                   progress=not args.no_progress)
    return 0


def register(sub) -> None:
    p = sub.add_parser("categorize", help="robust / adversarial / universal / everything fools, per eps",
                       description="Decide which of the four robustness categories a saved pair model "
                                   "is in at each eps: A = share of images with some fooling "
                                   "perturbation (DeepFool), U = best universal perturbation's held-out "
                                   "fooling rate, R = share of random perturbations that fool; each "
                                   "with a binomial confidence interval. Norms in pixel units of images "
                                   "in [0, 1]; flips are changes of the predicted label.")
    o.add_checkpoint_args(p, required=True)
    o.add_data_args(p, classes_required=False)
    g = p.add_argument_group("categories")
    g.add_argument("--eps", type=o.POSITIVE, nargs="+", required=True, metavar="EPS",
                   help="ball radii in pixel units (one or more; L2 or Linf by --norm)")
    o.NORM.add(g, default="2")
    o.SPLIT.add(g, help="images to use; split into build and evaluation parts (default: %(default)s)")
    g.add_argument("--build-fraction", type=o.OPEN_FRACTION, default=0.5,
                   help="share of the images used to build universal perturbations (default: %(default)s)")
    g.add_argument("--all-images", action="store_true",
                   help="also use misclassified images (default: correctly classified only)")
    o.DRAWS.add(g, default=100,
                help="random vectors on the eps-sphere, each applied to every image (default: %(default)s)")
    o.RESTARTS.add(g, default=3, type=o.COUNT,
                   help="universal perturbations built per eps; the best on the build part is kept "
                        "(default: %(default)s)")
    o.MAX_PASSES.add(g, default=5)
    for flag, default, cat, what in (("--delta-r", 0.1, 4, "R"), ("--delta-u", 0.2, 3, "U"),
                                     ("--delta-a", 0.2, 2, "A")):
        name = flag[2:].replace("-", "_")
        g.add_argument(flag, type=o.FINITE, default=default,
                       help=f"category {cat} if {what}'s lower bound >= 1 - {name} (fraction; "
                            "default: %(default)s)")
    g.add_argument("--tau1", type=o.FINITE, default=0.05,
                   help="category 1 if A's upper bound <= tau1 (fraction; default: %(default)s)")
    o.LEVEL.add(g)
    g.add_argument("--ci", choices=("wilson", "clopper-pearson"), default="wilson",
                   help="binomial interval method (default: %(default)s)")
    o.CLIP.add(g)
    o.NORMALS.add(g, default=100)
    o.SEED.add(g, help="seed of the split, shuffles and draws (default: %(default)s)")
    o.add_runtime_args(p)
    o.OUT.add(p, required=True,
              help="folder for categories.json, records.csv, categories.png and perturbations")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
