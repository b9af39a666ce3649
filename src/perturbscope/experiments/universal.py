"""A universal perturbation of a saved pair model, with its random baseline, the boundary-normal
spectrum and (optionally) its transfer to other checkpoints (``perturbscope universal``).

:func:`run_universal` builds the perturbation (UAP paper, Algorithm 1) on one task and measures
it on another, writes ``perturbation.npy``/``.png``, ``fooling_history.png``,
``singular_values.png``, ``transfer.csv`` and ``universal.json``, and prints a summary.
:func:`save_perturbation` (with :func:`stretch`) and :func:`plot_history` are its figures.
All norms are in pixel units of images in [0, 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from perturbscope.figures import new_figure, save_figure
from perturbscope.fileio import atomic_write

__all__ = ["P_OF_NORM", "output_kind", "write_json", "stretch", "save_perturbation", "plot_history",
           "add_boundary_normals", "normals_text", "run_universal"]

#: the ``--norm`` names and their p
P_OF_NORM: dict[str, float] = {"2": 2.0, "inf": math.inf}


def write_json(path: str | Path, doc: dict) -> Path:
    """Atomic ``json.dump`` (NaN allowed, non-JSON objects via ``str``)."""
    return atomic_write(path, lambda t: t.write_text(json.dumps(doc, indent=2, default=str)))


def output_kind(model: Any) -> str:
    """The output convention a checkpointed model declares (pair models: ``"sigmoid"``)."""
    return getattr(model, "output_kind", None) or "sigmoid"


def stretch(v: Any) -> tuple[Any, float]:
    """Contrast-stretch a perturbation for display, symmetric about zero.

    Args:
        v: ``(C, H, W)``, ``(H, W)`` or ``(d,)`` array in pixel units.

    Returns:
        ``(img, scale)``: ``img`` is ``(H, W)`` (one channel) or ``(H, W, 3)`` in [0, 1] with
        ``0.5 + 0.5 * v / scale``, so zero is mid grey and ``+-scale = max |v|`` are white /
        black; a flat ``d``-vector is shown as a square if ``d`` is a square, else one row.
    """
    import numpy as np

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


def save_perturbation(v: Any, out: str | Path, stem: str = "perturbation", title: str = "") -> dict[str, str]:
    """Write ``v`` as ``stem.npy`` (float32, raw pixel units, the shape of one input) and
    ``stem.png``: the contrast-stretched image (:func:`stretch`: mid grey = 0, white / black =
    ``+- max|v|``), enlarged, with a colour bar in pixel units and the norms in the title. The
    PNG is for looking at the pattern; the ``.npy`` is the perturbation to reuse."""
    import numpy as np

    out = Path(out)
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
    fig, axes = new_figure(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
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
    png = save_figure(fig, out / f"{stem}.png", dpi=110, format="png")
    return {"npy": str(npy), "png": str(png)}


def plot_history(history: Sequence[float], target: float, path: str | Path, title: str = "",
                 best_pass: int | None = None) -> Path:
    """Build-set fooling rate after each pass, with the target ``1 - delta`` and the pass whose
    ``v`` is returned (``best_pass``, 1-based; 0 or ``None``: not marked)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = new_figure(figsize=(5.8, 3.8))
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
    return save_figure(fig, path, dpi=110, format="png")


def add_boundary_normals(model: Any, x: Any, out: Path, summary: dict, files: dict, *, output: str,
                         seed: int, images: str = "images") -> Any:
    """The DeepFool boundary-normal spectrum at ``x``, as ``summary["boundary_normals"]`` and the
    figure ``out / "singular_values.png"`` (``files["normals_plot"]``; its title counts the
    ``images``); returns the :func:`~perturbscope.analyses.boundary_normals.boundary_normals`
    result."""
    from perturbscope.analyses.boundary_normals import boundary_normals, plot_singular_values

    nres = boundary_normals(model, x, output=output, seed=seed)
    summary["boundary_normals"] = nres.summary()
    files["normals_plot"] = str(plot_singular_values(
        nres, out / "singular_values.png",
        title=f"DeepFool normals at {nres.normals.shape[0]} {images} vs random"))
    return nres


def normals_text(nres: Any) -> str:
    """The printed line of :func:`add_boundary_normals`' spectrum."""
    return (f"boundary normals: {nres.k_normals} of {nres.normals.shape[0]} directions hold "
            f"{100 * nres.fraction:g}% of the squared singular mass (random unit vectors: "
            f"{nres.k_random})")


def run_universal(model: Any, build: Any, held: Any, out: str | Path, *, checkpoint: str, xi: float,
                  norm: str = "inf", delta: float = 0.2, max_passes: int = 10, mode: str = "batched",
                  chunk: int = 32, clip: bool = False, random_draws: int = 20, normals: int = 200,
                  transfer: Sequence[str] = (), seed: int = 0, progress: bool = True,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Build a universal perturbation on ``build``, measure it on ``held``; write and print the results.

    Args:
        model: the pair model (its ``output_kind``, default ``"sigmoid"``), on the device of the
            tasks' inputs.
        build, held: :class:`~perturbscope.data.tasks.PairTask` of the build and held-out images.
        out: output folder (created).
        checkpoint: the model's file, for the summary.
        xi, norm: the ball ``||v||_p <= xi`` (``norm`` ``"2"`` or ``"inf"``), pixel units.
        delta, max_passes, mode, chunk: Algorithm 1 (stop at build fooling rate ``1 - delta``).
        clip: clip ``x + v`` to the model's bounds wherever the model sees it.
        random_draws: random vectors of the same norm as ``v`` for the baseline.
        normals: held-out images whose DeepFool normals enter the spectrum (0: skip).
        transfer: other checkpoints: ``v``'s fooling rate on each, and theirs on this one.
        seed: seed of the shuffles and the random baseline.
        progress: progress bars. echo: receives the printed lines.

    Returns:
        the summary written to ``universal.json``.
    """
    from perturbscope.attacks.universal import random_fooling, universal_perturbation
    from perturbscope.models.classifier import model_device

    output = output_kind(model)
    p = P_OF_NORM[norm]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = universal_perturbation(model, build.x, xi=xi, p=p, output=output, delta=delta,
                                 max_passes=max_passes, x_eval=held.x, mode=mode, chunk=chunk, clip=clip,
                                 seed=seed, progress=progress)
    v = res.perturbation
    files = save_perturbation(v, out, title=f"universal v (L{norm}, xi={xi:g})")
    norm_v = res.norms["l2"] if p == 2 else res.norms["linf"]
    rnd = random_fooling(model, held.x, radius=norm_v, p=p, draws=random_draws, output=output, clip=clip,
                         seed=seed + 1)
    rnd_l2 = random_fooling(model, held.x, radius=res.norms["l2"], p=2, draws=random_draws, output=output,
                            clip=clip, seed=seed + 2)
    summary = {"checkpoint": str(checkpoint), "task": held.describe(),
               "build": build.describe(), "universal": res.summary(),
               "random_baseline": {
                   "same_p_norm": {"kind": rnd.kind, "radius": rnd.radius, "fooling_rate": rnd.rate,
                                   "best_draw": float(rnd.per_draw.max()), "draws": random_draws},
                   "same_l2_norm": {"kind": "sphere", "radius": rnd_l2.radius,
                                    "fooling_rate": rnd_l2.rate,
                                    "best_draw": float(rnd_l2.per_draw.max()),
                                    "draws": random_draws}},
               "files": files}
    files["history_plot"] = str(plot_history(res.history, 1 - delta, out / "fooling_history.png",
                                             title=f"built on {build.describe()}",
                                             best_pass=res.best_pass))
    nres = None
    if normals:
        nres = add_boundary_normals(model, held.x[:normals], out, summary, files, output=output,
                                    seed=seed, images="held-out images")
    table = None
    if transfer:
        from perturbscope.analyses.transfer import transfer_matrix
        from perturbscope.models.checkpoint import load_checkpoint

        device = model_device(model)
        models = {"this": (model, output)}
        perts = {"this": v}
        for path in transfer:
            other = load_checkpoint(path)[0].to(device)
            name = Path(path).stem
            if name in models:
                name = f"{name}_{len(models)}"
            models[name] = (other, output_kind(other))
            perts[name] = universal_perturbation(
                other, build.x, xi=xi, p=p, output=output_kind(other), delta=delta,
                max_passes=max_passes, mode=mode, chunk=chunk, clip=clip,
                seed=seed, progress=progress).perturbation
        table = transfer_matrix(perts, models, held.x, clip=clip)
        files["transfer"] = str(atomic_write(out / "transfer.csv", lambda t: table.to_csv(t)))
        summary["transfer"] = {"rows_source_columns_target": table.to_dict(orient="index")}
    write_json(out / "universal.json", summary)
    ci = res.heldout_ci or (float("nan"), float("nan"))
    echo(f"{held.describe()}\nuniversal v (p={norm}, xi={xi:g}): held-out fooling "
         f"{100 * res.heldout_fooling_rate:.1f}% (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%), "
         f"build {100 * res.fooling_rate:.1f}% after {res.passes} passes in {res.seconds:.1f} s; "
         f"||v||_2 = {res.norms['l2']:.3f}, ||v||_inf = {res.norms['linf']:.4f}")
    echo(f"random vectors of the same L{norm} norm fool {100 * rnd.rate:.1f}% ({rnd.kind}); "
         f"of the same L2 norm (sphere): {100 * rnd_l2.rate:.1f}%")
    if nres is not None:
        echo(normals_text(nres))
    if table is not None:
        echo("\ntransfer (rows: model the perturbation was built on; columns: model it is "
             f"applied to; held-out fooling rate):\n{table.round(3).to_string()}")
    echo(f"\nwritten to {out}: " + ", ".join(Path(f).name for f in files.values()) + ", universal.json")
    return summary
