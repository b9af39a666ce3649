"""How likely is uniform L2 noise to flip each image's prediction? (``perturbscope rare-event``)

Runs the paper's gradient line search for ``eps_adv``, then estimates
``p = P(f(x + zeta) != f(x))``, ``zeta`` uniform in the L2 ball of radius ``alpha * eps_adv``,
for every image and alpha with a rare-event estimator (far below the ~1/draws floor of plain
sampling), beside the first-order (plane) estimate. :func:`linear_problem` is a linear model
in dimension ``d`` where the exact answer is known, to see the estimator at work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from perturbscope.fileio import atomic_write

__all__ = ["linear_problem", "attack_eps", "format_flip_table", "run_rare_event"]


def linear_problem(d: int, distance: float, seed: int) -> tuple[Any, Any, Any]:
    """``(model, x, eps)``: a linear binary model in ``R^d``, one input ``x`` (predicted 0) at L2
    distance ``distance`` from its boundary, and that distance as ``eps`` (``(1,)`` float64)."""
    import torch

    from perturbscope.models.pair_cnn import LinearBinary

    if d < 2:
        raise ValueError(f"--linear D needs D >= 2, got {d}")
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    x = torch.full((1, d), 0.5, dtype=torch.float64)
    # boundary at L2 distance `distance` from x, prediction of x is class 0
    bias = -(float(x[0] @ w) + distance * float(w.norm()))
    return LinearBinary(w, bias=bias), x, torch.tensor([distance], dtype=torch.float64)


def attack_eps(model: Any, x: Any, y: Any, *, s_max: float, steps: int, refine_tol: float | None,
               batch_size: int) -> tuple[Any, Any]:
    """The line search's ``eps_adv`` per image (NaN where not attacked) and its perturbations."""
    import torch

    from perturbscope.attacks.line_search import LineSearch

    res = LineSearch(s_max=s_max, steps=steps, refine_tol=refine_tol,
                     batch_size=batch_size)(model, x, y, output="sigmoid")
    # NaN: not attacked (no flip found, or already misclassified: a zero perturbation)
    eps = torch.where(res.success & (res.eps_l2 > 0), res.eps_l2, torch.full_like(res.eps_l2, math.nan))
    return eps, res.perturbation


def format_flip_table(tab: Any, exact: Any = None) -> str:
    """The printed report of a flip-probability table: one row per image and alpha, the medians
    over images, the forward passes, and a note on ``-inf`` estimates."""
    import numpy as np
    import pandas as pd

    show = tab[["image", "alpha", "radius", "log10_p_hat", "log10_ci_low", "log10_ci_high",
                "log10_first_order_p", "hits", "forwards"]].copy()
    if exact is not None:
        show["log10_exact"] = exact
    show["expected_draws"] = tab["expected_draws"].map(lambda v: f"{v:.3g}")
    with pd.option_context("display.width", 140, "display.max_rows", 200,
                           "display.float_format", "{:.3f}".format):
        lines = [show.to_string(index=False)]
    ok = tab[np.isfinite(tab["eps_adv"])]
    if len(ok):
        med = ok.groupby("alpha")[["log10_p_hat", "log10_first_order_p"]].median()
        lines.append("\nmedian over images (log10 p): rare-event | first-order")
        for a, row in med.iterrows():
            lines.append(f"  alpha={a:g}: {row['log10_p_hat']:.2f} | {row['log10_first_order_p']:.2f}")
        lines.append(f"forward passes: {int(tab['forwards'].sum())} in all")
    if np.isneginf(tab["log10_p_hat"]).any():
        lines.append("log10_p_hat = -inf: no flip reached within the budget; p is below 10^log10_ci_high "
                     "(raise --budget to resolve it)")
    return "\n".join(lines)


def run_rare_event(*, model: Any = None, x: Any = None, y: Any = None, linear: int = 0, distance: float = 0.5,
                   alphas: Sequence[float], title: str = "", method: str = "splitting", budget: int = 2000,
                   n_per_level: int = 200, direction: str = "gradient", level: float = 0.95, seed: int = 0,
                   s_max: float = 10.0, steps: int = 256, refine_tol: float | None = 1e-3,
                   batch_size: int = 256, out: str | Path | None = None, device: Any = None,
                   progress: bool = True, echo: Callable[[str], None] = print) -> Any:
    """Flip probabilities of ``model`` at ``x`` (labels ``y``), or of :func:`linear_problem`.

    Args:
        model, x, y: a pair model and its inputs / labels (``linear=0``); ``eps_adv`` from the
            line search (``s_max``, ``steps``, ``refine_tol``, ``batch_size``).
        linear, distance: instead, the linear model in dimension ``linear`` (with the exact answer
            as column ``log10_exact``), its input ``distance`` from the boundary.
        alphas: ball radii as multiples of ``eps_adv``.
        method, budget, n_per_level, level: the estimator (:mod:`perturbscope.probes.rare_event`).
        direction: importance-sampling direction, ``"gradient"`` or ``"attack"``.
        seed: random seed. out: folder for ``flip_probability.csv`` / ``.png`` (None: not written).
        device: where the linear model runs (``model`` and ``x`` are used where they are).
        progress, echo: progress bars, printed lines.

    Returns:
        the flip-probability table.
    """
    from perturbscope.probes.rare_event import flip_probability_table, plot_flip_probability

    if budget < 2:
        raise ValueError(f"--budget must be >= 2, got {budget}")
    if method == "splitting" and budget < n_per_level:
        raise ValueError(f"--budget ({budget}) must be >= --n-per-level ({n_per_level})")
    if any(a <= 0 for a in alphas):
        raise ValueError(f"--alphas must be positive, got {list(alphas)}")
    common = dict(budget=budget, seed=seed, method=method, level=level, batch_size=batch_size,
                  progress=progress, n_per_level=n_per_level)
    exact = None
    if linear:
        from perturbscope.models.classifier import Classifier
        from perturbscope.probes.rare_event import first_order_log_p

        lin, x, eps = linear_problem(linear, distance, seed)
        if device is not None:
            lin, x, eps = lin.to(device), x.to(device), eps.to(device)
        tab = flip_probability_table(Classifier(lin, bounds=None), x, None, eps, alphas, **common)
        exact = first_order_log_p(tab["eps_adv"].to_numpy(), tab["radius"].to_numpy(), linear) / math.log(10)
        title = title or f"linear model, d={linear}, distance {distance:g}"
    else:
        if model is None:
            raise ValueError("give --checkpoint FILE.pt (with --classes if it does not record them) "
                             "or --linear D")
        eps, delta = attack_eps(model, x, y, s_max=s_max, steps=steps, refine_tol=refine_tol,
                                batch_size=batch_size)
        tab = flip_probability_table(model, x, None, eps, alphas,
                                     direction=delta if direction == "attack" else None, **common)
        tab.insert(1, "label", y.cpu().numpy()[tab["image"].to_numpy()])
    echo(format_flip_table(tab, exact))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if exact is not None:
            tab["log10_exact"] = exact
        atomic_write(out / "flip_probability.csv", lambda t: tab.to_csv(t, index=False))
        plot = plot_flip_probability(tab, out / "flip_probability.png", title=title)
        echo(f"\ntable: {out / 'flip_probability.csv'}\nplot:  {plot}")
    return tab
