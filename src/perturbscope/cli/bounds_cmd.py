"""``perturbscope bounds``: per-image interval [certified lower, best attack upper] on the L2
distance to the decision boundary, and the random-susceptibility table under the paper's
line-search scaling and under the best-upper-bound scaling."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from perturbscope.audit.config import AuditConfig
from perturbscope.cli import options as o
from perturbscope.cli.common import load_model, load_task, place, set_threads
from perturbscope.cli.main import UsageError

if TYPE_CHECKING:  # torch, numpy and pandas are imported when the command runs
    import numpy as np
    import pandas as pd

#: attacks whose smallest success is the upper bound (the names of attacks.best.DEFAULT_BEST)
ATTACKS: tuple[str, ...] = ("line-search", "deepfool", "min-norm")


def interval_table(index: np.ndarray, label: np.ndarray, best, lower: np.ndarray | None) -> pd.DataFrame:
    """One row per attacked image: each attack's L2, the upper bound, the winner, the lower bound
    and the width ``upper - lower`` (absolute and relative to ``upper``), pixel units."""
    import numpy as np
    import pandas as pd

    upper = best.eps_l2.cpu().numpy()
    cols = {"index": index, "label": label}
    for name, res in best.extras["per_attack"].items():
        cols[f"l2_{name}"] = res.eps_l2.cpu().numpy()
    cols.update(upper=upper, winner=best.extras["winner"])
    if lower is not None:
        lo = np.where(np.isfinite(upper), lower, np.nan)
        cols.update(lower=lower, width=upper - lo, rel_width=(upper - lo) / upper)
    return pd.DataFrame(cols)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    import torch

    from perturbscope.attacks import BestOf, DeepFool, LineSearch, MinNorm
    from perturbscope.audit.compare import format_comparison, scaling_comparison
    from perturbscope.fileio import atomic_write, atomic_write_text
    from perturbscope.models.classifier import as_classifier

    set_threads(args.threads)
    model, meta, classes = load_model(args)
    task = load_task(args, args.split, classes)
    x, y = task.x, task.y
    if args.max_images is not None:
        x, y = x[:args.max_images], y[:args.max_images]
    model, x, y = place(args, model, x, y)
    output = getattr(model, "output_kind", "sigmoid")
    cfg = AuditConfig(alphas=tuple(args.alphas), draws=args.draws, seed=args.probe_seed,
                      s_max=args.s_max, steps=args.steps, refine_tol=args.refine_tol)
    ok = (as_classifier(model, output).predict(x).cpu() == y.cpu()).numpy()
    idx = np.nonzero(ok)[0]
    if len(idx) == 0:
        raise UsageError("no correctly classified images to bound")
    rows = torch.from_numpy(idx).to(x.device)
    xi, yi = x[rows], y[rows]
    members = {"line-search": LineSearch(s_max=cfg.s_max, steps=cfg.steps, refine_tol=cfg.refine_tol),
               "deepfool": DeepFool(), "min-norm": MinNorm(steps=args.min_norm_steps)}
    names = tuple(dict.fromkeys(["line-search", *args.attacks]))
    best = BestOf(attacks=tuple(members[a] for a in names))(model, xi, yi, output=output)
    lower = None
    if args.lower_bound != "none":
        from perturbscope.certify import certified_radius

        lower = certified_radius(model, xi, yi, output=output, method=args.lower_bound,
                                 upper=best.eps_l2.cpu(), rtol=args.certify_rtol,
                                 dtype=torch.float32 if args.float32 else torch.float64,
                                 progress=not args.no_progress).radius.numpy()
    table = interval_table(idx, yi.cpu().numpy(), best, lower)
    with pd.option_context("display.max_rows", None, "display.width", 160):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    won = pd.Series(best.extras["winner"]).value_counts().to_dict()
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
                   "wins": won, "lower_bound": args.lower_bound, "seconds": best.extras["seconds"],
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
    o.add_checkpoint_args(p, required=True)
    o.add_data_args(p, classes_required=False)
    o.SPLIT.add(p)
    p.add_argument("--max-images", type=o.COUNT, default=None, metavar="N",
                   help="first N images of the split (default: all)")
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS),
                   help="attacks for the upper bound (line-search always runs; default: all)")
    p.add_argument("--min-norm-steps", type=o.COUNT, default=30, metavar="K",
                   help="iterations of the min-norm attack (default: %(default)s)")
    p.add_argument("--lower-bound", choices=("linear", "lipschitz", "none"), default="linear",
                   help="certified lower bound: linear relaxation with bisection (tight for small nets, "
                        "~1 min per image for a width-0.25 PairCNN), global Lipschitz (fast, loose), or none")
    p.add_argument("--certify-rtol", type=o.OPEN_FRACTION, default=0.05,
                   help="relative bisection tolerance of the lower bound (default: %(default)s)")
    p.add_argument("--float32", action="store_true",
                   help="compute the linear relaxation in float32 (faster; slack 1e-4 absorbs rounding)")
    o.ALPHAS.add(p)
    o.DRAWS.add(p)
    o.PROBE_SEED.add(p)
    o.S_MAX.add(p)
    o.STEPS.add(p)
    o.REFINE_TOL.add(p)
    o.add_runtime_args(p)
    o.OUT.add(p, help="write intervals.csv and bounds_summary.json here (default: none = do not write)")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
