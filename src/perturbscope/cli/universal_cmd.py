"""``perturbscope universal``: a universal perturbation of a saved pair model, with its random
baseline, the boundary-normal spectrum and (optionally) its transfer to other checkpoints."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from perturbscope.cli.common import add_data_args, add_progress_arg, load_task
from perturbscope.cli.main import UsageError
from perturbscope.fileio import atomic_write
from perturbscope.models.checkpoint import load_checkpoint

P_CHOICES = {"2": 2.0, "inf": math.inf}


def write_json(path: Path, doc: dict) -> Path:
    """Atomic ``json.dump`` (NaN allowed, non-JSON objects via ``str``)."""
    return atomic_write(path, lambda t: t.write_text(json.dumps(doc, indent=2, default=str)))


def output_kind(model: torch.nn.Module) -> str:
    """The output convention a checkpointed model declares (pair models: ``"sigmoid"``)."""
    return getattr(model, "output_kind", None) or "sigmoid"


def stretch(v: np.ndarray) -> tuple[np.ndarray, float]:
    """Contrast-stretch a perturbation for display, symmetric about zero.

    Args:
        v: ``(C, H, W)``, ``(H, W)`` or ``(d,)`` array in pixel units.

    Returns:
        ``(img, scale)``: ``img`` is ``(H, W)`` (one channel) or ``(H, W, 3)`` in [0, 1] with
        ``0.5 + 0.5 * v / scale``, so zero is mid grey and ``+-scale = max |v|`` are white /
        black; a flat ``d``-vector is shown as a square if ``d`` is a square, else one row.
    """
    img = np.asarray(v, dtype=np.float64)
    if img.ndim == 3:  # (C, H, W) -> (H, W) or (H, W, C)
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
        if img.ndim == 3 and img.shape[-1] != 3:
            img = img.mean(-1)
    elif img.ndim == 1:
        side = math.isqrt(img.size)
        img = img.reshape(side, side) if side * side == img.size else img.reshape(1, -1)
    elif img.ndim != 2:
        raise ValueError(f"cannot show a perturbation of shape {v.shape} as an image")
    scale = float(np.abs(img).max()) if img.size else 0.0
    out = 0.5 + 0.5 * img / scale if scale > 0 else np.full_like(img, 0.5)
    return out.clip(0.0, 1.0), scale


def save_perturbation(v: torch.Tensor, out: Path, stem: str = "perturbation",
                      title: str = "") -> dict[str, str]:
    """Write ``v`` as ``stem.npy`` (float32, raw pixel units, the shape of one input) and
    ``stem.png``: the contrast-stretched image (:func:`stretch`: mid grey = 0, white / black =
    ``+- max|v|``), enlarged, with a colour bar in pixel units and the norms in the title. The
    PNG is for looking at the pattern; the ``.npy`` is the perturbation to reuse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = v.detach().cpu().double().numpy()
    npy = atomic_write(out / f"{stem}.npy", lambda t: np.save(t, arr.astype(np.float32)))
    img, scale = stretch(arr)
    flat = arr.reshape(-1)
    if img.ndim == 2:
        grey = img
    else:  # RGB: also show the channel mean, stretched the same way (symmetric about 0)
        mean = ((img - 0.5) * 2).mean(-1)
        top = float(np.abs(mean).max())
        grey = 0.5 + 0.5 * mean / top if top > 0 else np.full_like(mean, 0.5)
    panels = [(grey, "gray", "")] if img.ndim == 2 else [(img, None, "RGB channels"),
                                                          (grey, "gray", "mean over channels")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (im_arr, cmap, sub) in zip(axes[0], panels, strict=True):
        if cmap:  # grey: 0 = mid grey, the colour bar in units of the stretch (+-1 = +-max)
            im = ax.imshow(im_arr * 2 - 1, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                         label="v / max|v|" if img.ndim == 2 else "mean(v) / max|mean(v)|")
        else:
            ax.imshow(im_arr, interpolation="nearest")
        ax.set_title(sub, fontsize=8)
        ax.set_axis_off()
    norms = (f"||v||_2 = {np.linalg.norm(flat):.3g}, ||v||_inf = "
             f"{np.abs(flat).max() if flat.size else 0:.3g}\ncontrast-stretched: grey = 0, "
             f"white / black = +-max|v| = +-{scale:.3g}")
    fig.suptitle((title + "\n" if title else "") + norms, fontsize=8)
    fig.tight_layout()
    png = atomic_write(out / f"{stem}.png", lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)
    return {"npy": str(npy), "png": str(png)}


def plot_history(history: list[float], target: float, path: Path, title: str = "",
                 best_pass: int | None = None) -> Path:
    """Build-set fooling rate after each pass, with the target ``1 - delta`` and the pass whose
    ``v`` is returned (``best_pass``, 1-based; 0 or ``None``: not marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    ax.plot(range(1, len(history) + 1), history, marker="o", label="build set")
    if best_pass:
        ax.plot([best_pass], [history[best_pass - 1]], "o", ms=12, mfc="none", color="C3",
                 label=f"returned v (pass {best_pass})")
    ax.axhline(target, color="grey", ls=":", label=f"target 1 - delta = {target:g}")
    ax.set_xlabel("pass over the build set")
    ax.set_ylabel("fooling rate")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)
    return path


def add_universal_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("universal perturbation (UAP paper, Algorithm 1)")
    g.add_argument("--norm", choices=tuple(P_CHOICES), default="inf",
                   help="p of the ball ||v||_p <= xi (default: %(default)s)")
    g.add_argument("--xi", type=float, required=True,
                   help="ball radius in pixel units of images in [0, 1] (paper: Linf 10/255 = 0.039 "
                        "on 224x224 ImageNet images)")
    g.add_argument("--delta", type=float, default=0.2,
                   help="stop once the build-set fooling rate reaches 1 - delta (default: %(default)s)")
    g.add_argument("--max-passes", type=int, default=10,
                   help="pass limit over the build images (default: %(default)s)")
    g.add_argument("--mode", choices=("sequential", "batched"), default="batched",
                   help="sequential: the paper's one-image updates; batched: chunks of --chunk "
                        "images per update (default: %(default)s)")
    g.add_argument("--chunk", type=int, default=32,
                   help="images per update in batched mode (default: %(default)s)")
    g.add_argument("--build-split", choices=("train", "test"), default="train",
                   help="split the perturbation is built on (default: %(default)s)")
    g.add_argument("--eval-split", choices=("train", "test"), default="test",
                   help="held-out split for the reported fooling rate (default: %(default)s)")
    g.add_argument("--clip", action="store_true",
                   help="clip x + v to [0, 1] wherever the model sees it (default: unclipped, "
                        "as in the paper)")
    g.add_argument("--random-draws", type=int, default=20,
                   help="random vectors with the same norm as v for the baseline (default: 20)")
    g.add_argument("--normals", type=int, default=200, metavar="N",
                   help="held-out images whose DeepFool normals enter the spectrum analysis "
                        "(0: skip; default: %(default)s)")
    g.add_argument("--transfer", nargs="*", default=[], metavar="FILE.pt",
                   help="other checkpoints: measure v's fooling rate on each, and theirs on this one")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the shuffles and the random baseline (default: 0)")


def _check_args(args: argparse.Namespace) -> None:
    if not (args.xi > 0 and math.isfinite(args.xi)):
        raise UsageError(f"--xi must be a finite number > 0 (pixel units), got {args.xi}")
    if not 0 <= args.delta < 1:
        raise UsageError(f"--delta must be in [0, 1), got {args.delta}")
    for name in ("max_passes", "chunk", "random_draws"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.normals < 0 or args.normals == 1:
        raise UsageError(f"--normals must be 0 (skip) or >= 2, got {args.normals}")


def run(args: argparse.Namespace) -> int:
    from perturbscope.attacks.universal import random_fooling, universal_perturbation
    from perturbscope.measure.boundary_normals import boundary_normals, plot_singular_values

    _check_args(args)
    model, meta = load_checkpoint(args.checkpoint)
    output = output_kind(model)
    classes = tuple(args.classes) if args.classes else tuple(meta.get("classes") or ())
    if len(classes) != 2:
        raise UsageError("--classes I J is required: the checkpoint does not record its task")
    build = load_task(args, args.build_split, classes)
    held = load_task(args, args.eval_split, classes)
    p = P_CHOICES[args.norm]
    bounds = (0.0, 1.0) if args.clip else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = universal_perturbation(model, build.x, xi=args.xi, p=p, output=output,
                                 delta=args.delta, max_passes=args.max_passes, x_eval=held.x,
                                 mode=args.mode, chunk=args.chunk, bounds=bounds, seed=args.seed,
                                 progress=not args.no_progress)
    v = res.perturbation
    files = save_perturbation(v, out, title=f"universal v (L{args.norm}, xi={args.xi:g})")
    norm_v = res.norms["l2"] if p == 2 else res.norms["linf"]
    rnd = random_fooling(model, held.x, radius=norm_v, p=p, draws=args.random_draws,
                         output=output, bounds=bounds, seed=args.seed + 1)
    rnd_l2 = random_fooling(model, held.x, radius=res.norms["l2"], p=2, draws=args.random_draws,
                            output=output, bounds=bounds, seed=args.seed + 2)
    summary = {"checkpoint": str(args.checkpoint), "task": held.describe(),
               "build": build.describe(), "universal": res.summary(),
               "random_baseline": {
                   "same_p_norm": {"kind": rnd.kind, "radius": rnd.radius, "fooling_rate": rnd.rate,
                                   "best_draw": float(rnd.per_draw.max()), "draws": args.random_draws},
                   "same_l2_norm": {"kind": "sphere", "radius": rnd_l2.radius,
                                    "fooling_rate": rnd_l2.rate,
                                    "best_draw": float(rnd_l2.per_draw.max()),
                                    "draws": args.random_draws}},
               "files": files}
    files["history_plot"] = str(plot_history(res.history, 1 - args.delta, out / "fooling_history.png",
                                             title=f"built on {build.describe()}",
                                             best_pass=res.best_pass))
    nres = None
    if args.normals:
        nres = boundary_normals(model, held.x[: args.normals], output=output, seed=args.seed)
        summary["boundary_normals"] = nres.summary()
        files["normals_plot"] = str(plot_singular_values(
            nres, out / "singular_values.png",
            title=f"DeepFool normals at {nres.normals.shape[0]} held-out images vs random"))
    if args.transfer:
        from perturbscope.measure.transfer import transfer_matrix

        models = {"this": (model, output)}
        perts = {"this": v}
        for path in args.transfer:
            other, _ = load_checkpoint(path)
            name = Path(path).stem
            if name in models:
                name = f"{name}_{len(models)}"
            models[name] = (other, output_kind(other))
            perts[name] = universal_perturbation(
                other, build.x, xi=args.xi, p=p, output=output_kind(other), delta=args.delta,
                max_passes=args.max_passes, mode=args.mode, chunk=args.chunk, bounds=bounds,
                seed=args.seed, progress=not args.no_progress).perturbation
        table = transfer_matrix(perts, models, held.x, bounds=bounds)
        files["transfer"] = str(atomic_write(out / "transfer.csv", lambda t: table.to_csv(t)))
        summary["transfer"] = {"rows_source_columns_target": table.to_dict(orient="index")}
    write_json(out / "universal.json", summary)
    ci = res.heldout_ci or (float("nan"), float("nan"))
    print(f"{held.describe()}\nuniversal v (p={args.norm}, xi={args.xi:g}): held-out fooling "
          f"{100 * res.heldout_fooling_rate:.1f}% (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%), "
          f"build {100 * res.fooling_rate:.1f}% after {res.passes} passes in {res.seconds:.1f} s; "
          f"||v||_2 = {res.norms['l2']:.3f}, ||v||_inf = {res.norms['linf']:.4f}")
    print(f"random vectors of the same L{args.norm} norm fool {100 * rnd.rate:.1f}% ({rnd.kind}); "
          f"of the same L2 norm (sphere): {100 * rnd_l2.rate:.1f}%")
    if nres is not None:
        print(f"boundary normals: {nres.k_normals} of {nres.normals.shape[0]} directions hold "
              f"{100 * nres.fraction:g}% of the squared singular mass (random unit vectors: "
              f"{nres.k_random})")
    if args.transfer:
        print("\ntransfer (rows: model the perturbation was built on; columns: model it is "
              f"applied to; held-out fooling rate):\n{table.round(3).to_string()}")
    print(f"\nwritten to {out}: " + ", ".join(Path(f).name for f in files.values()) +
          ", universal.json")
    return 0


def register(sub) -> None:
    p = sub.add_parser("universal", help="one perturbation that fools most images (UAP)",
                       description="Build a universal perturbation of a saved pair model on one split "
                                   "and measure its fooling rate on the other, beside random vectors of "
                                   "the same norm and the spectrum of DeepFool boundary normals. All "
                                   "norms are in pixel units of images in [0, 1].")
    p.add_argument("--checkpoint", required=True, metavar="FILE.pt",
                   help="checkpoint written by 'perturbscope train'")
    add_data_args(p, classes_required=False)
    add_universal_args(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for perturbation.npy/.png, universal.json and plots")
    add_progress_arg(p)
    p.set_defaults(func=run)
