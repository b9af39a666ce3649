"""Model access for the rare-event estimators: margins, flips, gradient directions, crossings.

A *flip* is a predicted label different from the reference label ``ref`` (normally the clean
prediction). The *margin* is positive iff there is no flip; binary ``"sigmoid"`` models that
expose ``.logit()`` (every perturbscope model does) are scored on the logit, which does not
saturate, so the margin stays informative far from the boundary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from perturbscope.models.outputs import binary_scores, margin, predict_labels

__all__ = ["MarginFn", "margin_fn", "margin_direction", "crossing_along"]

MarginFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def margin_fn(model: nn.Module, output: str) -> MarginFn:
    """Return ``f(xs, ref) -> (margin, flip)``, both ``(B,)``: one forward pass per call.

    ``margin`` is float64, ``> 0`` means the prediction equals ``ref``; ``flip`` is bool.
    """
    logit = getattr(model, "logit", None)
    if output == "sigmoid" and callable(logit):
        def f(xs: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = binary_scores(logit(xs), "logit")
            return margin(z, ref, "logit").double(), (z >= 0).long() != ref
        return f

    def g(xs: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(xs)
        flip = predict_labels(out, output) != ref
        if output == "sigmoid":
            p = binary_scores(out, output).double()
            eps = 1e-15
            out = torch.logit(p.clamp(eps, 1 - eps))
            return margin(out, ref, "logit"), flip
        return margin(out, ref, output).double(), flip
    return g


def margin_direction(f: MarginFn, x: torch.Tensor, ref: torch.Tensor, batch_size: int = 256
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
            mb, _ = f(xb, ref[sl])
            (grad,) = torch.autograd.grad(mb.sum(), xb)
            flat = -grad.reshape(grad.shape[0], -1).double()
            norm = flat.norm(dim=1)
            good = torch.isfinite(norm) & (norm > 0)
            unit = flat / torch.where(good, norm, torch.ones_like(norm)).unsqueeze(1)
            u[sl] = torch.where(good.unsqueeze(1), unit, torch.zeros_like(unit)).to(x.dtype)
            gn[sl] = torch.where(good, norm, torch.zeros_like(norm))
            m[sl] = mb.detach()
    return u, gn, m


@torch.inference_mode()
def crossing_along(f: MarginFn, x: torch.Tensor, ref: torch.Tensor, u: torch.Tensor,
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
        flips[sl] = f(xs, ref[i])[1]
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
        fl = torch.cat([f(xs[s:s + batch_size], ref[act][s:s + batch_size])[1]
                        for s in range(0, act.numel(), batch_size)])
        forwards += act.numel()
        hi[act] = torch.where(fl, mid, hi[act])
        lo[act] = torch.where(fl, lo[act], mid)
    t = torch.where(found, hi, torch.full_like(hi, float("inf")))
    return t, forwards


def pgd_flip_direction(f: MarginFn, x: torch.Tensor, ref: torch.Tensor, t_max: torch.Tensor,
                       steps: int = 30, batch_size: int = 256) -> tuple[torch.Tensor, int]:
    """Directions ``(N, d)`` towards a flip found by L2 projected gradient descent on the margin.

    Normalised-gradient steps of size ``t_max / 8`` (halved every ``steps / 3`` steps),
    projected on the ball ``||zeta|| <= t_max``; an image stops at its first flipping iterate.
    Rows with no flip found are zero. Returns ``(u, gradients)``; used when no flip lies along
    the gradient at ``x`` within the radius (a boundary reached only along a curved path).
    """
    n = x.shape[0]
    shape = x.shape[1:]
    zeta = torch.zeros((n, x[0].numel()), dtype=x.dtype, device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    tm = t_max.to(torch.float64)
    step = tm / 8.0
    grads = 0
    for k in range(steps):
        act = (~found).nonzero()[:, 0]
        if act.numel() == 0:
            break
        if k and k % max(steps // 3, 1) == 0:
            step = step / 2.0
        xa = x[act] + zeta[act].reshape(-1, *shape)
        g, _, m = margin_direction(f, xa, ref[act], batch_size)
        grads += act.numel()
        found[act] = m <= 0
        move = act[m > 0]
        if move.numel() == 0:
            continue
        gm = g[m > 0].double()
        z = zeta[move].double() + step[move].unsqueeze(1) * gm
        norm = z.norm(dim=1)
        z = z * torch.clamp(tm[move] / norm.clamp_min(1e-300), max=1.0).unsqueeze(1)
        zeta[move] = z.to(x.dtype)
    if (~found).any():  # the last iterate was never evaluated for a flip
        act = (~found).nonzero()[:, 0]
        with torch.inference_mode():
            _, flip = f(x[act] + zeta[act].reshape(-1, *shape), ref[act])
        found[act] = flip
    zn = zeta.double().norm(dim=1, keepdim=True)
    u = torch.where(found.unsqueeze(1) & (zn > 0), zeta.double() / zn.clamp_min(1e-300),
                    torch.zeros_like(zn))
    return u.to(x.dtype), grads
