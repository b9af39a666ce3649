"""Adaptive line sampling of the flip probability (conditional Monte Carlo along one direction).

Write ``zeta`` uniform in ``B_d(r)`` as ``zeta = rho (c u + sqrt(1 - c^2) v)``: a unit input
direction ``u``, ``v`` uniform on the unit sphere orthogonal to ``u``, ``rho = r V^(1/d)`` and
``c`` the cosine with ``u``, independent of ``(v, rho)``, whose tail ``P(c >= t)`` is the
``(d-2)``-ball cap fraction (:func:`log_tail`). A *line* is one draw of ``(v, rho)``; along it
the coordinate ``s = c sqrt(d - 1) / sqrt(1 - c^2)`` (about standard normal in high ``d``)
runs from ``-inf`` (the point ``-rho u``) to ``+inf`` (``+rho u``). If the flip set on every
line is an upper ray ``{s >= s*}`` (*single-crossing assumption*), then

    p = E_line[ P(c >= c(s*)) ]

exactly, and the mean over independent lines is unbiased; each line costs the forwards of a
root search for ``s*`` (a safeguarded secant started at the typical crossing; measured
forwards per line in docs/rare_event.md). This is the classic *line sampling* of structural
reliability, here in the exact angular coordinates of the uniform ball.

``u`` matters for the *variance* only (any ``u`` gives an unbiased estimate under the
assumption): it starts at the refined boundary normal and is moved ``rounds`` times to the
normalised weighted mean of the margin normals at the crossings of ``pilot_lines`` lines,
weights ``P(flip | line)^tau`` (``tau = 0.5`` tempers the weights, so that one extreme line does
not decide the direction). The last direction's pilot lines enter the estimate.

Confidence interval: log-normal (delta method) around the mean with the larger of the
sample relative standard error of the per-line values and the one a log-normal fit of them
implies (the per-line values are heavy-tailed on curved boundaries and the sample variance
misses the unseen tail); still optimistic when the tail is heavier than log-normal (see
docs/rare_event.md, "When it fails").

When the assumption fails: a line whose flip set is an interval (the prediction flips and
flips back as ``s`` grows) makes the estimate too high; a line with flips below a non-flipping
stretch (several crossings) makes it too low. The secant finds one crossing near the typical
one (``benchmarks/bench_lines.py --grid-lines`` scans lines on a grid to count such lines).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from perturbscope.models.classifier import Classifier
from perturbscope.probes.rare_event.model_eval import margin_direction, margin_flip
from perturbscope.sampling import uniform_ball
from perturbscope.stats import binomial_ci
from perturbscope.theory.caps import log_cap_fraction_array

__all__ = ["LineOutcome", "line_sampling", "secant_crossings", "start_coordinate"]

#: lines are searched for ``s`` in ``[-S_CAP, S_CAP]``; ``Phi(-S_CAP) ~ 1e-308``.
S_CAP = 37.5
#: root tolerance in ``s`` (a secant step below it stops the search); ``|d log P / ds| ~ s``,
#: so it bounds a line's relative error by ``~ s * ROOT_TOL`` (added to the interval).
ROOT_TOL = 1e-3


@dataclass
class LineOutcome:
    """Per-task estimates (arrays of shape ``(T,)``, float64 unless said)."""

    log_p: np.ndarray       # natural log of the estimate (-inf when no line crosses)
    log_ci_low: np.ndarray
    log_ci_high: np.ndarray
    rel_error: np.ndarray   # estimated standard error / estimate (inf when no line crosses)
    hits: np.ndarray        # int64, lines with a crossing in [-S_CAP, S_CAP] (plain: flips)
    lines: np.ndarray       # int64, lines in the estimate (0: finished by plain sampling)
    forwards: np.ndarray    # int64, forward passes (pilot lines included)
    gradients: np.ndarray   # int64, margin gradients (direction adaptation)
    unconverged: np.ndarray  # int64, lines whose root search hit the iteration cap
    s_typical: np.ndarray   # median crossing coordinate of the final direction's pilot lines
    max_share: np.ndarray   # largest single line's share of the estimate (heavy-tail warning)
    direction: torch.Tensor  # (T, d) final sampling direction per task (x's dtype)


def start_coordinate(t: np.ndarray, r: np.ndarray, d: int) -> np.ndarray:
    """Line coordinate ``s`` whose point has along-u distance ``t`` for a typical line.

    The point at coordinate ``s`` of a line with radius ~``r`` has along-u distance
    ``r s / sqrt(s^2 + d - 1)``, equal to ``t`` at ``s = sqrt(d - 1) q / sqrt(1 - q^2)``,
    ``q = t / r`` (``t = inf`` or ``t >= r`` give a large start).
    """
    q = np.clip(np.where(np.isfinite(t), t / r, 0.99), 0.0, 0.99)
    return np.minimum(math.sqrt(d - 1.0) * q / np.sqrt(1.0 - q * q), S_CAP - 1.0)


class _Lines:
    """A batch of lines ``(K,)``, each tied to a task; evaluates margins along them.

    Line ``k`` is a unit vector ``v`` orthogonal to its task's ``u`` and a radius
    ``rho = r V^(1/d)``, both read off one :func:`perturbscope.sampling.uniform_ball` point
    ``zeta`` of ``B_d(r)`` (``rho = ||zeta||``, ``v`` = its part orthogonal to ``u``, normalised;
    independent of each other and of the discarded cosine); coordinate ``s`` is the point
    ``rho (c u + sqrt(1 - c^2) v)`` with ``c = s / sqrt(s^2 + d - 1)``.
    """

    def __init__(self, clf: Classifier, x: torch.Tensor, ref: torch.Tensor, u: torch.Tensor,
                 img: torch.Tensor, radius: torch.Tensor, task: torch.Tensor,
                 generator: torch.Generator, batch_size: int) -> None:
        self.clf, self.x, self.ref, self.u, self.batch_size = clf, x, ref, u, batch_size
        self.task, self.img = task, img[task]   # per line: its task (row of u), its image
        k, d = task.numel(), u.shape[1]
        self.d = d
        zeta = uniform_ball(k, d, 1.0, seed=generator, dtype=torch.float64).to(x.device)
        u64 = u[task].double()
        self.rho = radius[task].to(torch.float64) * zeta.norm(dim=1)
        zeta -= (zeta * u64).sum(1, keepdim=True) * u64
        self.v = (zeta / zeta.norm(dim=1, keepdim=True)).to(x.dtype)

    def points(self, idx: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Perturbations ``zeta`` ``(len(idx), d)`` at line coordinates ``s`` (float64)."""
        c = coord_to_cos(s, self.d)
        a = (self.rho[idx] * c)[:, None]
        b = (self.rho[idx] * torch.sqrt((1 - c * c).clamp_min(0.0)))[:, None]
        return a * self.u[self.task[idx]].double() + b * self.v[idx].double()

    def margin(self, idx: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Margins ``(len(idx),)`` at ``s``; one forward per entry."""
        out = torch.empty(idx.numel(), dtype=torch.float64, device=self.x.device)
        shape = self.x.shape[1:]
        for a in range(0, idx.numel(), self.batch_size):
            i = idx[a:a + self.batch_size]
            z = self.points(i, s[a:a + self.batch_size]).to(self.x.dtype).reshape(-1, *shape)
            with torch.no_grad():
                im = self.img[i]
                out[a:a + self.batch_size] = margin_flip(self.clf, self.x[im] + z, self.ref[im])[0]
        return out


def coord_to_cos(s: torch.Tensor, d: int) -> torch.Tensor:
    """Cosine ``c = s / sqrt(s^2 + d - 1)`` of the line coordinate ``s`` (``+-inf -> +-1``)."""
    c = s / torch.sqrt(s * s + (d - 1.0))
    return torch.where(torch.isinf(s), torch.sign(s), c)


def log_tail(s: torch.Tensor, d: int) -> torch.Tensor:
    """``log P(c >= c(s))`` for ``c`` the cosine of a uniform direction of ``S^{d-1}`` with ``u``.

    That is the ``(d-2)``-dimensional ball's cap fraction ``log F_{d-2}(c(s))``
    (:func:`perturbscope.theory.caps.log_cap_fraction_array`, given ``1 - c^2 = (d - 1) /
    (s^2 + d - 1)`` exactly); ``~ log Phi(-s)`` for large ``d``. ``(K,)`` float64 on ``s``'s
    device; ``-inf`` at ``s = +inf``, 0 at ``-inf``, NaN stays NaN.
    """
    s64 = s.double().cpu()
    nan = torch.isnan(s64)
    s64 = torch.where(nan, torch.zeros_like(s64), s64)
    c = coord_to_cos(s64, d).numpy()
    with np.errstate(over="ignore"):
        one_minus_c2 = (d - 1.0) / (s64.numpy() ** 2 + (d - 1.0))  # 0 at s = +-inf
    out = log_cap_fraction_array(c, d - 2, one_minus_t2=one_minus_c2)
    out = np.where(nan.numpy(), np.nan, out)
    return torch.from_numpy(out).to(s.device)


def secant_crossings(margin: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     s_start: torch.Tensor, slope: torch.Tensor | None = None,
                     tol: float = ROOT_TOL, max_iter: int = 12
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Root ``s*`` of a margin that decreases through zero along each line.

    Safeguarded secant: the last two evaluations give the step; once a sign change is seen the
    root is kept inside the bracket (bisection when the step leaves it). A line stops when the
    secant step is below ``tol`` (the returned root is that step's point) or the bracket is
    narrower than ``tol``. A positive margin at ``+S_CAP`` gives ``s* = +inf`` (no flip on the
    line), a flip at ``-S_CAP`` gives ``-inf`` (the whole line flips).

    Args:
        margin: ``margin(idx, s)`` -> margins of lines ``idx`` at coordinates ``s`` (float64).
        s_start: ``(K,)`` first coordinates.
        slope: ``(K,)`` expected ``dm/ds`` near the root (a Newton-like second point); ``None``
            steps 0.3 towards larger ``s`` (or smaller, for a negative first margin).
    Returns ``(root, slope, forwards, converged)``, each ``(K,)``: ``slope`` is the last secant
    slope (NaN where undefined), ``forwards`` the evaluations per line.
    """
    k = s_start.numel()
    dev = s_start.device
    all_idx = torch.arange(k, device=dev)
    inf = torch.full((k,), math.inf, dtype=torch.float64, device=dev)
    lo, hi = -inf.clone(), inf.clone()  # largest s with m > 0, smallest with m <= 0
    sa = s_start.to(torch.float64).clamp(-S_CAP, S_CAP).clone()
    ma = margin(all_idx, sa)
    fw = torch.ones(k, dtype=torch.int64, device=dev)
    lo = torch.where(ma > 0, sa, lo)
    hi = torch.where(ma > 0, hi, sa)
    if slope is not None:
        step = -ma / slope.to(torch.float64)
        step = torch.where(torch.isfinite(step), step.clamp(-3.0, 3.0), torch.full_like(step, 0.3))
    else:
        step = torch.where(ma > 0, 0.3, -0.3).to(torch.float64)
    step = torch.where(step.abs() < 1e-3, torch.copysign(torch.full_like(step, 0.05), step), step)
    sb = (sa + step).clamp(-S_CAP, S_CAP)
    sb = torch.where(sb == sa, sa - step, sb)
    mb = margin(all_idx, sb)
    fw += 1
    lo = torch.where(mb > 0, torch.maximum(lo, sb), lo)
    hi = torch.where(mb > 0, hi, torch.minimum(hi, sb))
    root = torch.full((k,), math.nan, dtype=torch.float64, device=dev)
    done = torch.zeros(k, dtype=torch.bool, device=dev)
    for _ in range(max_iter):
        done |= (lo >= S_CAP) | (hi <= -S_CAP)
        root = torch.where(lo >= S_CAP, inf, torch.where(hi <= -S_CAP, -inf, root))
        with torch.no_grad():
            sc = sb - mb * (sb - sa) / (mb - ma)
        bracket = torch.isfinite(lo) & torch.isfinite(hi)
        bad = ~torch.isfinite(sc) | (bracket & ((sc < lo) | (sc > hi)))
        fallback = torch.where(bracket, (lo + hi) / 2,
                               torch.where(torch.isfinite(lo), sb + 2 * (sb - sa).abs() + 0.5,
                                           sb - 2 * (sb - sa).abs() - 0.5))
        sc = torch.where(bad, fallback, sc).clamp(-S_CAP, S_CAP)
        close = ((sc - sb).abs() < tol) | (bracket & (hi - lo < tol))
        newly = ~done & close
        est = torch.where(bracket & (hi - lo < tol), (lo + hi) / 2, sc)
        root = torch.where(newly, est, root)
        done |= newly
        act = (~done).nonzero()[:, 0]
        if act.numel() == 0:
            break
        mc = margin(act, sc[act])
        fw[act] += 1
        sa[act], ma[act] = sb[act], mb[act]
        sb[act], mb[act] = sc[act], mc
        pos = mc > 0
        lo[act] = torch.where(pos, torch.maximum(lo[act], sc[act]), lo[act])
        hi[act] = torch.where(pos, hi[act], torch.minimum(hi[act], sc[act]))
    done |= (lo >= S_CAP) | (hi <= -S_CAP)
    root = torch.where(lo >= S_CAP, inf, torch.where(hi <= -S_CAP, -inf, root))
    converged = done.clone()
    # cap reached: the bracket midpoint, else the last point
    rest = ~done
    bracket = torch.isfinite(lo) & torch.isfinite(hi)
    root = torch.where(rest, torch.where(bracket, (lo + hi) / 2, sb), root)
    with torch.no_grad():
        last_slope = (mb - ma) / (sb - sa)
    return root, last_slope, fw, converged


def _scaled(log_y: torch.Tensor, task: torch.Tensor, t: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``exp(log_y)`` scaled per task by its largest value (CPU): ``(y, log_scale, log_max)``,
    ``y = exp(log_y - log_scale[task])``, ``log_scale`` = ``log_max`` where finite, else 0."""
    mx = torch.full((t,), -math.inf, dtype=torch.float64).scatter_reduce_(
        0, task, log_y, reduce="amax")
    safe = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    return torch.exp(log_y - safe[task]), safe, mx


def _log_mean(log_y: torch.Tensor, task: torch.Tensor, t: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task: log of the mean of ``exp(log_y)``, relative standard error, line count."""
    log_y, task = log_y.cpu(), task.cpu()
    n = torch.bincount(task, minlength=t).double()
    y, safe, _ = _scaled(log_y, task, t)
    s1 = torch.zeros(t, dtype=torch.float64).index_add_(0, task, y)
    s2 = torch.zeros(t, dtype=torch.float64).index_add_(0, task, y * y)
    mean = s1 / n
    var = (s2 / n - mean * mean).clamp_min(0.0) * n / (n - 1).clamp_min(1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = torch.where(mean > 0, torch.log(mean) + safe, -math.inf * torch.ones_like(mean))
        rel = torch.where(mean > 0, torch.sqrt(var / n) / mean, math.inf * torch.ones_like(mean))
    return log_p.numpy(), rel.numpy(), n.numpy().astype(np.int64)


def _lognormal_rel_error(log_y: torch.Tensor, task: torch.Tensor, t: int) -> np.ndarray:
    """Per task: relative standard error of the mean if the line values were log-normal,
    ``sqrt(expm1(sigma^2) / n)`` with ``sigma`` the standard deviation of ``log P`` over the
    lines that cross. Unlike the sample variance it accounts for the upper tail a run has
    not seen (measured interval coverage with and without it: docs/rare_event.md, "Line
    sampling: measured"); the interval uses the larger of the two."""
    log_y, task = log_y.cpu(), task.cpu()
    fin = torch.isfinite(log_y)
    n = torch.bincount(task[fin], minlength=t).double()
    s1 = torch.zeros(t, dtype=torch.float64).index_add_(0, task[fin], log_y[fin])
    s2 = torch.zeros(t, dtype=torch.float64).index_add_(0, task[fin], log_y[fin] ** 2)
    mean = s1 / n.clamp_min(1.0)
    var = ((s2 - n * mean * mean) / (n - 1).clamp_min(1.0)).clamp(0.0, 625.0)
    rel = torch.sqrt(torch.expm1(var) / n.clamp_min(1.0))
    return torch.where(n > 1, rel, torch.zeros_like(rel)).numpy()


def _root_error(log_y: torch.Tensor, root: torch.Tensor, task: torch.Tensor, t: int, d: int
                ) -> np.ndarray:
    """Per task: relative error of the mean that root errors of ``ROOT_TOL`` could cause,
    ``sum_i P_i |d log P_i / ds| ROOT_TOL / sum_i P_i`` (a bound; the secant's actual error is
    usually far smaller)."""
    h = 1e-4
    fin = torch.isfinite(root)
    r = torch.where(fin, root, torch.zeros_like(root))
    sens = ((log_tail(r - h, d) - log_tail(r + h, d)) / (2 * h)).abs().cpu()
    sens = torch.where(fin.cpu(), sens, torch.zeros_like(sens))
    y, _, _ = _scaled(log_y.cpu(), task.cpu(), t)
    task = task.cpu()
    num = torch.zeros(t, dtype=torch.float64).index_add_(0, task, y * sens)
    den = torch.zeros(t, dtype=torch.float64).index_add_(0, task, y)
    return torch.where(den > 0, ROOT_TOL * num / den, torch.zeros_like(den)).numpy()


def _plain_flips(clf: Classifier, x: torch.Tensor, ref: torch.Tensor, img: torch.Tensor,
                 radius: torch.Tensor, task: torch.Tensor, generator: torch.Generator,
                 batch_size: int, advance: Callable[[int], None] | None) -> torch.Tensor:
    """Flip indicators ``(K,)`` of one uniform-ball draw per entry of ``task``."""
    out = torch.empty(task.numel(), dtype=torch.bool, device=x.device)
    for a in range(0, task.numel(), batch_size):
        t = task[a:a + batch_size]
        unit = uniform_ball(t.numel(), x[0].numel(), 1.0, seed=generator,
                            dtype=torch.float64).to(x.device)
        z = radius[t].to(torch.float64)[:, None] * unit
        with torch.no_grad():
            out[a:a + batch_size] = margin_flip(
                clf, x[img[t]] + z.to(x.dtype).reshape(-1, *x.shape[1:]), ref[img[t]])[1]
        if advance is not None:
            advance(t.numel())
    return out


def line_sampling(clf: Classifier, x: torch.Tensor, ref: torch.Tensor, u: torch.Tensor,
                  img: torch.Tensor, radius: torch.Tensor, start: np.ndarray, *, budget: int,
                  pilot_lines: int | None = None, rounds: int = 3, tau: float = 0.5,
                  plain_above: float = 0.01, level: float, generator: torch.Generator,
                  batch_size: int, advance: Callable[[int], None] | None = None) -> LineOutcome:
    """Adaptive line sampling for ``T`` tasks (image ``img[t]``, ball radius ``radius[t]``).

    Args:
        clf: the classifier; ``x``: ``(N, *shape)`` inputs; ``ref``: ``(N,)`` reference labels.
        u: ``(N, d)`` unit start directions (x's dtype), e.g. refined boundary normals.
        start: ``(T,)`` first guess of the crossing coordinate ``s`` (see :func:`start_coordinate`).
        budget: forward passes per task; pilot lines are paid first, the rest is spent on lines
            at ~3 forwards each (so the count is approximate; the actual count is returned).
        pilot_lines: lines per adaptation round (default ``budget // 20`` clipped to [20, 100]).
        rounds: direction updates; tau: weight tempering exponent in (0, 1].
        plain_above: tasks whose pilot estimate is at least this (and whose budget left
            expects >= 25 flips) are finished by plain sampling with the rest of the budget
            (binomial estimate, Wilson interval): there
            flips lie deep inside the ball, lines cross the boundary several times and line
            sampling over-counts (measured: docs/rare_event.md, "When it fails").
        level: confidence level; generator: random source; batch_size: inputs per forward.
        advance: progress callback (forwards done).
    """
    t_count = img.shape[0]
    dev = x.device
    if pilot_lines is None:
        pilot_lines = int(min(100, max(20, budget // 20)))
    if pilot_lines < 2 or rounds < 0 or not 0.0 < tau <= 1.0:
        raise ValueError(f"need pilot_lines >= 2, rounds >= 0, 0 < tau <= 1; got {pilot_lines}, "
                         f"{rounds}, {tau}")
    task_u = u[img].clone()  # (T, d) per-task direction
    d = task_u.shape[1]
    if d < 3:
        raise ValueError(f"line sampling needs inputs with at least 3 values, got d = {d}")
    fw_task = torch.zeros(t_count, dtype=torch.int64)
    grad_task = torch.zeros(t_count, dtype=torch.int64)
    s_typ = torch.as_tensor(start, dtype=torch.float64).to(dev)
    slope_typ: torch.Tensor | None = None
    tasks_all = torch.arange(t_count, device=dev)
    task_ids = tasks_all.repeat_interleave(pilot_lines)

    def run(task: torch.Tensor, s0: torch.Tensor, slope: torch.Tensor | None):
        lines = _Lines(clf, x, ref, task_u, img, radius.to(dev), task, generator, batch_size)

        def margin(idx: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            if advance is not None:
                advance(idx.numel())
            return lines.margin(idx, s)
        root, sl, fw, conv = secant_crossings(margin, s0[task],
                                              None if slope is None else slope[task])
        fw_task.index_add_(0, task.cpu(), fw.cpu())
        return lines, root, sl, conv

    pilot_log_y = pilot_task = pilot_root = None
    unconv = torch.zeros(t_count, dtype=torch.int64)
    for j in range(rounds + 1):
        lines, root, sl, conv = run(task_ids, s_typ, slope_typ)
        unconv.index_add_(0, task_ids.cpu(), (~conv).long().cpu())
        finite = torch.isfinite(root)
        log_y = log_tail(root, d)
        # typical crossing and slope (dm/ds) for the next lines, per task over finite roots;
        # no decreasing slope seen anywhere (and none kept): the secant's fixed first step
        slope_new = torch.full((t_count,), math.nan, dtype=torch.float64, device=dev) \
            if slope_typ is None else slope_typ.clone()
        for t in range(t_count):
            sel = (task_ids == t) & finite
            if sel.any():
                s_typ[t] = root[sel].median()
                good = sel & torch.isfinite(sl) & (sl < 0)
                if good.any():
                    slope_new[t] = sl[good].median()
        if slope_typ is not None or torch.isfinite(slope_new).any():
            slope_typ = torch.nan_to_num(slope_new, nan=-1.0)
        if j == rounds:
            pilot_log_y, pilot_task, pilot_root = log_y, task_ids, root
            break
        # move each task's direction to the tempered-weighted mean of the crossing normals
        idx = finite.nonzero()[:, 0]
        if idx.numel() == 0:
            continue
        z = lines.points(idx, root[idx]).to(x.dtype).reshape(-1, *x.shape[1:])
        normals, _, _ = margin_direction(clf, x[img[task_ids[idx]]] + z, ref[img[task_ids[idx]]],
                                         batch_size)
        grad_task.index_add_(0, task_ids[idx].cpu(), torch.ones(idx.numel(), dtype=torch.int64))
        w_log = tau * log_y[idx]
        w = torch.zeros(t_count, dtype=torch.float64, device=dev)
        mx = torch.full((t_count,), -math.inf, dtype=torch.float64, device=dev)
        mx.scatter_reduce_(0, task_ids[idx], w_log, reduce="amax")
        wi = torch.exp(w_log - mx[task_ids[idx]])
        w.index_add_(0, task_ids[idx], wi)
        v = torch.zeros(t_count, task_u.shape[1], dtype=torch.float64, device=dev)
        v.index_add_(0, task_ids[idx], wi[:, None] * normals.double())
        norm = v.norm(dim=1, keepdim=True)
        ok = (norm[:, 0] > 0) & (w > 0)
        task_u[ok] = (v[ok] / norm[ok]).to(task_u.dtype)
        slope_typ = None  # new direction: the slope is re-measured
    pilot_logp, _, _ = _log_mean(pilot_log_y, pilot_task, t_count)
    left = np.maximum(budget - fw_task.numpy(), 0)
    # plain sampling where p is large and the budget left expects >= 25 flips (<= 20% error)
    plain = (pilot_logp >= math.log(plain_above)) & (left * np.exp(pilot_logp) >= 25.0)
    # final lines: what each task's budget leaves at ~3 forwards per line, in chunks
    per_line = 3.0
    n_final = np.where(plain, 0, np.floor(left / per_line)).astype(np.int64)
    d_bytes = task_u.shape[1] * 8
    chunk = max(1, int(2**27 // max(t_count * d_bytes, 1)))
    logs, owners, roots = [pilot_log_y], [pilot_task], [pilot_root]
    done = np.zeros(t_count, dtype=np.int64)
    while (done < n_final).any():
        c = torch.from_numpy(np.minimum(chunk, n_final - done)).to(dev)
        task = tasks_all.repeat_interleave(c)
        _, root, _, conv = run(task, s_typ, slope_typ)
        unconv.index_add_(0, task.cpu(), (~conv).long().cpu())
        logs.append(log_tail(root, d))
        owners.append(task)
        roots.append(root)
        done += c.cpu().numpy()
    log_y = torch.cat(logs)
    owner = torch.cat(owners)
    log_p, rel, n_lines = _log_mean(log_y, owner, t_count)
    rel = np.maximum(rel, _lognormal_rel_error(log_y, owner, t_count))
    rel = np.hypot(rel, _root_error(log_y, torch.cat(roots), owner, t_count, d))
    top = _scaled(log_y.cpu(), owner.cpu(), t_count)[2].numpy()
    with np.errstate(invalid="ignore"):
        max_share = np.where(np.isfinite(log_p), np.exp(top - log_p) / np.maximum(n_lines, 1), 0.0)
    hits = torch.bincount(owner.cpu()[torch.isfinite(log_y.cpu()) & (log_y.cpu() > -745.0)],
                          minlength=t_count).numpy().astype(np.int64)
    z = special.ndtri(0.5 + level / 2)
    with np.errstate(invalid="ignore", over="ignore"):
        half = z * np.sqrt(np.log1p(np.square(rel)))
        half = np.where(np.isfinite(rel), half, np.inf)
        lo = np.where(np.isfinite(log_p), log_p - half, -np.inf)
        hi = np.where(np.isfinite(log_p), np.minimum(log_p + half, 0.0),  # a probability: <= 1
                      float(log_tail(torch.tensor([S_CAP]), d)[0]))  # no crossing: below the cap
    if plain.any():  # plain sampling for the tasks with a large pilot estimate
        n_plain = np.where(plain, left, 0).astype(np.int64)
        task = tasks_all.repeat_interleave(torch.from_numpy(n_plain).to(dev))
        flips = _plain_flips(clf, x, ref, img, radius.to(dev), task, generator, batch_size,
                             advance)
        k = torch.zeros(t_count, dtype=torch.int64).index_add_(0, task.cpu(),
                                                               flips.long().cpu()).numpy()
        fw_task += torch.from_numpy(n_plain)
        sel = np.nonzero(plain)[0]
        n_s, k_s = n_plain[sel], k[sel]
        low, high = binomial_ci(k_s, n_s, level)
        with np.errstate(divide="ignore"):
            ph = k_s / n_s
            log_p[sel] = np.log(ph)
            lo[sel], hi[sel] = np.log(low), np.log(high)
            rel[sel] = np.where(k_s > 0, np.sqrt((1 - ph) / np.maximum(k_s, 1)), np.inf)
        hits[sel], n_lines[sel], max_share[sel] = k_s, 0, 0.0
    return LineOutcome(log_p=log_p, log_ci_low=lo, log_ci_high=hi, rel_error=rel, hits=hits,
                       lines=n_lines, forwards=fw_task.numpy(), gradients=grad_task.numpy(),
                       unconverged=unconv.numpy(),
                       s_typical=s_typ.cpu().numpy(), max_share=max_share, direction=task_u)
