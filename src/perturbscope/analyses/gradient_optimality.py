"""Theorem 7 checked with autograd: the loss gradient points along the optimal attack.

Spec 2.6. Smooth classifier ``h(x) = sigmoid(kappa <x, w>)`` with a random unit normal ``w``
(the two-balls model rotated so ``e_1 -> w``), loss ``L(|h(x) - l|)`` with ``L(t) = t^2`` (MSE).
Theorem 7: ``grad_x L`` is a positive multiple of ``+w`` for class 0 and ``-w`` for class 1,
so a line search along the normalised gradient finds the exact minimal attack
``dist(x, plane) = |<x, w>|`` for correctly classified points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from perturbscope.attacks.line_search import loss_gradient_direction
from perturbscope.models.classifier import Classifier
from perturbscope.models.pair_cnn import LinearBinary
from perturbscope.sampling import make_generator
from perturbscope.theory.engines import Sampler
from perturbscope.theory.two_balls import sample_two_balls

__all__ = ["GradientCheck", "check_gradient_direction"]


@dataclass(frozen=True)
class GradientCheck:
    """Result of :func:`check_gradient_direction`.

    Attributes:
        points: number of sampled points.
        zero_gradients: points whose gradient vanished (saturated sigmoid; prob. 0 in theory).
        min_cosine: smallest cosine between the gradient and the optimal direction ``±w``.
        max_distance_error: largest ``|s* - |<x, w>||`` over correctly classified points,
            where ``s*`` is where the ray ``x + s g/||g||`` meets the plane (radius units).
        attack_min_cosine: the same cosine for the direction used by the package's attack
            (:func:`perturbscope.attacks.line_search.loss_gradient_direction` on
            :class:`perturbscope.models.LinearBinary` with the same plane).
    """

    points: int
    zero_gradients: int
    min_cosine: float
    max_distance_error: float
    attack_min_cosine: float


def check_gradient_direction(n: int, samples: int = 256, *, eps: float = 0.1,
                             kappa: float = 4.0, seed: int = 0) -> GradientCheck:
    """Sample two-balls points in ``R^n``, rotate them, and compare autograd gradients to ``±w``.

    Args:
        n: dimension; samples: number of points; eps: half the centre distance (radius units);
        kappa: sharpness of ``h(x) = sigmoid(kappa <x, w>)``; seed: int seed.
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"dimension n must be a positive integer, got {n!r}")
    if not (math.isfinite(kappa) and kappa > 0):
        raise ValueError(f"kappa (sigmoid sharpness) must be > 0, got {kappa!r}")
    gen = make_generator(seed)
    w = torch.randn(n, generator=gen, dtype=torch.float64)
    w = w / w.norm()
    x, lab = sample_two_balls(Sampler("full", n, seed + 1), samples, eps=eps)
    # Householder reflection H maps e_1 to w: H = I - 2 v v^T / ||v||^2, v = e_1 - w
    v = -w.clone()
    v[0] += 1.0
    vv = float(v @ v)
    if vv > 1e-24:
        x = x - 2.0 * (x @ v)[:, None] * v[None, :] / vv
    x = x.detach().requires_grad_(True)
    h = torch.sigmoid(kappa * (x @ w))
    loss = ((h - lab.to(torch.float64)).abs() ** 2).sum()
    (grad,) = torch.autograd.grad(loss, x)
    gnorm = grad.norm(dim=1)
    nonzero = gnorm > 0
    sign = 1.0 - 2.0 * lab.to(torch.float64)  # +w for class 0, -w for class 1
    cos = (grad @ w) * sign / gnorm.clamp_min(1e-300)
    xw = (x.detach() @ w)
    correct = ((xw >= 0).long() == lab) & nonzero
    g_hat = grad / gnorm.clamp_min(1e-300)[:, None]
    s_star = -xw / (g_hat @ w)  # x + s g_hat crosses the plane at s_star
    err = (s_star - xw.abs()).abs()[correct]
    # the package's own attack direction on the same linear classifier
    clf = Classifier(LinearBinary(w, scale=kappa), "sigmoid", bounds=None)  # points leave [0, 1]
    with clf.evaluating():
        dirs, ok, _ = loss_gradient_direction(clf, x.detach(), lab)
    acos = ((dirs.reshape(samples, -1).double() @ w) * sign)[ok]
    return GradientCheck(
        points=samples,
        zero_gradients=int((~nonzero).sum()),
        min_cosine=float(cos[nonzero].min()) if nonzero.any() else float("nan"),
        max_distance_error=float(err.max()) if err.numel() else 0.0,
        attack_min_cosine=float(acos.min()) if acos.numel() else float("nan"),
    )
