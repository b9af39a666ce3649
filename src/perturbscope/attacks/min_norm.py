"""A fast batched minimal-norm L2 attack in the FMN / DDN family (our own implementation).

Fast Minimum-Norm (Pintor et al., NeurIPS 2021) and Decoupled Direction and Norm (Rony et al.,
CVPR 2019) alternate two updates per iteration on the perturbation ``delta`` of every image:

* a **norm budget** ``eps``: shrunk by a factor ``1 - gamma_k`` (and capped at the best flipping
  norm found so far) while ``x + delta`` is adversarial, grown by ``1 + gamma_k`` while it is
  not; before the first flip it is set to the linear estimate of the distance to the boundary,
  ``||delta|| + m(x + delta) / ||grad m||`` (``m`` = classification margin), plus ``overshoot``;
* a **direction** step: ``delta <- delta - alpha_k * eps * grad m / ||grad m||``, then ``delta``
  is projected onto the L2 ball of radius ``eps`` (and, if ``clip``, into the box).

``gamma_k`` and ``alpha_k`` are cosine-annealed from ``gamma`` to ``gamma / 50`` and from
``alpha`` to ``alpha / 100``. The step is relative to the budget (``alpha_k * eps``), so the
schedule does not depend on the scale of the inputs. The first iteration is therefore a
DeepFool step (the linearised boundary point), after which the budget/direction updates slide
the iterate along the boundary towards the nearest point. Images whose best norm has not
improved by ``rtol`` (relative) for ``patience`` iterations leave the batch (early stop). Finally
the best flipping perturbation is shortened by bisection on its scale ``t`` in ``(0, 1]``
(forward passes only), keeping the smallest ``t`` that still flips.

Margin (positive iff the prediction is the reference label ``y``): for binary models the
pre-sigmoid score ``z`` (through the model's ``logit`` method when it has one, else ``logit(p)``)
signed by the label; for ``"logits"`` models ``score[y] - score[k]`` for the rival ``k`` whose
linearised boundary is nearest at the current iterate (one backward pass per rival; FMN's
``score[y] - max_k score[k]`` heads for the largest rival, not the nearest facet). A flip is
always judged on the model's own labels (:class:`~perturbscope.models.classifier.Classifier`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from perturbscope.attacks.base import Attack, RunOutput, register_attack
from perturbscope.models.classifier import Classifier, input_gradient
from perturbscope.validation import check_float, check_int

__all__ = ["MinNorm", "margins_and_labels"]


def margins_and_labels(clf: Classifier) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """A function ``(x, y, cand=None) -> (margins (N, C), labels (N,))`` from one forward pass.

    Binary models: ``C = 1``, the signed logit. ``"logits"`` models: the margins
    ``score[y] - score[k]`` for the candidate classes ``cand`` ``(N, C)`` (default: every other
    class). The prediction is ``y`` only if every margin is positive (up to ties at 0).
    """
    def f(x: torch.Tensor, y: torch.Tensor, cand: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
        s, labels = clf.scores_and_labels(x)
        if clf.binary:
            return clf.margin_of_scores(s, y).unsqueeze(1), labels
        if cand is None:
            k = s.shape[1]
            cand = torch.stack([torch.cat([torch.arange(c), torch.arange(c + 1, k)])
                                for c in y.tolist()]).to(s.device)
        return s.gather(1, y.view(-1, 1)) - s.gather(1, cand), labels
    return f


def _bshape(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.view(-1, *([1] * (ndim - 1)))


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


@register_attack
@dataclass(frozen=True)
class MinNorm(Attack):
    """Smallest L2 perturbation found that changes the label of each input (FMN / DDN family).

    Attributes:
        steps: gradient iterations (each one forward and one backward pass per active image
            and rival class).
        gamma: initial relative budget change per iteration (FMN: 0.05).
        step_size: initial step length relative to the budget (annealed to ``step_size / 100``);
            FMN's ``alpha``. 2-4 gave a smaller median norm than 1 on the Fashion-MNIST pair CNN
            (docs/bounds.md).
        overshoot: relative margin added to the linear distance estimate before the first flip.
        patience, rtol: early stop of an image after ``patience`` iterations without a relative
            improvement of ``rtol`` of its best norm (``patience=0`` disables early stopping).
        binary_search_steps: bisection steps on the scale of the best perturbation at the end.
        candidates: multi-class models: rival classes followed (the ``candidates`` with the
            smallest clean margins); each iteration takes one backward pass per rival and moves
            against the one whose linearised boundary is nearest (DeepFool's choice; FMN uses
            the largest rival logit, which misses the nearest facet).
        clip: keep ``x + delta`` inside the classifier's bounds (default False: unconstrained, as
            the paper's line search; any flipping perturbation is an upper bound on the distance).
    """

    name = "min-norm"
    steps: int = 30
    gamma: float = 0.05
    step_size: float = 2.0
    overshoot: float = 0.02
    patience: int = 10
    rtol: float = 1e-3
    binary_search_steps: int = 12
    candidates: int = 9

    def validate(self) -> None:
        check_int("steps", self.steps, minimum=1)
        check_float("gamma", self.gamma, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float("step_size", self.step_size, low=0.0, low_open=True)
        check_float("overshoot", self.overshoot, low=0.0)
        check_float("rtol", self.rtol, low=0.0)
        check_int("patience", self.patience, minimum=0)
        check_int("binary_search_steps", self.binary_search_steps, minimum=0)
        check_int("candidates", self.candidates, minimum=1)

    def _run(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> RunOutput:
        box = clf.bounds if self.clip else None
        fn = margins_and_labels(clf)
        deltas, succ, forwards, gradients = [], [], 0, 0
        for start in range(0, x.shape[0], self.batch_size):
            d, s, f, g = _attack_chunk(fn, x[start:start + self.batch_size], y[start:start + self.batch_size],
                                       self.steps, self.gamma, self.step_size, self.overshoot, self.patience,
                                       self.rtol, self.binary_search_steps, box, self.candidates)
            deltas.append(d)
            succ.append(s)
            forwards += f
            gradients += g
        return RunOutput(torch.cat(deltas), torch.cat(succ), forwards, gradients)


def _attack_chunk(fn, x, y, steps, gamma, alpha, overshoot, patience, rtol, bs_steps, box, candidates):
    n, nd = x.shape[0], x.ndim
    dtype = x.dtype
    inf = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
    best_norm = inf.clone()
    best = torch.zeros_like(x)
    delta = torch.zeros_like(x)
    eps = inf.clone()
    stale = torch.zeros(n, dtype=torch.long, device=x.device)
    with torch.no_grad():
        m0, lab0 = fn(x, y)
    forwards, gradients = n, 0
    cand = None
    if m0.shape[1] > candidates:  # multi-class: the reference class vs its nearest rivals
        cand_all = torch.stack([torch.cat([torch.arange(c), torch.arange(c + 1, m0.shape[1] + 1)])
                                for c in y.tolist()]).to(x.device)
        cand = cand_all.gather(1, m0.topk(candidates, dim=1, largest=False).indices)
    elif m0.shape[1] > 1:
        cand = torch.stack([torch.cat([torch.arange(c), torch.arange(c + 1, m0.shape[1] + 1)])
                            for c in y.tolist()]).to(x.device)
    already = lab0 != y
    best_norm[already] = 0.0
    active = (~already).nonzero()[:, 0]
    gamma_end, alpha_end = gamma / 50, alpha / 100
    for k in range(steps):
        if active.numel() == 0:
            break
        cos = (1 + math.cos(math.pi * k / steps)) / 2
        g_k = gamma_end + (gamma - gamma_end) * cos
        a_k = alpha_end + (alpha - alpha_end) * cos
        xa, ya, da = x[active], y[active], delta[active].clone().requires_grad_(True)
        ca = None if cand is None else cand[active]
        with torch.enable_grad():
            mall, lab = fn(xa + da, ya, ca)
            grads = [input_gradient(mall[:, j].sum(), da, retain_graph=j < mall.shape[1] - 1)
                     for j in range(mall.shape[1])]
        forwards += active.numel()
        gradients += active.numel() * mall.shape[1]
        dn = _flat_norm(da.detach()).double()
        # follow the rival class whose linearised boundary is nearest (DeepFool's choice)
        mall = mall.detach().double()
        gns = torch.stack([_flat_norm(gj).double() for gj in grads], 1)
        est = mall.clamp_min(0) / gns.clamp_min(1e-300)
        est = torch.where(torch.isfinite(est) & (gns > 0), est, torch.full_like(est, math.inf))
        j_best = est.argmin(1)
        m = mall.gather(1, j_best.view(-1, 1))[:, 0]
        grad = torch.stack(grads, 1)[torch.arange(active.numel(), device=x.device), j_best]
        is_adv = lab != ya
        better = is_adv & (dn < best_norm[active])
        rel_gain = torch.where(torch.isfinite(best_norm[active]),
                               (best_norm[active] - dn) / best_norm[active].clamp_min(1e-30), inf[active])
        improved = better & (rel_gain > rtol)
        if better.any():
            ib = active[better]
            best_norm[ib] = dn[better]
            best[ib] = da.detach()[better]
        stale[active] = torch.where(improved, torch.zeros_like(stale[active]), stale[active] + 1)
        gn = _flat_norm(grad).double()
        ok = torch.isfinite(gn) & (gn > 0) & torch.isfinite(m)
        lin = (dn + m.clamp_min(0) / torch.where(ok, gn, torch.ones_like(gn))) * (1 + overshoot)
        found = torch.isfinite(best_norm[active])
        e_old = eps[active]
        e_new = torch.where(is_adv, torch.minimum(e_old * (1 - g_k), best_norm[active]),
                            torch.where(found, e_old * (1 + g_k), lin))
        e_new = torch.where(ok, e_new, e_old)
        eps[active] = e_new
        unit = grad / _bshape(torch.where(ok, gn, torch.ones_like(gn)).to(dtype), nd)
        step = _bshape((a_k * e_new).to(dtype), nd) * unit
        dnew = da.detach() - torch.where(_bshape(ok, nd), step, torch.zeros_like(step))
        nn_ = _flat_norm(dnew).double()
        factor = torch.where(nn_ > e_new, e_new / nn_.clamp_min(1e-30), torch.ones_like(nn_))
        dnew = dnew * _bshape(factor.to(dtype), nd)
        if box is not None:
            dnew = (xa + dnew).clamp(*box) - xa
        delta[active] = dnew
        keep = ok & ~((stale[active] >= patience) & found) if patience > 0 else ok
        active = active[keep]
    # last iterate (not yet checked) for images still running
    if active.numel():
        with torch.no_grad():
            _, lab = fn(x[active] + delta[active], y[active], None if cand is None else cand[active])
        forwards += active.numel()
        dn = _flat_norm(delta[active]).double()
        better = (lab != y[active]) & (dn < best_norm[active])
        best_norm[active[better]] = dn[better]
        best[active[better]] = delta[active][better]
    success = torch.isfinite(best_norm)
    # bisection on the scale t of the best perturbation: hi always flips
    idx = (success & ~already).nonzero()[:, 0]
    if idx.numel() and bs_steps:
        lo = torch.zeros(idx.numel(), dtype=torch.float64, device=x.device)
        hi = torch.ones_like(lo)
        for _ in range(bs_steps):
            mid = (lo + hi) / 2
            xs = x[idx] + _bshape(mid.to(dtype), nd) * best[idx]
            if box is not None:
                xs = xs.clamp(*box)
            with torch.no_grad():
                _, lab = fn(xs, y[idx], None if cand is None else cand[idx])
            forwards += idx.numel()
            flip = lab != y[idx]
            hi = torch.where(flip, mid, hi)
            lo = torch.where(flip, lo, mid)
        xs = x[idx] + _bshape(hi.to(dtype), nd) * best[idx]
        if box is not None:
            xs = xs.clamp(*box)
        best[idx] = xs - x[idx]
    best[already] = 0
    return best.detach(), success, forwards, gradients
