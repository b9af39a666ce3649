"""Public entry points: :func:`estimate_flip_probability` and :func:`flip_probability_table`.

``p = P(f(x + zeta) != ref)`` for ``zeta`` uniform in the L2 ball ``B_d(r)`` (pixel units),
``ref`` the reference label (default: the clean prediction, as in the random probe).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from torch import nn

from perturbscope.models.classifier import Classifier, as_classifier, with_autograd
from perturbscope.probes.rare_event.ball import lam_from_s
from perturbscope.probes.rare_event.calibration import default_factors, widen
from perturbscope.probes.rare_event.first_order import first_order_log_p
from perturbscope.probes.rare_event.importance import importance_sampling
from perturbscope.probes.rare_event.lines import line_sampling, start_coordinate
from perturbscope.probes.rare_event.model_eval import (
    crossing_along,
    margin_direction,
    margin_flip,
    pgd_flip_direction,
)
from perturbscope.probes.rare_event.splitting import subset_simulation
from perturbscope.progress import progress_bar
from perturbscope.sampling import make_generator, uniform_sphere
from perturbscope.validation import check_images, check_labels

__all__ = ["METHODS", "FlipProbabilityResult", "estimate_flip_probability",
           "flip_probability_table"]

METHODS: tuple[str, ...] = ("is", "splitting", "lines")
_LN10 = math.log(10.0)


@dataclass
class FlipProbabilityResult:
    """Flip-probability estimates for ``T`` (image, radius) pairs; every array has shape ``(T,)``.

    Attributes:
        image: index of the image in the input batch.
        radius: L2 radius of the ball (pixel units).
        p_hat, ci_low, ci_high: estimate and ``level`` confidence interval (may underflow to 0
            below ~1e-308; the ``log10_*`` fields do not).
        log10_p_hat, log10_ci_low, log10_ci_high: base-10 logs (``-inf`` for 0).
        rel_error: estimated standard error / estimate (inf with no flip seen).
        hits: flipping draws behind the estimate (few hits = unreliable interval); for
            ``"lines"``: lines that cross the boundary.
        forwards: forward passes spent on this pair (sampling, crossing searches; per-image
            work is shared evenly among that image's radii, rounded up).
        gradients: input-gradient evaluations (forward + backward) spent on this pair
            (the sampling direction and its refinement; shared likewise).
        boundary_distance: distance along the final sampling direction at which the
            prediction flips (inf if none within the largest radius) - the sampler's anchor.
        plane_distance: distance of the first-order plane: through the boundary point found
            along the sampling direction, with the margin gradient there as normal
            (pixel units).
        first_order_p, log10_first_order_p: the plane's exact cap fraction.
        method: ``"is"``, ``"splitting"`` or ``"lines"``; level: confidence level.
        interval_factor: per entry, the factor the estimator's own log-normal half-width (and
            ``rel_error``) was multiplied by (:mod:`~perturbscope.probes.rare_event.calibration`;
            1 where the interval is a bound or binomial).
    """

    image: np.ndarray
    radius: np.ndarray
    p_hat: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    log10_p_hat: np.ndarray
    log10_ci_low: np.ndarray
    log10_ci_high: np.ndarray
    rel_error: np.ndarray
    hits: np.ndarray
    forwards: np.ndarray
    gradients: np.ndarray
    boundary_distance: np.ndarray
    plane_distance: np.ndarray
    first_order_p: np.ndarray
    log10_first_order_p: np.ndarray
    method: str
    level: float
    interval_factor: np.ndarray | None = None

    @property
    def expected_draws(self) -> np.ndarray:
        """Expected number of uniform draws to see one flip, ``1 / p_hat`` (inf if 0)."""
        with np.errstate(divide="ignore", over="ignore"):
            return np.where(self.p_hat > 0, 1.0 / self.p_hat, np.inf)

    @property
    def log10_expected_draws(self) -> np.ndarray:
        return -self.log10_p_hat

    def to_frame(self) -> pd.DataFrame:
        """One row per (image, radius): every array field plus ``expected_draws``."""
        cols = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("method", "level")}
        df = pd.DataFrame(cols)
        df["expected_draws"] = self.expected_draws
        df["method"] = self.method
        return df


def _unit_rows(direction: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    if tuple(direction.shape) != tuple(like.shape) and tuple(direction.shape) != (n, like[0].numel()):
        raise ValueError(f"direction must have the shape of x {tuple(like.shape)}, got "
                         f"{tuple(direction.shape)}")
    flat = direction.reshape(n, -1).to(device=like.device, dtype=torch.float64)
    if not torch.isfinite(flat).all():
        raise ValueError("direction contains NaN or infinite values")
    norm = flat.norm(dim=1, keepdim=True)
    unit = flat / torch.where(norm > 0, norm, torch.ones_like(norm))
    return unit.to(like.dtype)


def _concat_outcomes(parts: list) -> object:
    """Concatenate per-chunk outcomes (dataclasses of per-task arrays) along the task axis."""
    first = parts[0]
    vals = {}
    for fld in fields(first):
        items = [getattr(p, fld.name) for p in parts]
        if items[0] is None:
            vals[fld.name] = None
        elif isinstance(items[0], torch.Tensor):
            vals[fld.name] = torch.cat(items)
        else:
            vals[fld.name] = np.concatenate(items)
    return type(first)(**vals)


def _refine_direction(clf: Classifier, x: torch.Tensor, ref: torch.Tensor, u: torch.Tensor,
                      along: torch.Tensor | None, t_max: torch.Tensor, steps: int,
                      batch_size: int, search: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Turn the start direction towards the nearest part of the decision boundary.

    Per image: the crossing ``t`` along the start direction ``u`` (the given ``along`` where
    ``x + along u`` flips, else a 32-point grid + bisection up to ``t_max``) competes with
    the direction of the first flip found by projected gradient descent in the ball of
    radius ``t_max``; the shorter crossing wins (only with ``search``). Then, ``steps``
    times, ``u`` is replaced by the unit margin gradient ``n`` at the boundary point
    ``x + t u`` where that shortens the crossing (DeepFool-like; for a linear model one step
    gives the exact normal from any start with ``<u, n> > 0``).

    Returns ``(u, t, plane, forwards, gradients)``: final unit directions ``(N, d)``, the
    crossing distance along them ``(N,)`` (inf where none within ``t_max``), and the distance
    ``t <u, n>`` of the plane through the final boundary point with the gradient ``n`` there
    as normal ``(N,)`` (the first-order estimate's plane; inf without a crossing).
    """
    shape = x.shape[1:]
    forwards = gradients = 0
    if along is None:
        t, forwards = crossing_along(clf, x, ref, u, t_max, batch_size=batch_size)
        t = t.clone()  # out of inference mode
    else:  # check the given crossing (e.g. eps of another attack, not along u): search where wrong
        t = along.clone()
        with torch.inference_mode():
            flips = torch.cat([margin_flip(clf, x[s:s + batch_size]
                                           + (t[s:s + batch_size].to(x.dtype).unsqueeze(1)
                                              * u[s:s + batch_size]).reshape(-1, *shape),
                                           ref[s:s + batch_size])[1]
                               for s in range(0, x.shape[0], batch_size)])
        forwards += x.shape[0]
        bad = (~flips).nonzero()[:, 0]
        if bad.numel():
            t_b, fw = crossing_along(clf, x[bad], ref[bad], u[bad], t_max[bad], batch_size=batch_size)
            forwards += fw
            t[bad] = t_b.clone()
    u = u.clone()
    # a flip found by PGD in the ball: keep its direction where its crossing is shorter
    if search:
        u_p, g = pgd_flip_direction(clf, x, ref, t_max, batch_size=batch_size)
        gradients += g
        j = (u_p.abs().sum(1) > 0).nonzero()[:, 0]
    else:
        j = torch.zeros(0, dtype=torch.long, device=x.device)
    if j.numel():
        t_p, fw = crossing_along(clf, x[j], ref[j], u_p[j], t_max[j], batch_size=batch_size)
        t_p = t_p.clone()
        forwards += fw
        better = t_p < t[j]
        u[j[better]] = u_p[j[better]]
        t[j[better]] = t_p[better]
    plane = torch.full_like(t, float("inf"))
    for k in range(steps + 1):
        found = torch.isfinite(t)
        if not found.any():
            break
        z = x + (torch.where(found, t, torch.zeros_like(t)).to(x.dtype).unsqueeze(1) * u
                 ).reshape(-1, *shape)
        normal, _, _ = margin_direction(clf, z, ref, batch_size)
        gradients += x.shape[0]
        cos = (normal.double() * u.double()).sum(1)
        plane = torch.where(found, torch.where(cos > 0, t * cos, t), plane)
        move = (found & (cos > 0) & (cos < 1.0 - 1e-9)).nonzero()[:, 0]
        if k == steps or move.numel() == 0:
            break
        t_n, fw = crossing_along(clf, x[move], ref[move], normal[move], t[move],
                                 batch_size=batch_size)
        forwards += fw
        t_n = t_n.clone()
        better = t_n < t[move]
        if not better.any():
            break
        u[move[better]] = normal[move[better]]
        t[move[better]] = t_n[better]
    return u, t, plane, forwards, gradients


def _estimate_tasks(clf: Classifier, x: torch.Tensor, ref: torch.Tensor | None,
                    img: torch.Tensor, radius: torch.Tensor, along: torch.Tensor | None,
                    direction: torch.Tensor | None, *, method: str, budget: int,
                    seed: int | torch.Generator | None, level: float, defensive: float,
                    pilot_fraction: float, n_per_level: int, p0: float, refine_steps: int | None,
                    batch_size: int, progress: bool, pilot_lines: int | None = None,
                    line_rounds: int = 3, interval_factor: float | None = None) -> FlipProbabilityResult:
    """Shared engine: ``T`` tasks = (image ``img[t]``, radius ``radius[t]``); ``along`` is per
    image ``(N,)`` (distance along ``direction`` to the boundary) or ``None``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not 0.0 < defensive < 1.0:
        raise ValueError(f"defensive must be in (0, 1), got {defensive}")
    if not 0.0 <= pilot_fraction < 1.0:
        raise ValueError(f"pilot_fraction must be in [0, 1), got {pilot_fraction}")
    if isinstance(budget, bool) or int(budget) != budget or budget < 2:
        raise ValueError(f"budget must be an integer >= 2 forward passes per estimate, got {budget}")
    if refine_steps is not None and (isinstance(refine_steps, bool) or int(refine_steps) != refine_steps
                                     or refine_steps < 0):
        raise ValueError(f"refine_steps must be an integer >= 0, got {refine_steps}")
    if interval_factor is not None and not (math.isfinite(interval_factor) and interval_factor >= 1.0):
        raise ValueError(f"interval_factor must be a number >= 1 or None (the measured default), "
                         f"got {interval_factor}")
    budget = int(budget)
    n, d = x.shape[0], x[0].numel()
    dev = x.device
    t_count = img.shape[0]
    gen = make_generator(seed, dev)  # an int seed: draws on the data's device
    # per-image overheads (forwards, gradients), shared evenly by that image's tasks
    img_np = img.cpu().numpy()
    tasks_per_img = np.maximum(np.bincount(img_np, minlength=n), 1)
    over_fw = np.zeros(n)
    over_grad = np.zeros(n)
    with clf.evaluating():
        if ref is None:
            ref = clf.predict(x, batch_size)
            over_fw += 1
        ref = ref.to(dev)
        if direction is None:
            u, _, _ = margin_direction(clf, x, ref, batch_size)
            over_grad += 1
        else:
            u = _unit_rows(direction, n, x)
        zero = u.abs().sum(1) == 0
        if zero.any():  # no gradient / direction: a random one (the estimate stays unbiased)
            u[zero] = uniform_sphere(int(zero.sum()), d, seed=gen, dtype=u.dtype).to(dev)
        t_max = torch.zeros(n, dtype=torch.float64)
        t_max.scatter_reduce_(0, img.cpu(), radius.cpu().to(torch.float64), reduce="amax")
        along_img = None if along is None else along.to(dev, torch.float64)
        if refine_steps is None:
            refine_steps = 2 if direction is None else 0
        u, along_img, plane_img, fw, grads = _refine_direction(
            clf, x, ref, u, along_img, t_max.to(dev), refine_steps, batch_size,
            search=direction is None)
        over_fw += fw / n
        over_grad += grads / n
        img_d, radius_d = img.to(dev), radius.to(dev, torch.float64)
        along_np = along_img.cpu().numpy()[img_np]
        plane = plane_img.cpu().numpy()[img_np]
        r_np = radius.cpu().numpy().astype(np.float64)
        log_p1 = first_order_log_p(plane, r_np, d)
        anchor = lam_from_s(np.minimum(np.where(np.isfinite(along_np), along_np, r_np) / r_np,
                                       1.0), d)
        total = t_count * budget
        # no autograd graph for the sampling forwards (a graph kept alive by the stored margins
        # would grow by a batch of activations per forward)
        extra_grad = np.zeros(t_count, dtype=np.int64)
        with progress_bar(f"rare-event ({method})", total, progress) as advance, torch.no_grad():
            if method == "lines":
                start = start_coordinate(along_np, r_np, d)  # inf (no crossing): a far start
                out = line_sampling(clf, x, ref, u, img_d, radius_d, start, budget=budget,
                                    pilot_lines=pilot_lines, rounds=line_rounds, level=level,
                                    generator=gen, batch_size=batch_size, advance=advance)
                extra_grad = out.gradients
            elif method == "is":
                out = importance_sampling(clf, x, ref, u, img_d, radius_d, anchor, draws=budget,
                                          defensive=defensive, pilot_fraction=pilot_fraction,
                                          level=level, generator=gen, batch_size=batch_size,
                                          advance=advance)
            else:
                # the population is (tasks, n_per_level, d + 2): run tasks in chunks of ~256 MB
                per = n_per_level * (d + 2) * x.element_size()
                chunk = max(1, int(2**28 // max(per, 1)))
                parts = [subset_simulation(clf, x, ref, img_d[s:s + chunk], radius_d[s:s + chunk],
                                           n_per_level=n_per_level, p0=p0, budget=budget,
                                           level=level, generator=gen, batch_size=batch_size,
                                           advance=advance)
                         for s in range(0, t_count, chunk)]
                out = parts[0] if len(parts) == 1 else _concat_outcomes(parts)
    lp = out.log_p
    factor = default_factors(method, out) if interval_factor is None else float(interval_factor)
    lo, hi, rel, factor = widen(lp, out.log_ci_low, out.log_ci_high, out.rel_error, factor)
    share_fw = np.ceil(over_fw[img_np] / tasks_per_img[img_np]).astype(np.int64)
    share_grad = np.ceil(over_grad[img_np] / tasks_per_img[img_np]).astype(np.int64)
    return FlipProbabilityResult(
        image=img_np, radius=r_np, p_hat=np.exp(lp), ci_low=np.exp(lo),
        ci_high=np.exp(hi), log10_p_hat=lp / _LN10, log10_ci_low=lo / _LN10,
        log10_ci_high=hi / _LN10, rel_error=rel, hits=out.hits,
        forwards=out.forwards + share_fw, gradients=share_grad + extra_grad,
        boundary_distance=along_np,
        plane_distance=plane, first_order_p=np.exp(log_p1), log10_first_order_p=log_p1 / _LN10,
        method=method, level=level, interval_factor=factor)


def _prepare(model: nn.Module | Classifier, x: torch.Tensor, y: torch.Tensor | None,
             output: str | None) -> tuple[Classifier, torch.Tensor, torch.Tensor | None]:
    """The classifier, ``x`` checked against its bounds and moved to its device, labels."""
    clf = as_classifier(model, output)
    check_images(x, clf.bounds)
    dev = clf.device
    if y is not None:
        y = check_labels(torch.as_tensor(y), x.shape[0]).to(dev)
    return clf, x.to(dev), y


@with_autograd
def estimate_flip_probability(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    y: torch.Tensor | None,
    radius: float | Sequence[float] | torch.Tensor,
    *,
    output: str | None = None,
    direction: torch.Tensor | None = None,
    eps_adv: torch.Tensor | Sequence[float] | None = None,
    budget: int = 10_000,
    seed: int | torch.Generator | None = 0,
    method: str = "splitting",
    level: float = 0.95,
    defensive: float = 0.1,
    pilot_fraction: float = 0.25,
    n_per_level: int = 500,
    p0: float = 0.1,
    refine_steps: int | None = None,
    pilot_lines: int | None = None,
    line_rounds: int = 3,
    batch_size: int = 256,
    progress: bool = False,
    interval_factor: float | None = None,
) -> FlipProbabilityResult:
    """Estimate, for each input, the probability that uniform noise in an L2 ball flips it.

    Args:
        model: an ``nn.Module`` (wrapped with ``output``, bounds (0, 1)) or a
            :class:`~perturbscope.models.classifier.Classifier`, binary (``"sigmoid"``/``"logit"``)
            or multi-class (``"logits"``); run in eval mode on its own device, its mode
            restored, its weights untouched. Margins and labels are the Classifier's.
        x: inputs ``(N, *shape)`` inside the classifier's ``bounds`` (checked; perturbed inputs
            are not clipped, as in the paper's probe; ``Classifier(..., bounds=None)`` skips
            the check); ``d = prod(shape)``.
        y: reference labels ``(N,)`` a flip is measured against, or ``None`` for the model's
            clean predictions (as the random probe does).
        radius: ball radius, scalar or ``(N,)``, pixel units (> 0).
        output: output convention of a bare module (default ``model.output_kind``).
        direction: ``(N, *shape)`` starting sampling direction for ``method="is"`` (e.g. the
            adversarial perturbation); default the margin gradient at ``x``.
        eps_adv: ``(N,)`` distance along ``direction`` at which the prediction flips (the
            adversarial L2 size); default: found by a 32-point grid + bisection along it, up to
            the radius.
        budget: forward passes per image for the estimator (``"is"``: the number of draws;
            ``"splitting"``: a cap, the run stops at the last level it can afford and then
            reports ``p_hat = 0`` with ``ci_high`` an upper bound; ``"lines"``: approximate,
            the number of lines is set at ~3 forwards each, the actual count is reported).
        seed: seed or generator; an int makes one on the classifier's device, a generator
            draws on its own (:mod:`perturbscope.sampling`'s convention). Same seed, same
            ``batch_size``, same device: same numbers.
        method: ``"splitting"`` (subset simulation on the margin, no direction assumed; the
            robust default), ``"lines"`` (adaptive line sampling: per line through the ball
            parallel to a learned direction, the exact probability beyond its crossing; no
            floor on p; assumes the flip set on each line is one ray, and its interval is
            optimistic on curved boundaries) or ``"is"`` (importance sampling along one
            direction with exact weights: cost independent of p for near-linear boundaries,
            unreliable interval for strongly non-linear ones). Measured forwards for 20%
            error and interval coverage of each: docs/rare_event.md.
        level: confidence level of the interval.
        defensive: share of ``"is"`` draws taken from the uniform ball itself (0 < w < 1).
        pilot_fraction: share of ``"is"`` draws used to re-centre the proposal.
        n_per_level, p0: ``"splitting"`` draws per level and conditional level probability.
        refine_steps: times the direction is replaced by the margin gradient at the boundary
            point found along it where that shortens the crossing (DeepFool-like; aligns it with
            the boundary's normal); each step costs one gradient and a crossing search (~44
            forwards) per image. Default: 2 when ``direction`` is None (which also lets a PGD
            flip direction compete with the gradient), 0 for a given ``direction`` (used as is).
        pilot_lines, line_rounds: ``"lines"``: lines per direction-adaptation round (default
            ``budget // 20`` clipped to [20, 100]) and the number of rounds.
        batch_size: perturbed inputs per forward pass.
        progress: show a progress bar.
        interval_factor: widening of the method's own log-normal interval (and ``rel_error``);
            ``None`` (default): the measured calibration of
            :mod:`~perturbscope.probes.rare_event.calibration` (splitting ``sqrt(1 + 0.35
            levels)``, lines 2, IS 1.15; coverage measured in docs/rare_event.md, "Interval
            calibration"); ``1.0``: the method's own interval.

    Returns:
        :class:`FlipProbabilityResult` with one entry per input.
    """
    clf, x, y = _prepare(model, x, y, output)
    n = x.shape[0]
    r = torch.as_tensor(radius, dtype=torch.float64).reshape(-1).cpu()
    if r.numel() == 1:
        r = r.expand(n).clone()
    if r.shape[0] != n or not (torch.isfinite(r).all() and (r > 0).all()):
        raise ValueError(f"radius must be a positive finite scalar or shape ({n},), got {radius!r}")
    along = None
    if eps_adv is not None:
        along = torch.as_tensor(eps_adv, dtype=torch.float64).reshape(-1).cpu()
        if along.shape[0] != n or not (along > 0).all():
            raise ValueError(f"eps_adv must be positive with shape ({n},), got {eps_adv!r}")
    return _estimate_tasks(clf, x, y, torch.arange(n), r, along, direction, method=method,
                           budget=budget, seed=seed, level=level, defensive=defensive,
                           pilot_fraction=pilot_fraction, n_per_level=n_per_level, p0=p0,
                           refine_steps=refine_steps,
                           batch_size=batch_size, progress=progress, pilot_lines=pilot_lines,
                           line_rounds=line_rounds, interval_factor=interval_factor)


def flip_probability_table(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps_adv: torch.Tensor | Sequence[float],
    alphas: Sequence[float] = (1.0, 2.0, 5.0, 10.0),
    *,
    output: str | None = None,
    direction: torch.Tensor | None = None,
    budget: int = 2000,
    seed: int | torch.Generator | None = 0,
    method: str = "splitting",
    level: float = 0.95,
    probe_draws: int = 2000,
    batch_size: int = 256,
    progress: bool = False,
    **kwargs,
) -> pd.DataFrame:
    """Flip probability at radii ``alpha * eps_adv`` for every image and alpha (the audit's view).

    Args:
        eps_adv: ``(N,)`` adversarial L2 sizes (pixel units); NaN / non-positive entries (no
            adversarial found) give rows of NaN and cost nothing.
        alphas: radius multipliers (the paper's 1, 2, 5, 10).
        direction: ``(N, *shape)`` adversarial perturbations (default: margin gradient, which is
            the paper's line-search direction).
        probe_draws: size of the paper's random probe, for the column ``p_probe_sees_flip``
            = ``1 - (1 - p_hat)^probe_draws`` (chance that probe sees at least one flip).
        budget: forward passes per (image, alpha); with the default ``"splitting"`` and
            ``n_per_level=200`` (kwargs), 2000 forwards resolve p down to ~1e-10 (below: an
            upper bound).
        Other arguments as :func:`estimate_flip_probability` (``kwargs``: ``defensive``,
        ``pilot_fraction``, ``n_per_level`` (default 200 here), ``p0``, ``refine_steps``,
        ``interval_factor``).

    Returns:
        DataFrame, one row per (image, alpha), columns ``image, alpha, eps_adv, radius, p_hat,
        ci_low, ci_high, log10_p_hat, log10_ci_low, log10_ci_high, rel_error, hits,
        expected_draws, p_probe_sees_flip, first_order_p, log10_first_order_p, plane_distance,
        forwards, gradients, method``.
    """
    unknown = set(kwargs) - {"defensive", "pilot_fraction", "n_per_level", "p0", "refine_steps",
                             "interval_factor"}
    if unknown:
        raise TypeError(f"unexpected arguments: {sorted(unknown)}")
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 2:
        raise ValueError(f"budget must be an integer >= 2 forward passes, got {budget!r}")
    if isinstance(probe_draws, bool) or not isinstance(probe_draws, int | np.integer) or probe_draws < 1:
        raise ValueError(f"probe_draws must be a positive integer, got {probe_draws!r}")
    clf, x, y = _prepare(model, x, y, output)
    n = x.shape[0]
    eps = torch.as_tensor(eps_adv, dtype=torch.float64).reshape(-1).cpu()
    if eps.shape[0] != n:
        raise ValueError(f"eps_adv must have shape ({n},), got {tuple(eps.shape)}")
    alphas = tuple(float(a) for a in alphas)
    if not alphas or any(not a > 0 for a in alphas):
        raise ValueError(f"alphas must be positive numbers, got {alphas}")
    ok = torch.isfinite(eps) & (eps > 0)
    keep = ok.nonzero()[:, 0]
    a_t = torch.tensor(alphas, dtype=torch.float64)
    rows = pd.DataFrame({"image": np.repeat(np.arange(n), len(alphas)),
                         "alpha": np.tile(np.array(alphas), n),
                         "eps_adv": np.repeat(eps.numpy(), len(alphas))})
    rows["radius"] = rows["alpha"] * rows["eps_adv"]
    cols = ["p_hat", "ci_low", "ci_high", "log10_p_hat", "log10_ci_low", "log10_ci_high",
            "rel_error", "hits", "expected_draws", "first_order_p", "log10_first_order_p",
            "plane_distance", "forwards", "gradients"]
    for c in cols:
        rows[c] = np.nan
    rows["method"] = method
    if keep.numel():
        sub = x[keep.to(x.device)]
        sub_y = None if y is None else y[keep.to(y.device)]
        sub_dir = None if direction is None else direction[keep.to(direction.device)]
        img = torch.arange(keep.numel()).repeat_interleave(len(alphas))
        eps_k = eps[keep]
        radius = (eps_k.unsqueeze(1) * a_t).reshape(-1)
        res = _estimate_tasks(clf, sub, sub_y, img, radius, eps_k, sub_dir, method=method,
                              budget=budget, seed=seed, level=level,
                              defensive=kwargs.pop("defensive", 0.1),
                              pilot_fraction=kwargs.pop("pilot_fraction", 0.25),
                              n_per_level=kwargs.pop("n_per_level", 200),
                              p0=kwargs.pop("p0", 0.1),
                              refine_steps=kwargs.pop("refine_steps", None),
                              batch_size=batch_size, progress=progress,
                              interval_factor=kwargs.pop("interval_factor", None))
        frame = res.to_frame()
        target = (keep.numpy()[res.image] * len(alphas)
                  + np.tile(np.arange(len(alphas)), keep.numel()))
        for c in cols:
            rows.loc[target, c] = frame[c].to_numpy()
    rows["hits"] = rows["hits"].astype("Int64")
    rows["forwards"] = rows["forwards"].fillna(0).astype(np.int64)
    rows["gradients"] = rows["gradients"].fillna(0).astype(np.int64)
    with np.errstate(invalid="ignore"):
        rows["p_probe_sees_flip"] = -np.expm1(probe_draws * np.log1p(-rows["p_hat"]))
    return rows
