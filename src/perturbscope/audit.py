"""One audit of the stability paradox on one model and one set of images (paper Section 7.1).

``audit`` runs, on inputs ``x`` with labels ``y``:

1. clean predictions -> correct set ``C``;
2. the paper's gradient line-search attack on ``C`` -> ``eps_adv`` (L2) and the L1/Linf
   norms of the same perturbation, success set ``A`` (or takes ``eps`` given by the caller);
3. the random probe on ``A`` at ``alpha * eps_adv`` for each alpha -> flip counts;

and returns the per-image records (the primary output) and the summary derived from them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from perturbscope.attacks.line_search import gradient_line_search
from perturbscope.fileio import atomic_write, atomic_write_text
from perturbscope.measure.metrics import alpha_key, summarize_records
from perturbscope.measure.random_probe import DEFAULT_ALPHAS, random_probe
from perturbscope.models.runtime import predict, resolve_output
from perturbscope.progress import progress_bar
from perturbscope.validation import check_bounds, check_images, check_labels

__all__ = ["AuditConfig", "AuditResult", "audit", "audit_splits", "format_table"]


@dataclass(frozen=True)
class AuditConfig:
    """Settings of one audit (all sizes in pixel units of inputs in ``bounds``)."""

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    draws: int = 2000
    seed: int = 0
    s_max: float = 10.0
    steps: int = 256
    refine_tol: float | None = None
    batch_size: int = 256
    bounds: tuple[float, float] = (0.0, 1.0)
    #: eps_adv the probe is scaled by: "line-search" (paper), "min-norm" or "best" (of line search,
    #: DeepFool, min-norm; perturbscope.attacks.best); lower_bound: certified eps_lower per image
    attack: str = "line-search"
    lower_bound: bool = False
    #: also estimate the flip probability per image and alpha (perturbscope.measure.rare_event)
    rare_event: bool = False
    rare_event_budget: int = 2000
    rare_event_method: str = "splitting"

    def to_dict(self) -> dict[str, Any]:
        return {"alphas": list(self.alphas), "draws": self.draws, "seed": self.seed,
                "s_max": self.s_max, "steps": self.steps, "refine_tol": self.refine_tol,
                "batch_size": self.batch_size, "bounds": list(self.bounds),
                "attack": self.attack, "lower_bound": self.lower_bound,
                "rare_event": self.rare_event, "rare_event_budget": self.rare_event_budget,
                "rare_event_method": self.rare_event_method}


@dataclass
class AuditResult:
    """Per-image records (one row per image) and the summary derived from them.

    ``summary`` maps each split name to the dict of :func:`summarize_records`.
    """

    records: pd.DataFrame
    summary: dict[str, dict]
    config: AuditConfig
    meta: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        return format_table(self.summary, self.config.alphas)

    def save(self, out_dir: str | os.PathLike, parquet: bool = False) -> dict[str, Path]:
        """Write ``records.csv`` (and ``records.parquet``) and ``summary.json`` atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"records": out / "records.csv", "summary": out / "summary.json"}
        atomic_write(paths["records"], lambda p: self.records.to_csv(p, index=False))
        if parquet:
            paths["parquet"] = out / "records.parquet"
            atomic_write(paths["parquet"], lambda p: self.records.to_parquet(p, index=False))
        doc = {"summary": _jsonable(self.summary), "config": self.config.to_dict(),
               "meta": _jsonable(self.meta)}
        atomic_write_text(paths["summary"], json.dumps(doc, indent=2, allow_nan=False))
        return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON: "undefined" (e.g. no image was flipped) is null, never NaN
    return obj


def audit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    output: str | None = None,
    config: AuditConfig | None = None,
    eps: torch.Tensor | None = None,
    split: str = "all",
    progress: bool = True,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> AuditResult:
    """Audit ``model`` on inputs ``x`` ``(N, ...)`` in ``config.bounds`` with labels ``y`` ``(N,)``.

    Works for binary models (``output`` ``"sigmoid"``/``"logit"``) and multi-class ones
    (``"logits"``; a flip is any change of the predicted class). The model is evaluated in
    eval mode on its own device and left in the mode it was given.

    Args:
        eps: optional ``(N,)`` precomputed adversarial L2 sizes (NaN = not susceptible) used
            instead of the line search, e.g. the tightest of several attacks.
        split: name stored in the records' ``split`` column.
        progress: show progress bars.

    Returns:
        :class:`AuditResult` whose records have, per image: ``split, index, label, pred,
        correct, adv_success, eps_l2, eps_l1, eps_linf`` and per alpha ``flips_a{alpha}``
        (flipping draws out of ``config.draws``), ``rand_frac_a{alpha}``,
        ``rand_min_l2/l1/linf_a{alpha}`` (norms of the smallest flipping draw) and
        ``rand_min_index_a{alpha}``.
    """
    cfg = config or AuditConfig()
    check_bounds(cfg.bounds)
    if cfg.attack not in ("line-search", "min-norm", "best"):
        raise ValueError(f"attack must be 'line-search', 'min-norm' or 'best', got {cfg.attack!r}")
    output = resolve_output(model, output)
    check_images(x, cfg.bounds)
    y = check_labels(y, x.shape[0]).cpu()
    n = x.shape[0]
    pred = predict(model, x, output, cfg.batch_size)
    correct = pred == y
    idx_c = correct.nonzero()[:, 0]

    nan = np.full(n, np.nan)
    eps_l2, eps_l1, eps_linf = nan.copy(), nan.copy(), nan.copy()
    adv = np.zeros(n, dtype=bool)
    attack_won, eps_lower = np.full(n, "", dtype=object), nan.copy()
    forwards = n
    if eps is None:
        if len(idx_c):
            won: Any = "line-search"
            if cfg.attack != "line-search":  # min-norm attack or the best of several
                from perturbscope.attacks.best import attack_for_audit

                res, won = attack_for_audit(model, x[idx_c], y[idx_c], output, cfg)
            else:
                res = gradient_line_search(model, x[idx_c], y[idx_c], output=output, s_max=cfg.s_max,
                                           steps=cfg.steps, refine_tol=cfg.refine_tol,
                                           batch_size=cfg.batch_size, bounds=cfg.bounds)
            forwards += res.forwards
            ic = idx_c.numpy()
            attack_won[ic] = np.where(res.success.cpu().numpy(), won, "")
            adv[ic] = res.success.cpu().numpy()
            eps_l2[ic], eps_l1[ic], eps_linf[ic] = (t.cpu().numpy() for t in
                                                    (res.eps_l2, res.eps_l1, res.eps_linf))
        source = cfg.attack.replace("-", "_")
    else:
        e = torch.as_tensor(eps, dtype=torch.float64).reshape(-1).cpu().numpy()
        if e.shape[0] != n:
            raise ValueError(f"eps must have shape ({n},), got {e.shape}")
        ok = np.isfinite(e) & (e > 0) & correct.numpy()
        adv[ok] = True
        eps_l2[ok] = e[ok]
        source = "given"

    if cfg.lower_bound and len(idx_c):  # certified lower bound on each correct image's distance
        from perturbscope.attacks.best import lower_bound_for_audit

        eps_lower[idx_c.numpy()] = lower_bound_for_audit(model, x[idx_c], y[idx_c], output,
                                                         eps_l2[idx_c.numpy()], cfg, progress)
    alphas = tuple(float(a) for a in cfg.alphas)
    cols: dict[str, np.ndarray] = {}
    ia = np.nonzero(adv)[0]
    shape_na = (n, len(alphas))
    counts = np.zeros(shape_na, dtype=np.int64)
    mins = {k: np.full(shape_na, np.nan) for k in ("l2", "l1", "linf")}
    kmin = np.full(shape_na, -1, dtype=np.int64)
    if len(ia):
        total = len(ia) * len(alphas) * cfg.draws
        with progress_bar(f"random probe [{split}]", total, progress) as advance:
            pr = random_probe(model, x[torch.from_numpy(ia)], torch.from_numpy(eps_l2[ia]),
                              alphas=alphas, draws=cfg.draws, seed=cfg.seed, output=output,
                              batch_size=cfg.batch_size, bounds=cfg.bounds,
                              memory_format=memory_format, progress=advance)
        forwards += pr.forwards
        counts[ia] = pr.counts.numpy()
        mins["l2"][ia], mins["l1"][ia], mins["linf"][ia] = (
            pr.min_l2.numpy(), pr.min_l1.numpy(), pr.min_linf.numpy())
        kmin[ia] = pr.min_index.numpy()
    for j, a in enumerate(alphas):
        key = alpha_key(a)
        cols[f"flips_{key}"] = counts[:, j]
        cols[f"rand_frac_{key}"] = np.where(adv, counts[:, j] / cfg.draws, np.nan)
        for norm in ("l2", "l1", "linf"):
            cols[f"rand_min_{norm}_{key}"] = mins[norm][:, j]
        cols[f"rand_min_index_{key}"] = kmin[:, j]

    records = pd.DataFrame({
        "split": split, "index": np.arange(n), "label": y.numpy(), "pred": pred.numpy(),
        "correct": correct.numpy(), "adv_success": adv, "eps_l2": eps_l2, "eps_l1": eps_l1,
        "eps_linf": eps_linf, "eps_source": source, "attack_won": attack_won, "eps_lower": eps_lower,
        **cols,
    })
    summary = {split: summarize_records(records, alphas)}
    if cfg.rare_event:  # flip probability per image and alpha, beside the probe's indicator
        from perturbscope.measure.rare_event import rare_event_columns, summarize_rare_event

        rare = rare_event_columns(model, x, pred, np.where(adv, eps_l2, np.nan), alphas,
                                  output=output, budget=cfg.rare_event_budget, seed=cfg.seed,
                                  method=cfg.rare_event_method,
                                  probe_draws=cfg.draws, batch_size=cfg.batch_size,
                                  bounds=cfg.bounds, progress=progress)
        records = pd.concat([records, rare], axis=1)
        forwards += int(rare["rare_forwards"].sum())
        summary[split]["rare_event"] = summarize_rare_event(records, alphas)
    meta = {"output": output, "forwards": forwards, "input_shape": list(x.shape[1:])}
    return AuditResult(records, summary, cfg, meta)


def audit_splits(model: nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], *,
                 output: str | None = None, config: AuditConfig | None = None,
                 progress: bool = True, memory_format: torch.memory_format = torch.contiguous_format
                 ) -> AuditResult:
    """:func:`audit` on several named splits (e.g. ``{"train": (x, y), "test": (x, y)}``)."""
    if not splits:
        raise ValueError("splits is empty")
    parts = [audit(model, x, y, output=output, config=config, split=name, progress=progress,
                   memory_format=memory_format)
             for name, (x, y) in splits.items()]
    records = pd.concat([p.records for p in parts], ignore_index=True)
    summary = {k: v for p in parts for k, v in p.summary.items()}
    meta = dict(parts[0].meta, forwards=sum(p.meta["forwards"] for p in parts))
    return AuditResult(records, summary, parts[0].config, meta)


def _fmt(v: float) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.2f}"


def format_table(summary: dict[str, dict], alphas: Sequence[float]) -> str:
    """The paper's table layout: one column per split, rows accuracy, adversarial, random(alpha)."""
    names = list(summary)
    head = f"{'% (paper eqs 6-8)':<32}" + "".join(f"{n:>10}" for n in names)
    rows = [head, "-" * len(head)]

    def row(label: str, values: list[float]) -> None:
        rows.append(f"{label:<32}" + "".join(f"{_fmt(v):>10}" for v in values))

    rows.append(f"{'images':<32}" + "".join(f"{summary[n]['n_images']:>10d}" for n in names))
    row("accuracy", [summary[n]["accuracy"] for n in names])
    row("adversarial susceptibility", [summary[n]["adversarial_susceptibility"] for n in names])
    for a in alphas:
        row(f"random susceptibility a={a:g}",
            [summary[n]["random_susceptibility"][float(a)] for n in names])
    return "\n".join(rows)
