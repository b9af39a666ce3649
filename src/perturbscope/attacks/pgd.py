"""Projected gradient descent (Madry et al., ICLR 2018) in a fixed L2 or Linf ball.

One implementation, two entry points:

* :class:`PGD` (``"pgd"``), a registered :class:`~perturbscope.attacks.base.Attack` with one
  budget ``eps`` for every input: the shared call re-checks success and reports the norms;
* :func:`pgd_perturbation`, the loop itself, with a radius (and step) per input, for callers
  that need the raw iterate of every row (the harmless-space split, the rare-event direction
  search).

Each iteration takes, for every input still running, one gradient of the loss at
``x + delta`` and moves ``delta`` *up* the loss:

``loss="ce"``
    cross-entropy of the classifier's scores against ``y`` (binary models: the logistic loss of
    their pre-sigmoid score, :meth:`~perturbscope.models.classifier.Classifier.scores`);
``loss="margin"``
    minus the signed margin (:meth:`~perturbscope.models.classifier.Classifier.margin`), so the
    iterate heads straight for the decision boundary.

``norm="linf"``: ``delta <- clip(delta + step * sign(g), -r, r)`` (in the inputs' dtype);
``norm="l2"``: ``delta <- P_r(delta + step * g / ||g||_2)``, the radial projection onto the L2
ball of radius ``r`` (computed in float64, stored in the inputs' dtype). Rows with a zero
gradient do not move. With ``clip`` the iterate is also projected onto the classifier's bounds
(``delta <- clip(x + delta, lo, hi) - x``) after every step.

With ``early_stop`` an input leaves the loop at the first iterate whose margin is ``<= 0`` (a
flip, ties included) and keeps that iterate; otherwise every input takes all ``steps`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from perturbscope.attacks.base import Attack, RunOutput, register_attack
from perturbscope.models.classifier import Classifier, input_gradient
from perturbscope.validation import check_float, check_int

__all__ = ["PGD", "PGDOutput", "pgd_perturbation", "PGD_NORMS", "PGD_LOSSES"]

PGD_NORMS = ("linf", "l2")
PGD_LOSSES = ("ce", "margin")


@dataclass
class PGDOutput:
    """What :func:`pgd_perturbation` returns for ``N`` inputs.

    Attributes:
        perturbation: ``(N, *shape)`` final iterate ``delta`` (pixel units, inputs' dtype); the
            first flipping iterate of an input that stopped early.
        success: ``(N,)`` bool: the margin was ``<= 0`` at the iterate where an input stopped
            early, else the label of ``x + delta`` differs from ``y`` (one forward pass).
        forwards: single-input forward passes, those inside gradient evaluations included.
        gradients: single-input gradient (backward) passes.
        iterations: ``(N,)`` int64 steps taken by each input.
    """

    perturbation: torch.Tensor
    success: torch.Tensor
    forwards: int
    gradients: int
    iterations: torch.Tensor


def _per_input(value: float | torch.Tensor, n: int, device: torch.device, name: str) -> torch.Tensor:
    """A scalar or ``(n,)`` tensor as a float64 ``(n,)`` tensor of finite values >= 0."""
    t = torch.as_tensor(value, dtype=torch.float64).to(device)
    if t.ndim == 0:
        t = t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"{name} must be a number or a tensor of shape ({n},), got {tuple(t.shape)}")
    if not bool((torch.isfinite(t) & (t >= 0)).all()):
        raise ValueError(f"{name} must be finite and >= 0 (pixel units), got values in "
                         f"[{float(t.min()):.4g}, {float(t.max()):.4g}]")
    return t


def _loss_gradient(clf: Classifier, x: torch.Tensor, y: torch.Tensor, loss: str, batch_size: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ``(M, *shape)`` of the summed loss at ``x`` and the margins ``(M,)`` there."""
    grad = torch.empty_like(x)
    margins = []
    with torch.inference_mode(False), torch.enable_grad():
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            xb = x[sl].clone().requires_grad_(True)
            yb = y[sl]
            s = clf.scores(xb)
            m = clf.margin_of_scores(s, yb)
            if loss == "margin":
                obj = -m.sum()
            elif clf.binary:
                obj = nn.functional.binary_cross_entropy_with_logits(s, yb.to(s.dtype), reduction="sum")
            else:
                obj = nn.functional.cross_entropy(s, yb, reduction="sum")
            g = input_gradient(obj, xb)
            grad[sl] = g
            margins.append(m.detach())
    return grad, torch.cat(margins)


def _l2_step(delta: torch.Tensor, g: torch.Tensor, step: torch.Tensor, radius: torch.Tensor
             ) -> torch.Tensor:
    """``P_r(delta + step * g / ||g||)`` per row, in float64; zero gradients do not move."""
    m = delta.shape[0]
    flat = g.reshape(m, -1).double()
    gn = flat.norm(dim=1)
    good = torch.isfinite(gn) & (gn > 0)
    unit = flat / torch.where(good, gn, torch.ones_like(gn)).unsqueeze(1)
    unit = torch.where(good.unsqueeze(1), unit, torch.zeros_like(unit)).to(delta.dtype)
    z = delta.reshape(m, -1).double() + step.unsqueeze(1) * unit.double()
    zn = z.norm(dim=1)
    z = z * torch.clamp(radius / zn.clamp_min(1e-300), max=1.0).unsqueeze(1)
    return z.to(delta.dtype).reshape(delta.shape)


def pgd_perturbation(clf: Classifier, x: torch.Tensor, y: torch.Tensor, radius: float | torch.Tensor, *,
                     norm: str = "linf", steps: int = 20, step_size: float | torch.Tensor | None = None,
                     random_start: float = 0.0, seed: int = 0, loss: str = "ce",
                     early_stop: bool = False, step_halvings: int = 0, clip: bool = False,
                     batch_size: int = 256) -> PGDOutput:
    """Projected gradient descent from ``x`` ``(N, *shape)`` away from labels ``y`` ``(N,)``.

    No input or bounds checks and no mode switch: the caller passes inputs on the classifier's
    device with the model already in the mode it wants (normally eval,
    :meth:`~perturbscope.models.classifier.Classifier.evaluating`).

    Args:
        clf: the classifier.
        radius: ball radius in pixel units, one number or ``(N,)`` per input (L2 or Linf by
            ``norm``).
        norm: ``"linf"`` (sign steps, as in the paper) or ``"l2"`` (normalised-gradient steps).
        steps: iterations.
        step_size: step length in pixel units, a number or ``(N,)``; default ``radius / 8``
            (linf) or ``2.5 * radius / steps`` (l2).
        random_start: standard deviation (pixel units) of a Gaussian start
            ``delta_0 ~ random_start * N(0, I)``, drawn on the CPU from ``seed`` for the whole
            batch (not projected before the first step); 0: start at ``delta_0 = 0``.
        loss: ``"ce"`` or ``"margin"`` (see the module docstring).
        early_stop: stop an input at its first iterate with margin ``<= 0``.
        step_halvings: halve the step at iterations ``k = j * (steps // (step_halvings + 1))``,
            ``j >= 1`` (0: constant step).
        clip: project ``x + delta`` onto the classifier's bounds after every step.
        batch_size: inputs per gradient evaluation.
    Returns:
        :class:`PGDOutput`.
    """
    if norm not in PGD_NORMS:
        raise ValueError(f"norm must be one of {PGD_NORMS}, got {norm!r}")
    if loss not in PGD_LOSSES:
        raise ValueError(f"loss must be one of {PGD_LOSSES}, got {loss!r}")
    check_int("steps", steps, minimum=1)
    check_int("step_halvings", step_halvings, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    check_float("random_start", random_start, low=0.0)
    if clip and clf.bounds is None:
        raise ValueError("clip=True needs a classifier with bounds (got bounds=None)")
    n, dtype, dev = x.shape[0], x.dtype, x.device
    view = (-1, *([1] * (x.ndim - 1)))
    r64 = _per_input(radius, n, dev, "radius")
    if step_size is None:
        s64 = r64 / 8.0 if norm == "linf" else 2.5 * r64 / steps
    else:
        s64 = _per_input(step_size, n, dev, "step_size")
    if random_start > 0:
        gen = torch.Generator().manual_seed(int(seed))
        delta = (random_start * torch.randn(x.shape, generator=gen)).to(x)
    else:
        delta = torch.zeros_like(x)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    iterations = torch.zeros(n, dtype=torch.long, device=dev)
    period = max(steps // (step_halvings + 1), 1) if step_halvings else 0
    forwards = gradients = 0
    for k in range(steps):
        act = (~done).nonzero()[:, 0]
        if act.numel() == 0:
            break
        if period and k and k % period == 0:
            s64 = s64 / 2.0
        g, m = _loss_gradient(clf, x[act] + delta[act], y[act], loss, batch_size)
        forwards += act.numel()
        gradients += act.numel()
        if early_stop:
            done[act] = m <= 0
            keep = m > 0
            act, g = act[keep], g[keep]
            if act.numel() == 0:
                continue
        if norm == "linf":
            r = r64[act].to(dtype).view(view)
            d = delta[act] + s64[act].to(dtype).view(view) * g.sign()
            d = torch.maximum(torch.minimum(d, r), -r)
        else:
            d = _l2_step(delta[act], g, s64[act], r64[act])
        if clip:
            d = (x[act] + d).clamp(*clf.bounds) - x[act]
        delta[act] = d
        iterations[act] += 1
    success = done.clone()
    rest = (~done).nonzero()[:, 0]
    if rest.numel():  # the last iterate was never evaluated
        with torch.no_grad():
            for start in range(0, rest.numel(), batch_size):
                rows = rest[start:start + batch_size]
                success[rows] = clf.labels_of(clf.raw(x[rows] + delta[rows])) != y[rows]
        forwards += rest.numel()
    return PGDOutput(delta.detach(), success, forwards, gradients, iterations)


@register_attack
@dataclass(frozen=True)
class PGD(Attack):
    """Projected gradient descent with one L2 or Linf budget ``eps`` for every input.

    Not a minimal-norm attack: it succeeds where a flip lies within ``eps`` (and the ascent
    finds it); the norms it reports are those of the returned iterate (at most ``eps``).

    Attributes:
        eps: ball radius in pixel units (default 8/255, the paper's Linf protocol, spec 3.1).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations (paper: 20).
        step_size: step length in pixel units; default ``eps / 8`` (linf; paper: 1/255 for
            8/255) or ``2.5 * eps / steps`` (l2).
        random_start: standard deviation of the Gaussian start, pixel units (paper: 0.001).
        seed: seed of the random start (drawn for the attacked inputs only).
        loss: ``"ce"`` (cross-entropy, default) or ``"margin"``.
        early_stop: stop an input at its first flipping iterate (default: all ``steps`` steps).
        step_halvings: halve the step ``step_halvings`` times at evenly spaced iterations.
        clip: keep ``x + delta`` inside the classifier's bounds at every iterate.

    ``result.iterations`` holds the steps taken per input.
    """

    name = "pgd"
    eps: float = 8 / 255
    norm: str = "linf"
    steps: int = 20
    step_size: float | None = None
    random_start: float = 1e-3
    seed: int = 0
    loss: str = "ce"
    early_stop: bool = False
    step_halvings: int = 0

    def validate(self) -> None:
        check_float("eps", self.eps, low=0.0, low_open=True)
        if self.norm not in PGD_NORMS:
            raise ValueError(f"norm must be one of {PGD_NORMS}, got {self.norm!r}")
        check_int("steps", self.steps, minimum=1)
        if self.step_size is not None:
            check_float("step_size", self.step_size, low=0.0, low_open=True)
        check_float("random_start", self.random_start, low=0.0)
        check_int("seed", self.seed)
        if self.loss not in PGD_LOSSES:
            raise ValueError(f"loss must be one of {PGD_LOSSES}, got {self.loss!r}")
        if not isinstance(self.early_stop, bool):
            raise TypeError(f"early_stop must be True or False, got {self.early_stop!r}")
        check_int("step_halvings", self.step_halvings, minimum=0)

    def _run(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> RunOutput:
        out = pgd_perturbation(clf, x, y, float(self.eps), norm=self.norm, steps=self.steps,
                               step_size=self.step_size, random_start=float(self.random_start),
                               seed=self.seed, loss=self.loss, early_stop=self.early_stop,
                               step_halvings=self.step_halvings, clip=self.clip,
                               batch_size=self.batch_size)
        return RunOutput(out.perturbation, out.success, out.forwards, out.gradients, out.iterations)
