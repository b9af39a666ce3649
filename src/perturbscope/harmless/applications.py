"""What harmless spaces show and are good for: contrast with adversarial perturbations, hiding content.

* :func:`split_adversarial` attacks each image (L-inf PGD as in the paper, L2 PGD, both
  :func:`perturbscope.attacks.pgd.pgd_perturbation`, or the audit's gradient line search), splits
  each adversarial ``delta`` into ``P delta`` (harmless) and ``(I - P) delta``, and measures: the
  harmless part alone leaves the scores unchanged, the rest alone gives exactly the adversarial
  scores (the whole attack lives outside the harmless space).
* :func:`hide_content` adds one large harmless perturbation per image and compares it with Gaussian
  noise of the same L2 norm: agreement with the clean predictions and accuracy (utility), PSNR and
  SSIM against the original (hiding; scikit-image's SSIM), and :func:`privacy_panel` draws the images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perturbscope.attacks.line_search import LineSearch
from perturbscope.attacks.pgd import pgd_perturbation
from perturbscope.figures import new_figure, save_figure
from perturbscope.harmless.space import HarmlessSpace
from perturbscope.harmless.verify import _scores_and_labels, decompose_perturbation
from perturbscope.models.classifier import Classifier, as_classifier
from perturbscope.sampling import make_generator, uniform_sphere

__all__ = [
    "Fingerprint",
    "fingerprint",
    "identify",
    "split_adversarial",
    "hide_content",
    "PrivacyResult",
    "privacy_panel",
    "psnr",
    "ssim",
]


def _score_classifier(model: nn.Module | Classifier, output: str | None) -> Classifier:
    """The model as a Classifier (scores: :func:`~perturbscope.harmless.verify.model_scores`); a bare
    module gets no bounds, as the split's perturbations are not clipped."""
    if isinstance(model, Classifier):
        return model
    return Classifier(model, output, bounds=None)


def split_adversarial(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    space: HarmlessSpace,
    attack: str = "pgd_linf",
    output: str | None = None,
    eps: float = 8 / 255,
    s_max: float = 10.0,
    steps: int = 256,
) -> dict[str, Any]:
    """Attack, then split every adversarial ``delta`` into harmless part and rest; measure both.

    Args:
        model: classifier whose first layer ``space`` belongs to.
        x, y: images ``(N, *in_shape)`` in [0, 1] and labels ``(N,)``.
        attack: ``"pgd_linf"`` (the paper's protocol: ``eps``, step ``eps / 8``, 20 steps, random start
            ``0.001 N(0, 1)`` seed 0, cross-entropy; :func:`perturbscope.attacks.pgd.pgd_perturbation`,
            ``delta`` not clipped to the pixel box), ``"pgd_l2"`` (L2 ball of radius ``eps``, step
            ``2.5 eps / 20``), or ``"line_search"`` (the audit's attack,
            :class:`~perturbscope.attacks.line_search.LineSearch`). Gradient-direction attacks
            (line search, L2 PGD from zero) give ``delta = A^T g`` in the row space of the first layer,
            so their harmless part is exactly zero (angle 90 degrees): that is a finding, not a bug.
            Sign steps (L-inf PGD) leave the row space, which makes the split non-trivial.

    Returns:
        plain data: per-image ``records`` and a ``summary`` (means/maxima) with the angle between
        ``delta`` and its harmless part, the score change of ``x + P delta`` against ``x``, the score
        gap between ``x + (I-P) delta`` and ``x + delta``, and flip rates of the three perturbations.
    """
    if attack == "line_search":
        res = LineSearch(s_max=s_max, steps=steps)(model, x, y, output=output)
        delta, success = res.perturbation, res.success
    elif attack in ("pgd_linf", "pgd_l2"):
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        clf = _score_classifier(model, output)
        with clf.evaluating():
            delta = pgd_perturbation(clf, x, y, eps, norm=attack[4:], steps=20, random_start=1e-3,
                                     seed=0, batch_size=max(x.shape[0], 1)).perturbation
        success = None
    else:
        raise ValueError(f"attack must be 'pgd_linf', 'pgd_l2' or 'line_search', got {attack!r}")
    par, orth, angle = decompose_perturbation(delta, space)
    clf = _score_classifier(model, output)
    with clf.evaluating(), torch.inference_mode():
        s0, lab0 = _scores_and_labels(clf, x)
        s_adv, lab_adv = _scores_and_labels(clf, x + delta)
        s_par, lab_par = _scores_and_labels(clf, x + par.to(x.dtype))
        s_orth, lab_orth = _scores_and_labels(clf, x + orth.to(x.dtype))
    s0, s_adv, s_par, s_orth = (s.double() for s in (s0, s_adv, s_par, s_orth))
    flip_adv, flip_par, flip_orth = (lab != lab0 for lab in (lab_adv, lab_par, lab_orth))
    if success is None:
        success = flip_adv
    norm = delta.reshape(delta.shape[0], -1).double().norm(dim=1)
    records = {
        "delta_l2": norm.tolist(),
        "harmless_l2": par.reshape(par.shape[0], -1).norm(dim=1).tolist(),
        "rest_l2": orth.reshape(orth.shape[0], -1).norm(dim=1).tolist(),
        "angle_deg": angle.tolist(),
        "harmless_part_score_change": (s_par - s0).norm(dim=1).tolist(),
        "rest_vs_adversarial_score_gap": (s_orth - s_adv).norm(dim=1).tolist(),
        "adversarial_score_change": (s_adv - s0).norm(dim=1).tolist(),
        "attack_success": success.tolist(),
        "adv_flips": flip_adv.tolist(),
        "harmless_part_flips": flip_par.tolist(),
        "rest_flips": flip_orth.tolist(),
    }
    ok = success.bool()
    k = max(int(ok.sum()), 1)
    summary = {
        "attack": attack,
        "images": int(x.shape[0]),
        "attacked": int(ok.sum()),
        "mean_delta_l2": float(norm[ok].mean()) if ok.any() else float("nan"),
        "mean_angle_deg": float(angle[ok].mean()) if ok.any() else float("nan"),
        "mean_harmless_fraction_of_norm": float(
            (par.reshape(par.shape[0], -1).norm(dim=1) / norm.clamp_min(1e-300))[ok].mean()
        )
        if ok.any()
        else float("nan"),
        "max_harmless_part_score_change": float((s_par - s0).norm(dim=1).max()),
        "max_rest_vs_adversarial_score_gap": float((s_orth - s_adv).norm(dim=1).max()),
        "mean_adversarial_score_change": float((s_adv - s0).norm(dim=1).mean()),
        "flip_rate_adversarial": float(flip_adv[ok].sum()) / k,
        "flip_rate_harmless_part": float(flip_par[ok].sum()) / k,
        "flip_rate_rest": float(flip_orth[ok].sum()) / k,
    }
    return {"summary": summary, "records": records}


def psnr(ref: torch.Tensor, img: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, ``10 log10(range^2 / MSE)`` (``inf`` for identical images), ``(N,)``."""
    mse = ((img.double() - ref.double()) ** 2).reshape(ref.shape[0], -1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(ref: torch.Tensor, img: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (scikit-image ``structural_similarity``; channels on axis 0), ``(N,)`` float64.

    Raises ImportError with the install line when scikit-image is missing.
    """
    try:
        from skimage.metrics import structural_similarity
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "SSIM needs scikit-image: pip install 'perturbscope[harmless]' (or pip install scikit-image)"
        ) from exc
    a, b = ref.double().cpu().numpy(), img.double().cpu().numpy()
    out = []
    for r, i in zip(a, b, strict=True):
        win = min(7, *[s if s % 2 else s - 1 for s in r.shape[-2:]])
        if r.ndim == 3:
            out.append(structural_similarity(r, i, data_range=data_range, channel_axis=0, win_size=win))
        else:
            out.append(structural_similarity(r, i, data_range=data_range, win_size=win))
    return torch.tensor(out, dtype=torch.float64)


def _minmax(img: torch.Tensor) -> torch.Tensor:
    """Per-image rescale to [0, 1] (what an auto-contrast viewer shows)."""
    flat = img.reshape(img.shape[0], -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    return ((flat - lo[:, None]) / (hi - lo).clamp_min(1e-300)[:, None]).reshape(img.shape)


@dataclass
class PrivacyResult:
    """Hiding images with a harmless perturbation vs Gaussian noise of the same norm.

    Images (float64, ``(N, *in_shape)``): ``x``, ``x_harmless``, ``x_gaussian``. ``metrics`` holds
    plain numbers (see :func:`hide_content`).
    """

    x: torch.Tensor
    x_harmless: torch.Tensor
    x_gaussian: torch.Tensor
    metrics: dict[str, Any]


def hide_content(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    y: torch.Tensor | None,
    space: HarmlessSpace,
    norm: float,
    seed: int = 0,
    output: str | None = None,
) -> PrivacyResult:
    """Add a harmless perturbation of L2 norm ``norm`` to each image and compare with Gaussian noise.

    Metrics (means over images): agreement with the clean predictions and accuracy (if ``y`` is
    given) for clean / harmless / Gaussian inputs; PSNR and SSIM of each perturbed image against the
    original, computed both on the raw values (data range 1; equal PSNR for both kinds by
    construction, since the norms match) and after per-image min-max rescaling to [0, 1] (what a viewer
    shows); lower means better hiding. The model runs in its own dtype; inputs leave [0, 1].
    The Gaussian noise is a direction uniform on the sphere of radius ``norm``
    (:func:`perturbscope.sampling.uniform_sphere`, seed ``seed + 1``); scores and labels are the
    Classifier's (``model`` a Classifier or a module wrapped with ``output``).
    """
    if norm <= 0:
        raise ValueError(f"norm must be > 0, got {norm}")
    clf = as_classifier(model, output)
    d = space.sample(x.shape[0], norm, seed=seed)
    g = uniform_sphere(d.shape[0], tuple(d.shape[1:]), norm, seed=make_generator(seed + 1),
                       dtype=torch.float64)
    xh, xg = x.double() + d, x.double() + g
    with clf.evaluating(), torch.inference_mode():
        dt = x.dtype
        s0, l0 = _scores_and_labels(clf, x)
        sh, lh = _scores_and_labels(clf, xh.to(dt))
        sg, lg = _scores_and_labels(clf, xg.to(dt))
    s0, sh, sg = s0.double(), sh.double(), sg.double()
    m: dict[str, Any] = {
        "norm": float(norm),
        "images": int(x.shape[0]),
        "agreement_harmless": float((lh == l0).double().mean()),
        "agreement_gaussian": float((lg == l0).double().mean()),
        "max_score_change_harmless": float((sh - s0).norm(dim=1).max()),
        "median_score_change_gaussian": float((sg - s0).norm(dim=1).median()),
    }
    if y is not None:
        m.update(
            {
                "accuracy_clean": float((l0 == y).double().mean()),
                "accuracy_harmless": float((lh == y).double().mean()),
                "accuracy_gaussian": float((lg == y).double().mean()),
            }
        )
    m["psnr_raw_harmless"] = float(psnr(x, xh).mean())
    m["psnr_raw_gaussian"] = float(psnr(x, xg).mean())
    vh, vg = _minmax(xh), _minmax(xg)
    m["psnr_viewed_harmless"] = float(psnr(x, vh).mean())
    m["psnr_viewed_gaussian"] = float(psnr(x, vg).mean())
    try:
        m["ssim_raw_harmless"] = float(ssim(x, xh).mean())
        m["ssim_raw_gaussian"] = float(ssim(x, xg).mean())
        m["ssim_viewed_harmless"] = float(ssim(x, vh).mean())
        m["ssim_viewed_gaussian"] = float(ssim(x, vg).mean())
        m["ssim_viewed_clean_reference"] = 1.0
    except ImportError as exc:
        m["ssim_error"] = str(exc)
    return PrivacyResult(x=x.double(), x_harmless=xh, x_gaussian=xg, metrics=m)


def _to_display(img: np.ndarray) -> np.ndarray:
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-300)
    if img.shape[0] in (1, 3):
        img = np.moveaxis(img, 0, -1)
    return img[..., 0] if img.shape[-1] == 1 else img


def privacy_panel(result: PrivacyResult, path: str | os.PathLike, count: int = 6, title: str = "") -> Path:
    """PNG panel: rows original / harmless-perturbed / Gaussian-perturbed (each min-max scaled)."""
    k = min(count, result.x.shape[0])
    fig, axes = new_figure(3, k, figsize=(1.6 * k + 1, 5.2), squeeze=False)
    rows = [("original", result.x), ("harmless", result.x_harmless), ("Gaussian", result.x_gaussian)]
    for r, (name, imgs) in enumerate(rows):
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(_to_display(imgs[c].numpy()), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    m = result.metrics
    fig.suptitle(
        title
        or f"L2 norm {m['norm']:g}: agreement harmless {m['agreement_harmless']:.2f}, "
        f"Gaussian {m['agreement_gaussian']:.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


@dataclass
class Fingerprint:
    """Owner-side probes: inputs ``x`` and harmless perturbations ``d`` (norm ``alpha``) of one model.

    ``reference`` holds the owner's float64 score changes (rounding only) for comparison.
    """

    x: torch.Tensor
    d: torch.Tensor
    alpha: float
    reference: torch.Tensor


def fingerprint(
    model: nn.Module | Classifier, space: HarmlessSpace, x: torch.Tensor, alpha: float = 1e3,
    seed: int = 0, output: str | None = None
) -> Fingerprint:
    """Probes from ``model``'s harmless space: one perturbation of L2 norm ``alpha`` per input in ``x``."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    d = space.sample(x.shape[0], alpha, seed=seed)
    ref = _relative_change(model, x, d, output)
    return Fingerprint(x=x.double(), d=d, alpha=float(alpha), reference=ref)


def _relative_change(model: nn.Module | Classifier, x: torch.Tensor, d: torch.Tensor,
                     output: str | None = None) -> torch.Tensor:
    """``||s(x + d) - s(x)|| / (||s(x)|| + 1)`` per probe ``(K,)``, in float64 on a copy of ``model``
    (``s``: the Classifier's scores)."""
    import copy

    m64 = copy.deepcopy(as_classifier(model, output)).double()
    x64 = x.double().to(m64.device)
    with m64.evaluating(), torch.inference_mode():
        s0, _ = _scores_and_labels(m64, x64)
        s1, _ = _scores_and_labels(m64, x64 + d.to(x64))
    return ((s1 - s0).norm(dim=1) / (s0.norm(dim=1) + 1.0)).cpu()


def identify(suspect: nn.Module | Classifier, probes: Fingerprint, atol: float = 1e-6,
             output: str | None = None) -> tuple[bool, torch.Tensor]:
    """Does ``suspect`` share the owner's first layer? ``(match, scores)``.

    ``scores`` ``(K,)`` are relative score changes under the owner's harmless probes (float64): about
    ``1e-12`` for an exact copy, ``alpha * ||(W' - W) d|| * gain`` for a fine-tuned copy, and of order
    1 or more for an unrelated model. ``match`` is True when every score is at most ``atol``.
    """
    scores = _relative_change(suspect, probes.x, probes.d, output)
    return bool((scores <= atol).all()), scores
