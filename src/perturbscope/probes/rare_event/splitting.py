"""Subset simulation (multilevel splitting) of the flip probability on the model's margin.

No direction is assumed: the levels are quantiles of the score ``-margin(x + zeta)`` itself,
so the method also finds flip regions far from the gradient direction, and several of them.

Parametrisation. ``zeta = r * g[:d] / ||g||`` with ``g ~ N(0, I_{d+2})`` is exactly uniform in
``B_d(r)`` (the first ``d`` coordinates of a uniform point on the sphere ``S^{d+1}``). The
Markov kernel is preconditioned Crank-Nicolson on ``g``: ``g' = rho g + sigma xi``
(``rho^2 + sigma^2 = 1``), which leaves ``N(0, I)`` invariant, accepted iff the score stays
above the current level; so it leaves the uniform ball law restricted to the level set
invariant, and its acceptance does not degrade with the dimension. ``sigma`` adapts per task
towards ``accept_target`` (default 40%) acceptance (carried from level to level).

Estimator (Au & Beck 2001). ``N`` draws per level, ``p0 N`` seeds: level ``k`` is the
``(1 - p0)`` quantile of the scores; ``p_hat = p0^K * (flips among the last N) / N`` — a
consistent estimator (bias O(1/N)). Its squared coefficient of variation is estimated as
``sum_k (1 - p_k) / (p_k N) (1 + gamma_k)`` with ``gamma_k`` from the within-chain
autocorrelation of the level indicators, and the interval is log-normal. That formula ignores
the dependence between levels, so the interval is approximate (see docs/rare_event.md).

Diagnostic: ``lineages`` counts the distinct first-level draws the final flips descend from;
few lineages mean the chains barely decorrelate and the error is larger than the i.i.d.
formula (measured lineages and forwards for 20% on the pair CNN: docs/rare_event.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from perturbscope.models.classifier import Classifier
from perturbscope.probes.rare_event.model_eval import margin_flip

__all__ = ["SplitOutcome", "subset_simulation"]


@dataclass
class SplitOutcome:
    """Per-task estimates (arrays of shape ``(T,)``)."""

    log_p: np.ndarray
    log_ci_low: np.ndarray
    log_ci_high: np.ndarray
    rel_error: np.ndarray
    hits: np.ndarray       # flips among the last level's draws
    levels: np.ndarray     # intermediate levels passed
    forwards: np.ndarray
    converged: np.ndarray  # bool: stopped because >= p0 N draws flipped (not budget/max_levels)
    flip_mean: torch.Tensor | None = None  # (T, d) mean of the last level's flipping zeta
    lineages: np.ndarray | None = None  # (T,) distinct first-level draws the final flips descend from


def _gamma(ind: torch.Tensor) -> torch.Tensor:
    """Correlation factor ``(T,)`` of indicators ``(T, Ns, L)`` along chains (Au & Beck)."""
    t, ns, length = ind.shape
    n = ns * length
    fi = ind.double()
    p = fi.mean(dim=(1, 2))
    r0 = p * (1 - p)
    gamma = torch.zeros(t, dtype=torch.float64, device=ind.device)
    for k in range(1, length):
        rk = (fi[:, :, :-k] * fi[:, :, k:]).sum(dim=(1, 2)) / (n - k * ns) - p * p
        gamma += 2 * (1 - k * ns / n) * rk / torch.where(r0 > 0, r0, torch.ones_like(r0))
    return torch.where(r0 > 0, gamma.clamp_min(0.0), torch.zeros_like(gamma))


def subset_simulation(
    clf: Classifier,
    x: torch.Tensor,
    ref: torch.Tensor,
    img: torch.Tensor,
    radius: torch.Tensor,
    *,
    n_per_level: int = 500,
    p0: float = 0.1,
    max_levels: int = 60,
    budget: int = 20_000,
    level: float = 0.95,
    generator: torch.Generator,
    batch_size: int = 256,
    advance: Callable[[int], None] = lambda k: None,
    accept_target: float = 0.4,
) -> SplitOutcome:
    """Estimate ``P(flip)`` for ``T`` tasks (image ``img[t]``, ball radius ``radius[t]``).

    Args:
        n_per_level: draws ``N`` per level (``p0 * N`` must be an integer >= 1).
        p0: conditional probability of each intermediate level (0 < p0 <= 0.5).
        max_levels: stop after this many intermediate levels (``p >= p0^max_levels``).
        budget: forward passes per task; the run stops at the last level it can afford and
            estimates from there (``converged`` is then False).
        accept_target: pCN acceptance rate the step size adapts towards (0.05 - 0.95); any
            value leaves the estimator consistent, only its variance changes.
    """
    t_all = img.shape[0]
    n = n_per_level
    ns = int(round(p0 * n))
    if ns < 1 or abs(ns - p0 * n) > 1e-9 or ns >= n:
        raise ValueError(f"p0 * n_per_level must be an integer in [1, n_per_level), got "
                         f"p0={p0}, n_per_level={n}")
    length = n // ns
    if length * ns != n:
        raise ValueError(f"n_per_level must be a multiple of p0 * n_per_level = {ns}")
    if not 0.05 <= accept_target <= 0.95:
        raise ValueError(f"accept_target must be in [0.05, 0.95], got {accept_target}")
    if budget < n:
        raise ValueError(f"budget ({budget}) must be at least n_per_level ({n})")
    d = x[0].numel()
    shape = x.shape[1:]
    dev, dt = x.device, x.dtype

    def evaluate(g: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and flips for states ``g`` ``(B, d+2)`` of tasks ``task`` ``(B,)``."""
        sc = torch.empty(g.shape[0], dtype=torch.float64, device=dev)
        fl = torch.empty(g.shape[0], dtype=torch.bool, device=dev)
        for s in range(0, g.shape[0], batch_size):
            gb, tb = g[s:s + batch_size], task[s:s + batch_size]
            zeta = gb[:, :d] * (radius[tb].to(dt) / gb.norm(dim=1)).unsqueeze(1)
            i = img[tb]
            m, flip = margin_flip(clf, x[i] + zeta.reshape(-1, *shape), ref[i])
            sc[s:s + batch_size], fl[s:s + batch_size] = -m, flip
            advance(gb.shape[0])
        return sc, fl

    tasks = torch.arange(t_all, device=dev)
    anc = torch.arange(n).repeat(t_all, 1)  # (T, N) index of each state's first-level ancestor
    # the ball point of a state is r g[:d] / ||g|| (the pCN chain needs the Gaussian g itself);
    # draws on the generator's device, as perturbscope.sampling does
    g = torch.randn((t_all, n, d + 2), generator=generator, dtype=dt,
                    device=generator.device).to(dev)
    sc, fl = evaluate(g.reshape(-1, d + 2), tasks.repeat_interleave(n))
    sc, fl = sc.view(t_all, n), fl.view(t_all, n)
    log_p = torch.zeros(t_all, dtype=torch.float64)
    log_reached = torch.zeros(t_all, dtype=torch.float64)  # log P(last level) before flips
    cv2 = torch.zeros(t_all, dtype=torch.float64)
    hits = torch.zeros(t_all, dtype=torch.long)
    levels = torch.zeros(t_all, dtype=torch.long)
    forwards = torch.full((t_all,), n, dtype=torch.long)
    converged = torch.zeros(t_all, dtype=torch.bool)
    sigma = torch.full((t_all,), 0.5, dtype=torch.float64, device=dev)
    chained = torch.zeros(t_all, dtype=torch.bool)  # population made of chains (not iid)
    active = torch.ones(t_all, dtype=torch.bool)
    for k in range(max_levels + 1):
        nflip = fl.sum(1).cpu()
        stop = active & ((nflip >= ns) | (k == max_levels) | (forwards + n - ns > budget))
        if stop.any():
            idx = stop.nonzero()[:, 0]
            pf = nflip[idx].double() / n
            gam = _gamma(fl[idx.to(dev)].view(-1, ns, length)).cpu()
            gam = torch.where(chained[idx], gam, torch.zeros_like(gam))
            log_reached[idx] = log_p[idx]
            log_p[idx] += torch.log(pf)
            cv2[idx] += torch.where(pf > 0, (1 - pf) / (pf * n) * (1 + gam),
                                    torch.full_like(pf, math.inf))
            hits[idx] = nflip[idx]
            converged[idx] = nflip[idx] >= ns
            active &= ~stop
        if not active.any():
            break
        idx = active.nonzero()[:, 0].to(dev)
        ta = idx.numel()
        order = torch.argsort(sc[idx], dim=1, descending=True)
        thresh = sc[idx].gather(1, order[:, ns - 1:ns])  # (ta, 1)
        ind = (sc[idx] >= thresh).view(ta, ns, length)
        gam = torch.where(chained[idx.cpu()], _gamma(ind).cpu(), torch.zeros(ta, dtype=torch.float64))
        log_p[idx.cpu()] += math.log(p0)
        cv2[idx.cpu()] += (1 - p0) / (p0 * n) * (1 + gam)
        levels[idx.cpu()] += 1
        seeds = order[:, :ns]
        anc[idx.cpu()] = anc[idx.cpu()].gather(1, seeds.cpu()).repeat_interleave(length, dim=1)
        cur_g = g[idx].gather(1, seeds.unsqueeze(2).expand(ta, ns, d + 2))
        cur_s = sc[idx].gather(1, seeds)
        cur_f = fl[idx].gather(1, seeds)
        states_g, states_s, states_f = [cur_g], [cur_s], [cur_f]
        sig = sigma[idx].to(dt).view(ta, 1, 1)
        rho = torch.sqrt(1 - sig * sig)
        task_ids = idx.repeat_interleave(ns)
        for _ in range(length - 1):
            xi = torch.randn(cur_g.shape, generator=generator, dtype=dt,
                             device=generator.device).to(dev)
            prop = rho * cur_g + sig * xi
            ps, pfl = evaluate(prop.reshape(-1, d + 2), task_ids)
            ps, pfl = ps.view(ta, ns), pfl.view(ta, ns)
            ok = ps >= thresh
            step_acc = ok.double().mean(1)
            # adapt the step within the level, gently, towards ~40% acceptance
            sig = (sig * torch.exp(0.5 * (step_acc - accept_target)).to(dt).view(ta, 1, 1)).clamp(0.02, 1.0)
            rho = torch.sqrt(1 - sig * sig)
            cur_g = torch.where(ok.unsqueeze(2), prop, cur_g)
            cur_s = torch.where(ok, ps, cur_s)
            cur_f = torch.where(ok, pfl, cur_f)
            states_g.append(cur_g)
            states_s.append(cur_s)
            states_f.append(cur_f)
        forwards[idx.cpu()] += n - ns
        # population ordered (chain, step) so that _gamma sees each chain as one row
        g[idx] = torch.stack(states_g, 2).reshape(ta, n, d + 2)
        sc[idx] = torch.stack(states_s, 2).reshape(ta, n)
        fl[idx] = torch.stack(states_f, 2).reshape(ta, n)
        chained[idx.cpu()] = True
        sigma[idx] = sig.view(ta).to(torch.float64)
    z = float(special.ndtri(1.0 - (1.0 - level) / 2.0))
    lp = log_p.numpy()
    c2 = cv2.numpy()
    sd = np.sqrt(np.log1p(c2))
    h = hits.numpy()
    # no flip at the last level: P(last level) times the exact binomial bound for 0 / N
    zero_hi = log_reached.numpy() + np.log(-np.expm1(np.log((1.0 - level) / 2.0) / n))
    with np.errstate(invalid="ignore"):
        lo = np.where(h > 0, lp - z * sd, -np.inf)
        hi = np.where(h > 0, np.minimum(lp + z * sd, 0.0), zero_hi)
    zeta = g[:, :, :d] * (radius.to(dt).view(-1, 1, 1) / g.norm(dim=2, keepdim=True))
    w = fl.to(dt).unsqueeze(2)
    flip_mean = (zeta * w).sum(1) / w.sum(1).clamp_min(1.0)
    lineages = np.array([int(torch.unique(anc[t][fl[t].cpu()]).numel()) for t in range(t_all)])
    return SplitOutcome(lp, lo, hi, np.sqrt(c2), h.astype(np.int64), levels.numpy(),
                        forwards.numpy(), converged.numpy(), flip_mean, lineages)
