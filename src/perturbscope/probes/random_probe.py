"""The paper's random probe (Section 7.1.3): do perturbations ``alpha`` times larger than the
adversarial one, in random directions, flip the prediction?

One set of ``draws`` vectors ``zeta_k`` uniform in the unit L2 ball of ``R^d`` is drawn once
(seeded) and reused for every image, as in the paper. Image ``i`` at level ``alpha`` is
evaluated at ``x_i + alpha * eps_i * zeta_k`` for every ``k``; the probe counts the draws whose
prediction differs from the clean prediction of ``x_i``.

The work is one flat index space of ``N * len(alphas) * draws`` perturbed inputs, cut into
forward batches of ``batch_size``; a batch mixes images, alphas and draws, so there is no
Python loop over images or draws, only over batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from perturbscope.attacks.base import norms
from perturbscope.models.classifier import Classifier, as_classifier
from perturbscope.paper import PAPER_ALPHAS as DEFAULT_ALPHAS
from perturbscope.sampling import uniform_ball
from perturbscope.validation import check_floats, check_images, check_int

__all__ = ["ProbeResult", "random_probe", "DEFAULT_ALPHAS"]


@dataclass
class ProbeResult:
    """Per-image, per-alpha outcome of the random probe on ``N`` images and ``A`` alphas.

    Attributes:
        alphas: the ``A`` multipliers.
        draws: number of random vectors per image and alpha.
        counts: ``(N, A)`` int64 number of draws that flip the prediction.
        min_l2, min_l1, min_linf: ``(N, A)`` float64 norms (pixel units) of the flipping random
            perturbation with the smallest L2 norm; NaN where no draw flips.
        min_index: ``(N, A)`` int64 index ``k`` of that draw in the shared set (-1 if none),
            so the perturbation ``alpha * eps * zeta_k`` can be regenerated from the seed.
        forwards: forward passes spent (``N * A * draws``).
    """

    alphas: tuple[float, ...]
    draws: int
    counts: torch.Tensor
    min_l2: torch.Tensor
    min_l1: torch.Tensor
    min_linf: torch.Tensor
    min_index: torch.Tensor
    forwards: int

    @property
    def flip_fraction(self) -> torch.Tensor:
        """``(N, A)`` fraction of draws that flip."""
        return self.counts.double() / self.draws


def random_probe(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    eps: torch.Tensor,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    draws: int = 2000,
    seed: int | torch.Generator | None = 0,
    output: str | None = None,
    batch_size: int = 256,
    directions: torch.Tensor | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    progress: Callable[[int], None] | None = None,
) -> ProbeResult:
    """Count flipping random perturbations for inputs ``x`` ``(N, ...)`` at radii ``alpha * eps``.

    Args:
        model: an ``nn.Module`` (wrapped with ``output``) or a Classifier; run in eval mode
            under ``torch.inference_mode``; its mode is restored; not moved.
        x: inputs ``(N, *shape)`` inside the classifier's bounds.
        eps: ``(N,)`` positive finite base radii (normally the adversarial L2 size), pixel units.
        alphas: multipliers of ``eps`` (paper: 1, 2, 5, 10).
        draws: random vectors in the unit ball (paper: 2000), drawn once and shared.
        seed: seed or generator for those vectors.
        output: output convention (default ``model.output_kind``).
        batch_size: perturbed inputs per forward pass.
        directions: optional ``(draws, *shape)`` precomputed vectors to use instead of sampling.
        memory_format: layout of the perturbed batch (``torch.channels_last`` is faster for
            conv nets on CPU when the model's weights are channels_last too).
        progress: called with the number of forwards done after each batch.

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
    check_int("batch_size", batch_size, minimum=1)
    device = clf.device
    x = x.to(device)
    shape = tuple(x.shape[1:])
    if directions is None:
        zeta = uniform_ball(draws, shape, seed=seed, dtype=x.dtype)
    else:
        if tuple(directions.shape) != (draws, *shape):
            raise ValueError(f"directions must have shape {(draws, *shape)}, "
                             f"got {tuple(directions.shape)}")
        zeta = directions.to(x.dtype)
    zeta = zeta.to(device)
    z_l1, z_l2, z_linf = norms(zeta)
    rank_of = torch.empty(draws, dtype=torch.long)
    order = torch.argsort(z_l2.cpu(), stable=True)
    rank_of[order] = torch.arange(draws)
    rank_of, order = rank_of.to(device), order.to(device)

    n, a = x.shape[0], len(alphas)
    total = n * a * draws
    alpha_t = torch.tensor(alphas, dtype=torch.float64, device=device)
    scale_ia = (eps.to(device).unsqueeze(1) * alpha_t.unsqueeze(0)).reshape(-1)  # (N*A,)
    counts = torch.zeros(n * a, dtype=torch.long, device=device)
    best_rank = torch.full((n * a,), draws, dtype=torch.long, device=device)
    buf = torch.empty((batch_size, *shape), dtype=x.dtype, device=device)
    if len(shape) == 3:
        buf = buf.contiguous(memory_format=memory_format)
    view = [-1] + [1] * len(shape)
    with clf.evaluating(), torch.inference_mode():
        clean = clf.predict(x, batch_size)
        for start in range(0, total, batch_size):
            flat = torch.arange(start, min(start + batch_size, total), device=device)
            ia, k = flat // draws, flat % draws
            i = ia // a
            b = flat.shape[0]
            out = buf[:b]
            torch.mul(zeta[k], scale_ia[ia].to(x.dtype).view(view), out=out)
            out.add_(x[i])
            flips = clf.labels_of(clf.raw(out)) != clean[i]
            counts.index_add_(0, ia, flips.long())
            ranks = torch.where(flips, rank_of[k], torch.full_like(k, draws))
            best_rank.scatter_reduce_(0, ia, ranks, reduce="amin")
            if progress is not None:
                progress(b)
    found = best_rank < draws
    k_best = torch.where(found, order[best_rank.clamp(max=draws - 1)], torch.full_like(best_rank, -1))
    nan = torch.full((n * a,), float("nan"), dtype=torch.float64, device=device)

    def min_norm(zn: torch.Tensor) -> torch.Tensor:
        return torch.where(found, scale_ia * zn[k_best.clamp(min=0)], nan).view(n, a).cpu()

    return ProbeResult(alphas, draws, counts.view(n, a).cpu(), min_norm(z_l2), min_norm(z_l1),
                       min_norm(z_linf), k_best.view(n, a).cpu(), total)
