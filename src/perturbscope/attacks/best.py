"""The best of several L2 attacks per image (an upper bound on the distance to the boundary),
the attack choice of the audit, and the audit's random-susceptibility table under two scalings.

Attacks (names used everywhere, CLI included):

``"line-search"``  the paper's gradient line search (:func:`~.line_search.gradient_line_search`);
``"deepfool"``     DeepFool, L2, unclipped (:func:`~.deepfool.deepfool`);
``"min-norm"``     our FMN/DDN-style minimal-norm attack (:func:`~.min_norm.min_norm_attack`).

Every attack's perturbation is re-checked here with the model's own labels
(:func:`~perturbscope.models.outputs.predict_labels`), so "success" means the same for all; the
winner of an image is the successful attack with the smallest L2 norm (ties: first listed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from perturbscope.attacks.deepfool import deepfool
from perturbscope.attacks.line_search import gradient_line_search
from perturbscope.attacks.min_norm import min_norm_attack
from perturbscope.attacks.result import AttackResult
from perturbscope.models.outputs import predict_labels
from perturbscope.models.runtime import eval_mode, model_device, resolve_output
from perturbscope.validation import check_images, check_labels

__all__ = ["ATTACKS", "AUDIT_ATTACKS", "BestResult", "best_attack", "run_attack", "attack_for_audit",
           "lower_bound_for_audit", "scaling_comparison", "format_comparison"]

ATTACKS: tuple[str, ...] = ("line-search", "deepfool", "min-norm")
AUDIT_ATTACKS: tuple[str, ...] = ("line-search", "min-norm", "best")


@dataclass
class BestResult:
    """Outcome of :func:`best_attack` on ``N`` inputs.

    Attributes:
        result: the winning perturbation per image, as an :class:`AttackResult` (its norms are
            the upper bounds; ``forwards`` sums all attacks).
        winner: ``(N,)`` object array of attack names; ``""`` where no attack succeeded.
        per_attack: each attack's own (re-checked) :class:`AttackResult`.
        seconds: wall-clock seconds per attack.
    """

    result: AttackResult
    winner: np.ndarray
    per_attack: dict[str, AttackResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _check_flips(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor, output: str,
                 batch_size: int) -> torch.Tensor:
    out = torch.empty(x.shape[0], dtype=torch.bool, device=x.device)
    with eval_mode(model), torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            pred = predict_labels(model(x[s:s + batch_size] + delta[s:s + batch_size]), output)
            out[s:s + batch_size] = pred != y[s:s + batch_size]
    return out


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, output: str,
               batch_size: int = 256, bounds: tuple[float, float] | None = (0.0, 1.0),
               options: dict[str, Any] | None = None) -> AttackResult:
    """Run one attack by name on ``x`` ``(N, ...)`` / ``y`` ``(N,)``; success re-checked here.

    ``options`` are passed to the attack function (e.g. ``{"s_max": 10, "steps": 256}`` for the
    line search, ``{"overshoot": 0.02}`` for DeepFool, ``{"steps": 40}`` for min-norm).
    """
    opts = dict(options or {})
    if name == "line-search":
        res = gradient_line_search(model, x, y, output=output, batch_size=batch_size, bounds=bounds,
                                   **opts)
    elif name == "min-norm":
        res = min_norm_attack(model, x, y, output=output, batch_size=batch_size, bounds=bounds, **opts)
    elif name == "deepfool":
        k = 2 if output != "logits" else None
        if k is None:
            with eval_mode(model), torch.inference_mode():
                k = int(model(x[:1].to(model_device(model))).shape[1])
        opts.setdefault("num_classes", min(10, k))
        df = deepfool(model, x.to(model_device(model)), output=output,
                      labels=y.to(model_device(model)), batch_size=batch_size, **opts)
        res = AttackResult.from_perturbation(df.perturbation.to(x.dtype), df.success, df.forwards)
    else:
        raise ValueError(f"unknown attack {name!r}; choose from {ATTACKS}")
    dev = res.perturbation.device
    ok = res.success & _check_flips(model, x.to(dev), res.perturbation, y.to(dev), output, batch_size)
    return AttackResult.from_perturbation(res.perturbation, ok, res.forwards + x.shape[0])


def best_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, output: str | None = None,
                attacks: Sequence[str] = ATTACKS, options: dict[str, dict[str, Any]] | None = None,
                batch_size: int = 256, bounds: tuple[float, float] | None = (0.0, 1.0)) -> BestResult:
    """Run ``attacks`` on inputs ``x`` ``(N, ...)`` with reference labels ``y`` ``(N,)`` and keep,
    per image, the successful perturbation of smallest L2 norm (pixel units).

    Args:
        output: model output convention (default ``model.output_kind``).
        attacks: names from :data:`ATTACKS` (at least one, no repeats).
        options: per-attack keyword options, e.g. ``{"min-norm": {"steps": 60}}``.
        batch_size: images per forward pass; bounds: declared value range of ``x`` (checked).
    """
    output = resolve_output(model, output)
    check_images(x, bounds)
    y = check_labels(y, x.shape[0])
    attacks = tuple(attacks)
    if not attacks or len(set(attacks)) != len(attacks):
        raise ValueError(f"attacks must be a non-empty list without repeats, got {attacks!r}")
    bad = [a for a in attacks if a not in ATTACKS]
    if bad:
        raise ValueError(f"unknown attacks {bad}; choose from {ATTACKS}")
    options = options or {}
    extra = set(options) - set(attacks)
    if extra:
        raise ValueError(f"options given for attacks that are not run: {sorted(extra)}")
    per, secs = {}, {}
    for name in attacks:
        t0 = time.perf_counter()
        per[name] = run_attack(name, model, x, y, output=output, batch_size=batch_size, bounds=bounds,
                               options=options.get(name))
        secs[name] = time.perf_counter() - t0
    n = x.shape[0]
    l2 = torch.stack([torch.where(per[a].success, per[a].eps_l2.cpu(),
                                  torch.full((n,), float("inf"), dtype=torch.float64))
                      for a in attacks])  # (A, N)
    best_val, best_i = l2.min(0)  # first minimum on ties
    success = torch.isfinite(best_val)
    first = per[attacks[0]].perturbation
    delta = torch.zeros_like(first)
    for j, a in enumerate(attacks):
        sel = (best_i == j) & success
        delta[sel.to(first.device)] = per[a].perturbation[sel.to(first.device)].to(first.dtype)
    winner = np.array([attacks[int(i)] if s else "" for i, s in zip(best_i, success, strict=True)],
                      dtype=object)
    res = AttackResult.from_perturbation(delta, success.to(first.device),
                                         sum(r.forwards for r in per.values()))
    return BestResult(res, winner, per, secs)


# ------------------------------------------------------------------------------ audit support

def attack_for_audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, output: str, cfg: Any
                     ) -> tuple[AttackResult, np.ndarray]:
    """The adversarial sizes the audit scales its probe by, for ``cfg.attack`` in
    :data:`AUDIT_ATTACKS`; returns the result and the ``(N,)`` names of the winning attacks.

    ``"best"`` runs the line search with the audit's own settings (``s_max``, ``steps``,
    ``refine_tol``), DeepFool and min-norm, and keeps the smallest flipping perturbation.
    """
    name = getattr(cfg, "attack", "line-search")
    if name not in AUDIT_ATTACKS:
        raise ValueError(f"attack must be one of {AUDIT_ATTACKS}, got {name!r}")
    ls = {"s_max": cfg.s_max, "steps": cfg.steps, "refine_tol": cfg.refine_tol}
    if name == "best":
        b = best_attack(model, x, y, output=output, options={"line-search": ls},
                        batch_size=cfg.batch_size, bounds=cfg.bounds)
        return b.result, b.winner
    res = run_attack(name, model, x, y, output=output, batch_size=cfg.batch_size, bounds=cfg.bounds,
                     options=ls if name == "line-search" else None)
    won = np.where(res.success.cpu().numpy(), name, "").astype(object)
    return res, won


def lower_bound_for_audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, output: str,
                          upper: np.ndarray, cfg: Any, progress: bool = False) -> np.ndarray:
    """Certified L2 radii ``(N,)`` (linear relaxation, bracket top ``upper``) for the audit."""
    from perturbscope.certify import certified_radius

    res = certified_radius(model, x, y, output=output, method="linear", upper=torch.from_numpy(upper),
                           rtol=0.01, bounds=cfg.bounds, progress=progress)
    return res.radius.numpy()


def scaling_comparison(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, output: str | None = None,
                       config: Any = None, best: BestResult | None = None, progress: bool = False):
    """The audit's random-susceptibility table with the probe scaled by the paper's line search
    and by the best upper bound, on the same images and the same random draws.

    Args:
        x, y: ``(N, ...)`` inputs and ``(N,)`` true labels (all images; the audit picks the
            correct ones).
        config: an :class:`~perturbscope.audit.AuditConfig` (probe sizes, draws, seed, line-search
            settings); default ``AuditConfig()``.
        best: optional precomputed :func:`best_attack` result on the correctly classified
            inputs (in order), which must include ``"line-search"``; computed if not given.

    Returns:
        ``(line_search_audit, best_audit)``: two :class:`~perturbscope.audit.AuditResult` with
        splits ``"line-search"`` and ``"best"``; :func:`format_comparison` prints them side by side.
    """
    from perturbscope.audit import AuditConfig, audit
    from perturbscope.models.runtime import predict

    cfg = config or AuditConfig()
    output = resolve_output(model, output)
    check_images(x, cfg.bounds)
    y = check_labels(y, x.shape[0]).cpu()
    ok = (predict(model, x, output, cfg.batch_size) == y).numpy()
    idx = torch.from_numpy(np.nonzero(ok)[0])
    if best is None and len(idx):
        ls_opts = {"s_max": cfg.s_max, "steps": cfg.steps, "refine_tol": cfg.refine_tol}
        best = best_attack(model, x[idx], y[idx], output=output, options={"line-search": ls_opts},
                           batch_size=cfg.batch_size, bounds=cfg.bounds)
    n = x.shape[0]
    eps_ls, eps_best = np.full(n, np.nan), np.full(n, np.nan)
    won_ls, won_best = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    if len(idx):
        if "line-search" not in best.per_attack or len(best.winner) != len(idx):
            raise ValueError(f"best must be a best_attack result on the {len(idx)} correctly classified "
                             f"inputs that includes 'line-search'")
        ls = best.per_attack["line-search"]
        eps_ls[ok] = ls.eps_l2.cpu().numpy()
        won_ls[ok] = np.where(ls.success.cpu().numpy(), "line-search", "")
        eps_best[ok] = best.result.eps_l2.cpu().numpy()
        won_best[ok] = best.winner
    out = []
    for name, eps, won in (("line-search", eps_ls, won_ls), ("best", eps_best, won_best)):
        res = audit(model, x, y, output=output, config=replace(cfg, attack=name), eps=torch.from_numpy(eps),
                    split=name, progress=progress)
        res.records["eps_source"] = name.replace("-", "_")
        res.records["attack_won"] = won
        out.append(res)
    return out[0], out[1]


def format_comparison(ls, best) -> str:
    """Side-by-side table of two audits from :func:`scaling_comparison` (percent, eqs 6-8)."""
    from perturbscope.audit import format_table

    summary = {"line-search": ls.summary["line-search"], "best": best.summary["best"]}
    table = format_table(summary, ls.config.alphas)
    a, b = ls.records["eps_l2"].to_numpy(), best.records["eps_l2"].to_numpy()
    both = np.isfinite(a) & np.isfinite(b)
    if both.any():
        table += (f"\nmedian eps_adv (L2): line-search {np.median(a[both]):.4g}, "
                  f"best {np.median(b[both]):.4g} (median ratio {np.median(b[both] / a[both]):.3f})")
    return table
