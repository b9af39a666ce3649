"""The four robustness categories of a model at a perturbation size ``eps``.

From the weakest to the strongest failure (seeds/universal-perturbations-geometry.txt):

1. **robust**: for (almost) every input, no perturbation in the ``eps``-ball flips it;
2. **adversarial**: for every input there is one (``forall I, exists Delta``);
3. **universal**: one perturbation flips (almost) every input (``exists Delta, forall I``);
4. **everything fools**: every perturbation on the ``eps``-sphere flips every input.

They nest (4 => 3 => 2 => not 1), so a model gets the highest one that holds. Each
"for all" is tested with a tolerance on an estimated rate with a binomial confidence interval:

``A`` per-input attack rate: share of evaluation inputs with a flip inside the ball (L2 or
    Linf DeepFool; an input also counts if the universal vector or a random draw flipped it).
``U`` universal rate: held-out fooling rate of the best of ``k_restarts`` universal
    perturbations built on a disjoint split (best chosen on the build split), and at least
    ``R`` (a random vector is one candidate universal vector).
``R`` random rate: share of (input, draw) pairs flipped by ``draws`` random vectors on the
    sphere of radius ``eps`` (L2: uniform; Linf: random sign corners).

Decision, first rule that holds ("at least" uses the lower bound, "at most" the upper):
4 if ``R >= 1 - delta_r``; 3 if ``U >= 1 - delta_u``; 2 if ``A >= 1 - delta_a``;
1 if ``A <= tau_1``; otherwise indeterminate between 1 and 2. By construction
``R <= U <= A`` on every estimate.

Binary models (``output="sigmoid"`` or ``"logit"``) and multi-class models (``"logits"``,
one-vs-all flips: any change of the argmax counts) are handled alike; the model is an
``nn.Module`` or a :class:`~perturbscope.models.classifier.Classifier`, whose bounds the inputs
are checked against (``clip=True`` clips every perturbed input to them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from perturbscope.attacks.base import AttackResult
from perturbscope.attacks.deepfool import DeepFool
from perturbscope.attacks.universal import (
    UniversalResult,
    fooling_mask,
    parse_p,
    random_fooling,
    universal_perturbation,
)
from perturbscope.models.classifier import Classifier, as_classifier
from perturbscope.sampling import make_generator
from perturbscope.stats import binomial_ci
from perturbscope.validation import check_images, check_labels

__all__ = [
    "CATEGORY_NAMES",
    "CategoryThresholds",
    "RateEstimate",
    "CategoryResult",
    "decide_category",
    "categorize",
    "categorize_sweep",
]

CATEGORY_NAMES = {1: "robust", 2: "adversarial", 3: "universal", 4: "everything fools"}


@dataclass(frozen=True)
class CategoryThresholds:
    """Tolerances of the four tests (see the module docstring); all in [0, 1]."""

    delta_r: float = 0.1
    delta_u: float = 0.2
    delta_a: float = 0.2
    tau_1: float = 0.05

    def __post_init__(self) -> None:
        for name in ("delta_r", "delta_u", "delta_a", "tau_1"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")


@dataclass(frozen=True)
class RateEstimate:
    """A proportion ``successes / trials`` with its confidence interval ``[low, high]``."""

    rate: float
    low: float
    high: float
    successes: int
    trials: int

    @classmethod
    def of(cls, successes: int, trials: int, level: float, method: str = "wilson") -> RateEstimate:
        if trials == 0:
            return cls(float("nan"), 0.0, 1.0, 0, 0)
        low, high = binomial_ci(int(successes), int(trials), level=level, method=method)
        return cls(successes / trials, float(low), float(high), int(successes), int(trials))

    def text(self) -> str:
        return f"{100 * self.rate:.1f}% (CI {100 * self.low:.1f}-{100 * self.high:.1f}%)"


@dataclass
class CategoryResult:
    """Category of one model at one ``eps``.

    Attributes:
        eps, p: ball radius (pixel units) and norm (2 or inf).
        attack, universal, random, random_all: the rates ``A``, ``U``, ``R`` and the share
            of inputs flipped by *every* random draw, as :class:`RateEstimate`.
        category: 1-4, or ``None`` when the evidence does not decide; ``label``: words;
        reason: plain-words justification.
        records: one row per evaluation input (DeepFool success, norm (NaN where DeepFool
            failed) and iterations, flips by U's vector and by random draws, attacked flag).
        universal_result: the chosen universal perturbation (:class:`UniversalResult`).
    """

    eps: float
    p: float
    attack: RateEstimate
    universal: RateEstimate
    random: RateEstimate
    random_all: RateEstimate
    category: int | None
    label: str
    reason: str
    thresholds: CategoryThresholds
    level: float
    n_build: int
    n_eval: int
    records: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    universal_result: UniversalResult | None = field(repr=False, default=None)

    def summary(self) -> dict:
        """Plain-data summary (JSON-ready)."""
        return {
            "eps": self.eps, "p": "inf" if self.p == math.inf else 2,
            "category": self.category, "label": self.label, "reason": self.reason,
            "A_attack": asdict(self.attack), "U_universal": asdict(self.universal),
            "R_random": asdict(self.random), "R_all_draws": asdict(self.random_all),
            "thresholds": asdict(self.thresholds), "level": self.level,
            "n_build": self.n_build, "n_eval": self.n_eval,
            "universal": self.universal_result.summary() if self.universal_result else None,
        }


def decide_category(attack: RateEstimate, universal: RateEstimate, random: RateEstimate,
                    thresholds: CategoryThresholds, eps: float, level: float = 0.95,
                    num_classes: int | None = None) -> tuple[int | None, str, str]:
    """``(category, label, reason)`` from the three rates (first rule that holds).

    ``num_classes=2`` adds to a category-2 reason that a two-class model caps ``U`` near the
    share of one class (one vector pushes the two classes in opposite directions)."""
    t = thresholds
    pct = f"{100 * level:g}%"
    size = f"perturbations of size eps={eps:g}"
    if random.low >= 1 - t.delta_r:
        return 4, CATEGORY_NAMES[4], (
            f"Even random {size} flip {random.text()} of (input, draw) pairs; the lower "
            f"{pct} bound is at least {100 * (1 - t.delta_r):g}%, so almost every small "
            f"perturbation fools it.")
    if universal.low >= 1 - t.delta_u:
        return 3, CATEGORY_NAMES[3], (
            f"One single perturbation of size eps={eps:g} flips {universal.text()} of held-out "
            f"inputs (needed: lower bound >= {100 * (1 - t.delta_u):g}%), while random ones "
            f"flip only {random.text()}: the decision boundaries near the data share a "
            f"common weak direction.")
    if attack.low >= 1 - t.delta_a:
        extra = ""
        if universal.high >= 1 - t.delta_u:
            extra = (f" The universal rate's interval reaches the {100 * (1 - t.delta_u):g}% "
                     f"threshold, so more inputs might show category 3.")
        return 2, CATEGORY_NAMES[2], (
            f"Each input has its own fooling perturbation of size eps={eps:g} "
            f"({attack.text()} of inputs, needed: lower bound >= {100 * (1 - t.delta_a):g}%), "
            f"but the best single perturbation flips only {universal.text()}: no single "
            f"direction serves most inputs.{extra}"
            + (" On a two-class model one vector pushes the two classes in opposite directions "
               "across a shared boundary, so U stays near the share of one class (about 50% "
               "on a balanced task) even when the boundaries are correlated."
               if num_classes == 2 else ""))
    if attack.high <= t.tau_1:
        return 1, CATEGORY_NAMES[1], (
            f"Only {attack.text()} of inputs have any fooling perturbation of size eps={eps:g} "
            f"(needed: upper bound <= {100 * t.tau_1:g}%): no small perturbation fools it.")
    if attack.low > t.tau_1:
        return None, "indeterminate (1 or 2)", (
            f"{attack.text()} of inputs can be flipped at eps={eps:g}: too many for category 1 "
            f"(upper bound <= {100 * t.tau_1:g}%), too few for category 2 (lower bound >= "
            f"{100 * (1 - t.delta_a):g}%). The model sits between the two at this eps: some "
            f"inputs are within eps of a boundary, others are not.")
    return None, "indeterminate (1 or 2)", (
        f"{attack.text()} of inputs can be flipped at eps={eps:g}. Category 1 needs the upper "
        f"bound <= {100 * t.tau_1:g}% and category 2 the lower bound >= "
        f"{100 * (1 - t.delta_a):g}%; neither holds. More inputs narrow the interval "
        f"(0 flips in n inputs gives an upper bound near 3.8/n), or the model sits between "
        f"the two at this eps.")


def _split(x: torch.Tensor, labels: torch.Tensor | None, clf: Classifier, correct_only: bool,
           build_fraction: float, seed: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0.0 < build_fraction < 1.0:
        raise ValueError(f"build_fraction must be in (0, 1), got {build_fraction!r}")
    keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    if labels is not None and correct_only:
        keep = clf.predict(x, batch_size) == labels.to(x.device)
    xs = x[keep]
    n = xs.shape[0]
    n_build = int(round(build_fraction * n))
    if n_build < 1 or n - n_build < 1:
        raise ValueError(f"need inputs in both the build and the evaluation split; got {n} "
                         f"usable inputs (correct_only={correct_only}) and "
                         f"build_fraction={build_fraction}")
    perm = torch.randperm(n, generator=make_generator(seed)).to(x.device)
    return xs[perm[:n_build]], xs[perm[n_build:]]


def categorize_sweep(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    eps_values: Sequence[float],
    *,
    p: float | str = 2,
    output: str | None = None,
    labels: torch.Tensor | None = None,
    correct_only: bool = True,
    build_fraction: float = 0.5,
    draws: int = 100,
    k_restarts: int = 3,
    max_passes: int = 5,
    uap_mode: str = "batched",
    thresholds: CategoryThresholds | None = None,
    level: float = 0.95,
    method: str = "wilson",
    seed: int = 0,
    clip: bool = False,
    df_max_iter: int = 50,
    candidates: int = 9,
    batch_size: int = 256,
    progress: bool = False,
) -> list[CategoryResult]:
    """Category of ``model`` at each ``eps`` in ``eps_values`` (DeepFool runs once for all).

    Args:
        model: ``nn.Module`` (output kind ``output`` or its ``output_kind``) or a Classifier;
            run in eval mode, every submodule's mode restored afterwards.
        x: ``(N, *shape)`` inputs (pixel units, inside the classifier's bounds). With
            ``labels`` and ``correct_only`` only correctly classified inputs are used. They
            are split (seeded) into a build part (``build_fraction``, for the universal
            perturbations) and an evaluation part (all three rates are measured on it).
        eps_values: ball radii in pixel units (L2 or Linf by ``p``).
        p: ``2`` or ``inf``.
        draws: random vectors per ``eps`` (each applied to every evaluation input).
        k_restarts: universal perturbations built per ``eps`` (different shuffles).
        max_passes, uap_mode: the universal algorithm's pass limit and mode.
        thresholds: :class:`CategoryThresholds` (defaults: delta_r=0.1, delta_u=0.2,
            delta_a=0.2, tau_1=0.05).
        level, method: confidence level and binomial interval method ("wilson" or
            "clopper-pearson"). The random rate's interval treats (input, draw) pairs as
            independent trials.
        clip: clip every perturbed input to the classifier's bounds (DeepFool then runs
            box-aware, ``DeepFool(clip=True)``).
        df_max_iter, candidates: the per-input DeepFool's iteration cap and rival classes
            (besides the reference class).
    """
    p = parse_p(p)
    thresholds = thresholds or CategoryThresholds()
    eps_list = [float(e) for e in eps_values]
    if not eps_list or any(not (e > 0 and math.isfinite(e)) for e in eps_list):
        raise ValueError(f"eps values must be finite numbers > 0, got {list(eps_values)!r}")
    if not isinstance(k_restarts, int) or k_restarts < 1:
        raise ValueError(f"k_restarts must be an int >= 1, got {k_restarts!r}")
    clf = as_classifier(model, output)
    if clip and clf.bounds is None:
        raise ValueError("clip=True needs a classifier with bounds (got bounds=None)")
    check_images(x, clf.bounds)
    if labels is not None:
        labels = check_labels(labels, x.shape[0], name="labels")
    x = x.to(clf.device)
    with clf.evaluating():
        x_build, x_eval = _split(x, labels, clf, correct_only, build_fraction, seed, batch_size)
        df = DeepFool(norm="l2" if p == 2 else "linf", max_iter=df_max_iter, candidates=candidates,
                      batch_size=batch_size, clip=clip)(clf, x_eval)
        df_norm = df.eps_l2 if p == 2 else df.eps_linf
        results = []
        for i, eps in enumerate(eps_list):
            results.append(_categorize_one(
                clf, x_build, x_eval, df, df_norm, eps, p, draws, k_restarts, max_passes,
                uap_mode, thresholds, level, method, seed + 1000 * i, clip, candidates,
                batch_size, progress))
    return results


def categorize(model: nn.Module | Classifier, x: torch.Tensor, eps: float, **kwargs
               ) -> CategoryResult:
    """Category of ``model`` at one ``eps``; keyword arguments as :func:`categorize_sweep`."""
    return categorize_sweep(model, x, [eps], **kwargs)[0]


def _categorize_one(clf: Classifier, x_build: torch.Tensor, x_eval: torch.Tensor, df: AttackResult,
                    df_norm: torch.Tensor, eps: float, p: float, draws: int, k_restarts: int,
                    max_passes: int, uap_mode: str, thresholds: CategoryThresholds, level: float,
                    method: str, seed: int, clip: bool, candidates: int, batch_size: int,
                    progress: bool) -> CategoryResult:
    n_eval = x_eval.shape[0]
    # U: best of k restarts, chosen on the build split, measured on the evaluation split
    best: UniversalResult | None = None
    for k in range(k_restarts):
        res = universal_perturbation(clf, x_build, xi=eps, p=p, max_passes=max_passes,
                                     mode=uap_mode, seed=seed + k, candidates=candidates,
                                     clip=clip, batch_size=batch_size, progress=progress)
        if best is None or res.fooling_rate > best.fooling_rate:
            best = res
    u_flip = fooling_mask(clf, x_eval, best.perturbation, clip=clip, batch_size=batch_size).cpu()
    best.heldout_n = n_eval
    best.heldout_fooling_rate = float(u_flip.double().mean())
    # R: random vectors of norm eps
    rnd = random_fooling(clf, x_eval, radius=eps, p=p, draws=draws, clip=clip, seed=seed + 10_000,
                         batch_size=batch_size)
    r_any = rnd.flips.any(0)
    r_all = rnd.flips.all(0)
    df_hit = (df.success & (df_norm <= eps)).cpu()
    attacked = df_hit | u_flip | r_any
    a_est = RateEstimate.of(int(attacked.sum()), n_eval, level, method)
    r_est = RateEstimate.of(int(rnd.flips.sum()), int(rnd.flips.numel()), level, method)
    u_k = int(u_flip.sum())
    if u_k / n_eval < r_est.rate:  # a random vector is a candidate universal vector
        u_est = RateEstimate(r_est.rate, r_est.low, r_est.high, r_est.successes, r_est.trials)
    else:
        u_est = RateEstimate.of(u_k, n_eval, level, method)
    best.heldout_ci = (u_est.low, u_est.high)
    rall_est = RateEstimate.of(int(r_all.sum()), n_eval, level, method)
    n_classes = clf.num_classes  # known: the model has run on x_eval
    category, label, reason = decide_category(a_est, u_est, r_est, thresholds, eps, level,
                                              num_classes=n_classes)
    records = pd.DataFrame({
        "deepfool_success": df.success.cpu().numpy(),
        "deepfool_norm": df_norm.detach().cpu().double().numpy(),
        "deepfool_iterations": df.iterations.cpu().numpy(),
        "flipped_by_deepfool": df_hit.numpy(),
        "flipped_by_universal": u_flip.numpy(),
        "random_flip_fraction": rnd.per_input.numpy().astype(np.float64),
        "attacked": attacked.numpy(),
    })
    records.insert(0, "eps", eps)
    return CategoryResult(eps=eps, p=p, attack=a_est, universal=u_est, random=r_est,
                          random_all=rall_est, category=category, label=label, reason=reason,
                          thresholds=thresholds, level=level, n_build=x_build.shape[0],
                          n_eval=n_eval, records=records, universal_result=best)
