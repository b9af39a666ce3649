"""The paper's random probe (Section 7.1.3): do perturbations ``alpha`` times larger than the
adversarial one, in random directions, flip the prediction?

One set of ``draws`` vectors ``zeta_k`` uniform in the unit L2 ball of ``R^d`` is used for every
image, as in the paper. Image ``i`` at level ``alpha`` is evaluated at
``x_i + alpha * eps_i * zeta_k`` for every ``k``; the probe counts the draws whose prediction
differs from the clean prediction of ``x_i``.

The draws never exist all at once: draw ``k`` is a pure function of ``(seed, k)``
(:func:`perturbscope.sampling.uniform_ball`, a counter-based stream), generated in chunks of
``draw_chunk`` on the model's device, in the inputs' dtype. The same seed gives the same draws
whatever the chunk size, the batch size or the device, and the probe's memory is bounded by one chunk of draws
plus one forward batch, not by ``draws x d``. Within a chunk the work is one flat index space
of ``images x alphas x chunk`` perturbed inputs cut into forward batches (no Python loop over
images or draws).

Optional reduced precision (``precision="bf16"`` or ``"fp16"``: autocast) decides most draws
cheaply; every draw it calls a flip, and every draw whose low-precision margin is within a
rounding band of zero, is evaluated again in the model's own precision, so a rounding error
never counts as a flip.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from perturbscope.attacks.base import norms
from perturbscope.models.classifier import Classifier, as_classifier
from perturbscope.paper import PAPER_ALPHAS as DEFAULT_ALPHAS
from perturbscope.paper import PAPER_DRAWS
from perturbscope.sampling import uniform_ball
from perturbscope.validation import check_floats, check_images, check_int

__all__ = ["ProbeResult", "random_probe", "DEFAULT_ALPHAS", "PRECISIONS", "auto_draw_chunk"]

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: bytes one chunk of draws may take when ``draw_chunk`` is not given
CHUNK_BYTES = 64 * 2**20


@dataclass
class ProbeResult:
    """Per-image, per-alpha outcome of the random probe on ``N`` images and ``A`` alphas.

    Attributes:
        alphas: the ``A`` multipliers.
        draws: number of random vectors per image and alpha.
        counts: ``(N, A)`` int64 number of draws that flip the prediction.
        min_l2, min_l1, min_linf: ``(N, A)`` float64 norms (pixel units) of the flipping random
            perturbation with the smallest L2 norm; NaN where no draw flips.
        min_index: ``(N, A)`` int64 index ``k`` of that draw (-1 if none), so the perturbation
            ``alpha * eps * zeta_k`` can be regenerated: ``uniform_ball(1, shape, seed=seed, start=k)``.
        forwards: forward passes spent (``N * A * draws``, plus the float32 re-checks).
        rechecked: forward passes spent re-checking reduced-precision decisions.
    """

    alphas: tuple[float, ...]
    draws: int
    counts: torch.Tensor
    min_l2: torch.Tensor
    min_l1: torch.Tensor
    min_linf: torch.Tensor
    min_index: torch.Tensor
    forwards: int
    rechecked: int = 0

    @property
    def flip_fraction(self) -> torch.Tensor:
        """``(N, A)`` fraction of draws that flip."""
        return self.counts.double() / self.draws


def auto_draw_chunk(d: int, draws: int, itemsize: int = 4) -> int:
    """Draws per chunk so that one chunk (with the generator's float64 temporaries) stays near
    :data:`CHUNK_BYTES`: at least 1, at most ``draws``."""
    per_draw = d * (itemsize + 24)  # the draw itself + int64 counters + float64 normals
    return max(1, min(draws, CHUNK_BYTES // max(per_draw, 1)))


def _flip_and_margin(clf: Classifier, xb: torch.Tensor, ref: torch.Tensor, precision: str
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    if precision == "fp32":
        return clf.labels_of(clf.raw(xb)) != ref, None
    with torch.autocast(device_type=xb.device.type, dtype=_AUTOCAST[precision]):
        m, lab = clf.margin_and_labels(xb, ref)
    return lab != ref, m.float()


def random_probe(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    eps: torch.Tensor,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    draws: int = PAPER_DRAWS,
    seed: int = 0,
    output: str | None = None,
    batch_size: int = 256,
    draw_chunk: int | None = None,
    directions: torch.Tensor | None = None,
    precision: str = "fp32",
    memory_format: torch.memory_format = torch.contiguous_format,
    progress: Callable[[int], None] | None = None,
    on_rate: Callable[[float], None] | None = None,
    clip: bool = False,
) -> ProbeResult:
    """Count flipping random perturbations for inputs ``x`` ``(N, ...)`` at radii ``alpha * eps``.

    Args:
        model: an ``nn.Module`` (wrapped with ``output``) or a Classifier; run in eval mode under
            ``torch.inference_mode``; its mode is restored; not moved.
        x: inputs ``(N, *shape)`` inside the classifier's bounds (moved to the model's device).
        eps: ``(N,)`` positive finite base radii (normally the adversarial L2 size), pixel units.
        alphas: multipliers of ``eps`` (paper: 1, 2, 5, 10).
        draws: random vectors in the unit ball (paper: 2000), the same for every image.
        seed: non-negative int seed of those vectors (draw ``k`` depends only on ``seed`` and ``k``).
        batch_size: perturbed inputs per forward pass.
        draw_chunk: draws generated at once (default: :func:`auto_draw_chunk`, ~64 MB).
        directions: optional ``(draws, *shape)`` precomputed vectors to use instead of sampling.
        precision: ``"fp32"`` (the model's own precision), ``"bf16"`` or ``"fp16"`` (autocast,
            decisions near the boundary re-checked in the model's precision).
        memory_format: layout of the perturbed batch (``torch.channels_last`` is faster for
            conv nets when the model's weights are channels_last too).
        progress: called with the number of forwards done after each batch.
        on_rate: called once, after about 2 s of work, with the measured forwards per second.
        clip: evaluate ``clamp(x_i + alpha eps_i zeta_k)`` to the classifier's bounds instead of
            the paper's unclipped ``x_i + alpha eps_i zeta_k`` (a box-aware variant, not the
            paper's protocol). The ``min_*`` norms are then those of the clipped perturbation
            (which is shorter than ``alpha eps_i``), and the smallest one is chosen by its
            clipped L2 norm.

    A flip is a prediction different from the model's clean prediction for ``x_i`` (for a
    correctly classified image, that is its label).
    """
    clf = as_classifier(model, output)
    check_images(x, clf.bounds)
    eps = torch.as_tensor(eps, dtype=torch.float64).reshape(-1)
    if eps.shape[0] != x.shape[0]:
        raise ValueError(f"eps must have shape ({x.shape[0]},), got {tuple(eps.shape)}")
    if not (torch.isfinite(eps).all() and (eps > 0).all()):
        raise ValueError("eps must be positive and finite for every image (probe only the "
                         "images whose attack succeeded)")
    alphas = check_floats("alphas", alphas, low=0.0, low_open=True)
    check_int("draws", draws, minimum=1)
    check_int("seed", seed, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not isinstance(clip, bool):
        raise TypeError(f"clip must be True or False, got {clip!r}")
    if clip and clf.bounds is None:
        raise ValueError("random_probe(clip=True) needs a classifier with bounds")
    device = clf.device
    x = x.to(device)
    shape = tuple(x.shape[1:])
    d = math.prod(shape)
    if directions is not None and tuple(directions.shape) != (draws, *shape):
        raise ValueError(f"directions must have shape {(draws, *shape)}, got {tuple(directions.shape)}")
    chunk = check_int("draw_chunk", draw_chunk, minimum=1) if draw_chunk is not None else \
        auto_draw_chunk(d, draws, x.element_size())
    chunk = min(chunk, draws)

    n, a = x.shape[0], len(alphas)
    alpha_t = torch.tensor(alphas, dtype=torch.float64, device=device)
    scale_ia = (eps.to(device).unsqueeze(1) * alpha_t.unsqueeze(0)).reshape(-1)  # (N*A,)
    counts = torch.zeros(n * a, dtype=torch.long, device=device)
    best_l2 = torch.full((n * a,), math.inf, dtype=torch.float64, device=device)
    best_k = torch.full((n * a,), -1, dtype=torch.long, device=device)
    norm_of = torch.empty((3, draws), dtype=torch.float64, device=device)  # l1, l2, linf per draw
    buf = torch.empty((min(batch_size, n * a * chunk), *shape), dtype=x.dtype, device=device)
    if len(shape) == 3:
        buf = buf.contiguous(memory_format=memory_format)
    view = [-1] + [1] * len(shape)
    forwards = rechecked = 0
    t0, rate_sent = time.perf_counter(), on_rate is None
    with clf.evaluating(), torch.inference_mode():
        clean = clf.predict(x, batch_size)
        for k0 in range(0, draws, chunk):
            c = min(chunk, draws - k0)
            if directions is None:
                zeta = uniform_ball(c, shape, seed=seed, start=k0, dtype=x.dtype, device=device)
            else:
                zeta = directions[k0:k0 + c].to(device=device, dtype=x.dtype)
            l1, l2, linf = norms(zeta)
            norm_of[:, k0:k0 + c] = torch.stack([l1, l2, linf])
            total = n * a * c
            for start in range(0, total, batch_size):
                flat = torch.arange(start, min(start + batch_size, total), device=device)
                ia, kk = flat // c, flat % c
                i = ia // a
                b = flat.shape[0]
                out = buf[:b]
                torch.mul(zeta[kk], scale_ia[ia].to(x.dtype).view(view), out=out)
                out.add_(x[i])
                if clip:
                    out.clamp_(*clf.bounds)
                flips, margin = _flip_and_margin(clf, out, clean[i], precision)
                forwards += b
                if margin is not None:  # re-check flips and near-boundary draws in full precision
                    band = 2.0 ** -6 * (1.0 + margin.abs())
                    sus = (flips | (margin.abs() <= band)).nonzero()[:, 0]
                    if sus.numel():
                        flips[sus] = clf.labels_of(clf.raw(out[sus])) != clean[i][sus]
                        forwards += sus.numel()
                        rechecked += sus.numel()
                counts.index_add_(0, ia, flips.long())
                k_abs = kk + k0
                # per (image, alpha) of this batch (a contiguous range of ia): the flipping draw
                # of smallest L2 norm, the smaller draw index on ties, against the best so far
                lo = int(ia[0])
                loc, m = ia - lo, int(ia[-1]) - lo + 1
                size = (out - x[i]).flatten(1).double().norm(dim=1) if clip else l2[kk]
                cand = torch.where(flips, size, torch.full_like(size, math.inf))
                g_l2 = torch.full((m,), math.inf, dtype=torch.float64, device=device)
                g_l2.scatter_reduce_(0, loc, cand, reduce="amin")
                big = torch.full_like(k_abs, draws)
                g_k = torch.full((m,), draws, dtype=torch.long, device=device)
                at_min = torch.where(flips & (cand == g_l2[loc]), k_abs, big)
                g_k.scatter_reduce_(0, loc, at_min, reduce="amin")
                cur_l2, cur_k = best_l2[lo:lo + m], best_k[lo:lo + m]
                upd = (g_k < draws) & ((g_l2 < cur_l2) | ((g_l2 == cur_l2) & (g_k < cur_k)))
                cur_l2[upd], cur_k[upd] = g_l2[upd], g_k[upd]
                if progress is not None:
                    progress(b)
                if not rate_sent and time.perf_counter() - t0 > 2.0:
                    on_rate(forwards / (time.perf_counter() - t0))
                    rate_sent = True
    found = best_k >= 0
    nan = torch.full((n * a,), float("nan"), dtype=torch.float64, device=device)

    if clip:  # norms of the clipped perturbations of the smallest flipping draws, regenerated
        clipped = torch.full((3, n * a), float("nan"), dtype=torch.float64, device=device)
        for k in torch.unique(best_k[found]).tolist():
            zk = (uniform_ball(1, shape, seed=seed, start=k, dtype=x.dtype, device=device)[0]
                  if directions is None else directions[k].to(device=device, dtype=x.dtype))
            sel = (found & (best_k == k)).nonzero()[:, 0]
            xi = x[sel // a]
            dk = (xi + scale_ia[sel].to(x.dtype).view(view) * zk.unsqueeze(0)).clamp(*clf.bounds) - xi
            clipped[:, sel] = torch.stack(norms(dk)).double()

    def min_norm(row: int) -> torch.Tensor:
        if clip:
            return clipped[row].view(n, a).cpu()
        return torch.where(found, scale_ia * norm_of[row][best_k.clamp(min=0)], nan).view(n, a).cpu()

    return ProbeResult(alphas, draws, counts.view(n, a).cpu(), min_norm(1), min_norm(0), min_norm(2),
                       best_k.view(n, a).cpu(), forwards, rechecked)
