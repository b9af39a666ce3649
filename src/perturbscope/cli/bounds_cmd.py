"""``perturbscope bounds``: per-image interval [certified lower, best attack upper] on the L2
distance to the decision boundary, and the random-susceptibility table under the paper's
line-search scaling and under the best-upper-bound scaling."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from perturbscope.attacks.best import ATTACKS, best_attack, format_comparison, scaling_comparison
from perturbscope.audit import AuditConfig
from perturbscope.cli.common import add_data_args, add_progress_arg, load_task
from perturbscope.cli.main import UsageError
from perturbscope.fileio import atomic_write, atomic_write_text
from perturbscope.models.checkpoint import load_checkpoint
from perturbscope.models.runtime import predict


def interval_table(index: np.ndarray, label: np.ndarray, best, lower: np.ndarray | None) -> pd.DataFrame:
    """One row per attacked image: each attack's L2, the upper bound, the winner, the lower bound
    and the width ``upper - lower`` (absolute and relative to ``upper``), pixel units."""
    upper = best.result.eps_l2.cpu().numpy()
    cols = {"index": index, "label": label}
    for name, res in best.per_attack.items():
        cols[f"l2_{name}"] = res.eps_l2.cpu().numpy()
    cols.update(upper=upper, winner=best.winner)
    if lower is not None:
        lo = np.where(np.isfinite(upper), lower, np.nan)
        cols.update(lower=lower, width=upper - lo, rel_width=(upper - lo) / upper)
    return pd.DataFrame(cols)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    if args.draws < 1 or any(a <= 0 for a in args.alphas):
        raise UsageError("--draws must be >= 1 and every --alphas value > 0")
    if args.max_images is not None and args.max_images < 1:
        raise UsageError("--max-images must be >= 1")
    model, meta = load_checkpoint(args.checkpoint)
    classes = tuple(args.classes) if args.classes else tuple(meta.get("classes") or ())
    if len(classes) != 2:
        raise UsageError("--classes I J is required: the checkpoint does not record its task")
    task = load_task(args, args.split, classes)
    x, y = task.x, task.y
    if args.max_images is not None:
        x, y = x[:args.max_images], y[:args.max_images]
    output = getattr(model, "output_kind", "sigmoid")
    cfg = AuditConfig(alphas=tuple(args.alphas), draws=args.draws, seed=args.probe_seed,
                      s_max=args.s_max, steps=args.steps, refine_tol=args.refine_tol)
    ok = (predict(model, x, output) == y).numpy()
    idx = np.nonzero(ok)[0]
    if len(idx) == 0:
        raise UsageError("no correctly classified images to bound")
    xi, yi = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
    ls_opts = {"s_max": cfg.s_max, "steps": cfg.steps, "refine_tol": cfg.refine_tol}
    attacks = tuple(dict.fromkeys(["line-search", *args.attacks]))
    best = best_attack(model, xi, yi, output=output, attacks=attacks,
                       options={"line-search": ls_opts, **({"min-norm": {"steps": args.min_norm_steps}}
                                                           if "min-norm" in attacks else {})})
    lower = None
    if args.lower_bound != "none":
        from perturbscope.certify import certified_radius

        lower = certified_radius(model, xi, yi, output=output, method=args.lower_bound,
                                 upper=best.result.eps_l2.cpu(), rtol=args.certify_rtol,
                                 dtype=torch.float32 if args.float32 else torch.float64,
                                 progress=not args.no_progress).radius.numpy()
    table = interval_table(idx, yi.numpy(), best, lower)
    with pd.option_context("display.max_rows", None, "display.width", 160):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    won = pd.Series(best.winner).value_counts().to_dict()
    print(f"\nimages bounded: {len(idx)}; wins: {won}; median upper {np.nanmedian(table['upper']):.4f}")
    if lower is not None:
        print(f"median lower {np.nanmedian(table['lower']):.4f}; median width/upper "
              f"{np.nanmedian(table['rel_width']):.4f} (lower bound: {args.lower_bound})")
    ls_res, best_res = scaling_comparison(model, x, y, output=output, config=cfg, best=best,
                                          progress=not args.no_progress)
    print("\nrandom susceptibility, probe scaled by line search vs by the best upper bound:")
    print(format_comparison(ls_res, best_res))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "intervals.csv", lambda t: table.to_csv(t, index=False))
        summary = {"line-search": ls_res.summary["line-search"], "best": best_res.summary["best"],
                   "wins": won, "lower_bound": args.lower_bound, "seconds": best.seconds,
                   "config": cfg.to_dict()}
        atomic_write_text(out / "bounds_summary.json", json.dumps(summary, indent=2, default=str))
        print(f"\nintervals: {out / 'intervals.csv'}\nsummary:   {out / 'bounds_summary.json'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bounds", help="per-image [certified lower, best attack upper] L2 distance intervals",
                       description="For each correctly classified image: the best (smallest) flipping L2 "
                                   "perturbation over the paper's line search, DeepFool and our min-norm "
                                   "attack, a certified lower bound, and the audit's random-susceptibility "
                                   "table scaled by the line search and by the best upper bound. "
                                   "Pixel units.")
    p.add_argument("--checkpoint", required=True, metavar="FILE.pt",
                   help="checkpoint from 'perturbscope train'")
    add_data_args(p, classes_required=False)
    p.add_argument("--split", choices=("train", "test"), default="test", help="split (default: test)")
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="first N images of the split")
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS),
                   help="attacks for the upper bound (line-search always runs; default: all)")
    p.add_argument("--min-norm-steps", type=int, default=30, help="iterations of the min-norm attack")
    p.add_argument("--lower-bound", choices=("linear", "lipschitz", "none"), default="linear",
                   help="certified lower bound: linear relaxation with bisection (tight for small nets, "
                        "~1 min per image for a width-0.25 PairCNN), global Lipschitz (fast, loose), or none")
    p.add_argument("--certify-rtol", type=float, default=0.05,
                   help="relative bisection tolerance of the lower bound (default 0.05)")
    p.add_argument("--float32", action="store_true",
                   help="compute the linear relaxation in float32 (faster; slack 1e-4 absorbs rounding)")
    p.add_argument("--alphas", nargs="+", type=float, default=[1.0, 2.0, 5.0, 10.0],
                   help="random probe sizes as multiples of eps (default: 1 2 5 10)")
    p.add_argument("--draws", type=int, default=2000, help="random draws per image and alpha (default 2000)")
    p.add_argument("--probe-seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--s-max", type=float, default=10.0, help="line search: largest L2 scale (default 10)")
    p.add_argument("--steps", type=int, default=256, help="line search: number of scales (default 256)")
    p.add_argument("--refine-tol", type=float, default=None, help="line search: bisection tolerance")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, metavar="DIR", help="write intervals.csv and bounds_summary.json")
    add_progress_arg(p)
    p.set_defaults(func=run)
