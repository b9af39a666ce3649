"""``perturbscope harmless``: the harmless space of a model's first layer, checked on real images.

Steps: load a checkpoint (or build PairCNN / MLP / PatchCNN, optionally trained for a few epochs);
find the first layer (input normalisation and batch norm folded); report its harmless dimension and
rank in plain words ("INJECTIVE" when there is none); then, if the space is non-trivial, draw
harmless perturbations of the requested L2 sizes, verify the model's scores do not move (float64
mode and the model's own float32) against random perturbations of the same size, report the
largest in-box scale, split adversarial perturbations into harmless part and rest, and hide image
content (PNG panels). Everything goes to ``--out`` as ``summary.json`` and PNG files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbscope.cli.common import DATA_SOURCES, add_progress_arg, set_threads
from perturbscope.cli.main import UsageError
from perturbscope.fileio import atomic_savefig, atomic_write_text

ARCHS = ("paircnn", "mlp", "patchcnn")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def _build_model(
    args: argparse.Namespace, in_shape: tuple[int, ...]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    from perturbscope.harmless.models import PatchCNN
    from perturbscope.models import MLP, PairCNN
    from perturbscope.models.checkpoint import load_checkpoint

    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
        return model, {"source": str(args.checkpoint), **meta}
    torch.manual_seed(args.seed)
    c = in_shape[0]
    if args.arch == "paircnn":
        model = PairCNN(in_channels=c, width=args.width)
    elif args.arch == "mlp":
        model = MLP(int(np.prod(in_shape)), hidden=tuple(args.hidden))
    else:
        model = PatchCNN(in_channels=c, patch=args.patch, stem=args.stem)
    return model.eval(), {"source": f"built {args.arch} (seed {args.seed})"}


def _samples_png(x: torch.Tensor, deltas: dict[float, torch.Tensor], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from perturbscope.harmless.applications import _to_display

    sizes = sorted(deltas)
    fig, axes = plt.subplots(2, len(sizes) + 1, figsize=(2.0 * (len(sizes) + 1), 4.4), squeeze=False)
    axes[0][0].imshow(_to_display(x[0].double().numpy()), cmap="gray")
    axes[0][0].set_title("image", fontsize=8)
    axes[1][0].axis("off")
    for k, s in enumerate(sizes, start=1):
        d = deltas[s][0].numpy()
        axes[0][k].imshow(_to_display(d), cmap="gray")
        axes[0][k].set_title(f"harmless d, |d|={s:g}", fontsize=8)
        axes[1][k].imshow(_to_display(x[0].double().numpy() + d), cmap="gray")
        axes[1][k].set_title("x + d (rescaled)", fontsize=8)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
    return path


def _fingerprint_check(args, model, space, x, in_shape) -> dict[str, Any]:
    """Probe an exact copy, a slightly perturbed copy, a fresh model and any ``--suspect`` checkpoints."""
    import copy

    from perturbscope.harmless import fingerprint, identify
    from perturbscope.models.checkpoint import load_checkpoint

    probes = fingerprint(model, space, x, alpha=args.fingerprint_alpha, seed=args.seed)
    suspects: dict[str, torch.nn.Module] = {"exact copy": copy.deepcopy(model)}
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        first = next(p for p in tuned.parameters() if p.ndim > 1)
        first.add_(1e-3 * first.std() * torch.randn_like(first))
    suspects["copy, first-layer weights + 1e-3 sd noise"] = tuned
    if args.checkpoint is None:
        seed = args.seed
        args.seed = seed + 1
        suspects[f"fresh {args.arch} (seed {seed + 1})"] = _build_model(args, in_shape)[0]
        args.seed = seed
    for path in args.suspect or []:
        suspects[str(path)] = load_checkpoint(path)[0]
    out: dict[str, Any] = {"alpha": args.fingerprint_alpha, "atol": args.fingerprint_atol, "suspects": {}}
    print(
        f"\nfingerprint (harmless probes of L2 {args.fingerprint_alpha:g}; match if every score <= "
        f"{args.fingerprint_atol:g}):"
    )
    for name, sus in suspects.items():
        try:
            match, scores = identify(sus, probes, atol=args.fingerprint_atol)
        except RuntimeError as exc:
            out["suspects"][name] = {"error": str(exc)}
            print(f"  {name}: cannot run on these inputs ({exc})")
            continue
        out["suspects"][name] = {
            "match": match,
            "max_score": float(scores.max()),
            "min_score": float(scores.min()),
        }
        print(
            f"  {name:<45} match={match!s:<5} scores {float(scores.min()):.2e} .. {float(scores.max()):.2e}"
        )
    return out


def run(args: argparse.Namespace) -> int:
    if args.threads:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(args.threads):  # numpy/scipy BLAS too, not only torch
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from perturbscope.harmless import (
        first_layer_map,
        harmless_space,
        hide_content,
        interior_harmless_space,
        max_box_scale,
        privacy_panel,
        split_adversarial,
        verify_harmless,
    )

    set_threads(args.threads)
    if args.checkpoint is None and args.arch is None:
        raise UsageError("give --checkpoint FILE.pt or --arch {paircnn,mlp,patchcnn}")
    if any(s <= 0 for s in args.sizes):
        raise UsageError(f"--sizes must be positive L2 norms, got {args.sizes}")
    if args.images < 1:
        raise UsageError("--images must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = y = None
    model, meta = (None, {}) if args.checkpoint is None else _build_model(args, ())
    classes = args.classes or (meta.get("classes") if model is not None else None)
    if classes:
        from perturbscope.data import load_pair_task

        if len(classes) != 2:
            raise UsageError(f"classes must be two labels I J, got {classes}")
        task = load_pair_task(
            args.data, "test", *classes, path=args.data_path, limit=args.limit, seed=args.data_seed
        )
        x, y = task.x, task.y
        in_shape = tuple(x.shape[1:])
    else:
        in_shape = tuple(args.in_shape)
    if model is None:
        model, meta = _build_model(args, in_shape)
    if args.train_epochs:
        if x is None or not args.classes:
            raise UsageError("--train-epochs needs data: give --classes I J")
        if args.checkpoint:
            raise UsageError(
                "--train-epochs builds and trains a new model; it does not apply to --checkpoint"
            )
        from perturbscope.data import load_pair_task
        from perturbscope.train import TrainConfig, train_binary

        tr = load_pair_task(
            args.data, "train", *args.classes, path=args.data_path, limit=args.limit, seed=args.data_seed
        )
        hist = train_binary(
            model,
            tr.x,
            tr.y,
            TrainConfig(epochs=args.train_epochs, lr=args.lr, seed=args.seed),
            progress=not args.no_progress,
        )
        meta["train_accuracy_last_epoch"] = hist.accuracy[-1]
    try:
        lmap = first_layer_map(model, in_shape)
        space = harmless_space(lmap, method=args.method)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    except RuntimeError as exc:
        raise UsageError(f"the model does not accept inputs of shape {in_shape}: {exc}") from exc
    summary: dict[str, Any] = {"model": meta, "in_shape": list(in_shape), "space": space.summary()}
    print(space.report())
    if args.all_layers:
        from perturbscope.harmless import layer_report

        rows = layer_report(model, in_shape)
        summary["layers"] = rows
        print(f"\n{'layer':<14} {'reads':<16} {'n':>8} {'m':>8} {'harmless dim':>13} {'method':>10}")
        for r in rows:
            dim = "?" if r["harmless_dim"] is None else r["harmless_dim"]
            shape = "x".join(str(v) for v in r["in_shape"])
            print(f"{r['name']:<14} {shape:<16} {r['n']:>8} {r['m']:>8} {dim!s:>13} {r['method']:>10}")
        print("(each layer alone, on the tensor it reads; '?' = too large to decide here, bound n - m)\n")
    if space.dim == 0:
        print(
            "Nothing to sample: the first layer is injective, so every input change reaches the next layer."
        )
        _write_json(out / "summary.json", summary)
        print(f"summary: {out / 'summary.json'}")
        return 0
    if x is None:
        gen = torch.Generator().manual_seed(args.seed)
        x = torch.rand(args.images, *in_shape, generator=gen)
    x_v = x[: args.images]
    checks, deltas = [], {}
    for size in args.sizes:
        d = space.sample(x_v.shape[0], size, seed=args.seed)
        deltas[size] = d
        for dtype in (torch.float64, None) if args.float32 else (torch.float64,):
            res = verify_harmless(model, x_v, d, lmap, dtype=dtype, seed=args.seed).summary()
            res["size"] = size
            checks.append(res)
    summary["verification"] = checks
    box = max_box_scale(x_v, space.sample(x_v.shape[0], 1.0, seed=args.seed))
    box_info: dict[str, Any] = {
        "note": "largest t with x + t*d inside [0,1] for a unit harmless d; "
        "clipping instead breaks harmlessness",
        "full_space_max_scale_per_image": box.tolist(),
    }
    print(
        f"largest in-box scale of a unit harmless direction (full space): median {float(box.median()):.3g}"
        f"{' (0: some pixel sits on the box edge and d pushes it out)' if float(box.median()) == 0 else ''}"
    )
    try:
        inner = interior_harmless_space(lmap, x_v[0])
        if inner.dim:
            d_in = inner.sample(16, 1.0, seed=args.seed)
            t_in = max_box_scale(x_v[0:1].expand(16, *in_shape), d_in.to(x_v.dtype))
            box_info.update(
                {
                    "interior_space_dim_image0": inner.dim,
                    "interior_pixels_image0": inner.notes["interior_pixels"],
                    "interior_max_scale_median": float(t_in.median()),
                    "interior_max_scale_max": float(t_in.max()),
                }
            )
            print(
                f"image 0: harmless directions that keep edge pixels fixed: dim {inner.dim} "
                f"({inner.notes['interior_pixels']} interior pixels); largest in-box L2 size along 16 random "
                f"ones: median {float(t_in.median()):.3g}, max {float(t_in.max()):.3g}"
            )
        else:
            box_info["interior_space_dim_image0"] = 0
    except ValueError as exc:
        box_info["interior_error"] = str(exc)
    summary["box"] = box_info
    print(
        f"\n{'size':>8} {'dtype':>8} {'max |ds| harmless':>18} {'tolerance':>10} {'min |ds| random':>16} "
        f"{'labels kept':>11} {'random kept':>11}"
    )
    for c in checks:
        print(
            f"{c['size']:>8g} {c['dtype']:>8} {c['max_score_change']:>18.3e} "
            f"{c['max_score_tolerance']:>10.3e} "
            f"{c['min_random_score_change']:>16.3e} {c['labels_unchanged']:>11.2f} "
            f"{c['random_labels_unchanged']:>11.2f}"
        )
    paths = {"samples": str(_samples_png(x_v, deltas, out / "harmless_samples.png"))}
    if y is not None and args.attack_images:
        n_att = min(args.attack_images, x.shape[0])
        adv = split_adversarial(model, x[:n_att], y[:n_att], space, attack=args.attack, eps=args.eps)
        summary["adversarial_split"] = adv["summary"]
        s = adv["summary"]
        print(
            f"\nadversarial split ({s['attacked']}/{s['images']} attacked): mean angle to harmless part "
            f"{s['mean_angle_deg']:.1f} deg; harmless part moves scores by at most "
            f"{s['max_harmless_part_score_change']:.2e}; rest alone differs from the attack by at most "
            f"{s['max_rest_vs_adversarial_score_gap']:.2e}; flip rates attack/harmless/rest "
            f"{s['flip_rate_adversarial']:.2f}/{s['flip_rate_harmless_part']:.2f}/{s['flip_rate_rest']:.2f}"
        )
    if args.privacy_norm:
        priv = hide_content(
            model, x_v, y[: args.images] if y is not None else None, space, args.privacy_norm, seed=args.seed
        )
        summary["privacy"] = priv.metrics
        paths["privacy_panel"] = str(privacy_panel(priv, out / "privacy_panel.png"))
        pm = priv.metrics
        print(
            f"\nprivacy at L2 {args.privacy_norm:g}: agreement with clean predictions harmless "
            f"{pm['agreement_harmless']:.2f} vs Gaussian {pm['agreement_gaussian']:.2f}; viewed PSNR "
            f"{pm['psnr_viewed_harmless']:.1f} vs {pm['psnr_viewed_gaussian']:.1f} dB"
            + (
                f"; viewed SSIM {pm['ssim_viewed_harmless']:.3f} vs {pm['ssim_viewed_gaussian']:.3f}"
                if "ssim_viewed_harmless" in pm
                else ""
            )
        )
    if args.fingerprint:
        summary["fingerprint"] = _fingerprint_check(args, model, space, x_v, in_shape)
    summary["files"] = paths
    _write_json(out / "summary.json", summary)
    print(f"\nsummary: {out / 'summary.json'}\n" + "\n".join(f"{k}: {v}" for k, v in paths.items()))
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
    src.add_argument(
        "--checkpoint", metavar="FILE.pt", default=None, help="checkpoint from 'perturbscope train'"
    )
    src.add_argument(
        "--arch",
        choices=ARCHS,
        default=None,
        help="build a model instead: the paper's PairCNN, an MLP (first layer narrows) or a "
        "PatchCNN (patchify stem)",
    )
    src.add_argument("--width", type=float, default=0.25, help="PairCNN width (default: %(default)s)")
    src.add_argument("--hidden", type=int, nargs="+", default=[64], help="MLP hidden sizes (default: 64)")
    src.add_argument("--patch", type=int, default=4, help="PatchCNN patch size (default: %(default)s)")
    src.add_argument("--stem", type=int, default=16, help="PatchCNN stem channels (default: %(default)s)")
    src.add_argument(
        "--train-epochs",
        type=int,
        default=0,
        metavar="E",
        help="train the built model for E epochs on the task's train split (default: 0, untrained)",
    )
    src.add_argument("--lr", type=float, default=0.1, help="learning rate with --train-epochs (default: 0.1)")
    src.add_argument("--seed", type=int, default=0, help="seed of model init and sampling (default: 0)")
    g = p.add_argument_group("data (optional; random images in [0,1] without --classes)")
    g.add_argument("--data", choices=DATA_SOURCES, default="fashion-mnist-subset")
    g.add_argument("--data-path", default=None, metavar="DIR")
    g.add_argument("--classes", nargs=2, type=int, metavar=("I", "J"), default=None)
    g.add_argument(
        "--limit", type=int, default=200, metavar="N", help="images per split (default: %(default)s)"
    )
    g.add_argument("--data-seed", type=int, default=0)
    g.add_argument(
        "--in-shape",
        type=int,
        nargs=3,
        default=[3, 28, 28],
        metavar=("C", "H", "W"),
        help="input shape without data (default: 3 28 28)",
    )
    h = p.add_argument_group("harmless")
    h.add_argument("--method", default="auto", help="auto, dense, gram, patch, grouped or matfree")
    h.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=[1.0, 1e2, 1e4, 1e6],
        help="L2 sizes of the harmless perturbations (default: 1 1e2 1e4 1e6)",
    )
    h.add_argument("--images", type=int, default=8, help="images used for checks and panels (default: 8)")
    h.add_argument("--float32", action="store_true", help="also verify in the model's float32 arithmetic")
    h.add_argument(
        "--attack-images",
        type=int,
        default=8,
        help="images for the adversarial split (needs --classes; 0 = skip; default: 8)",
    )
    h.add_argument(
        "--attack",
        choices=("pgd_linf", "pgd_l2", "line_search"),
        default="pgd_linf",
        help="attack to split (default: %(default)s, the paper's protocol)",
    )
    h.add_argument("--eps", type=float, default=8 / 255, help="PGD budget (default: 8/255)")
    h.add_argument(
        "--privacy-norm",
        type=float,
        default=0.0,
        metavar="L2",
        help="hide image content with a harmless perturbation of this L2 norm (0 = skip)",
    )
    h.add_argument(
        "--all-layers",
        action="store_true",
        help="also report the harmless dimension of every Linear/Conv2d/avg-pool layer on its input",
    )
    h.add_argument(
        "--fingerprint",
        action="store_true",
        help="identify models with harmless probes: exact copy, perturbed copy, fresh model, --suspect",
    )
    h.add_argument("--suspect", nargs="+", default=None, metavar="FILE.pt", help="checkpoints to identify")
    h.add_argument("--fingerprint-alpha", type=float, default=1e3, help="probe L2 size (default: 1e3)")
    h.add_argument(
        "--fingerprint-atol",
        type=float,
        default=1e-6,
        help="largest relative score change of a match (default: 1e-6)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for summary.json and PNG files")
    add_progress_arg(p)
    p.set_defaults(func=run)
