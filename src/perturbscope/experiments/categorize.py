"""Which of the four robustness categories a saved model is in, at each perturbation size eps
(robust / adversarial / universal / everything fools; ``perturbscope categorize``).

:func:`run_categorize` runs :func:`perturbscope.analyses.categories.categorize_sweep` (and the
boundary-normal spectrum), writes ``categories.json``, ``records.csv``, ``categories.png``
(:func:`plot_staircase`), the best universal perturbation per eps and ``singular_values.png``,
and prints the decision per eps. Norms in pixel units of images in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from perturbscope.experiments.universal import (
    P_OF_NORM,
    add_boundary_normals,
    normals_text,
    output_kind,
    save_perturbation,
    write_json,
)
from perturbscope.figures import new_figure, save_figure
from perturbscope.fileio import atomic_write

__all__ = ["plot_staircase", "run_categorize"]


def plot_staircase(results: Sequence[Any], path: str | Path, title: str = "") -> Path:
    """Rates A, U, R (with confidence intervals) and the category against eps."""
    eps = [r.eps for r in results]
    fig, (ax0, ax1) = new_figure(2, 1, figsize=(6.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
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
    return save_figure(fig, path, dpi=110, format="png")


def run_categorize(model: Any, task: Any, out: str | Path, *, checkpoint: str, eps: Sequence[float],
                   norm: str = "2", thresholds: Any = None, all_images: bool = False,
                   build_fraction: float = 0.5, draws: int = 100, restarts: int = 3, max_passes: int = 5,
                   level: float = 0.95, ci: str = "wilson", clip: bool = False, normals: int = 100,
                   seed: int = 0, progress: bool = True, echo: Callable[[str], None] = print
                   ) -> dict[str, Any]:
    """Decide the category of ``model`` on ``task`` at each ``eps``; write and print the results.

    Args:
        model: the pair model (its ``output_kind``, default ``"sigmoid"``), on ``task.x``'s device.
        task: a :class:`~perturbscope.data.tasks.PairTask`; split into build and evaluation parts.
        out: output folder (created).
        checkpoint: the model's file, for the summary.
        eps, norm: ball radii (pixel units) and ``"2"`` or ``"inf"``.
        thresholds: a :class:`~perturbscope.analyses.categories.CategoryThresholds` (default: its
            defaults).
        all_images: also use misclassified images. build_fraction: share of the images that
            build universal perturbations. draws: random vectors on the eps-sphere.
        restarts, max_passes: universal perturbations built per eps and their pass limit.
        level, ci: confidence level and binomial interval method.
        clip: clip perturbed images to the model's bounds.
        normals: images whose L2 DeepFool normals enter the spectrum (0: skip).
        seed: seed of the split, shuffles and draws. progress, echo: progress bars, printed lines.

    Returns:
        the summary written to ``categories.json``.
    """
    import pandas as pd

    from perturbscope.analyses.categories import categorize_sweep

    if not eps or any(not e > 0 for e in eps):
        raise ValueError(f"--eps needs values > 0 (pixel units), got {list(eps)}")
    output = output_kind(model)
    results = categorize_sweep(
        model, task.x, sorted(eps), p=P_OF_NORM[norm], output=output, labels=task.y,
        correct_only=not all_images, build_fraction=build_fraction, draws=draws,
        k_restarts=restarts, max_passes=max_passes, thresholds=thresholds,
        level=level, method=ci, seed=seed, clip=clip, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict = {}
    for r in results:
        if r.universal_result is not None:
            stem = f"universal_eps{r.eps:g}"
            files[stem] = save_perturbation(
                r.universal_result.perturbation, out, stem,
                title=f"best universal v at eps={r.eps:g} (L{norm}): held-out fooling "
                      f"{r.universal_result.heldout_fooling_rate:.1%}")
    records = pd.concat([r.records for r in results])
    files["records"] = str(atomic_write(out / "records.csv", lambda t: records.to_csv(t, index=False)))
    files["staircase"] = str(plot_staircase(results, out / "categories.png", task.describe()))
    summary = {"checkpoint": str(checkpoint), "task": task.describe(),
               "results": [r.summary() for r in results], "files": files}
    nres = None
    if normals:
        nres = add_boundary_normals(model, task.x[:normals], out, summary, files, output=output,
                                    seed=seed)
    write_json(out / "categories.json", summary)
    echo(task.describe())
    for r in results:
        name = f"category {r.category} ({r.label})" if r.category else r.label
        echo(f"\neps = {r.eps:g} (L{norm}): {name}\n  A {r.attack.text()}  "
             f"U {r.universal.text()}  R {r.random.text()}\n  {r.reason}")
    if nres is not None:
        echo(f"\n{normals_text(nres)}; few directions = correlated boundaries (favours category 3)")
    echo(f"\nwritten to {out}: categories.json, records.csv, categories.png, "
         f"universal_eps*.npy/png" + (", singular_values.png" if nres is not None else ""))
    return summary
