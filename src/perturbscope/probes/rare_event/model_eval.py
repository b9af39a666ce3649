"""Model access for the rare-event estimators: margins, flips, gradient directions, crossings.

A *flip* is a predicted label different from the reference label ``ref`` (normally the clean
prediction). The *margin* is the :class:`~perturbscope.models.classifier.Classifier`'s signed
margin, positive iff there is no flip; binary ``"sigmoid"`` models that expose ``.logit()``
(every perturbscope model does) are scored on the logit, which does not saturate, so the
margin stays informative far from the boundary.
"""

from __future__ import annotations

import torch

from perturbscope.attacks.pgd import pgd_perturbation
from perturbscope.models.classifier import Classifier, input_gradient

__all__ = ["margin_flip", "margin_direction", "crossing_along"]


def margin_flip(clf: Classifier, xs: torch.Tensor, ref: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(margin, flip)``, both ``(B,)``, for inputs ``xs`` ``(B, ...)``: one forward pass.

    ``margin`` is :meth:`Classifier.margin_and_labels` as float64 (``> 0`` means the prediction
    equals ``ref``); ``flip`` is bool, the prediction differs from ``ref``.
    """
    m, pred = clf.margin_and_labels(xs, ref)
    return m.double(), pred != ref


def margin_direction(clf: Classifier, x: torch.Tensor, ref: torch.Tensor, batch_size: int = 256
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit direction of steepest margin *decrease* at each input (towards a flip).

    Returns ``(u, grad_norm, m)``: ``u`` ``(N, d)`` in ``x``'s dtype (zero rows where the
    gradient vanishes), ``grad_norm`` ``(N,)`` float64 and the clean margin ``m`` ``(N,)``.
    The model must already be in the mode the caller wants (eval).
    """
    n = x.shape[0]
    u = torch.zeros((n, x[0].numel()), dtype=x.dtype, device=x.device)
    gn = torch.zeros(n, dtype=torch.float64, device=x.device)
    m = torch.zeros(n, dtype=torch.float64, device=x.device)
    with torch.inference_mode(False), torch.enable_grad():
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            xb = x[sl].clone().requires_grad_(True)
            mb, _ = margin_flip(clf, xb, ref[sl])
            grad = input_gradient(mb.sum(), xb)
            flat = -grad.reshape(grad.shape[0], -1).double()
            norm = flat.norm(dim=1)
            good = torch.isfinite(norm) & (norm > 0)
            unit = flat / torch.where(good, norm, torch.ones_like(norm)).unsqueeze(1)
            u[sl] = torch.where(good.unsqueeze(1), unit, torch.zeros_like(unit)).to(x.dtype)
            gn[sl] = torch.where(good, norm, torch.zeros_like(norm))
            m[sl] = mb.detach()
    return u, gn, m


@torch.inference_mode()
def crossing_along(clf: Classifier, x: torch.Tensor, ref: torch.Tensor, u: torch.Tensor,
                   t_max: torch.Tensor, steps: int = 32, refine: int = 12,
                   batch_size: int = 256) -> tuple[torch.Tensor, int]:
    """Smallest ``t`` in ``(0, t_max]`` with a flip at ``x + t u`` (grid, then bisection).

    Args:
        x: ``(N, *shape)`` inputs; ``u``: ``(N, d)`` unit directions; ``t_max``: ``(N,)``.
    Returns ``(t, forwards)``: ``t`` ``(N,)`` float64, ``inf`` where no grid point flips.
    """
    n = x.shape[0]
    shape = x.shape[1:]
    dev = x.device
    frac = torch.arange(1, steps + 1, dtype=torch.float64, device=dev) / steps
    t_grid = t_max.to(torch.float64).unsqueeze(1) * frac  # (N, steps)
    idx = torch.arange(n, device=dev).repeat_interleave(steps)
    flips = torch.empty(n * steps, dtype=torch.bool, device=dev)
    tg = t_grid.reshape(-1)
    for start in range(0, n * steps, batch_size):
        sl = slice(start, start + batch_size)
        i = idx[sl]
        xs = x[i] + (tg[sl].to(x.dtype).unsqueeze(1) * u[i]).reshape(-1, *shape)
        flips[sl] = margin_flip(clf, xs, ref[i])[1]
    flips = flips.view(n, steps)
    found = flips.any(1)
    k = flips.to(torch.int8).argmax(1)
    hi = t_grid.gather(1, k.unsqueeze(1))[:, 0]
    lo = torch.where(k > 0, t_grid.gather(1, (k - 1).clamp_min(0).unsqueeze(1))[:, 0],
                     torch.zeros_like(hi))
    forwards = n * steps
    act = found.nonzero()[:, 0]
    for _ in range(refine if act.numel() else 0):
        mid = (lo[act] + hi[act]) / 2
        xs = x[act] + (mid.to(x.dtype).unsqueeze(1) * u[act]).reshape(-1, *shape)
        fl = torch.cat([margin_flip(clf, xs[s:s + batch_size], ref[act][s:s + batch_size])[1]
                        for s in range(0, act.numel(), batch_size)])
        forwards += act.numel()
        hi[act] = torch.where(fl, mid, hi[act])
        lo[act] = torch.where(fl, lo[act], mid)
    t = torch.where(found, hi, torch.full_like(hi, float("inf")))
    return t, forwards


def pgd_flip_direction(clf: Classifier, x: torch.Tensor, ref: torch.Tensor, t_max: torch.Tensor,
                       steps: int = 30, batch_size: int = 256) -> tuple[torch.Tensor, int]:
    """Directions ``(N, d)`` towards a flip found by L2 projected gradient descent on the margin.

    :func:`perturbscope.attacks.pgd.pgd_perturbation` with ``loss="margin"``: normalised-gradient
    steps of size ``t_max / 8`` (halved every ``steps // 3`` steps), projected on the ball
    ``||zeta|| <= t_max`` ``(N,)``; an image stops at its first iterate with margin ``<= 0``.
    Rows with no flip found are zero. Returns ``(u, gradients)`` (the final flip check's forwards
    are not counted); used when no flip lies along the gradient at ``x`` within the radius (a
    boundary reached only along a curved path).
    """
    n = x.shape[0]
    out = pgd_perturbation(clf, x, ref, t_max, norm="l2", steps=steps, step_size=t_max / 8.0,
                           loss="margin", early_stop=True, step_halvings=2, batch_size=batch_size)
    zeta = out.perturbation.reshape(n, -1).double()
    zn = zeta.norm(dim=1, keepdim=True)
    u = torch.where(out.success.unsqueeze(1) & (zn > 0), zeta / zn.clamp_min(1e-300),
                    torch.zeros_like(zn))
    return u.to(x.dtype), out.gradients
