"""``perturbscope harmless``: the harmless space of a model's first layer, checked on real images.

Parsing only: the experiment is :func:`perturbscope.experiments.harmless.run_harmless` (steps,
files and printed report described there).
"""

from __future__ import annotations

import argparse

from perturbscope.cli import options as o
from perturbscope.cli.common import set_threads, use_device
from perturbscope.experiments.harmless import ARCHS, ATTACKS, HarmlessConfig

H = HarmlessConfig()


def config(args: argparse.Namespace) -> HarmlessConfig:
    """The :class:`HarmlessConfig` the options name."""
    return HarmlessConfig(
        checkpoint=args.checkpoint, arch=args.arch, width=args.width, hidden=tuple(args.hidden),
        patch=args.patch, stem=args.stem, train_epochs=args.train_epochs, lr=args.lr, seed=args.seed,
        data=args.data, data_path=args.data_path, classes=tuple(args.classes) if args.classes else None,
        limit=args.limit, data_seed=args.data_seed, in_shape=tuple(args.in_shape), method=args.method,
        sizes=tuple(args.sizes), images=args.images, float32=args.float32,
        attack_images=args.attack_images, attack=args.attack, eps=args.eps,
        privacy_norm=args.privacy_norm, all_layers=args.all_layers, fingerprint=args.fingerprint,
        suspects=tuple(args.suspect or ()), fingerprint_alpha=args.fingerprint_alpha,
        fingerprint_atol=args.fingerprint_atol)


def run(args: argparse.Namespace) -> int:
    from perturbscope.experiments.harmless import run_harmless

    cfg = config(args)
    device = use_device(args.device)
    set_threads(args.threads)
    if args.threads:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(args.threads):  # numpy/scipy BLAS too, not only torch
            run_harmless(cfg, args.out, device=device, progress=not args.no_progress)
    else:
        run_harmless(cfg, args.out, device=device, progress=not args.no_progress)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "harmless",
        help="harmless perturbations: null space of the first layer, checked on images",
        description="Report the harmless (null) space of a model's first layer, sample harmless "
        "perturbations of any L2 size and verify the model ignores them; split "
        "adversarial perturbations; hide image content. Norms in pixel units.",
    )
    src = p.add_argument_group("model")
    o.CHECKPOINT.add(src)
    src.add_argument("--arch", choices=ARCHS, default=H.arch,
                     help="build a model instead: the paper's PairCNN, an MLP (first layer narrows) or a "
                          "PatchCNN (patchify stem)")
    o.WIDTH.add(src, default=H.width, help="PairCNN width (default: %(default)s)")
    o.HIDDEN.add(src, default=list(H.hidden))
    src.add_argument("--patch", type=o.COUNT, default=H.patch,
                     help="PatchCNN patch size (default: %(default)s)")
    src.add_argument("--stem", type=o.COUNT, default=H.stem,
                     help="PatchCNN stem channels (default: %(default)s)")
    src.add_argument("--train-epochs", type=o.NONNEG_INT, default=H.train_epochs, metavar="E",
                     help="train the built model for E epochs on the task's train split "
                          "(default: %(default)s = untrained)")
    o.LR.add(src, default=H.lr, help="learning rate with --train-epochs (default: %(default)s)")
    o.SEED.add(src, default=H.seed, help="seed of model init and sampling (default: %(default)s)")
    g = o.add_data_args(p, classes_required=False, limit=H.limit,
                        title="data (optional; random images in [0,1] without --classes)")
    g.add_argument("--in-shape", type=o.COUNT, nargs=3, default=list(H.in_shape), metavar=("C", "H", "W"),
                   help="input shape without data (default: %(default)s)")
    h = p.add_argument_group("harmless")
    h.add_argument("--method", default=H.method, help="auto, dense, gram, patch, grouped or matfree "
                                                      "(default: %(default)s)")
    h.add_argument("--sizes", type=o.POSITIVE, nargs="+", default=list(H.sizes), metavar="L2",
                   help="L2 sizes of the harmless perturbations, pixel units (default: %(default)s)")
    h.add_argument("--images", type=o.COUNT, default=H.images,
                   help="images used for checks and panels (default: %(default)s)")
    h.add_argument("--float32", action="store_true", help="also verify in the model's float32 arithmetic")
    h.add_argument("--attack-images", type=o.NONNEG_INT, default=H.attack_images,
                   help="images for the adversarial split (needs --classes; 0 = skip; default: %(default)s)")
    h.add_argument("--attack", choices=ATTACKS, default=H.attack,
                   help="attack to split (default: %(default)s, the paper's protocol)")
    h.add_argument("--eps", type=o.POSITIVE, default=H.eps, metavar="LINF",
                   help="PGD budget, pixel units (default: 8/255)")
    h.add_argument("--privacy-norm", type=o.NONNEG, default=H.privacy_norm, metavar="L2",
                   help="hide image content with a harmless perturbation of this L2 norm (0 = skip)")
    h.add_argument("--all-layers", action="store_true",
                   help="also report the harmless dimension of every Linear/Conv2d/avg-pool layer on its "
                        "input")
    h.add_argument("--fingerprint", action="store_true",
                   help="identify models with harmless probes: exact copy, perturbed copy, fresh model, "
                        "--suspect")
    h.add_argument("--suspect", nargs="+", default=None, metavar="FILE.pt", help="checkpoints to identify")
    h.add_argument("--fingerprint-alpha", type=o.POSITIVE, default=H.fingerprint_alpha, metavar="L2",
                   help="probe L2 size (default: %(default)s)")
    h.add_argument("--fingerprint-atol", type=o.POSITIVE, default=H.fingerprint_atol,
                   help="largest relative score change of a match (default: %(default)s)")
    o.add_runtime_args(p)
    o.OUT.add(p, required=True, help="folder for summary.json and PNG files")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
