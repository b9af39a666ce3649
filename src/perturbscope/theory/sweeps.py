"""Dimension sweeps: bound, exact value and Monte Carlo estimate side by side, as tables.

Each function returns a long-format :class:`pandas.DataFrame`, one row per
(theorem, eps, parameter, dimension, engine), with columns

    theorem, quantity, n, eps, param_name, param, side, bound, exact,
    log10_bound, log10_exact, tail, log10_bound_tail, log10_exact_tail,
    mc, ci_low, ci_high, successes, trials, engine, mc_seconds

``side`` says which way the bound goes (``"upper"``: bound >= probability; ``"lower"``).
``log10_*`` columns stay finite where the probability underflows float64. For lower bounds
on probabilities that tend to 1 (Theorems 4, 5, 8, 18) the small quantity is the
complement: ``tail`` names it (e.g. ``"misclassified"``) and ``log10_exact_tail`` /
``log10_bound_tail`` give ``log10(1 - exact)`` / ``log10(1 - bound)``; for upper bounds
``tail`` is ``""`` and these equal ``log10_exact`` / ``log10_bound``. Lengths are in units
of the ball radius. Monte Carlo is skipped (NaN, ``engine = "none"``) when ``samples == 0``.
``progress``, if given, is called as ``progress(1)`` after each Monte Carlo estimate (one per
row and engine), e.g. the ``advance`` of :func:`perturbscope.progress.progress_bar`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from perturbscope.theory import half_balls, single_point, two_balls
from perturbscope.theory.caps import _check_n
from perturbscope.theory.montecarlo import monte_carlo

__all__ = ["point_sweep", "two_balls_sweep", "half_balls_sweep", "DEFAULT_DIMS", "log_dims"]

DEFAULT_DIMS: tuple[int, ...] = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
                                 10_000, 20_000, 50_000, 100_000)
_LN10 = math.log(10.0)


def log_dims(lo: int, hi: int, count: int) -> list[int]:
    """``count`` integer dimensions spread evenly in log scale over ``[lo, hi]`` (duplicates removed)."""
    _check_n(lo)
    _check_n(hi)
    if hi < lo or count < 1:
        raise ValueError(f"need 1 <= lo <= hi and count >= 1, got lo={lo}, hi={hi}, count={count}")
    if count == 1:
        return [int(lo)]
    step = (math.log(hi) - math.log(lo)) / (count - 1)
    return sorted({int(round(math.exp(math.log(lo) + k * step))) for k in range(count)})


def _check_dims(dims: Sequence[int]) -> list[int]:
    out = []
    for d in dims:
        if isinstance(d, bool) or not float(d).is_integer() or d < 1:
            raise ValueError(f"dims must be positive integers, got {list(dims)!r}")
        out.append(int(d))
    if not out:
        raise ValueError("dims must not be empty")
    return out


def _check_values(name: str, values: Sequence[float], *, strict: bool) -> list[float]:
    out = [float(v) for v in values]
    for v in out:
        if not math.isfinite(v) or v < 0 or (strict and v == 0):
            raise ValueError(f"{name} must be finite and {'>' if strict else '>='} 0, got {v!r}")
    return out


def _log10(x: float) -> float:
    return x / _LN10


def _exp(x: float) -> float:
    if math.isnan(x):
        return math.nan
    return math.exp(x) if x > -745.0 else 0.0


def _row(theorem: str, quantity: str, n: int, eps: float, pname: str, p: float, side: str, *,
         log_bound: float, log_exact: float, tail: str = "", log_bound_tail: float = math.nan,
         log_exact_tail: float = math.nan) -> dict[str, Any]:
    """One table row from natural-log values (``tail`` values for lower bounds)."""
    if side == "upper":
        bound, exact = _exp(min(log_bound, 700.0)), _exp(log_exact)
        log_bound_tail, log_exact_tail = log_bound, log_exact
    else:
        bound = -math.expm1(min(log_bound_tail, 700.0)) if math.isfinite(log_bound_tail) else 1.0
        exact = -math.expm1(log_exact_tail) if not math.isnan(log_exact_tail) else math.nan
        log_bound = math.log(bound) if bound > 0 else -math.inf
        log_exact = math.log(exact) if exact > 0 else (math.nan if math.isnan(exact) else -math.inf)
    return dict(theorem=theorem, quantity=quantity, n=n, eps=eps, param_name=pname, param=p,
                side=side, bound=bound, exact=exact, log10_bound=_log10(log_bound),
                log10_exact=_log10(log_exact), tail=tail, log10_bound_tail=_log10(log_bound_tail),
                log10_exact_tail=_log10(log_exact_tail))


def _with_mc(rows: list[dict[str, Any]], mc: Callable[..., Any], samples: int,
             engines: Sequence[str], seed: int, progress: Any) -> list[dict[str, Any]]:
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples!r}")
    out = []
    for k, row in enumerate(rows):
        if samples == 0:
            out.append({**row, "mc": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                        "successes": -1, "trials": 0, "engine": "none", "mc_seconds": 0.0})
            continue
        for j, engine in enumerate(engines):
            res = mc(row, engine=engine, samples=samples, seed=seed + 1000 * k + j)
            if progress is not None:
                progress(1)
            out.append({**row, "mc": res.estimate, "ci_low": res.ci_low, "ci_high": res.ci_high,
                        "successes": res.successes, "trials": res.trials, "engine": engine,
                        "mc_seconds": res.seconds})
    return out


def point_sweep(dims: Sequence[int], *, eps: float, radii: Sequence[float], samples: int,
                engines: Sequence[str] = ("coord",), seed: int = 0,
                progress: Any = None) -> pd.DataFrame:
    """Theorem 1 over ``dims`` x ``radii``: probability that ``U(B_n(x, r))`` crosses the plane.

    ``eps`` is the distance of the point to the plane, ``radii`` the probe radii (same units).
    """
    dims = _check_dims(dims)
    radii = _check_values("radii", radii, strict=True)
    rows = []
    for r in radii:
        for n in dims:
            rows.append(_row("Thm 1", "flip", n, eps, "r", r, "upper",
                             log_bound=single_point.log_flip_bound(n, eps, r),
                             log_exact=single_point.log_flip_exact(n, eps, r)))

    def mc(row, **kw):
        return monte_carlo("point", "flip", n=row["n"], eps=eps, r=row["param"], **kw)

    return pd.DataFrame(_with_mc(rows, mc, samples, engines, seed, progress))


def two_balls_sweep(dims: Sequence[int], *, eps: float, radii: Sequence[float] = (),
                    deltas: Sequence[float] = (), samples: int,
                    engines: Sequence[str] = ("coord",), A: float = 1.0,
                    density: str = "uniform", seed: int = 0, accuracy: bool = True,
                    progress: Any = None) -> pd.DataFrame:
    """Theorems 4 (if ``accuracy``), 5 and 8 (each ``delta``) and 6 (each ``r``) over ``dims``.

    Theorem 5 rows need ``eps < delta < 1 + eps`` and Theorem 8 rows ``delta <= 2``; other
    deltas are skipped for that theorem. Theorem 6's bound is the infimum over ``tau``
    (never above the closed form ``A^n (1 - (eps/(1+r))^2)^{n/2}``). Exact values need
    ``density`` in {"uniform", "shifted"}; for ``"radial"`` they are NaN.
    """
    dims = _check_dims(dims)
    radii = _check_values("radii", radii, strict=True)
    deltas = _check_values("deltas", deltas, strict=True)
    if not (math.isfinite(eps) and 0.0 < eps < 1.0):
        raise ValueError(f"eps must lie in (0, 1) for the two-balls theorems, got {eps!r}")
    exact_ok = density != "radial"
    nan = math.nan
    rows = []
    if accuracy:
        for n in dims:
            rows.append(_row("Thm 4", "correct", n, eps, "-", nan, "lower", log_bound=nan, log_exact=nan,
                             tail="misclassified",
                             log_bound_tail=two_balls.log_misclassification_bound(n, eps, A),
                             log_exact_tail=two_balls.log_misclassification_exact(n, eps, A, density)
                             if exact_ok else nan))
    for delta in deltas:
        if eps < delta < 1.0 + eps:
            for n in dims:
                rows.append(_row(
                    "Thm 5", "susceptible", n, eps, "delta", delta, "lower", log_bound=nan,
                    log_exact=nan, tail="not susceptible",
                    log_bound_tail=two_balls.log_insusceptibility_bound(n, eps, delta, A),
                    log_exact_tail=two_balls.log_insusceptibility_exact(n, eps, delta, A, density)
                    if exact_ok else nan))
        if delta <= 2.0:
            for n in dims:
                rows.append(_row(
                    "Thm 8", "universal", n, eps, "delta", delta, "lower", log_bound=nan,
                    log_exact=nan, tail="y escapes",
                    log_bound_tail=two_balls.log_universality_miss_bound(n, delta, A),
                    log_exact_tail=two_balls.log_universality_miss_exact(n, delta, A, density)
                    if exact_ok else nan))
    for r in radii:
        for n in dims:
            rows.append(_row("Thm 6", "flip", n, eps, "r", r, "upper",
                             log_bound=two_balls.log_flip_bound(n, eps, r, A),
                             log_exact=two_balls.log_flip_exact(n, eps, r, A, density)
                             if exact_ok else nan))

    def mc(row, **kw):
        extra = {row["param_name"]: row["param"]} if row["param_name"] != "-" else {}
        return monte_carlo("two-balls", row["quantity"], n=row["n"], eps=eps, A=A,
                           density=density, **extra, **kw)

    return pd.DataFrame(_with_mc(rows, mc, samples, engines, seed, progress))


def half_balls_sweep(dims: Sequence[int], *, eps_values: Sequence[float],
                     radii: Sequence[float], deltas: Sequence[float] = (), samples: int,
                     engines: Sequence[str] = ("coord",), seed: int = 0,
                     progress: Any = None) -> pd.DataFrame:
    """Theorems 19/20 (flip, each ``eps`` x ``r``) and 18 (susceptible, each ``eps`` x ``delta``).

    Rows with ``eps = 0`` are labelled ``"Thm 20"`` (no margin); their ``bound`` column holds
    Theorem 19's (non-decaying) ``1/2``. Theorem 18 rows need ``eps < delta < 1 + eps``.
    """
    dims = _check_dims(dims)
    eps_values = _check_values("eps_values", eps_values, strict=False)
    radii = _check_values("radii", radii, strict=True)
    deltas = _check_values("deltas", deltas, strict=True)
    rows = []
    for eps in eps_values:
        for r in radii:
            for n in dims:
                theorem = "Thm 20" if eps == 0 else "Thm 19"
                rows.append(_row(theorem, "flip", n, eps, "r", r, "upper",
                                 log_bound=half_balls.log_flip_bound(n, eps, r),
                                 log_exact=half_balls.log_flip_exact(n, eps, r)))
        for delta in deltas:
            if not eps < delta < 1 + eps:
                continue
            for n in dims:
                rows.append(_row("Thm 18", "susceptible", n, eps, "delta", delta, "lower",
                                 log_bound=math.nan, log_exact=math.nan, tail="not susceptible",
                                 log_bound_tail=half_balls.log_insusceptibility_bound(n, eps, delta),
                                 log_exact_tail=half_balls.log_insusceptibility_exact(n, eps, delta)))

    def mc(row, **kw):
        return monte_carlo("half-balls", row["quantity"], n=row["n"], eps=row["eps"],
                           **{row["param_name"]: row["param"]}, **kw)

    return pd.DataFrame(_with_mc(rows, mc, samples, engines, seed, progress))
