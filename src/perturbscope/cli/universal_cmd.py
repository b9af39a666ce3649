"""``perturbscope universal``: a universal perturbation of a saved pair model, with its random
baseline, the boundary-normal spectrum and (optionally) its transfer to other checkpoints."""

from __future__ import annotations

import argparse

from perturbscope.cli import options as o
from perturbscope.cli.common import load_model, load_task, place, set_threads

# the work, its files and its figures: perturbscope.experiments.universal.run_universal


def add_universal_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("universal perturbation (UAP paper, Algorithm 1)")
    o.NORM.add(g)
    g.add_argument("--xi", type=o.POSITIVE, required=True, metavar="XI",
                   help="ball radius in pixel units of images in [0, 1] (paper: Linf 10/255 = 0.039 "
                        "on 224x224 ImageNet images)")
    g.add_argument("--delta", type=o.float_type(0.0, 1.0, high_open=True), default=0.2,
                   help="stop once the build-set fooling rate reaches 1 - delta (default: %(default)s)")
    o.MAX_PASSES.add(g)
    g.add_argument("--mode", choices=("sequential", "batched"), default="batched",
                   help="sequential: the paper's one-image updates; batched: chunks of --chunk "
                        "images per update (default: %(default)s)")
    g.add_argument("--chunk", type=o.COUNT, default=32,
                   help="images per update in batched mode (default: %(default)s)")
    g.add_argument("--build-split", choices=("train", "test"), default="train",
                   help="split the perturbation is built on (default: %(default)s)")
    g.add_argument("--eval-split", choices=("train", "test"), default="test",
                   help="held-out split for the reported fooling rate (default: %(default)s)")
    o.CLIP.add(g)
    g.add_argument("--random-draws", type=o.COUNT, default=20, metavar="N",
                   help="random vectors with the same norm as v for the baseline (default: %(default)s)")
    o.NORMALS.add(g)
    g.add_argument("--transfer", nargs="*", default=[], metavar="FILE.pt",
                   help="other checkpoints: measure v's fooling rate on each, and theirs on this one")
    o.SEED.add(g, help="seed of the shuffles and the random baseline (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from perturbscope.experiments.universal import run_universal

    set_threads(args.threads)
    model, _, classes = load_model(args)
    build = load_task(args, args.build_split, classes)
    held = load_task(args, args.eval_split, classes)
    model, build.x, build.y, held.x, held.y = place(args, model, build.x, build.y, held.x, held.y)
    run_universal(model, build, held, args.out, checkpoint=args.checkpoint, xi=args.xi, norm=args.norm,
                  delta=args.delta, max_passes=args.max_passes, mode=args.mode, chunk=args.chunk,
                  clip=args.clip, random_draws=args.random_draws, normals=args.normals,
                  transfer=args.transfer, seed=args.seed, progress=not args.no_progress)
    return 0


def register(sub) -> None:
    p = sub.add_parser("universal", help="one perturbation that fools most images (UAP)",
                       description="Build a universal perturbation of a saved pair model on one split "
                                   "and measure its fooling rate on the other, beside random vectors of "
                                   "the same norm and the spectrum of DeepFool boundary normals. All "
                                   "norms are in pixel units of images in [0, 1].")
    o.add_checkpoint_args(p, required=True)
    o.add_data_args(p, classes_required=False)
    add_universal_args(p)
    o.add_runtime_args(p)
    o.OUT.add(p, required=True, help="folder for perturbation.npy/.png, universal.json and plots")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
