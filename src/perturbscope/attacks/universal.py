"""Universal adversarial perturbations (Moosavi-Dezfooli et al., CVPR 2017, Algorithm 1).

One perturbation ``v`` with ``||v||_p <= xi`` that changes the predicted label of most inputs
("fooled" = label of ``x + v`` differs from the label of ``x``, not from the ground truth).
The algorithm passes over a build set; each input not yet fooled by the current ``v`` gets a
minimal L2 DeepFool perturbation ``dv`` of ``x + v``
(:class:`~perturbscope.attacks.deepfool.DeepFool`); ``v`` becomes ``P_{p,xi}(v + dv)``.
It stops when the build-set fooling rate reaches ``1 - delta`` or after ``max_passes``.

Every function takes an ``nn.Module`` (with ``output=`` or its ``output_kind``) or a
:class:`~perturbscope.models.classifier.Classifier`; inputs are checked against the classifier's
bounds, and ``clip=True`` clips ``x + v`` to those bounds wherever the model sees it (default:
unclipped, as in the paper; ``x + v`` may then leave the bounds).

Two modes:

``"sequential"`` (the paper's): inputs one at a time in a seeded shuffled order, ``v`` updated
    after each DeepFool that succeeds (the reference code's rule).
``"batched"``: the shuffled inputs in chunks of ``chunk``; DeepFool runs batched on the chunk's
    not-yet-fooled rows of ``x + v`` and ``v`` moves by the *sum* of their successful
    perturbations before projecting. With ``chunk=1`` it is the sequential mode.

Fooling rates are always computed batched. Pass held-out inputs as ``x_eval`` to get the rate
the paper reports (on images not used to build ``v``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from perturbscope.attacks.deepfool import DeepFool
from perturbscope.models.classifier import Classifier, as_classifier, with_autograd
from perturbscope.progress import progress_bar
from perturbscope.sampling import make_generator, uniform_sphere
from perturbscope.stats import binomial_ci
from perturbscope.validation import check_images

__all__ = [
    "UniversalResult",
    "universal_perturbation",
    "project_lp_ball",
    "parse_p",
    "fooling_mask",
    "fooling_rate",
    "random_fooling",
    "RandomFooling",
]

Mode = Literal["sequential", "batched"]


def parse_p(p: float | int | str) -> float:
    """``2`` or ``inf`` from ``2``, ``"2"``, ``"l2"``, ``inf``, ``"inf"``, ``"linf"``."""
    table = {"2": 2.0, "l2": 2.0, "inf": math.inf, "linf": math.inf}
    if isinstance(p, str):
        if p.lower() in table:
            return table[p.lower()]
    elif isinstance(p, int | float) and float(p) in (2.0, math.inf):
        return float(p)
    raise ValueError(f"p must be 2 or inf (also 'l2', 'linf'), got {p!r}")


def project_lp_ball(v: torch.Tensor, xi: float, p: float | str) -> torch.Tensor:
    """Project ``v`` (any shape, one vector) onto the ball ``{u : ||u||_p <= xi}``.

    ``p = 2``: ``v * min(1, xi / ||v||_2)`` (radial scaling, the Euclidean projection).
    ``p = inf``: clip each entry to ``[-xi, xi]`` (the Euclidean projection onto the cube).
    The identity inside the ball; idempotent.
    """
    p = parse_p(p)
    if not xi >= 0:
        raise ValueError(f"xi (ball radius, pixel units) must be >= 0, got {xi!r}")
    if p == math.inf:
        return v.clamp(-xi, xi)
    n = v.norm()
    if n <= xi:
        return v
    return v * (xi / n)


def _classifier(model: nn.Module | Classifier, output: str | None, clip: bool) -> Classifier:
    clf = as_classifier(model, output)
    if clip and clf.bounds is None:
        raise ValueError("clip=True needs a classifier with bounds (got bounds=None)")
    return clf


def _apply(clf: Classifier, x: torch.Tensor, v: torch.Tensor, clip: bool) -> torch.Tensor:
    """``x + v`` ``(N, *shape)``, clipped to the classifier's bounds when ``clip``."""
    xv = x + v
    return xv.clamp(*clf.bounds) if clip else xv


def _labels_at(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Labels ``(N,)`` of one batch (no batching, no gradients); the model is already in eval mode."""
    with torch.no_grad():
        return clf.labels_of(clf.raw(x))


def fooling_mask(model: nn.Module | Classifier, x: torch.Tensor, v: torch.Tensor, *,
                 output: str | None = None, clean_labels: torch.Tensor | None = None,
                 clip: bool = False, batch_size: int = 256) -> torch.Tensor:
    """``(N,)`` bool: the label of ``x + v`` differs from the label of ``x`` (or from
    ``clean_labels`` if given).

    Args:
        model: ``nn.Module`` (output kind ``output`` or its ``output_kind``) or a Classifier.
        x: ``(N, *shape)`` inputs in pixel units, inside the classifier's bounds.
        v: one perturbation, shape ``shape`` (pixel units).
        clip: clip ``x + v`` to the classifier's bounds before the model sees it.
    Returns:
        ``(N,)`` bool on ``x``'s device.
    """
    clf = _classifier(model, output, clip)
    check_images(x, clf.bounds)
    v = v.to(x.device)
    with clf.evaluating():
        clean = clf.predict(x, batch_size) if clean_labels is None else clean_labels.to(x.device)
        adv = clf.predict(_apply(clf, x, v, clip), batch_size)
    return adv != clean


def fooling_rate(model: nn.Module | Classifier, x: torch.Tensor, v: torch.Tensor, **kwargs) -> float:
    """Fraction of inputs whose label changes under ``v`` (see :func:`fooling_mask`)."""
    return float(fooling_mask(model, x, v, **kwargs).float().mean())


@dataclass
class UniversalResult:
    """Outcome of :func:`universal_perturbation`.

    Attributes:
        perturbation: ``v``, shape of one input, ``||v||_p <= xi`` (pixel units).
        xi, p: the ball.
        fooling_rate: fraction of the build set fooled by the returned ``v``.
        history: build-set fooling rate after each pass.
        best_pass: the pass after which the returned ``v`` was taken (0: ``v = 0``). The ``v``
            with the highest build-set rate over the passes (the latest among ties) is returned:
            on binary tasks the two classes pull ``v`` in opposite directions and the rate can
            swing from pass to pass.
        passes: passes made; ``converged``: the target ``1 - delta`` was reached.
        updates: accepted DeepFool updates; ``deepfool_calls``: DeepFool runs (rows).
        heldout_fooling_rate, heldout_ci, heldout_n: on ``x_eval`` when given.
        seconds: wall time of the construction (evaluation on ``x_eval`` excluded).
    """

    perturbation: torch.Tensor
    xi: float
    p: float
    fooling_rate: float
    history: list[float] = field(default_factory=list)
    passes: int = 0
    converged: bool = False
    updates: int = 0
    deepfool_calls: int = 0
    heldout_fooling_rate: float | None = None
    heldout_ci: tuple[float, float] | None = None
    heldout_n: int = 0
    seconds: float = 0.0
    mode: str = "sequential"
    best_pass: int = 0

    @property
    def norms(self) -> dict[str, float]:
        flat = self.perturbation.reshape(-1).double()
        return {"l1": float(flat.abs().sum()), "l2": float(flat.norm()),
                "linf": float(flat.abs().max()) if flat.numel() else 0.0}

    def summary(self) -> dict:
        """Plain-data summary (JSON-ready)."""
        return {
            "xi": self.xi, "p": "inf" if self.p == math.inf else 2, "mode": self.mode,
            "fooling_rate_build": self.fooling_rate, "history": list(self.history),
            "passes": self.passes, "best_pass": self.best_pass, "converged": self.converged,
            "updates": self.updates,
            "deepfool_calls": self.deepfool_calls,
            "heldout_fooling_rate": self.heldout_fooling_rate,
            "heldout_ci": list(self.heldout_ci) if self.heldout_ci else None,
            "heldout_n": self.heldout_n, "seconds": self.seconds, "norms": self.norms,
        }


@with_autograd
def universal_perturbation(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    *,
    xi: float,
    p: float | str = math.inf,
    output: str | None = None,
    delta: float = 0.2,
    max_passes: int = 10,
    x_eval: torch.Tensor | None = None,
    mode: Mode = "sequential",
    chunk: int = 32,
    overshoot: float = 0.02,
    df_max_iter: int = 10,
    candidates: int = 9,
    clip: bool = False,
    seed: int | torch.Generator | None = 0,
    batch_size: int = 256,
    level: float = 0.95,
    progress: bool = False,
) -> UniversalResult:
    """Build a universal perturbation on ``x`` and (optionally) measure it on ``x_eval``.

    Args:
        model: ``nn.Module`` (output kind ``output`` or its ``output_kind``) or a Classifier;
            run in eval mode, every submodule's mode restored afterwards.
        x: ``(N, *shape)`` build inputs in pixel units, inside the classifier's bounds.
        xi: radius of the ``p``-ball (pixel units; the paper's Linf xi = 10/255 on [0, 1]).
        p: ``2`` or ``inf``.
        delta: stop once the build fooling rate reaches ``1 - delta`` (paper: 0.2).
        max_passes: pass limit over ``x``.
        x_eval: ``(M, *shape)`` held-out inputs for the reported fooling rate (with a
            binomial confidence interval at ``level``).
        mode: ``"sequential"`` (paper) or ``"batched"`` (chunks of ``chunk`` inputs).
        overshoot, df_max_iter, candidates: the inner L2 DeepFool's settings (reference code:
            0.02, 10 iterations, 10 classes = the reference class and 9 rivals).
        clip: clip ``x + v`` to the classifier's bounds wherever the model sees it (and run the
            inner DeepFool box-aware, ``DeepFool(clip=True)``).
        seed: seed (or generator) of the shuffles; same seed, same ``v``.
        progress: show a rich progress bar.
    """
    p = parse_p(p)
    clf = _classifier(model, output, clip)
    check_images(x, clf.bounds)
    if not (isinstance(xi, int | float) and xi > 0 and math.isfinite(xi)):
        raise ValueError(f"xi (ball radius, pixel units) must be a finite number > 0, got {xi!r}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    if not isinstance(max_passes, int) or max_passes < 1:
        raise ValueError(f"max_passes must be an int >= 1, got {max_passes!r}")
    if mode not in ("sequential", "batched"):
        raise ValueError(f"mode must be 'sequential' or 'batched', got {mode!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    if x_eval is not None and (x_eval.shape[1:] != x.shape[1:]):
        raise ValueError(f"x_eval must have inputs of shape {tuple(x.shape[1:])}, "
                         f"got {tuple(x_eval.shape[1:])}")
    if x_eval is not None:
        check_images(x_eval, clf.bounds, name="x_eval")
    step = 1 if mode == "sequential" else chunk
    # the inner attack; its _run is called directly on the not-yet-fooled rows of x + v (correctly
    # classified w.r.t. their clean label), which may legitimately leave the bounds when unclipped
    inner = DeepFool(norm="l2", overshoot=overshoot, max_iter=df_max_iter, candidates=candidates,
                     batch_size=max(step, 1), clip=clip)
    gen = make_generator(seed)
    x = x.to(clf.device)
    n = x.shape[0]
    v = torch.zeros_like(x[0])
    history: list[float] = []
    updates = calls = passes = 0
    converged = False
    t0 = time.perf_counter()
    with clf.evaluating(), progress_bar(f"universal (p={'inf' if p == math.inf else 2}, xi={xi:g})",
                                        max_passes * n, enabled=progress) as advance:
        clean = clf.predict(x, batch_size)
        rate = float((clf.predict(_apply(clf, x, v, clip), batch_size) != clean).double().mean())
        best_v, best_rate, best_pass = v, rate, 0
        while rate < 1 - delta and passes < max_passes:
            order = torch.randperm(n, generator=gen).to(x.device)
            for start in range(0, n, step):
                rows = order[start:start + step]
                cur = _labels_at(clf, _apply(clf, x[rows], v, clip))
                todo = rows[cur == clean[rows]]
                if todo.numel():
                    df = inner._run(clf, _apply(clf, x[todo], v, clip), clean[todo])
                    calls += todo.numel()
                    ok = df.success
                    if ok.any():
                        v = project_lp_ball(v + df.perturbation[ok].sum(0), xi, p)
                        updates += int(ok.sum())
                advance(rows.numel())
            passes += 1
            rate = float((clf.predict(_apply(clf, x, v, clip), batch_size) != clean).double().mean())
            history.append(rate)
            if rate >= best_rate:  # ties: keep the later v
                best_v, best_rate, best_pass = v, rate, passes
            if rate >= 1 - delta:
                converged = True
                advance((max_passes - passes) * n)
        if not history:  # already fooled enough with v = 0 (only possible with delta near 1)
            converged = rate >= 1 - delta
    seconds = time.perf_counter() - t0
    result = UniversalResult(perturbation=best_v.detach(), xi=float(xi), p=p,
                             fooling_rate=best_rate, history=history, passes=passes,
                             converged=converged, updates=updates, deepfool_calls=calls,
                             seconds=seconds, mode=mode, best_pass=best_pass)
    if x_eval is not None and x_eval.shape[0]:
        mask = fooling_mask(clf, x_eval.to(clf.device), result.perturbation, clip=clip,
                            batch_size=batch_size)
        k, m = int(mask.sum()), int(mask.numel())
        result.heldout_fooling_rate = k / m
        result.heldout_ci = tuple(float(b) for b in binomial_ci(k, m, level=level))
        result.heldout_n = m
    return result


@dataclass
class RandomFooling:
    """Flips of ``x`` under ``draws`` random perturbations, each applied to every input.

    Attributes:
        flips: ``(draws, N)`` bool, draw ``j`` flips input ``i``.
        radius, p, kind: the perturbations' size and law.
    """

    flips: torch.Tensor
    radius: float
    p: float
    kind: str

    @property
    def rate(self) -> float:
        """Fraction of (draw, input) pairs that flip."""
        return float(self.flips.float().mean()) if self.flips.numel() else 0.0

    @property
    def per_draw(self) -> torch.Tensor:
        """``(draws,)`` fooling rate of each random vector used as a universal one."""
        return self.flips.float().mean(1)

    @property
    def per_input(self) -> torch.Tensor:
        """``(N,)`` fraction of draws that flip each input."""
        return self.flips.float().mean(0)


def random_fooling(model: nn.Module | Classifier, x: torch.Tensor, *, radius: float,
                   p: float | str = 2, draws: int = 10, output: str | None = None,
                   kind: str | None = None, clip: bool = False,
                   seed: int | torch.Generator | None = 0, batch_size: int = 256) -> RandomFooling:
    """Random-vector baseline: ``draws`` random vectors of norm ``radius`` applied to every input.

    ``x`` ``(N, *shape)`` (pixel units, inside the classifier's bounds); ``radius`` in pixel units;
    ``clip`` clips ``x + v`` to the classifier's bounds. Flipped = label of ``x + v`` differs
    from the label of ``x``.

    ``kind="sphere"`` (default for ``p=2``): uniform on the L2 sphere of radius ``radius``.
    ``kind="corners"`` (default for ``p=inf``): ``radius * s`` with iid random signs ``s``
    (uniform on the corners of the Linf sphere, the largest vectors of that Linf norm).
    """
    p = parse_p(p)
    kind = kind or ("sphere" if p == 2 else "corners")
    if kind not in ("sphere", "corners"):
        raise ValueError(f"kind must be 'sphere' or 'corners', got {kind!r}")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    clf = _classifier(model, output, clip)
    check_images(x, clf.bounds)
    gen = make_generator(seed)
    shape = tuple(x.shape[1:])
    if kind == "sphere":
        vs = uniform_sphere(draws, shape, radius, seed=gen, dtype=x.dtype).to(x.device)
    else:
        signs = torch.randint(0, 2, (draws, *shape), generator=gen).to(x.dtype) * 2 - 1
        vs = (radius * signs).to(x.device)
    x = x.to(clf.device)
    vs = vs.to(x.device)
    with clf.evaluating():
        clean = clf.predict(x, batch_size)
        n = x.shape[0]
        adv = torch.empty(draws * n, dtype=torch.long, device=x.device)
        for start in range(0, draws * n, batch_size):  # (draw, input) pairs flattened, in batches
            pair = torch.arange(start, min(start + batch_size, draws * n), device=x.device)
            adv[pair] = _labels_at(clf, _apply(clf, x[pair % n], vs[pair // n], clip))
        flips = adv.view(draws, n) != clean.view(1, n)
    return RandomFooling(flips=flips.cpu(), radius=float(radius), p=p, kind=kind)
