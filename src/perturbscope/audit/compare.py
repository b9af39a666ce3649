"""The audit's random-susceptibility table under two scalings of the probe, side by side.

The paper scales its random probe by the line search's eps_adv, an upper bound on the distance to
the boundary; :func:`scaling_comparison` also scales it by the best upper bound of several attacks
(:class:`~perturbscope.attacks.best.BestOf`) on the same images and the same random draws, so a
reader sees how much the paper's numbers depend on the attack.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from perturbscope.attacks import AttackResult, BestOf, DeepFool, LineSearch, MinNorm
from perturbscope.audit.config import AuditConfig
from perturbscope.audit.run import AuditResult, _classifier, audit
from perturbscope.audit.table import format_table
from perturbscope.models.classifier import Classifier
from perturbscope.validation import check_images

__all__ = ["scaling_comparison", "format_comparison", "best_of_for_audit"]


def best_of_for_audit(cfg: AuditConfig, min_norm_steps: int | None = None) -> BestOf:
    """The best-of attack with the audit's line-search settings (line search, DeepFool, min-norm)."""
    b, clip = cfg.batch_size, cfg.clip_attack
    ls = LineSearch(s_max=cfg.s_max, steps=cfg.steps, refine_tol=cfg.refine_tol, batch_size=b,
                    search=cfg.search, saturated=cfg.saturated, clip=clip)
    mn = MinNorm(batch_size=b, clip=clip) if min_norm_steps is None else \
        MinNorm(steps=min_norm_steps, batch_size=b, clip=clip)
    return BestOf(attacks=(ls, DeepFool(batch_size=b, clip=clip), mn), batch_size=b, clip=clip)


def scaling_comparison(model: nn.Module | Classifier, x: torch.Tensor, y: torch.Tensor, *,
                       output: str | None = None, config: AuditConfig | None = None,
                       best: AttackResult | None = None, progress: bool = False
                       ) -> tuple[AuditResult, AuditResult]:
    """The audit's table with the probe scaled by the paper's line search and by the best bound.

    Args:
        x, y: ``(N, ...)`` inputs and ``(N,)`` true labels (all images; the correct ones are used).
        config: probe sizes, draws, seed and line-search settings (default ``AuditConfig()``).
        best: optional :class:`~perturbscope.attacks.best.BestOf` result on the correctly
            classified inputs (in order) whose members include ``"line-search"``; computed if not given.

    Returns:
        ``(line_search_audit, best_audit)``, two :class:`~perturbscope.audit.run.AuditResult` with
        splits ``"line-search"`` and ``"best"`` (:func:`format_comparison` prints them).
    """
    cfg = config or AuditConfig()
    clf = _classifier(model, output, cfg)
    check_images(x, cfg.bounds)
    y = clf.check_labels(torch.as_tensor(y), x.shape[0]).cpu()
    ok = (clf.predict(x, cfg.batch_size).cpu() == y).numpy()
    idx = torch.from_numpy(np.nonzero(ok)[0])
    if best is None and len(idx):
        best = best_of_for_audit(cfg)(clf, x[idx], y[idx])
    n = x.shape[0]
    eps_ls, eps_best = np.full(n, np.nan), np.full(n, np.nan)
    won_ls, won_best = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    if len(idx):
        per = best.extras.get("per_attack", {}) if best is not None else {}
        if "line-search" not in per or best.eps_l2.shape[0] != len(idx):
            raise ValueError(f"best must be a BestOf result on the {len(idx)} correctly classified inputs "
                             f"whose attacks include 'line-search'")
        ls = per["line-search"]
        eps_ls[ok] = ls.eps_l2.cpu().numpy()
        won_ls[ok] = np.where(ls.success.cpu().numpy(), "line-search", "")
        eps_best[ok] = best.eps_l2.cpu().numpy()
        won_best[ok] = np.asarray(best.extras["winner"], dtype=object)
    out = []
    for name, eps, won in (("line-search", eps_ls, won_ls), ("best", eps_best, won_best)):
        res = audit(clf, x, y, config=replace(cfg, attack=name), eps=torch.from_numpy(eps), split=name,
                    progress=progress)
        res.records["eps_source"] = name.replace("-", "_")
        res.records["attack_won"] = won
        out.append(res)
    return out[0], out[1]


def format_comparison(ls: AuditResult, best: AuditResult) -> str:
    """Side-by-side table of two audits from :func:`scaling_comparison` (percent, eqs 6-8)."""
    summary = {"line-search": ls.summary["line-search"], "best": best.summary["best"]}
    table = format_table(summary, ls.config.alphas)
    a, b = ls.records["eps_l2"].to_numpy(), best.records["eps_l2"].to_numpy()
    both = np.isfinite(a) & np.isfinite(b)
    if both.any():
        table += (f"\nmedian eps_adv (L2): line-search {np.median(a[both]):.4g}, "
                  f"best {np.median(b[both]):.4g} (median ratio {np.median(b[both] / a[both]):.3f})")
    return table
