"""``perturbscope audit``: the paper's stability audit of a saved model on train and test images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from perturbscope.audit import AuditConfig, AuditResult, audit_splits
from perturbscope.cli.common import add_data_args, add_progress_arg, load_task
from perturbscope.cli.main import UsageError
from perturbscope.models.checkpoint import load_checkpoint
from perturbscope.plotting import plot_eps_vs_flip_rate


def add_audit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit (paper Section 7.1)")
    g.add_argument("--splits", nargs="+", default=["train", "test"], choices=("train", "test"),
                   help="splits to audit (default: train test)")
    g.add_argument("--alphas", nargs="+", type=float, default=[1.0, 2.0, 5.0, 10.0],
                   help="random perturbation sizes as multiples of each image's eps_adv (default: 1 2 5 10)")
    g.add_argument("--draws", type=int, default=2000,
                   help="random vectors uniform in the unit L2 ball, shared by all images (paper: 2000)")
    g.add_argument("--s-max", type=float, default=10.0,
                   help="largest L2 scale of the line search, in pixel units (default: %(default)s)")
    g.add_argument("--steps", type=int, default=256,
                   help="equally spaced scales in (0, s-max] tried by the line search (paper: 256)")
    g.add_argument("--refine-tol", type=float, default=None, metavar="L2",
                   help="bisect each flipping bracket down to this L2 width in pixel units (default: off, "
                        "as in the paper)")
    g.add_argument("--probe-seed", type=int, default=0, help="seed of the random vectors (default: 0)")
    g.add_argument("--forward-batch", type=int, default=256,
                   help="perturbed inputs per forward pass of the audit (default: 256)")
    g.add_argument("--channels-last", action="store_true",
                   help="run conv models in the channels_last layout (faster on CPU)")
    g.add_argument("--parquet", action="store_true", help="also write records.parquet")
    g.add_argument("--attack", choices=("line-search", "min-norm", "best"), default="line-search",
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
    g.add_argument("--rare-event-budget", type=int, default=2000, metavar="F",
                   help="forward passes per image and alpha for --rare-event (default: %(default)s; "
                        "resolves p down to ~1e-10, below that an upper bound)")
    g.add_argument("--rare-event-method", choices=("splitting", "lines", "is"), default="splitting",
                   help="splitting: subset simulation, no assumption (default); lines: adaptive "
                        "line sampling, several times cheaper on the pair CNNs and no floor on p, "
                        "assumes one crossing per line; is: importance sampling along the "
                        "gradient, reliable only for near-linear boundaries (docs/rare_event.md)")


def audit_config(args: argparse.Namespace) -> AuditConfig:
    return AuditConfig(alphas=tuple(args.alphas), draws=args.draws, seed=args.probe_seed,
                       s_max=args.s_max, steps=args.steps, refine_tol=args.refine_tol,
                       batch_size=args.forward_batch,
                       attack=getattr(args, "attack", "line-search"),
                       lower_bound=getattr(args, "lower_bound", False),
                       rare_event=getattr(args, "rare_event", False),
                       rare_event_budget=getattr(args, "rare_event_budget", 2000),
                       rare_event_method=getattr(args, "rare_event_method", "splitting"))


def run_audit(model: torch.nn.Module, args: argparse.Namespace, classes: tuple[int, int], out: Path,
              title: str) -> AuditResult:
    """Audit ``model`` on the requested splits, write records, summary and plot to ``out``."""
    splits = {}
    for s in args.splits:
        task = load_task(args, s, classes)
        splits[s] = (task.x, task.y)
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
        from perturbscope.measure.rare_event import plot_flip_probability, records_to_table

        rare_plot = plot_flip_probability(records_to_table(result.records, cfg.alphas),
                                          out / "flip_probability.png", title=title,
                                          probe_draws=cfg.draws)
        print(f"rare-event plot: {rare_plot}")
    print(result.table())
    print(f"\nrecords: {paths['records']}\nsummary: {paths['summary']}\nplot:    {plot}")
    return result


def run(args: argparse.Namespace) -> int:
    model, meta = load_checkpoint(args.checkpoint)
    classes = tuple(args.classes) if args.classes else tuple(meta.get("classes") or ())
    if len(classes) != 2:
        raise UsageError("--classes I J is required: the checkpoint does not record its task")
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
    p.add_argument("--checkpoint", required=True, metavar="FILE.pt",
                   help="checkpoint written by 'perturbscope train'")
    add_data_args(p, classes_required=False)
    add_audit_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for records.csv, summary.json, plot")
    add_progress_arg(p)
    p.set_defaults(func=run)
