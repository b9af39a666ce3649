"""The harmless space of a model's first layer, checked on real images (``perturbscope harmless``).

Steps: load a checkpoint (or build PairCNN / MLP / PatchCNN, optionally trained for a few epochs);
find the first layer (input normalisation and batch norm folded); report its harmless dimension and
rank in plain words ("INJECTIVE" when there is none); then, if the space is non-trivial, draw
harmless perturbations of the requested L2 sizes, verify the model's scores do not move (float64
mode and the model's own float32) against random perturbations of the same size, report the
largest in-box scale, split adversarial perturbations into harmless part and rest, and hide image
content (PNG panels). Everything goes to ``out`` as ``summary.json`` and PNG files.

:class:`HarmlessConfig` is torch-free (the command line reads its defaults); torch and the
harmless machinery are imported by :func:`run_harmless`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from perturbscope.figures import new_figure, save_figure
from perturbscope.fileio import atomic_write_text
from perturbscope.train_config import TrainConfig

__all__ = ["ARCHS", "ATTACKS", "HarmlessConfig", "run_harmless", "samples_panel"]

#: models the experiment can build: the paper's PairCNN, an MLP (first layer narrows), a PatchCNN
ARCHS: tuple[str, ...] = ("paircnn", "mlp", "patchcnn")
#: attacks whose perturbations are split into harmless part and rest
ATTACKS: tuple[str, ...] = ("pgd_linf", "pgd_l2", "line_search")


@dataclass(frozen=True)
class HarmlessConfig:
    """Settings of the harmless-space experiment (sizes are L2 norms in pixel units).

    Attributes:
        checkpoint: a checkpoint to load, or ``None`` to build ``arch``.
        arch, width, hidden, patch, stem: the model to build (one of :data:`ARCHS`).
        train_epochs, lr: train the built model this many epochs on the task (0: untrained).
        seed: seed of model init and sampling.
        data, data_path, classes, limit, data_seed: the test images (``classes=None`` and a
            built model: random images of shape ``in_shape`` in [0, 1]).
        method: how the null space is computed (``auto``, ``dense``, ``gram``, ``patch``,
            ``grouped``, ``matfree``).
        sizes: L2 sizes of the harmless perturbations drawn.
        images: images used for checks and panels. float32: also verify in float32.
        attack_images, attack, eps: adversarial split (0 images: skip; ``eps``: PGD budget).
        privacy_norm: hide image content with a harmless perturbation of this L2 norm (0: skip).
        all_layers: also report every Linear/Conv2d/avg-pool layer's harmless dimension.
        fingerprint, suspects, fingerprint_alpha, fingerprint_atol: identify models with
            harmless probes.
    """

    checkpoint: str | None = None
    arch: str | None = None
    width: float = 0.25
    hidden: tuple[int, ...] = (64,)
    patch: int = 4
    stem: int = 16
    train_epochs: int = 0
    lr: float = TrainConfig().lr
    seed: int = 0
    data: str = "fashion-mnist-subset"
    data_path: str | None = None
    classes: tuple[int, int] | None = None
    limit: int | None = 200
    data_seed: int = 0
    in_shape: tuple[int, int, int] = (3, 28, 28)
    method: str = "auto"
    sizes: tuple[float, ...] = (1.0, 1e2, 1e4, 1e6)
    images: int = 8
    float32: bool = False
    attack_images: int = 8
    attack: str = "pgd_linf"
    eps: float = 8 / 255
    privacy_norm: float = 0.0
    all_layers: bool = False
    fingerprint: bool = False
    suspects: tuple[str, ...] = ()
    fingerprint_alpha: float = 1e3
    fingerprint_atol: float = 1e-6


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def _build_model(cfg: HarmlessConfig, in_shape: tuple[int, ...]) -> tuple[Any, dict[str, Any]]:
    import numpy as np
    import torch

    from perturbscope.harmless.models import PatchCNN
    from perturbscope.models import MLP, PairCNN
    from perturbscope.models.checkpoint import load_checkpoint

    if cfg.checkpoint:
        model, meta = load_checkpoint(cfg.checkpoint)
        return model, {"source": str(cfg.checkpoint), **meta}
    torch.manual_seed(cfg.seed)
    c = in_shape[0]
    if cfg.arch == "paircnn":
        model = PairCNN(in_channels=c, width=cfg.width)
    elif cfg.arch == "mlp":
        model = MLP(int(np.prod(in_shape)), hidden=tuple(cfg.hidden))
    else:
        model = PatchCNN(in_channels=c, patch=cfg.patch, stem=cfg.stem)
    return model.eval(), {"source": f"built {cfg.arch} (seed {cfg.seed})"}


def samples_panel(x: Any, deltas: dict[float, Any], path: str | Path) -> Path:
    """PNG: the first image, and per size a harmless ``d`` and ``x + d`` (each min-max rescaled)."""
    from perturbscope.harmless.applications import _to_display

    sizes = sorted(deltas)
    fig, axes = new_figure(2, len(sizes) + 1, figsize=(2.0 * (len(sizes) + 1), 4.4), squeeze=False)
    x0 = x[0].detach().cpu().double().numpy()
    axes[0][0].imshow(_to_display(x0), cmap="gray")
    axes[0][0].set_title("image", fontsize=8)
    axes[1][0].axis("off")
    for k, s in enumerate(sizes, start=1):
        d = deltas[s][0].detach().cpu().numpy()
        axes[0][k].imshow(_to_display(d), cmap="gray")
        axes[0][k].set_title(f"harmless d, |d|={s:g}", fontsize=8)
        axes[1][k].imshow(_to_display(x0 + d), cmap="gray")
        axes[1][k].set_title("x + d (rescaled)", fontsize=8)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _fingerprint_check(cfg: HarmlessConfig, model, space, x, in_shape, echo) -> dict[str, Any]:
    """Probe an exact copy, a slightly perturbed copy, a fresh model and any ``suspects`` checkpoints."""
    import copy

    import torch

    from perturbscope.harmless import fingerprint, identify
    from perturbscope.models.checkpoint import load_checkpoint

    probes = fingerprint(model, space, x, alpha=cfg.fingerprint_alpha, seed=cfg.seed)
    suspects: dict[str, torch.nn.Module] = {"exact copy": copy.deepcopy(model)}
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        first = next(p for p in tuned.parameters() if p.ndim > 1)
        first.add_(1e-3 * first.std() * torch.randn_like(first))
    suspects["copy, first-layer weights + 1e-3 sd noise"] = tuned
    if cfg.checkpoint is None:
        fresh = replace(cfg, seed=cfg.seed + 1)
        suspects[f"fresh {cfg.arch} (seed {cfg.seed + 1})"] = _build_model(fresh, in_shape)[0].to(
            next((p.device for p in model.parameters()), torch.device("cpu")))
    for path in cfg.suspects:
        suspects[str(path)] = load_checkpoint(path)[0]
    out: dict[str, Any] = {"alpha": cfg.fingerprint_alpha, "atol": cfg.fingerprint_atol, "suspects": {}}
    echo(
        f"\nfingerprint (harmless probes of L2 {cfg.fingerprint_alpha:g}; match if every score <= "
        f"{cfg.fingerprint_atol:g}):"
    )
    for name, sus in suspects.items():
        try:
            match, scores = identify(sus, probes, atol=cfg.fingerprint_atol)
        except RuntimeError as exc:
            out["suspects"][name] = {"error": str(exc)}
            echo(f"  {name}: cannot run on these inputs ({exc})")
            continue
        out["suspects"][name] = {
            "match": match,
            "max_score": float(scores.max()),
            "min_score": float(scores.min()),
        }
        echo(
            f"  {name:<45} match={match!s:<5} scores {float(scores.min()):.2e} .. {float(scores.max()):.2e}"
        )
    return out


def run_harmless(cfg: HarmlessConfig, out: str | Path, *, device: Any = None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the experiment of :class:`HarmlessConfig`, write ``summary.json`` and PNGs to ``out``.

    Args:
        cfg: the settings.
        out: output folder (created).
        device: where the model runs (``None``: where it is; a checkpoint loads on the CPU).
        progress: show the training progress bar (``train_epochs > 0``).
        echo: receives each line of the report (default: ``print``).

    Returns:
        the summary written to ``summary.json``.

    Raises:
        ValueError: a bad setting, or a model that does not accept the inputs.
    """
    import torch

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

    if cfg.checkpoint is None and cfg.arch is None:
        raise ValueError("give --checkpoint FILE.pt or --arch {paircnn,mlp,patchcnn}")
    if cfg.arch is not None and cfg.arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {cfg.arch!r}")
    if any(s <= 0 for s in cfg.sizes):
        raise ValueError(f"--sizes must be positive L2 norms, got {list(cfg.sizes)}")
    if cfg.images < 1:
        raise ValueError("--images must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = y = None
    model, meta = (None, {}) if cfg.checkpoint is None else _build_model(cfg, ())
    classes = cfg.classes or (meta.get("classes") if model is not None else None)
    if classes:
        from perturbscope.data import load_pair_task

        if len(classes) != 2:
            raise ValueError(f"classes must be two labels I J, got {classes}")
        task = load_pair_task(cfg.data, "test", *classes, path=cfg.data_path, limit=cfg.limit,
                              seed=cfg.data_seed)
        x, y = task.x, task.y
        in_shape = tuple(x.shape[1:])
    else:
        in_shape = tuple(cfg.in_shape)
    if model is None:
        model, meta = _build_model(cfg, in_shape)
    if device is not None:
        model = model.to(device)
    if cfg.train_epochs:
        if x is None or not cfg.classes:
            raise ValueError("--train-epochs needs data: give --classes I J")
        if cfg.checkpoint:
            raise ValueError("--train-epochs builds and trains a new model; it does not apply to "
                             "--checkpoint")
        from perturbscope.data import load_pair_task
        from perturbscope.train import train_binary

        tr = load_pair_task(cfg.data, "train", *cfg.classes, path=cfg.data_path, limit=cfg.limit,
                            seed=cfg.data_seed)
        hist = train_binary(model, tr.x, tr.y, TrainConfig(epochs=cfg.train_epochs, lr=cfg.lr, seed=cfg.seed),
                            progress=progress, device=device or "cpu")
        meta["train_accuracy_last_epoch"] = hist.accuracy[-1]
    try:
        lmap = first_layer_map(model, in_shape)
        space = harmless_space(lmap, method=cfg.method)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc
    except RuntimeError as exc:
        raise ValueError(f"the model does not accept inputs of shape {in_shape}: {exc}") from exc
    summary: dict[str, Any] = {"model": meta, "in_shape": list(in_shape), "space": space.summary()}
    echo(space.report())
    if cfg.all_layers:
        from perturbscope.harmless import layer_report

        rows = layer_report(model, in_shape)
        summary["layers"] = rows
        echo(f"\n{'layer':<14} {'reads':<16} {'n':>8} {'m':>8} {'harmless dim':>13} {'method':>10}")
        for r in rows:
            dim = "?" if r["harmless_dim"] is None else r["harmless_dim"]
            shape = "x".join(str(v) for v in r["in_shape"])
            echo(f"{r['name']:<14} {shape:<16} {r['n']:>8} {r['m']:>8} {dim!s:>13} {r['method']:>10}")
        echo("(each layer alone, on the tensor it reads; '?' = too large to decide here, bound n - m)\n")
    if space.dim == 0:
        echo("Nothing to sample: the first layer is injective, so every input change reaches the next layer.")
        _write_json(out / "summary.json", summary)
        echo(f"summary: {out / 'summary.json'}")
        return summary
    if x is None:
        gen = torch.Generator().manual_seed(cfg.seed)
        x = torch.rand(cfg.images, *in_shape, generator=gen)
    x_v = x[: cfg.images]
    checks, deltas = [], {}
    for size in cfg.sizes:
        d = space.sample(x_v.shape[0], size, seed=cfg.seed)
        deltas[size] = d
        for dtype in (torch.float64, None) if cfg.float32 else (torch.float64,):
            res = verify_harmless(model, x_v, d, lmap, dtype=dtype, seed=cfg.seed).summary()
            res["size"] = size
            checks.append(res)
    summary["verification"] = checks
    box = max_box_scale(x_v, space.sample(x_v.shape[0], 1.0, seed=cfg.seed))
    box_info: dict[str, Any] = {
        "note": "largest t with x + t*d inside [0,1] for a unit harmless d; "
        "clipping instead breaks harmlessness",
        "full_space_max_scale_per_image": box.tolist(),
    }
    echo(
        f"largest in-box scale of a unit harmless direction (full space): median {float(box.median()):.3g}"
        f"{' (0: some pixel sits on the box edge and d pushes it out)' if float(box.median()) == 0 else ''}"
    )
    try:
        inner = interior_harmless_space(lmap, x_v[0])
        if inner.dim:
            d_in = inner.sample(16, 1.0, seed=cfg.seed)
            t_in = max_box_scale(x_v[0:1].expand(16, *in_shape), d_in.to(x_v.dtype))
            box_info.update(
                {
                    "interior_space_dim_image0": inner.dim,
                    "interior_pixels_image0": inner.notes["interior_pixels"],
                    "interior_max_scale_median": float(t_in.median()),
                    "interior_max_scale_max": float(t_in.max()),
                }
            )
            echo(
                f"image 0: harmless directions that keep edge pixels fixed: dim {inner.dim} "
                f"({inner.notes['interior_pixels']} interior pixels); largest in-box L2 size along 16 random "
                f"ones: median {float(t_in.median()):.3g}, max {float(t_in.max()):.3g}"
            )
        else:
            box_info["interior_space_dim_image0"] = 0
    except ValueError as exc:
        box_info["interior_error"] = str(exc)
    summary["box"] = box_info
    echo(
        f"\n{'size':>8} {'dtype':>8} {'max |ds| harmless':>18} {'tolerance':>10} {'min |ds| random':>16} "
        f"{'labels kept':>11} {'random kept':>11}"
    )
    for c in checks:
        echo(
            f"{c['size']:>8g} {c['dtype']:>8} {c['max_score_change']:>18.3e} "
            f"{c['max_score_tolerance']:>10.3e} "
            f"{c['min_random_score_change']:>16.3e} {c['labels_unchanged']:>11.2f} "
            f"{c['random_labels_unchanged']:>11.2f}"
        )
    paths = {"samples": str(samples_panel(x_v, deltas, out / "harmless_samples.png"))}
    if y is not None and cfg.attack_images:
        n_att = min(cfg.attack_images, x.shape[0])
        adv = split_adversarial(model, x[:n_att], y[:n_att], space, attack=cfg.attack, eps=cfg.eps)
        summary["adversarial_split"] = adv["summary"]
        s = adv["summary"]
        echo(
            f"\nadversarial split ({s['attacked']}/{s['images']} attacked): mean angle to harmless part "
            f"{s['mean_angle_deg']:.1f} deg; harmless part moves scores by at most "
            f"{s['max_harmless_part_score_change']:.2e}; rest alone differs from the attack by at most "
            f"{s['max_rest_vs_adversarial_score_gap']:.2e}; flip rates attack/harmless/rest "
            f"{s['flip_rate_adversarial']:.2f}/{s['flip_rate_harmless_part']:.2f}/{s['flip_rate_rest']:.2f}"
        )
    if cfg.privacy_norm:
        priv = hide_content(
            model, x_v, y[: cfg.images] if y is not None else None, space, cfg.privacy_norm, seed=cfg.seed
        )
        summary["privacy"] = priv.metrics
        paths["privacy_panel"] = str(privacy_panel(priv, out / "privacy_panel.png"))
        pm = priv.metrics
        echo(
            f"\nprivacy at L2 {cfg.privacy_norm:g}: agreement with clean predictions harmless "
            f"{pm['agreement_harmless']:.2f} vs Gaussian {pm['agreement_gaussian']:.2f}; viewed PSNR "
            f"{pm['psnr_viewed_harmless']:.1f} vs {pm['psnr_viewed_gaussian']:.1f} dB"
            + (
                f"; viewed SSIM {pm['ssim_viewed_harmless']:.3f} vs {pm['ssim_viewed_gaussian']:.3f}"
                if "ssim_viewed_harmless" in pm
                else ""
            )
        )
    if cfg.fingerprint:
        summary["fingerprint"] = _fingerprint_check(cfg, model, space, x_v, in_shape, echo)
    summary["files"] = paths
    _write_json(out / "summary.json", summary)
    echo(f"\nsummary: {out / 'summary.json'}\n" + "\n".join(f"{k}: {v}" for k, v in paths.items()))
    return summary
