"""The paper's L2 attack (Section 7.1.2): a line search along the normalised loss gradient.

For each input ``x`` with label ``l``::

    v = grad_x L(N(x), l) / ||grad_x L(N(x), l)||_2          (L = MSE of the output vs the label)
    s* = min { s_k = s_max * k / steps : f(x + s_k v) != l,  k = 1..steps }

``s*`` is an upper bound on the L2 distance from ``x`` to the decision surface. An optional
bisection then shrinks ``s*`` inside ``(s_{k-1}, s_k]`` until the bracket is below
``refine_tol`` (the returned perturbation still flips the prediction).

Scales are tried in increasing chunks and an image leaves the search at its first flip, so the
result is exactly the paper's smallest flipping grid point while images that flip early cost
fewer than ``steps`` forwards.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from perturbscope.attacks.result import AttackResult
from perturbscope.models.outputs import binary_scores, predict_labels
from perturbscope.models.runtime import eval_mode, model_device, resolve_output
from perturbscope.validation import check_images, check_labels

__all__ = ["loss_gradient_direction", "gradient_line_search"]


def _mse_loss(out: torch.Tensor, y: torch.Tensor, output: str) -> torch.Tensor:
    """Sum over the batch of the paper's MSE loss between the model's probabilities and the label."""
    if output == "logits":
        prob = torch.softmax(out, dim=1)
        target = torch.nn.functional.one_hot(y, prob.shape[1]).to(prob.dtype)
        return ((prob - target) ** 2).sum()
    s = binary_scores(out, output)
    prob = torch.sigmoid(s) if output == "logit" else s
    return ((prob - y.to(prob.dtype)) ** 2).sum()


def loss_gradient_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, output: str,
                            batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit L2 directions ``(N, *shape)`` of the loss gradient, and a ``(N,)`` mask of nonzero ones.

    Rows whose gradient is exactly zero (a saturated output) get a zero direction.
    The model must already be in the mode the caller wants (normally eval).
    """
    dirs = torch.empty_like(x)
    ok = torch.empty(x.shape[0], dtype=torch.bool, device=x.device)
    with torch.inference_mode(False), torch.enable_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].clone().requires_grad_(True)
            loss = _mse_loss(model(xb), y[start:start + batch_size], output)
            (g,) = torch.autograd.grad(loss, xb)
            flat = g.reshape(g.shape[0], -1).double()
            n = flat.norm(dim=1)
            good = (n > 0) & torch.isfinite(n)
            unit = flat / torch.where(good, n, torch.ones_like(n)).unsqueeze(1)
            unit[~good] = 0
            dirs[start:start + batch_size] = unit.to(x.dtype).reshape(g.shape)
            ok[start:start + batch_size] = good
    return dirs, ok


def _flips(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, output: str, batch_size: int
           ) -> torch.Tensor:
    out = torch.empty(xs.shape[0], dtype=torch.bool, device=xs.device)
    for start in range(0, xs.shape[0], batch_size):
        pred = predict_labels(model(xs[start:start + batch_size]), output)
        out[start:start + batch_size] = pred != ys[start:start + batch_size]
    return out


def gradient_line_search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    output: str | None = None,
    s_max: float = 10.0,
    steps: int = 256,
    refine_tol: float | None = None,
    batch_size: int = 256,
    chunk: int = 32,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> AttackResult:
    """Run the paper's line-search attack on inputs ``x`` ``(N, ...)`` with labels ``y`` ``(N,)``.

    Args:
        model: any ``nn.Module``; run in eval mode, its own mode restored afterwards; not moved.
        output: ``"sigmoid"``, ``"logit"`` or ``"logits"`` (default: ``model.output_kind``).
        s_max: largest L2 scale tried, in pixel units (default 10; the paper's value is lost).
        steps: number of equally spaced scales ``s_max * k / steps``, ``k = 1..steps`` (paper: 256).
        refine_tol: if set, bisect the flipping bracket to this L2 width (pixel units).
        batch_size: images per forward pass.
        chunk: scales tried per round before images that flipped leave the search.
        bounds: declared value range of ``x``, checked (perturbations are not clipped, as in
            the paper); ``None`` skips the check.

    Returns:
        :class:`AttackResult`; ``success`` is False where no scale up to ``s_max`` flips the
        prediction or the gradient is zero.
    """
    output = resolve_output(model, output)
    check_images(x, bounds)
    y = check_labels(y, x.shape[0])
    if steps < 1 or s_max <= 0:
        raise ValueError(f"need steps >= 1 and s_max > 0, got steps={steps}, s_max={s_max}")
    if refine_tol is not None and refine_tol <= 0:
        raise ValueError(f"refine_tol must be > 0, got {refine_tol}")
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    n = x.shape[0]
    with eval_mode(model):
        direction, ok = loss_gradient_direction(model, x, y, output, batch_size)
        forwards = n
        k_found = torch.zeros(n, dtype=torch.long, device=device)  # 0 = not found
        with torch.inference_mode():
            active = ok.nonzero()[:, 0]
            step = s_max / steps
            for k0 in range(1, steps + 1, chunk):
                if active.numel() == 0:
                    break
                ks = torch.arange(k0, min(k0 + chunk, steps + 1), device=device)
                scales = (ks.to(x.dtype) * step).view(1, -1, *([1] * (x.ndim - 1)))
                xs = (x[active].unsqueeze(1) + scales * direction[active].unsqueeze(1))
                xs = xs.reshape(-1, *x.shape[1:])
                ys = y[active].repeat_interleave(len(ks))
                flips = _flips(model, xs, ys, output, batch_size).view(len(active), len(ks))
                forwards += xs.shape[0]
                hit = flips.any(1)
                first = flips.to(torch.int8).argmax(1)
                k_found[active[hit]] = ks[first[hit]]
                active = active[~hit]
            success = k_found > 0
            s_hi = k_found.to(torch.float64) * step
            if refine_tol is not None and success.any():
                idx = success.nonzero()[:, 0]
                lo, hi = s_hi[idx] - step, s_hi[idx].clone()
                for _ in range(max(0, math.ceil(math.log2(step / refine_tol)))):
                    mid = (lo + hi) / 2
                    xs = x[idx] + mid.to(x.dtype).view(-1, *([1] * (x.ndim - 1))) * direction[idx]
                    flip = _flips(model, xs, y[idx], output, batch_size)
                    forwards += len(idx)
                    hi = torch.where(flip, mid, hi)
                    lo = torch.where(flip, lo, mid)
                s_hi[idx] = hi
        delta = s_hi.to(x.dtype).view(-1, *([1] * (x.ndim - 1))) * direction
    return AttackResult.from_perturbation(delta, success, forwards)
