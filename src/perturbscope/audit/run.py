"""One audit of the stability paradox on one model and one set of images (paper Section 7.1).

``audit`` runs, on inputs ``x`` with labels ``y``:

1. clean predictions -> correct set ``C``;
2. an attack on ``C`` (the paper's gradient line search by default) -> ``eps_adv`` (L2) and the
   L1/Linf norms of the same perturbation, success set ``A`` (or perturbations given by the
   caller, re-checked);
3. the random probe on ``A`` at ``alpha * eps_adv`` for each alpha -> flip counts;

and returns the per-image records (the primary output; columns in
:mod:`perturbscope.audit.schema`) and the summary derived from them
(:mod:`perturbscope.audit.summary`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from perturbscope.attacks.line_search import LineSearch
from perturbscope.audit.choice import audit_attack, lower_bound_for_audit
from perturbscope.audit.config import AuditConfig
from perturbscope.audit.schema import alpha_key, column_names
from perturbscope.audit.summary import summarize_records
from perturbscope.audit.table import format_table
from perturbscope.fileio import atomic_write_many
from perturbscope.models.classifier import Classifier, as_classifier
from perturbscope.probes.random_probe import random_probe
from perturbscope.progress import progress_bar
from perturbscope.validation import check_images

__all__ = ["AuditResult", "audit", "audit_splits", "MISSED"]

#: share of the correctly classified images left unflipped by the attack above which the audit warns
MISSED = 0.25
#: forward passes of the random probe from which its time estimate is printed even without progress bars
LONG_PROBE = 10**8


@dataclass
class AuditResult:
    """Per-image records (one row per image) and the summary derived from them.

    ``summary`` maps each split name to the dict of
    :func:`~perturbscope.audit.summary.summarize_records`.
    """

    records: pd.DataFrame
    summary: dict[str, dict]
    config: AuditConfig
    meta: dict[str, Any] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """Sentences on what makes these numbers doubtful: those of
        :func:`~perturbscope.audit.quality.quality_warnings` (weak model, attack failures, zero
        gradients, the probe leaving the box) and a checkpoint used on data it was not trained on
        (``meta["forced_mismatch"]``, from ``--force``)."""
        from perturbscope.audit.quality import UNFLIPPED, quality_warnings

        out = [f"The checkpoint was used on data it was not trained on (--force): {m}."
               for m in self.meta.get("forced_mismatch") or ()]
        missed = [f"{name}: {s['n_attack_failed']} of {s['n_correct']}" for name, s in self.summary.items()
                  if s.get("n_correct") and MISSED < s["n_attack_failed"] / s["n_correct"] <= UNFLIPPED]
        if missed:  # above UNFLIPPED quality_warnings says it
            out.append(f"The attack did not flip more than {MISSED:.0%} of the correctly classified images "
                       f"({'; '.join(missed)}; up to s_max = {self.config.s_max:g}): they have no eps_adv "
                       "and are left out of random susceptibility, whose denominator is the flipped images.")
        return out + quality_warnings(self.records, by=("split",), config=self.config.to_dict())

    def table(self) -> str:
        """The paper's table (:func:`~perturbscope.audit.table.format_table`) with the
        :meth:`warnings` below it."""
        return format_table(self.summary, self.config.alphas, self.warnings())

    def save(self, out_dir: str | os.PathLike, parquet: bool = False) -> dict[str, Path]:
        """Write ``records.csv`` (and ``records.parquet``) and ``summary.json`` atomically."""
        out = Path(out_dir)
        created = not out.exists()
        paths = {"records": out / "records.csv", "summary": out / "summary.json"}
        doc = {"summary": _jsonable(self.summary), "config": self.config.to_dict(),
               "meta": _jsonable(self.meta), "warnings": self.warnings()}
        text = json.dumps(doc, indent=2, allow_nan=False)  # fails before anything is written
        writes = {paths["records"]: lambda p: self.records.to_csv(p, index=False),
                  paths["summary"]: lambda p: p.write_text(text, encoding="utf-8")}
        if parquet:
            paths["parquet"] = out / "records.parquet"
            writes[paths["parquet"]] = lambda p: self.records.to_parquet(p, index=False)
        try:
            atomic_write_many(writes)  # all of them or none (a full disk leaves no records without summary)
        except BaseException:
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # nothing of this save is left behind
            raise
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


def _classifier(model: nn.Module | Classifier, output: str | None, cfg: AuditConfig) -> Classifier:
    if isinstance(model, Classifier):
        if output is not None and output != model.output:
            raise ValueError(f"output={output!r} disagrees with the Classifier's output={model.output!r}")
        if model.bounds is not None and tuple(model.bounds) != tuple(float(b) for b in cfg.bounds):
            raise ValueError(f"the Classifier's bounds {model.bounds} differ from config.bounds "
                             f"{tuple(cfg.bounds)}; make them agree")
        return model
    return as_classifier(model, output, bounds=cfg.bounds)


def audit(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    output: str | None = None,
    config: AuditConfig | None = None,
    eps: torch.Tensor | None = None,
    perturbations: torch.Tensor | None = None,
    split: str = "all",
    progress: bool = True,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> AuditResult:
    """Audit ``model`` on inputs ``x`` ``(N, ...)`` in ``config.bounds`` with labels ``y`` ``(N,)``.

    Works for binary models (``output`` ``"sigmoid"``/``"logit"``) and multi-class ones
    (``"logits"``; a flip is any change of the predicted class). The model is evaluated in
    eval mode on its own device and left in the mode it was given.

    Args:
        model: an ``nn.Module`` (wrapped with ``output`` and ``config.bounds``) or a Classifier.
        eps: optional ``(N,)`` precomputed adversarial L2 sizes (NaN = not susceptible) used
            instead of the attack, e.g. the tightest of several attacks (not re-checked: no
            perturbation is known; prefer ``perturbations``).
        perturbations: optional ``(N, ...)`` adversarial perturbations computed elsewhere
            (foolbox, torchattacks, ART, your own; NaN rows = none found). Each is re-checked:
            one that does not flip its image is a failure. All three norms are recorded.
        split: name stored in the records' ``split`` column.
        progress: show progress bars.

    Returns:
        :class:`AuditResult`; the record columns are listed in :mod:`perturbscope.audit.schema`.
    """
    cfg = config or AuditConfig()
    cfg.validate()
    if eps is not None and perturbations is not None:
        raise ValueError("give eps or perturbations, not both")
    clf = _classifier(model, output, cfg)
    check_images(x, cfg.bounds)
    n = x.shape[0]
    if cfg.batch_size is None:
        cfg = replace(cfg, batch_size=auto_batch_size(clf, x[:1]))
    _check_memory(clf, x, cfg)
    pred = clf.predict(x, cfg.batch_size).cpu()
    y = clf.check_labels(torch.as_tensor(y), n).cpu()
    correct = pred == y
    idx_c = correct.nonzero()[:, 0]

    nan = np.full(n, np.nan)
    eps_l2, eps_l1, eps_linf = nan.copy(), nan.copy(), nan.copy()
    adv = np.zeros(n, dtype=bool)
    attack_won, eps_lower = np.full(n, "", dtype=object), nan.copy()
    fallback, zero_grad = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    forwards = n
    if eps is None:
        if len(idx_c):
            pert = None if perturbations is None else _check_perturbations(perturbations, x)
            with progress_bar(f"attack ({split}): correct images", len(idx_c), progress) as advance:
                for ic in _blocks_of(idx_c, n, cfg.batch_size):  # one block of batch_size positions
                    given = None if pert is None else pert[ic]
                    res, won = audit_attack(clf, x[ic], y[ic], cfg, given=given, label=split)
                    forwards += res.forwards
                    icn = ic.numpy()
                    attack_won[icn] = won
                    adv[icn] = res.success.cpu().numpy()
                    eps_l2[icn], eps_l1[icn], eps_linf[icn] = (t.cpu().numpy() for t in
                                                               (res.eps_l2, res.eps_l1, res.eps_linf))
                    fallback[icn], zero_grad[icn] = _gradient_flags(res, len(icn))
                    advance(len(icn))
        source = ("best" if cfg.attack == "best" else "given") if perturbations is not None else \
            cfg.attack.replace("-", "_")
    else:
        e = torch.as_tensor(eps, dtype=torch.float64).reshape(-1).cpu().numpy()
        if e.shape[0] != n:
            raise ValueError(f"eps must have shape ({n},), got {e.shape}")
        bad = ~np.isnan(e) & ~(np.isfinite(e) & (e > 0))
        if bad.any():
            raise ValueError(f"eps must be a finite size > 0 (pixel L2) or NaN (no adversarial "
                             f"perturbation known) for every image; {int(bad.sum())} are not, e.g. "
                             f"eps[{int(np.nonzero(bad)[0][0])}] = {e[bad][0]:g}")
        ok = np.isfinite(e) & (e > 0) & correct.numpy()
        adv[ok] = True
        eps_l2[ok] = e[ok]
        source = "given"

    if cfg.lower_bound and len(idx_c):  # certified lower bound on each correct image's distance
        for ic in _blocks_of(idx_c, n, cfg.batch_size):
            icn = ic.numpy()
            eps_lower[icn] = lower_bound_for_audit(clf, x[ic], y[ic], eps_l2[icn], cfg, progress)
    alphas = tuple(float(a) for a in cfg.alphas)
    cols: dict[str, np.ndarray] = {}
    ia = np.nonzero(adv)[0]
    shape_na = (n, len(alphas))
    counts = np.zeros(shape_na, dtype=np.int64)
    mins = {k: np.full(shape_na, np.nan) for k in ("l2", "l1", "linf")}
    kmin = np.full(shape_na, -1, dtype=np.int64)
    if len(ia):
        total = len(ia) * len(alphas) * cfg.draws
        # the time estimate is printed with the progress bars, and always for a long probe
        on_rate = _eta_printer(f"random probe ({split})", total) if progress or total >= LONG_PROBE else None
        with progress_bar(f"random probe ({split})", total, progress) as advance:
            for ib in _blocks_of(torch.from_numpy(ia), n, cfg.batch_size):
                ibn = ib.numpy()
                pr = random_probe(clf, x[ib], torch.from_numpy(eps_l2[ibn]),
                                  alphas=alphas, draws=cfg.draws, seed=cfg.seed,
                                  batch_size=cfg.batch_size, draw_chunk=cfg.draw_chunk,
                                  precision=cfg.precision, memory_format=memory_format, progress=advance,
                                  on_rate=on_rate, clip=cfg.clip_probe)
                on_rate = None  # the time estimate is printed once
                forwards += pr.forwards
                counts[ibn] = pr.counts.numpy()
                mins["l2"][ibn], mins["l1"][ibn], mins["linf"][ibn] = (
                    pr.min_l2.numpy(), pr.min_l1.numpy(), pr.min_linf.numpy())
                kmin[ibn] = pr.min_index.numpy()
    for j, a in enumerate(alphas):
        key = alpha_key(a)
        cols[f"flips_{key}"] = counts[:, j]
        cols[f"rand_frac_{key}"] = np.where(adv, counts[:, j] / cfg.draws, np.nan)
        for norm in ("l2", "l1", "linf"):
            cols[f"rand_min_{norm}_{key}"] = mins[norm][:, j]
        cols[f"rand_min_index_{key}"] = kmin[:, j]
    outside = probe_outside(x, np.where(adv, eps_l2, np.nan), alphas, cfg.seed, cfg.bounds)
    for j, a in enumerate(alphas):
        cols[f"probe_outside_{alpha_key(a)}"] = outside[:, j]

    records = pd.DataFrame({
        "split": split, "index": np.arange(n), "label": y.numpy(), "pred": pred.numpy(),
        "correct": correct.numpy(), "adv_success": adv, "eps_l2": eps_l2, "eps_l1": eps_l1,
        "eps_linf": eps_linf, "eps_source": source, "attack_won": attack_won, "eps_lower": eps_lower,
        "gradient_fallback": fallback, "zero_gradient": zero_grad, **cols,
    })[column_names(alphas)]
    summary = {split: summarize_records(records, alphas)}
    summary[split]["probe_mode"], summary[split]["attack_mode"] = cfg.probe_mode, cfg.attack_mode
    if cfg.rare_event:  # flip probability per image and alpha, beside the probe's indicator
        from perturbscope.audit.rare_event_columns import rare_event_columns, summarize_rare_event

        e_adv = np.where(adv, eps_l2, np.nan)
        rare = pd.concat([rare_event_columns(clf, x[s0:s0 + cfg.batch_size], pred[s0:s0 + cfg.batch_size],
                                             e_adv[s0:s0 + cfg.batch_size], alphas,
                                             budget=cfg.rare_event_budget, seed=cfg.seed,
                                             method=cfg.rare_event_method, probe_draws=cfg.draws,
                                             batch_size=cfg.batch_size, progress=progress)
                          for s0 in range(0, n, cfg.batch_size)], ignore_index=True)
        records = pd.concat([records, rare], axis=1)[column_names(alphas, rare_event=True)]
        forwards += int(rare["rare_forwards"].sum())
        summary[split]["rare_event"] = summarize_rare_event(records, alphas)
    meta = {"output": clf.output, "forwards": forwards, "input_shape": list(x.shape[1:])}
    return AuditResult(records, summary, cfg, meta)


#: random draws behind the ``probe_outside_a*`` columns (the probe's first draws)
OUTSIDE_DRAWS = 16


def probe_outside(x: torch.Tensor, eps: np.ndarray, alphas: tuple[float, ...], seed: int,
                  bounds: tuple[float, float], draws: int = OUTSIDE_DRAWS) -> np.ndarray:
    """``(N, A)``: per image and alpha, the mean over the probe's first ``draws`` random draws of
    ``||x + d - clip(x + d)|| / ||d||`` with ``d = alpha eps zeta_k`` (the share of the
    perturbation's L2 norm that lies outside ``bounds``: how far the paper's unclipped probe
    leaves the box, and what ``clip_probe`` removes). NaN where ``eps`` is NaN. No forward pass.
    """
    from perturbscope.sampling import uniform_ball

    n = x.shape[0]
    out = np.full((n, len(alphas)), np.nan)
    rows = np.nonzero(np.isfinite(eps))[0]
    if rows.size == 0:
        return out
    shape = tuple(x.shape[1:])
    zeta = uniform_ball(draws, shape, seed=seed, dtype=torch.float64, device=x.device).reshape(draws, -1)
    z_norm = zeta.norm(dim=1)
    lo, hi = (float(b) for b in bounds)
    per = max(1, int(2**22 // max(draws * len(alphas) * zeta.shape[1], 1)))  # ~32 MB of float64
    a_t = torch.tensor(alphas, dtype=torch.float64, device=x.device)
    for s0 in range(0, rows.size, per):
        r = torch.from_numpy(rows[s0:s0 + per])
        xi = x[r.to(x.device)].reshape(len(r), 1, 1, -1).double()
        e = torch.from_numpy(eps[rows[s0:s0 + per]]).to(x.device)
        scale = e.view(-1, 1, 1, 1) * a_t.view(1, -1, 1, 1)
        p = xi + scale * zeta.view(1, 1, draws, -1)
        excess = (p - p.clamp(lo, hi)).norm(dim=3) / (scale[..., 0] * z_norm.view(1, 1, -1))
        out[rows[s0:s0 + per]] = excess.mean(2).cpu().numpy()
    return out


def _blocks_of(rows: torch.Tensor, n: int, block: int) -> list[torch.Tensor]:
    """``rows`` (sorted positions in ``0..n-1``) split by the blocks ``[k*block, (k+1)*block)``.

    Every model evaluation of the audit runs block by block, so an image's numbers depend on
    its own block only (floating-point results of a batched forward pass can depend, in the last
    bits, on the other inputs of the batch): an audit of a stream in groups of a multiple of
    ``block`` images gives exactly the records of one audit of all of them.
    """
    if rows.numel() == 0:
        return []
    k = torch.div(rows, block, rounding_mode="floor")
    cuts = (torch.nonzero(k[1:] != k[:-1])[:, 0] + 1).tolist()
    return list(torch.tensor_split(rows, cuts)) if cuts else [rows]


def _eta_printer(stage: str, total: int):
    """A callback that prints, once, the forwards a stage will make and the time it will take."""
    import sys

    def report(rate: float) -> None:
        secs = total / max(rate, 1e-9)
        when = (f"{secs / 3600:.1f} h" if secs >= 5400 else f"{secs / 60:.1f} min" if secs >= 90
                else f"{secs:.0f} s")
        print(f"{stage}: {total:,} forwards at {rate:,.0f}/s (measured on the first batches): about {when}",
              file=sys.stderr, flush=True)
    return report


def _check_perturbations(perturbations: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(perturbations, torch.Tensor) or not perturbations.is_floating_point():
        raise TypeError(f"perturbations must be a floating-point tensor like x, got "
                        f"{type(perturbations).__name__}")
    if tuple(perturbations.shape) != tuple(x.shape):
        raise ValueError(f"perturbations must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(perturbations.shape)}")
    flat = perturbations.reshape(perturbations.shape[0], -1)
    nan_rows = torch.isnan(flat)
    partly = nan_rows.any(1) & ~nan_rows.all(1)
    infinite = torch.isinf(flat).any(1)
    if bool((partly | infinite).any()):
        rows = (partly | infinite).nonzero()[:, 0]
        raise ValueError(f"perturbations has {rows.numel()} rows with infinite values or NaN in only some "
                         f"entries (first: row {int(rows[0])}); a row is either finite or all NaN (no "
                         f"perturbation found for that image)")
    return perturbations


def _activation_bytes(clf: Classifier, x1: torch.Tensor) -> int:
    """Bytes one input's forward pass holds at its peak, about: three times the largest output of
    any leaf module (a layer's input, its output and a skip connection), measured on ``x1``."""
    sizes: list[int] = []

    def hook(_module, _inputs, out) -> None:
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                sizes.append(t.numel() * t.element_size())

    leaves = [m for m in clf.module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with clf.evaluating(), torch.inference_mode():
            clf.raw(x1.to(clf.device))
    finally:
        for h in handles:
            h.remove()
    return 3 * max(sizes, default=0)


def auto_batch_size(clf: Classifier, x1: torch.Tensor, *, share: float = 0.25, cpu_cap: int = 256,
                    cap: int = 4096) -> int:
    """A forward batch that fits: ``share`` of the device's free memory over the memory one input
    needs (its perturbed copy, its draw and the model's largest activations, as measured on ``x1``),
    as a power of two, at most ``cpu_cap`` on the CPU (throughput does not grow beyond) and ``cap``."""
    from perturbscope.validation import available_memory

    per_input = 2 * x1[0].numel() * x1.element_size() + _activation_bytes(clf, x1)
    free = available_memory(clf.device)
    fits = cap if free is None else max(1, int(share * free / max(1.25 * per_input, 1)))
    limit = cpu_cap if clf.device.type == "cpu" else cap
    return 1 << (min(fits, limit).bit_length() - 1)


def _check_memory(clf: Classifier, x: torch.Tensor, cfg: AuditConfig) -> None:
    """Refuse a batch size whose forward batch cannot fit in the device's free memory (Linux kills a
    process that runs out, so this is checked before any work; a bound, not a measurement)."""
    from perturbscope.validation import check_fits

    n, row = x.shape[0], x[0].numel() * x.element_size()
    per_input = 2 * row + _activation_bytes(clf, x[:1])  # the perturbed input, its draw, activations
    probe = min(cfg.batch_size, n * len(cfg.alphas) * cfg.draws) * per_input
    points = min(cfg.batch_size, n) * min(LineSearch.chunk, cfg.steps) * row  # the line search's grid
    search = points + min(cfg.batch_size, n * cfg.steps) * per_input if cfg.attack != "min-norm" else 0
    check_fits(f"one forward batch of the audit (batch_size={cfg.batch_size}, inputs "
               f"{'x'.join(map(str, x.shape[1:]))})", int(1.25 * max(probe, search)), clf.device,
               "lower batch_size (--forward-batch)")


def _gradient_flags(res: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(gradient_fallback, zero_gradient)`` ``(n,)`` bool of the line search inside ``res`` (its
    own result, or the ``line-search`` member of a best-of); all False for other attacks."""
    extras = res.extras
    if "gradient_fallback" not in extras and "per_attack" in extras:
        member = extras["per_attack"].get("line-search")
        extras = member.extras if member is not None else {}
    out = []
    for key in ("gradient_fallback", "zero_gradient"):
        v = extras.get(key)
        out.append(np.zeros(n, dtype=bool) if v is None else
                   np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v, dtype=bool).reshape(n))
    return out[0], out[1]


def audit_splits(model: nn.Module | Classifier, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], *,
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
