"""Using harmless spaces: projection and angle, rounding tolerances, model-level checks, the [0, 1] box.

Tolerance (spec section 2). In exact arithmetic ``A (x + d) = A x`` for harmless ``d``. In floating
point the first layer's output moves by rounding only; a safe bound on that movement is::

    tol_layer = safety * eps(dtype) * (||x|| + ||d||) * ||A||_2 * sqrt(n)

(``safety = 4``). It grows in proportion to the perturbation size, as the spec's measurements do
(float64 residual 1.6e-14 at size 1 and 3.2e-11 at 1e4). Beyond the first layer the network
amplifies that movement by its local gain, which :func:`verify_harmless` estimates from small
random probes; the logit tolerance is ``gain * tol_layer``.

The pixel box: "any size" holds in R^n only. Clipping ``x + d`` to [0, 1] changes ``d`` and breaks
harmlessness; :func:`max_box_scale` gives instead the largest ``t`` with ``x + t d`` inside the box
(0 when ``x`` has a pixel on the box edge and ``d`` points out there: common with black borders).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from perturbscope.harmless.linear_map import LinearMap
from perturbscope.harmless.space import HarmlessSpace
from perturbscope.models.classifier import Classifier, as_classifier
from perturbscope.sampling import make_generator, uniform_sphere

__all__ = [
    "decompose_perturbation",
    "project_harmless",
    "project_orthogonal",
    "harmless_tolerance",
    "model_scores",
    "output_distance",
    "as_float64",
    "VerifyResult",
    "verify_harmless",
    "max_box_scale",
    "clip_effect",
    "interior_harmless_space",
]


def project_harmless(delta: torch.Tensor, space: HarmlessSpace) -> torch.Tensor:
    """``P delta``: the part of ``delta`` ``(N, *in_shape)`` inside the harmless space (float64)."""
    return space.project(delta)


def project_orthogonal(delta: torch.Tensor, space: HarmlessSpace) -> torch.Tensor:
    """``(I - P) delta``: the part the layer sees (float64)."""
    return space.project_orthogonal(delta)


def decompose_perturbation(
    delta: torch.Tensor, space: HarmlessSpace
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(parallel, orthogonal, angle_deg)``: ``delta = parallel + orthogonal``; angle ``(N,)`` in degrees
    between ``delta`` and its harmless part (90 when the harmless part is zero)."""
    par = space.project(delta)
    orth = delta.to(torch.float64) - par
    dn = delta.reshape(delta.shape[0], -1).to(torch.float64).norm(dim=1)
    pn = par.reshape(par.shape[0], -1).norm(dim=1)
    cos = torch.where(dn > 0, pn / torch.where(dn > 0, dn, torch.ones_like(dn)), torch.zeros_like(dn))
    angle = torch.rad2deg(torch.arccos(cos.clamp(0.0, 1.0)))
    return par, orth, angle


def harmless_tolerance(
    size: float | torch.Tensor,
    op_norm: float,
    n: int,
    dtype: torch.dtype = torch.float64,
    x_norm: float | torch.Tensor = 0.0,
    safety: float = 4.0,
) -> torch.Tensor:
    """Rounding bound on ``||A(x + d) - A x||``: ``safety * eps(dtype) * (||x|| + size) * ||A|| * sqrt(n)``.

    ``size`` is ``||d||`` (scalar or ``(N,)``); returns a float64 tensor of the same shape.
    """
    eps = torch.finfo(dtype).eps
    size_t = torch.as_tensor(size, dtype=torch.float64)
    return safety * eps * (torch.as_tensor(x_norm, dtype=torch.float64) + size_t) * op_norm * math.sqrt(n)


def model_scores(model: nn.Module | Classifier, x: torch.Tensor, output: str | None = None) -> torch.Tensor:
    """Scores ``(N, K')`` of inputs ``x`` ``(N, ...)``: :meth:`Classifier.scores` as rows.

    Binary models give one column, the logit ``z`` (from the module's ``logit`` method when a
    ``"sigmoid"`` model has one, so no saturation; else ``logit(p)``); ``"logits"`` models their
    ``K`` scores. ``model`` is a :class:`~perturbscope.models.classifier.Classifier` (its
    normalisation applied inside) or an ``nn.Module`` wrapped with ``output``. Differentiable;
    the caller sets the mode.
    """
    out = as_classifier(model, output).scores(x)
    return out.reshape(out.shape[0], -1)


def _scores_and_labels(clf: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`model_scores` rows and the Classifier's labels ``(N,)``, one forward pass."""
    s, labels = clf.scores_and_labels(x)
    return s.reshape(s.shape[0], -1), labels


def output_distance(model: nn.Module | Classifier, x: torch.Tensor, x_pert: torch.Tensor,
                    output: str | None = None) -> torch.Tensor:
    """Per-sample L2 distance ``||s(x_pert) - s(x)||`` ``(N,)`` of the scores (:func:`model_scores`),
    eval mode."""
    clf = as_classifier(model, output)
    with clf.evaluating(), torch.inference_mode():
        return (model_scores(clf, x_pert) - model_scores(clf, x)).norm(dim=1)


def as_float64(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (a module or a Classifier; the original is untouched)."""
    return copy.deepcopy(model).double()


@dataclass
class VerifyResult:
    """Output change under harmless perturbations against a random control of the same size.

    All tensors are ``(N,)`` per sample; ``*_layer`` values are first-layer output changes
    ``||A(x+d) - A x||`` computed in ``dtype``; ``*_scores`` are L2 changes of the model's scores.
    """

    sizes: torch.Tensor
    dtype: str
    layer_change: torch.Tensor
    layer_tolerance: torch.Tensor
    score_change: torch.Tensor
    score_tolerance: torch.Tensor
    random_layer_change: torch.Tensor
    random_score_change: torch.Tensor
    labels_unchanged: torch.Tensor
    random_labels_unchanged: torch.Tensor
    gain: float
    op_norm: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def harmless(self) -> torch.Tensor:
        """``(N,)`` bool: both the layer change and the score change are within tolerance."""
        return (self.layer_change <= self.layer_tolerance) & (self.score_change <= self.score_tolerance)

    def summary(self) -> dict[str, Any]:
        def f(t: torch.Tensor) -> float:
            return float(t.max())

        return {
            "dtype": self.dtype,
            "sizes": [float(s) for s in self.sizes.unique()],
            "max_layer_change": f(self.layer_change),
            "max_layer_tolerance": f(self.layer_tolerance),
            "max_score_change": f(self.score_change),
            "max_score_tolerance": f(self.score_tolerance),
            "min_random_score_change": float(self.random_score_change.min()),
            "median_random_score_change": float(self.random_score_change.median()),
            "labels_unchanged": float(self.labels_unchanged.float().mean()),
            "random_labels_unchanged": float(self.random_labels_unchanged.float().mean()),
            "all_harmless": bool(self.harmless.all()),
            "gain_estimate": self.gain,
            "op_norm": self.op_norm,
            **self.extra,
        }


def verify_harmless(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    delta: torch.Tensor,
    lmap: LinearMap,
    dtype: torch.dtype | None = torch.float64,
    seed: int = 0,
    gain_probes: int = 4,
    output: str | None = None,
) -> VerifyResult:
    """Check that ``model(x + delta)`` equals ``model(x)`` to rounding, against a random control.

    Args:
        model: the classifier (its first layer is ``lmap``; e.g. from ``first_layer_map``), a
            :class:`~perturbscope.models.classifier.Classifier` or an ``nn.Module`` wrapped with
            ``output``; its scores are :func:`model_scores`, its labels the Classifier's.
        x: inputs ``(N, *in_shape)``; delta: perturbations of the same shape (e.g. ``space.sample``).
        dtype: arithmetic of the check; ``torch.float64`` runs a float64 copy of the model (the
            "float64 mode"), ``None`` uses the model's own dtype (float32 usually).
        gain_probes: random probes used to estimate the network's gain after the first layer.
        output: output kind of a bare module (default its ``output_kind``).

    Returns:
        :class:`VerifyResult`. The random control draws directions uniform on the sphere of each
        perturbation's norm (:func:`perturbscope.sampling.uniform_sphere`, ``seed``).
    """
    if x.shape != delta.shape:
        raise ValueError(f"x {tuple(x.shape)} and delta {tuple(delta.shape)} must have the same shape")
    clf = as_classifier(model, output)
    run = as_float64(clf) if dtype == torch.float64 else clf
    dt = torch.float64 if dtype == torch.float64 else next((p.dtype for p in run.parameters()), torch.float32)
    device = run.device
    xd, dd = x.to(device=device, dtype=dt), delta.to(device=device, dtype=dt)
    sizes = delta.reshape(delta.shape[0], -1).to(torch.float64).norm(dim=1).cpu()
    gen = make_generator(seed)
    view = (-1, *([1] * (delta.ndim - 1)))
    rnd = uniform_sphere(delta.shape[0], tuple(delta.shape[1:]), 1.0, seed=gen, dtype=torch.float64)
    rnd = (rnd * sizes.view(view)).to(device=device, dtype=dt)
    op = lmap.op_norm()
    xnorm = x.reshape(x.shape[0], -1).to(torch.float64).norm(dim=1).cpu()
    with run.evaluating(), torch.inference_mode():
        s0, l0 = _scores_and_labels(run, xd)
        s_h, l_h = _scores_and_labels(run, xd + dd)
        s_r, l_r = _scores_and_labels(run, xd + rnd)
        a0 = _apply_dtype(lmap, xd, dt)
        layer_h = (_apply_dtype(lmap, xd + dd, dt) - a0).double().norm(dim=1).cpu()
        layer_r = (_apply_dtype(lmap, xd + rnd, dt) - a0).double().norm(dim=1).cpu()
        # gain of the rest of the network: ||s(x + u) - s(x)|| / ||A u|| for small random u (float64)
        g64 = run if dt == torch.float64 else as_float64(run)
        x64 = x.to(device=device, dtype=torch.float64)
        base = model_scores(g64, x64)
        gain = 0.0
        for _ in range(gain_probes):
            u = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device) * 1e-4
            au = lmap.apply(u).norm(dim=1)
            ds = (model_scores(g64, x64 + u) - base).norm(dim=1)
            gain = max(gain, float((ds / au.clamp_min(1e-300)).max()))
    tol_layer = harmless_tolerance(sizes, op, lmap.n, dt, x_norm=xnorm)
    tol_scores = tol_layer * max(gain, 1e-12) * 4.0 + torch.finfo(dt).eps * 4 * s0.double().norm(dim=1).cpu()
    return VerifyResult(
        sizes=sizes,
        dtype=str(dt).replace("torch.", ""),
        layer_change=layer_h,
        layer_tolerance=tol_layer,
        score_change=(s_h - s0).double().norm(dim=1).cpu(),
        score_tolerance=tol_scores,
        random_layer_change=layer_r,
        random_score_change=(s_r - s0).double().norm(dim=1).cpu(),
        labels_unchanged=(l_h == l0).cpu(),
        random_labels_unchanged=(l_r == l0).cpu(),
        gain=gain,
        op_norm=op,
    )


def _apply_dtype(lmap: LinearMap, x: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """``A x`` computed in ``dt`` (weights cast to ``dt``), as the model itself would."""
    return lmap.apply(x.to(dt))


def max_box_scale(x: torch.Tensor, delta: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Largest ``t >= 0`` per sample with ``low <= x + t*delta <= high`` everywhere, ``(N,)`` float64.

    ``inf`` when ``delta`` is zero. Requires ``x`` inside the box. The harmless perturbation
    ``t*delta`` stays exactly harmless (no clipping needed) for every ``t`` up to this value.
    """
    if x.shape != delta.shape:
        raise ValueError(f"x {tuple(x.shape)} and delta {tuple(delta.shape)} must have the same shape")
    if not low < high:
        raise ValueError(f"need low < high, got {low}, {high}")
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    df = delta.reshape(delta.shape[0], -1).to(torch.float64)
    if (xf < low).any() or (xf > high).any():
        raise ValueError(f"x must lie inside the box [{low}, {high}]")
    up = torch.where(
        df > 0, (high - xf) / torch.where(df > 0, df, torch.ones_like(df)), torch.full_like(df, math.inf)
    )
    down = torch.where(
        df < 0, (low - xf) / torch.where(df < 0, df, -torch.ones_like(df)), torch.full_like(df, math.inf)
    )
    t = torch.minimum(up.amin(1), down.amin(1))
    return torch.where(t > 0, t, torch.zeros_like(t))


def interior_harmless_space(
    lmap: LinearMap,
    x: torch.Tensor,
    low: float = 0.0,
    high: float = 1.0,
    rtol: float | None = None,
    max_dense_bytes: int = 1 << 30,
) -> HarmlessSpace:
    """Harmless directions of one image ``x`` (``in_shape``) that leave its on-edge pixels untouched.

    ``null(A) ∩ {d_i = 0 where x_i = low or x_i = high}``, a dense float64 basis of the null space of
    ``A`` restricted to the interior pixels. For members ``d`` of this space
    :func:`max_box_scale` is positive, so ``x + t d`` stays in the box and exactly harmless for
    ``0 <= t <= max_box_scale`` (the alternative to clipping, which breaks harmlessness).
    """
    from perturbscope.harmless.space import DenseSpace, nullspace_basis

    xf = x.detach().reshape(-1).to(torch.float64).cpu()
    if xf.numel() != lmap.n:
        raise ValueError(
            f"x must be one input with {lmap.n} elements (shape {lmap.in_shape}), got {tuple(x.shape)}"
        )
    if (xf < low).any() or (xf > high).any():
        raise ValueError(f"x must lie inside the box [{low}, {high}]")
    free = ((xf > low) & (xf < high)).numpy()
    k_free = int(free.sum())
    if lmap.m * k_free * 8 > max_dense_bytes or k_free * k_free * 8 > max_dense_bytes:
        raise ValueError("the interior null space needs a dense SVD larger than max_dense_bytes")
    a = lmap.to_sparse()[:, free]
    if k_free == 0:
        nb, s, tol = np.zeros((0, 0)), np.zeros(0), 0.0
    else:
        nb, s, tol = nullspace_basis(a, rtol=rtol)
    full = np.zeros((lmap.n, nb.shape[1]))
    full[free] = nb
    r = k_free - nb.shape[1]
    return DenseSpace(
        in_shape=lmap.in_shape,
        m=lmap.m,
        dim=int(nb.shape[1]),
        rank=None,
        exact=True,
        method="dense-interior",
        tol=float(tol),
        sigma_max=float(s[0]) if s.size else 0.0,
        sigma_min=float(s[r - 1]) if r > 0 else 0.0,
        description=lmap.description,
        notes={"interior_pixels": k_free, "edge_pixels": lmap.n - k_free, "rank_on_interior": r},
        null_basis=torch.from_numpy(full),
    )


def clip_effect(
    model: nn.Module | Classifier, x: torch.Tensor, delta: torch.Tensor, low: float = 0.0,
    high: float = 1.0, output: str | None = None
) -> dict[str, float]:
    """What clipping ``x + delta`` to the box does: the fraction of clipped pixels and the score change.

    Shows why clipping breaks harmlessness: the clipped perturbation is no longer in the null space.
    """
    xp = (x + delta.to(x.dtype)).clamp(low, high)
    clipped = ((x + delta.to(x.dtype)) != xp).double().mean().item()
    dist = output_distance(model, x, xp, output)
    return {
        "clipped_fraction": clipped,
        "median_score_change_after_clip": float(dist.median()),
        "max_score_change_after_clip": float(dist.max()),
        "box_scale_median": float(np.median(max_box_scale(x, delta, low, high).numpy())),
    }
