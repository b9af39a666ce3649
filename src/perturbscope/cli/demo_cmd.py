"""``perturbscope demo``: train a small pair model on the repo's Fashion-MNIST subset and audit it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from perturbscope.cli import options as o
from perturbscope.cli.audit_cmd import add_audit_args, run_audit
from perturbscope.cli.common import set_threads
from perturbscope.cli.train_cmd import add_training_args, fit


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"perturbscope demo: class {args.classes[0]} vs {args.classes[1]} on {args.data}, "
          f"width {args.width}, dropout {args.dropout}, {args.epochs} epochs on all training images, "
          f"audit of at most {args.limit} images per split, {args.draws} random draws "
          f"(paper: width 1, dropout 0.4, 100 epochs, all images, 2000 draws)")
    model, meta = fit(args, out / "model.pt", train_limit=None)
    names = meta["class_names"]
    print(f"trained: accuracy train {meta['accuracy']['train']:.2f}%, test {meta['accuracy']['test']:.2f}%")
    run_audit(model, args, tuple(args.classes), out,
              title=f"{names[0]} (0) vs {names[1]} (1), {args.data}, width {args.width}")
    print(f"done in {time.perf_counter() - t0:.0f} s; model: {out / 'model.pt'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="train and audit a small pair model on bundled data (no network)",
                       description="Train the paper's network (scaled down) on the Fashion-MNIST subset "
                                   "shipped with perturbscope, audit it and print the paper-style table.")
    o.add_data_args(p, classes_required=False)
    add_training_args(p)
    add_audit_args(p)
    o.add_runtime_args(p)
    o.OUT.add(p, default="demo-output", help="output folder (default: %(default)s)")
    o.add_progress_arg(p)
    # a small demo: one pair, 200 audited images per split, 25 epochs, 500 draws (paper: 2000)
    p.set_defaults(func=run, classes=[7, 8], limit=200, epochs=25, draws=500)
