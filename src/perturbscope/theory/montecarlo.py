"""Monte Carlo estimates for the theory models, with either engine and a binomial CI.

``monte_carlo("two-balls", "flip", n=1000, samples=100_000, engine="coord", eps=0.1, r=1.0)``
draws ``samples`` independent experiments in batches and returns an :class:`MCResult`.
The ``"full"`` engine materialises ``(batch, n)`` float64 tensors (batches are sized to
keep about ``max_elements`` numbers in memory); the ``"coord"`` engine draws first
coordinates only, so its cost does not depend on ``n``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from perturbscope.stats import binomial_ci
from perturbscope.theory import half_balls, single_point, two_balls
from perturbscope.theory.engines import ENGINES, Engine, Sampler

__all__ = ["MODELS", "MCResult", "monte_carlo", "two_engine_agreement"]

MODELS: tuple[str, ...] = ("point", "two-balls", "half-balls")


@dataclass(frozen=True)
class MCResult:
    """A Monte Carlo estimate of a probability.

    Attributes:
        successes, trials: event count and number of independent experiments.
        estimate: ``successes / trials``.
        ci_low, ci_high: two-sided binomial CI at ``level`` (Wilson by default).
        level: confidence level of the CI.
        engine: ``"full"`` or ``"coord"``.
        seconds: wall-clock time of the simulation (s).
    """

    successes: int
    trials: int
    estimate: float
    ci_low: float
    ci_high: float
    level: float
    engine: str
    seconds: float

    def contains(self, p: float) -> bool:
        """True if ``p`` lies in the confidence interval."""
        return self.ci_low <= p <= self.ci_high

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batch_fn(model: str, event: str, params: dict[str, Any]):
    if model == "point":
        if event != "flip":
            raise ValueError(f"model 'point' has only event 'flip', got {event!r}")
        return lambda s, b: single_point.simulate_flip(s, b, **params)
    if model == "two-balls":
        return lambda s, b: two_balls.simulate(s, b, event, **params)
    if model == "half-balls":
        return lambda s, b: half_balls.simulate(s, b, event, **params)
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def monte_carlo(
    model: str,
    event: str,
    *,
    n: int,
    samples: int,
    engine: Engine = "coord",
    seed: int | None = 0,
    level: float = 0.95,
    ci_method: str = "wilson",
    max_elements: int = 2**22,
    progress: Any = None,
    **params: Any,
) -> MCResult:
    """Estimate ``P(event)`` for a theory model by simulation.

    Args:
        model: ``"point"`` (Thm 1), ``"two-balls"`` (Thms 4-8) or ``"half-balls"`` (Thms 18-20).
        event: see ``two_balls.simulate`` / ``half_balls.simulate`` (``"flip"`` for ``"point"``).
        n: dimension of the space.
        samples: number of independent experiments (>= 1).
        engine: ``"full"`` (d-dimensional vectors) or ``"coord"`` (first coordinates only).
        seed: int seed (same seed, same numbers); engines use different generators, so the
            two engines give different (independent) samples for the same seed.
        level, ci_method: passed to :func:`perturbscope.stats.binomial_ci`.
        max_elements: numbers per batch for the full engine (memory ~ 8 bytes each, x3).
        progress: optional ``rich.progress.Progress``; a task advances by batch.
        **params: model parameters (``eps``, ``r``, ``delta``, ``A``, ``density``), lengths in
            units of the ball radius.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    samples = int(samples)
    fn = _batch_fn(model, event, params)
    sampler = Sampler(engine, n, seed)
    batch = max(1, min(samples, max_elements // sampler.width)) if engine == "full" else min(
        samples, 1 << 20)
    task = None
    if progress is not None:
        task = progress.add_task(f"{model} {event} n={n} [{engine}]", total=samples)
    t0 = time.perf_counter()
    done = hits = 0
    while done < samples:
        b = min(batch, samples - done)
        hits += int(fn(sampler, b).sum())
        done += b
        if task is not None:
            progress.advance(task, b)
    seconds = time.perf_counter() - t0
    low, high = binomial_ci(hits, samples, level, ci_method)
    return MCResult(hits, samples, hits / samples, float(low), float(high), level, engine,
                    seconds)


def two_engine_agreement(a: MCResult, b: MCResult, z: float = 3.29) -> bool:
    """True if two independent estimates agree: ``|p_a - p_b| <= z * pooled standard error``.

    ``z = 3.29`` is a two-sided 99.9% test. With zero events in both, they agree.
    """
    p = (a.successes + b.successes) / (a.trials + b.trials)
    se = math.sqrt(max(p * (1 - p), 0.0) * (1 / a.trials + 1 / b.trials))
    return abs(a.estimate - b.estimate) <= z * se + 1e-15
