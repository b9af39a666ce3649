"""Figures of the paper's experiments, drawn from per-image records (PNG files, written atomically).

* :func:`plot_norm_violins`: L1, L2 and Linf norms of the smallest adversarial perturbation
  (Figure 17) or of the smallest flipping random perturbation at one alpha (Figure 18), one
  violin per pair and split;
* :func:`plot_noise_curves`: accuracy, adversarial susceptibility and attack norm against the
  size of the training noise (Figures 15 cube, 16 ball);
* :func:`compute_panel_example` + :func:`plot_image_panel`: one image, its adversarial
  perturbation, a random perturbation that does not flip it and one that does, with norms
  (Figures 11, 12).

All norms are in pixel units of images in [0, 1].
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from perturbscope import figures  # noqa: E402
from perturbscope.attacks.base import norms  # noqa: E402
from perturbscope.attacks.line_search import LineSearch  # noqa: E402
from perturbscope.audit.schema import (
    alpha_key,  # noqa: E402
    alpha_keys,  # noqa: E402
)
from perturbscope.experiments.tables import pair_sort_key  # noqa: E402
from perturbscope.models.classifier import as_classifier  # noqa: E402
from perturbscope.probes.random_probe import random_probe  # noqa: E402
from perturbscope.sampling import uniform_ball  # noqa: E402
from perturbscope.validation import check_frame  # noqa: E402

__all__ = ["plot_norm_violins", "plot_noise_curves", "PanelExample", "compute_panel_example",
           "plot_image_panel", "save_figure"]

NORM_NAMES = {"l1": "L1", "l2": "L2 (Euclidean)", "linf": "Linf"}
SPLIT_COLORS = {"train": "#1f77b4", "test": "#ff7f0e"}


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically and free it (:func:`perturbscope.figures.save_figure`)."""
    return figures.save_figure(fig, path, dpi=dpi, format="png")


def _pick_alpha(records: pd.DataFrame, alpha: float | None) -> str:
    keys = alpha_keys(records.columns)
    if alpha is not None:
        key = alpha_key(alpha)
        if key not in keys:
            raise ValueError(f"alpha={alpha:g} is not in the records (alphas: "
                             f"{[float(k[1:]) for k in keys]})")
        return key
    if not keys:
        raise ValueError("records have no random-probe columns (flips_a*)")
    return keys[-1]


def plot_norm_violins(records: pd.DataFrame, path: str | os.PathLike, *, source: str = "adversarial",
                      alpha: float | None = None, title: str = "") -> Path:
    """Violin plots of L1, L2 and Linf norms per pair and split (paper Figures 17, 18).

    Args:
        records: per-image records with ``pair``, ``split``, ``correct``, ``adv_success`` and
            ``eps_{l1,l2,linf}`` (adversarial) or ``rand_min_{l1,l2,linf}_a{alpha}`` (random).
        path: PNG to write.
        source: ``"adversarial"``: the smallest adversarial perturbation of each attacked image;
            ``"random"``: the flipping random perturbation with the smallest L2 norm at ``alpha``.
        alpha: the random level (default: the largest in the records; paper: 10).

    A group with fewer than two values is drawn as points; an empty one is marked "none".
    """
    if source not in ("adversarial", "random"):
        raise ValueError(f"source must be 'adversarial' or 'random', got {source!r}")
    check_frame(records, ["pair", "split", "correct", "adv_success"])
    if source == "adversarial":
        cols = {n: f"eps_{n}" for n in NORM_NAMES}
        what = "smallest adversarial perturbation"
    else:
        key = _pick_alpha(records, alpha)
        cols = {n: f"rand_min_{n}_{key}" for n in NORM_NAMES}
        what = f"smallest flipping random perturbation, alpha={key[1:]}"
    check_frame(records, list(cols.values()))
    ok = records["correct"].astype(bool) & records["adv_success"].astype(bool)
    rec = records[ok]
    pairs = sorted(dict.fromkeys(records["pair"]), key=pair_sort_key)
    splits = [s for s in ("train", "test") if s in set(records["split"])] or \
        list(dict.fromkeys(records["split"]))
    width = 0.8 / len(splits)
    fig, axes = figures.new_figure(3, 1, figsize=(max(8.0, 1.1 * len(pairs) + 2.5), 9.5), sharex=True)
    for ax, (norm, col) in zip(axes, cols.items(), strict=True):
        for si, split in enumerate(splits):
            color = SPLIT_COLORS.get(split, f"C{si + 2}")
            for pi, pair in enumerate(pairs):
                v = rec.loc[(rec["pair"] == pair) & (rec["split"] == split), col].astype(float)
                v = v[np.isfinite(v)].to_numpy()
                pos = pi + (si - (len(splits) - 1) / 2) * width
                if len(np.unique(v)) >= 2:
                    parts = ax.violinplot([v], positions=[pos], widths=width * 0.95, showmedians=True)
                    for b in parts["bodies"]:
                        b.set_facecolor(color)
                        b.set_edgecolor(color)
                        b.set_alpha(0.55)
                    for k in ("cbars", "cmins", "cmaxes", "cmedians"):
                        if k in parts:
                            parts[k].set_color(color)
                elif len(v):
                    ax.plot([pos] * len(v), v, "o", color=color, ms=4)
                else:
                    ax.text(pos, 0.5, "none", rotation=90, ha="center", va="center", fontsize=7,
                            color="grey", transform=ax.get_xaxis_transform())
                if source == "random" and ax is axes[0]:  # how many of the attacked images are shown
                    n_att = int(((rec["pair"] == pair) & (rec["split"] == split)).sum())
                    ax.text(pos, 1.01, f"{len(v)}/{n_att}", ha="center", va="bottom", fontsize=6,
                            color=color, transform=ax.get_xaxis_transform())
        ax.set_ylabel(f"{NORM_NAMES[norm]} norm")
        ax.set_xlim(-0.6, len(pairs) - 0.4)
        ax.grid(axis="y", alpha=0.3)
    for si, split in enumerate(splits):
        n = int(np.isfinite(rec.loc[rec["split"] == split, cols["l2"]].astype(float)).sum())
        axes[0].plot([], [], "s", color=SPLIT_COLORS.get(split, f"C{si + 2}"), label=f"{split} ({n} images)")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xticks(range(len(pairs)), [str(p).replace("-", " vs ") for p in pairs])
    axes[-1].set_xlabel("class pair")
    shown = ("\nabove each violin: images with a flipping draw / attacked images (the others are absent)"
             if source == "random" else "")
    axes[0].set_title((title or f"Norms of the {what} (pixels in [0, 1])") + shown, fontsize=10,
                      pad=14 if shown else 6)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_noise_curves(summary: pd.DataFrame, kind: str, path: str | os.PathLike, *,
                      x: str = "noise_mean_l2", title: str = "") -> Path:
    """Accuracy, adversarial susceptibility and mean L2 attack norm against training-noise size.

    The analogue of the paper's Figure 15 (``kind="cube"``) and 16 (``kind="ball"``).

    Args:
        summary: :func:`perturbscope.experiments.noise.summarize_noise_records` output.
        kind: ``"cube"`` or ``"ball"``; the noise-free baseline (``noise_kind == "none"``), if
            present, is drawn at size 0.
        x: column for the x axis: ``"noise_mean_l2"`` (default; mean L2 norm of the noise,
            comparable across kinds), ``"noise_size"`` (rho or R) or ``"noise_rho"``.

    One colour per pair; solid lines train, dashed test. Error bars on the percentages are
    their 95% Clopper-Pearson intervals (where ``summary`` has the ``*_lo`` / ``*_hi`` columns
    of :func:`~perturbscope.audit.summary.summarize_groups`), on the attack norm one sample sd.
    """
    if kind not in ("cube", "ball"):
        raise ValueError(f"kind must be 'cube' or 'ball', got {kind!r}")
    if x not in ("noise_mean_l2", "noise_size", "noise_rho"):
        raise ValueError(f"x must be noise_mean_l2, noise_size or noise_rho, got {x!r}")
    check_frame(summary, ["pair", "split", "noise_kind", x, "accuracy", "adversarial_susceptibility",
                        "eps_l2_mean", "eps_l2_sd"], "summary")
    data = summary[summary["noise_kind"].isin([kind, "none"])]
    if not (data["noise_kind"] == kind).any():
        raise ValueError(f"summary has no {kind!r} noise level")
    panels = [("accuracy", "accuracy % (95% interval)"),
              ("adversarial_susceptibility", "adversarial susceptibility % (95% interval)"),
              ("eps_l2_mean", "mean L2 norm of the adversarial attack (bars: 1 sd)")]
    fig, axes = figures.new_figure(1, 3, figsize=(15, 4.4))
    pairs = sorted(dict.fromkeys(data["pair"]), key=pair_sort_key)
    for pi, pair in enumerate(pairs):
        for split, ls in (("train", "-"), ("test", "--")):
            g = data[(data["pair"] == pair) & (data["split"] == split)].sort_values(x)
            if g.empty:
                continue
            for ax, (col, _) in zip(axes, panels, strict=True):
                label = f"{str(pair).replace('-', ' vs ')} {split}"
                if col == "eps_l2_mean":
                    ax.errorbar(g[x], g[col], yerr=g["eps_l2_sd"].fillna(0), ls=ls, marker="o", ms=4,
                                color=f"C{pi}", capsize=3, label=label)
                elif {f"{col}_lo", f"{col}_hi"} <= set(g.columns):  # 95% Clopper-Pearson interval
                    err = np.vstack([(g[col] - g[f"{col}_lo"]).fillna(0),
                                     (g[f"{col}_hi"] - g[col]).fillna(0)])
                    ax.errorbar(g[x], g[col], yerr=err, ls=ls, marker="o", ms=4, color=f"C{pi}", capsize=3,
                                label=label)
                else:
                    ax.plot(g[x], g[col], ls=ls, marker="o", ms=4, color=f"C{pi}", label=label)
    xl = {"noise_mean_l2": "mean L2 norm of the training noise (pixels)",
          "noise_size": "rho (cube half-width)" if kind == "cube" else "R (ball radius)",
          "noise_rho": "matched cube half-width rho"}[x]
    for ax, (col, yl) in zip(axes, panels, strict=True):
        if col != "eps_l2_mean":
            lo = np.nanmin(data[col].to_numpy(dtype=float)) if data[col].notna().any() else 0.0
            ax.set_ylim(max(0.0, min(lo, 95.0) - 5.0), 101.0)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    shape = "cube U([-rho, rho]^d)" if kind == "cube" else "ball U(B_d(R)), R = rho sqrt(d/3)"
    fig.suptitle(title or f"Training with additive noise uniform in the {shape} (size 0 = no noise)")
    fig.tight_layout()
    return save_figure(fig, path)


@dataclass
class PanelExample:
    """One image and its four versions for a Figure 11/12 style panel.

    Attributes:
        index: position of the image in the task.
        label: its label (0/1); ``class_names`` the task's class names.
        alpha: random level; ``eps_l2`` the adversarial L2 size (pixel units); ``draws`` the
            number of random vectors tried; ``flip_count`` how many flipped the prediction.
        images: ``"original"``, ``"adversarial"``, ``"random_no_flip"``, ``"random_flip"`` ->
            ``(C, H, W)`` float tensors (not clipped), or ``None`` where no such draw exists.
        predictions: the model's label for each image present.
        norms: ``(L1, L2, Linf)`` of each perturbation (image minus original), pixel units.
    """

    index: int
    label: int
    class_names: tuple[str, str]
    alpha: float
    eps_l2: float
    draws: int
    flip_count: int
    images: dict[str, torch.Tensor | None] = field(default_factory=dict)
    predictions: dict[str, int] = field(default_factory=dict)
    norms: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def flip_fraction(self) -> float:
        return self.flip_count / self.draws


def compute_panel_example(
    model: nn.Module,
    task,
    *,
    index: int | None = None,
    alpha: float = 10.0,
    draws: int = 2000,
    seed: int = 0,
    s_max: float = 10.0,
    steps: int = 256,
    refine_tol: float | None = None,
    candidates: int = 64,
    output: str | None = None,
    batch_size: int = 256,
) -> PanelExample:
    """Compute the images of a Figure 11/12 panel for one image of ``task``.

    Runs the paper's line-search attack (:class:`~perturbscope.attacks.line_search.LineSearch`)
    and random probe (:func:`~perturbscope.probes.random_probe.random_probe`, the same seeded
    ``draws`` vectors in the unit ball, scaled by ``alpha * eps_adv``).

    Args:
        model: binary or multi-class model (see ``output``).
        task: a :class:`~perturbscope.data.tasks.PairTask` (``x`` ``(N, C, H, W)`` in [0, 1], ``y``).
        index: the image to show; it must be correctly classified and attackable. Default: among
            the first ``candidates`` images, the first attacked one that some but not all random
            draws flip (as in the paper's examples), else the first attacked one.
        alpha, draws, seed: random probe level, number of vectors and their seed (paper 10, 2000).
        s_max, steps, refine_tol: line-search settings (see ``LineSearch``).

    Raises:
        ValueError: ``index`` out of range, misclassified or not attackable; no attackable image
            among the candidates; bad ``alpha``/``draws``/``candidates``.
    """
    x_all, y_all = getattr(task, "x", None), getattr(task, "y", None)
    if not isinstance(x_all, torch.Tensor) or not isinstance(y_all, torch.Tensor):
        raise TypeError("task must have tensors x (N, C, H, W) and y (N,) (a PairTask)")
    if not (math.isfinite(alpha) and alpha > 0) or draws < 1 or candidates < 1:
        raise ValueError(f"need alpha > 0, draws >= 1, candidates >= 1; got {alpha}, {draws}, {candidates}")
    clf = as_classifier(model, output)
    output = clf.output
    n = x_all.shape[0]
    if index is not None:
        if not 0 <= int(index) < n:
            raise ValueError(f"index must be in [0, {n}), got {index}")
        idx = torch.tensor([int(index)])
    else:
        idx = torch.arange(min(candidates, n))
    x, y = x_all[idx], y_all[idx].long()
    correct = clf.predict(x, batch_size).cpu() == y.cpu()
    if index is not None and not bool(correct[0]):
        raise ValueError(f"image {index} is misclassified; pick a correctly classified one")
    x, y, idx = x[correct], y[correct], idx[correct]
    if len(idx) == 0:
        raise ValueError("no correctly classified image among the candidates")
    att = LineSearch(s_max=s_max, steps=steps, refine_tol=refine_tol,
                     batch_size=batch_size)(model, x, y, output=output)
    ok = att.success.cpu()
    if not bool(ok.any()):
        raise ValueError(f"the attack flipped none of the {len(idx)} candidate image(s) up to "
                         f"s_max={s_max}; raise s_max")
    x, idx, eps = x[ok], idx[ok], att.eps_l2.cpu()[ok]
    delta_adv = att.perturbation.cpu()[ok]
    pr = random_probe(model, x, eps, alphas=(alpha,), draws=draws, seed=seed, output=output,
                      batch_size=batch_size)
    counts = pr.counts[:, 0]
    some = ((counts > 0) & (counts < draws)).nonzero()[:, 0]
    j = int(some[0]) if len(some) else 0
    xi, ei = x[j].cpu(), float(eps[j])
    zeta = uniform_ball(draws, tuple(x.shape[1:]), seed=seed, dtype=x.dtype)
    perturbed = xi.unsqueeze(0) + (alpha * ei) * zeta
    clean = int(clf.predict(xi.unsqueeze(0), batch_size)[0])
    preds = clf.predict(perturbed, batch_size).cpu()
    adv_pred = int(clf.predict((xi + delta_adv[j]).unsqueeze(0), batch_size)[0])
    flips = preds != clean
    if int(flips.sum()) != int(counts[j]):  # the probe and this replay must agree
        raise RuntimeError(f"random probe counted {int(counts[j])} flips, replay {int(flips.sum())}")
    k_flip = int(pr.min_index[j, 0])
    no_flip = (~flips).nonzero()[:, 0]
    ex = PanelExample(index=int(idx[j]), label=int(y_all[idx[j]]),
                      class_names=tuple(getattr(task, "class_names", ("0", "1"))), alpha=float(alpha),
                      eps_l2=ei, draws=draws, flip_count=int(counts[j]))
    ex.images = {"original": xi, "adversarial": xi + delta_adv[j],
                 "random_no_flip": perturbed[int(no_flip[0])] if len(no_flip) else None,
                 "random_flip": perturbed[k_flip] if k_flip >= 0 else None}
    ex.predictions = {"original": clean, "adversarial": adv_pred}
    if len(no_flip):
        ex.predictions["random_no_flip"] = int(preds[int(no_flip[0])])
    if k_flip >= 0:
        ex.predictions["random_flip"] = int(preds[k_flip])
    for name, img in ex.images.items():
        if img is not None and name != "original":
            l1, l2, linf = norms((img - xi).unsqueeze(0))
            ex.norms[name] = (float(l1[0]), float(l2[0]), float(linf[0]))
    return ex


def _to_display(img: torch.Tensor) -> np.ndarray:
    a = img.detach().cpu().double().numpy()
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return np.clip(a, 0.0, 1.0)


def plot_image_panel(example: PanelExample, path: str | os.PathLike, title: str = "") -> Path:
    """Four images side by side (paper Figures 11, 12): (a) original, (b) adversarial, (c) a random
    perturbation of size ``alpha * eps_adv`` that does not flip the prediction, (d) one that does;
    each titled with the predicted class and the perturbation's L1, L2 and Linf norms.

    Perturbed images are not clipped to [0, 1] by the experiment; the display clips them.
    """
    if not isinstance(example, PanelExample):
        raise TypeError(f"example must be a PanelExample, got {type(example).__name__}")
    names = example.class_names
    spec = [("original", "(a) original"), ("adversarial", "(b) adversarial"),
            ("random_no_flip", f"(c) random, alpha={example.alpha:g}, no flip"),
            ("random_flip", f"(d) random, alpha={example.alpha:g}, flips")]
    fig, axes = figures.new_figure(1, 4, figsize=(13, 4.6), layout="constrained")
    grey = example.images["original"].ndim == 3 and example.images["original"].shape[0] == 1
    for ax, (key, head) in zip(axes, spec, strict=True):
        img = example.images.get(key)
        ax.set_xticks([])
        ax.set_yticks([])
        if img is None:
            ax.text(0.5, 0.5, f"none of the {example.draws}\nrandom draws\n"
                    + ("flips it" if key == "random_flip" else "leaves it unchanged"),
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_title(head, fontsize=9)
            continue
        ax.imshow(_to_display(img), cmap="gray" if grey else None, vmin=0, vmax=1,
                  interpolation="nearest")
        pred = example.predictions.get(key)
        lines = [head, f"predicted: {names[pred] if pred in (0, 1) else pred}"]
        if key in example.norms:
            l1, l2, linf = example.norms[key]
            lines.append(f"L1 {l1:.2f}, L2 {l2:.2f}, Linf {linf:.2f}")
        ax.set_title("\n".join(lines), fontsize=9)
    sub = (f"image {example.index} (label: {names[example.label]}), eps_adv = {example.eps_l2:.3f}; "
           f"{example.flip_count} of {example.draws} random draws "
           f"({100 * example.flip_fraction:.2f}%) flip it")
    fig.suptitle((title + "\n" if title else "") + sub, fontsize=10)
    return save_figure(fig, path)
