"""``perturbscope categorize``: which of the four robustness categories a saved model is in,
at each perturbation size eps (robust / adversarial / universal / everything fools)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from perturbscope.cli.common import add_data_args, add_progress_arg, load_task
from perturbscope.cli.main import UsageError
from perturbscope.cli.universal_cmd import (
    P_CHOICES,
    atomic_write,
    output_kind,
    save_perturbation,
    write_json,
)
from perturbscope.models.checkpoint import load_checkpoint


def plot_staircase(results, path: Path, title: str = "") -> Path:
    """Rates A, U, R (with confidence intervals) and the category against eps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [r.eps for r in results]
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1.3]})
    for key, lab in (("attack", "A: some perturbation fools the input"),
                     ("universal", "U: one perturbation for all (held out)"),
                     ("random", "R: random perturbations")):
        est = [getattr(r, key) for r in results]
        rate = [e.rate for e in est]
        ax0.plot(eps, rate, marker="o", label=lab)
        ax0.fill_between(eps, [e.low for e in est], [e.high for e in est], alpha=0.2)
    t = results[0].thresholds
    lines: dict[float, list[str]] = {}
    for value, name in ((1 - t.delta_a, "1-delta_a"), (1 - t.delta_u, "1-delta_u"),
                        (1 - t.delta_r, "1-delta_r"), (t.tau_1, "tau_1")):
        lines.setdefault(round(value, 9), []).append(name)
    for value, names in lines.items():  # the decision thresholds (tested on the CI bounds)
        ax0.axhline(value, color="grey", ls=":", lw=0.8)
        ax0.text(eps[0], value, " " + ", ".join(names), fontsize=7, color="grey", va="bottom")
    ax0.set_ylabel("rate")
    ax0.set_ylim(-0.02, 1.02)
    ax0.legend(fontsize=8)
    cats = [r.category if r.category is not None else 1.5 for r in results]
    ax1.step(eps, cats, where="mid", marker="o")
    ax1.set_yticks([1, 1.5, 2, 3, 4], ["1 robust", "1 or 2", "2 adversarial", "3 universal",
                                       "4 everything"], fontsize=8)
    ax1.set_ylim(0.7, 4.3)
    ax1.set_xlabel(f"eps (L{'inf' if results[0].p == math.inf else 2}, pixel units)")
    if len(eps) > 1 and min(eps) > 0 and max(eps) / min(eps) > 20:
        ax1.set_xscale("log")
    if title:
        ax0.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    from perturbscope.measure.categories import CategoryThresholds, categorize_sweep

    if not args.eps or any(not e > 0 for e in args.eps):
        raise UsageError(f"--eps needs values > 0 (pixel units), got {args.eps}")
    try:
        thresholds = CategoryThresholds(delta_r=args.delta_r, delta_u=args.delta_u,
                                        delta_a=args.delta_a, tau_1=args.tau1)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not 0 < args.level < 1:
        raise UsageError(f"--level must be in (0, 1), got {args.level}")
    if not 0 < args.build_fraction < 1:
        raise UsageError(f"--build-fraction must be in (0, 1), got {args.build_fraction}")
    for name in ("draws", "restarts", "max_passes"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.normals < 0 or args.normals == 1:
        raise UsageError(f"--normals must be 0 (skip) or >= 2, got {args.normals}")
    model, meta = load_checkpoint(args.checkpoint)
    output = output_kind(model)
    classes = tuple(args.classes) if args.classes else tuple(meta.get("classes") or ())
    if len(classes) != 2:
        raise UsageError("--classes I J is required: the checkpoint does not record its task")
    task = load_task(args, args.split, classes)
    results = categorize_sweep(
        model, task.x, sorted(args.eps), p=P_CHOICES[args.norm], output=output, labels=task.y,
        correct_only=not args.all_images, build_fraction=args.build_fraction, draws=args.draws,
        k_restarts=args.restarts, max_passes=args.max_passes, thresholds=thresholds,
        level=args.level, method=args.ci, seed=args.seed,
        bounds=(0.0, 1.0) if args.clip else None, progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict = {}
    for r in results:
        if r.universal_result is not None:
            stem = f"universal_eps{r.eps:g}"
            files[stem] = save_perturbation(
                r.universal_result.perturbation, out, stem,
                title=f"best universal v at eps={r.eps:g} (L{args.norm}): held-out fooling "
                      f"{r.universal_result.heldout_fooling_rate:.1%}")
    records = pd.concat([r.records for r in results])
    files["records"] = str(atomic_write(out / "records.csv", lambda t: records.to_csv(t, index=False)))
    files["staircase"] = str(plot_staircase(results, out / "categories.png", task.describe()))
    summary = {"checkpoint": str(args.checkpoint), "task": task.describe(),
               "results": [r.summary() for r in results], "files": files}
    nres = None
    if args.normals:
        from perturbscope.measure.boundary_normals import boundary_normals, plot_singular_values

        nres = boundary_normals(model, task.x[: args.normals], output=output, seed=args.seed)
        summary["boundary_normals"] = nres.summary()
        files["normals_plot"] = str(plot_singular_values(
            nres, out / "singular_values.png",
            title=f"DeepFool normals at {nres.normals.shape[0]} images vs random"))
    write_json(out / "categories.json", summary)
    print(task.describe())
    for r in results:
        name = f"category {r.category} ({r.label})" if r.category else r.label
        print(f"\neps = {r.eps:g} (L{args.norm}): {name}\n  A {r.attack.text()}  "
              f"U {r.universal.text()}  R {r.random.text()}\n  {r.reason}")
    if nres is not None:
        print(f"\nboundary normals: {nres.k_normals} of {nres.normals.shape[0]} directions hold "
              f"{100 * nres.fraction:g}% of the squared singular mass (random unit vectors: "
              f"{nres.k_random}); few directions = correlated boundaries (favours category 3)")
    print(f"\nwritten to {out}: categories.json, records.csv, categories.png, "
          f"universal_eps*.npy/png" + (", singular_values.png" if nres is not None else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("categorize", help="robust / adversarial / universal / everything fools, per eps",
                       description="Decide which of the four robustness categories a saved pair model "
                                   "is in at each eps: A = share of images with some fooling "
                                   "perturbation (DeepFool), U = best universal perturbation's held-out "
                                   "fooling rate, R = share of random perturbations that fool; each "
                                   "with a binomial confidence interval. Norms in pixel units of images "
                                   "in [0, 1]; flips are changes of the predicted label.")
    p.add_argument("--checkpoint", required=True, metavar="FILE.pt",
                   help="checkpoint written by 'perturbscope train'")
    add_data_args(p, classes_required=False)
    g = p.add_argument_group("categories")
    g.add_argument("--eps", type=float, nargs="+", required=True,
                   help="ball radii in pixel units (one or more; L2 or Linf by --norm)")
    g.add_argument("--norm", choices=tuple(P_CHOICES), default="2", help="p of the ball (default: 2)")
    g.add_argument("--split", choices=("train", "test"), default="test",
                   help="images to use; split into build and evaluation parts (default: test)")
    g.add_argument("--build-fraction", type=float, default=0.5,
                   help="share of the images used to build universal perturbations (default: 0.5)")
    g.add_argument("--all-images", action="store_true",
                   help="also use misclassified images (default: correctly classified only)")
    g.add_argument("--draws", type=int, default=100,
                   help="random vectors on the eps-sphere, each applied to every image (default: 100)")
    g.add_argument("--restarts", type=int, default=3,
                   help="universal perturbations built per eps; the best on the build part is kept "
                        "(default: 3)")
    g.add_argument("--max-passes", type=int, default=5,
                   help="pass limit of each universal perturbation (default: 5)")
    g.add_argument("--delta-r", type=float, default=0.1,
                   help="category 4 if R's lower bound >= 1 - delta_r (fraction; default: 0.1)")
    g.add_argument("--delta-u", type=float, default=0.2,
                   help="category 3 if U's lower bound >= 1 - delta_u (fraction; default: 0.2)")
    g.add_argument("--delta-a", type=float, default=0.2,
                   help="category 2 if A's lower bound >= 1 - delta_a (fraction; default: 0.2)")
    g.add_argument("--tau1", type=float, default=0.05,
                   help="category 1 if A's upper bound <= tau1 (fraction; default: 0.05)")
    g.add_argument("--level", type=float, default=0.95,
                   help="confidence level of the intervals (default: 0.95)")
    g.add_argument("--ci", choices=("wilson", "clopper-pearson"), default="wilson",
                   help="binomial interval method (default: wilson)")
    g.add_argument("--clip", action="store_true", help="clip perturbed images to [0, 1]")
    g.add_argument("--normals", type=int, default=100, metavar="N",
                   help="images whose L2 DeepFool normals enter the singular-value analysis "
                        "(0: skip; default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split, shuffles and draws")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for categories.json, records.csv, categories.png and perturbations")
    add_progress_arg(p)
    p.set_defaults(func=run)
