"""``perturbscope audit``: the paper's stability audit of a saved model on train and test images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from perturbscope.audit.config import AUDIT_ATTACKS, AuditConfig
from perturbscope.cli import options as o
from perturbscope.cli.common import load_model, load_task, place, set_threads

if TYPE_CHECKING:
    import torch

    from perturbscope.audit import AuditResult


def add_audit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit (paper Section 7.1)")
    g.add_argument("--splits", nargs="+", default=["train", "test"], choices=("train", "test"),
                   help="splits to audit (default: train test)")
    o.ALPHAS.add(g)
    o.DRAWS.add(g)
    o.S_MAX.add(g)
    o.STEPS.add(g)
    o.REFINE_TOL.add(g)
    o.PROBE_SEED.add(g)
    o.FORWARD_BATCH.add(g, help="perturbed inputs per forward pass of the audit (default: %(default)s)")
    g.add_argument("--channels-last", action="store_true",
                   help="run conv models in the channels_last layout (faster on CPU)")
    g.add_argument("--parquet", action="store_true", help="also write records.parquet")
    g.add_argument("--attack", choices=AUDIT_ATTACKS, default=o.AUDIT.attack,
                   help="eps_adv that scales the random probe: the paper's line search (default), our "
                        "minimal-norm attack, or the best of line search, DeepFool and min-norm per image "
                        "(column attack_won; docs/bounds.md)")
    g.add_argument("--lower-bound", action="store_true",
                   help="also compute a certified lower bound eps_lower on each correct image's L2 "
                        "distance (linear relaxation; slow for CNNs, docs/bounds.md)")
    g.add_argument("--rare-event", action="store_true",
                   help="also estimate, per image and alpha, the probability that uniform noise flips "
                        "the prediction (down to 1e-12 and below) and the draws needed to see one flip "
                        "(columns p_hat_a*, p_lo_a*, p_hi_a*, draws_needed_a*; plot flip_probability.png)")
    g.add_argument("--rare-event-budget", type=o.int_type(minimum=2), default=o.AUDIT.rare_event_budget,
                   metavar="F", help="forward passes per image and alpha for --rare-event (default: "
                                     "%(default)s; resolves p down to ~1e-10, below that an upper bound)")
    g.add_argument("--rare-event-method", choices=o.RARE_METHODS, default=o.AUDIT.rare_event_method,
                   help=o.RARE_METHODS_HELP)


def audit_config(args: argparse.Namespace) -> AuditConfig:
    return AuditConfig(alphas=tuple(args.alphas), draws=args.draws, seed=args.probe_seed,
                       s_max=args.s_max, steps=args.steps, refine_tol=args.refine_tol,
                       batch_size=args.forward_batch,
                       attack=getattr(args, "attack", "line-search"),
                       lower_bound=getattr(args, "lower_bound", False),
                       rare_event=getattr(args, "rare_event", False),
                       rare_event_budget=getattr(args, "rare_event_budget", o.AUDIT.rare_event_budget),
                       rare_event_method=getattr(args, "rare_event_method", o.AUDIT.rare_event_method))


def run_audit(model: torch.nn.Module, args: argparse.Namespace, classes: tuple[int, int], out: Path,
              title: str) -> AuditResult:
    """Audit ``model`` on the requested splits, write records, summary and plot to ``out``."""
    import torch

    from perturbscope.audit import audit_splits
    from perturbscope.report.audit_plot import plot_eps_vs_flip_rate

    splits = {}
    for s in args.splits:
        task = load_task(args, s, classes)
        model, x, y = place(args, model, task.x, task.y)
        splits[s] = (x, y)
    fmt = torch.contiguous_format
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        fmt = torch.channels_last
    cfg = audit_config(args)
    result = audit_splits(model, splits, output="sigmoid", config=cfg, progress=not args.no_progress,
                          memory_format=fmt)
    paths = result.save(out, parquet=args.parquet)
    plot = plot_eps_vs_flip_rate(result.records, cfg.alphas, out / "eps_vs_flip_rate.png", title=title)
    if cfg.rare_event:
        from perturbscope.audit.rare_event_columns import records_to_table
        from perturbscope.probes.rare_event import plot_flip_probability

        rare_plot = plot_flip_probability(records_to_table(result.records, cfg.alphas),
                                          out / "flip_probability.png", title=title,
                                          probe_draws=cfg.draws)
        print(f"rare-event plot: {rare_plot}")
    print(result.table())
    print(f"\nrecords: {paths['records']}\nsummary: {paths['summary']}\nplot:    {plot}")
    return result


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    model, meta, classes = load_model(args)
    out = Path(args.out)
    title = f"{args.checkpoint}: class {classes[0]} vs {classes[1]}"
    run_audit(model, args, classes, out, title=title)
    (out / "checkpoint_meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return 0


def register(sub) -> None:
    p = sub.add_parser("audit", help="adversarial and random susceptibility of a saved pair model",
                       description="Audit a checkpoint as in the paper: accuracy, adversarial susceptibility "
                                   "(gradient line search) and random susceptibility at alpha * eps_adv. "
                                   "All norms are in pixel units of images in [0, 1].")
    o.CHECKPOINT.add(p, required=True)
    o.add_data_args(p, classes_required=False)
    add_audit_args(p)
    o.add_runtime_args(p)
    o.OUT.add(p, required=True, help="folder for records.csv, summary.json, plot")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
