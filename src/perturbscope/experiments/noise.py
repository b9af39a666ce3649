"""Noise-augmented training (paper Section 7.1.4, Tables 13-18, Figures 15-16).

For every pair task "class i vs class j" and every noise level, a fresh model is trained
with additive noise drawn anew for each image each time it is seen (inactive at test time,
see :mod:`perturbscope.train`), then audited as in Section 7.1 on train and test images:
accuracy, adversarial susceptibility, the L1/L2/Linf norms of the smallest adversarial
perturbation and the random susceptibility at ``alpha * eps_adv``.

Noise levels come in matched pairs (paper Section 7.1.4): the cube ``U([-rho, rho]^d)``
(Linf <= rho) and the L2 ball ``U(B_d(R))`` with ``R = rho * sqrt(d / 3)``
(:func:`perturbscope.train.matched_ball_radius`), so that both have about the same mean L2
norm. The exact means are :func:`mean_l2_cube` and :func:`mean_l2_ball`; their relative gap
is ``0.9 / d + O(1/d^2)`` (0.04% for Fashion-MNIST in RGB, d = 2352). The paper's rho
values were lost from its text; ours are a choice and are stated in every output.

A model trained without noise (level 0, ``noise="none"``) is the baseline of every curve.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from perturbscope.audit import audit_splits
from perturbscope.audit.summary import summarize_groups
from perturbscope.experiments.noise_config import (  # noqa: F401 (re-exported)
    ARCHS,
    NOISE_KINDS,
    NoiseLevel,
    NoiseTrainingConfig,
    mean_l2_ball,
    mean_l2_cube,
    noise_levels,
    parse_pairs,
)
from perturbscope.experiments.tables import long_metrics, wide_table
from perturbscope.fileio import atomic_write, atomic_write_text
from perturbscope.models.pair_cnn import MLP
from perturbscope.train import TrainConfig, train_binary, train_pair_model
from perturbscope.validation import check_frame

__all__ = [
    "NoiseLevel", "NoiseTrainingConfig", "NoiseTrainingResult", "mean_l2_cube", "mean_l2_ball",
    "noise_levels", "parse_pairs", "run_noise_training", "summarize_noise_records", "noise_tables",
    "noise_unit_key", "result_from_store",
]


@dataclass
class NoiseTrainingResult:
    """Per-image records of every (pair, noise level) unit and what is derived from them.

    Attributes:
        records: one row per audited image per unit: ``pair`` ("7-8"), ``noise`` ("none",
            "cube-1", ...), ``noise_kind``, ``noise_level``, ``noise_rho``, ``noise_size``,
            ``noise_mean_l2`` and the audit columns of :func:`perturbscope.audit.audit`.
        summary: :func:`summarize_noise_records` of ``records``.
        levels: the noise settings.
        config: the settings of the run.
        meta: input dimension, timings, training histories.
    """

    records: pd.DataFrame
    summary: pd.DataFrame
    levels: list[NoiseLevel]
    config: NoiseTrainingConfig
    meta: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        return noise_tables(self.summary)

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``records.csv``, ``summary.csv`` and ``config.json`` to ``out_dir`` atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"records": out / "records.csv", "summary": out / "summary.csv",
                 "config": out / "config.json"}
        atomic_write(paths["records"], lambda p: self.records.to_csv(p, index=False))
        atomic_write(paths["summary"], lambda p: self.summary.to_csv(p, index=False))
        doc = {"config": self.config.to_dict(), "levels": [asdict(lv) for lv in self.levels],
               "meta": self.meta}
        atomic_write_text(paths["config"], json.dumps(doc, indent=2, default=str))
        return paths


def summarize_noise_records(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, noise, split) with the paper's numbers, from per-image ``records``.

    Columns: ``pair, noise, split``, ``noise_kind, noise_level, noise_rho, noise_size,
    noise_mean_l2`` and those of :func:`perturbscope.audit.summary.summarize_groups`
    (``n_images``, ``accuracy``, ``adversarial_susceptibility``, ``eps_{l1,l2,linf}_{mean,sd}``,
    ``random_a{alpha}``).
    """
    noise_cols = ["noise_kind", "noise_level", "noise_rho", "noise_size", "noise_mean_l2"]
    check_frame(records, ["noise", *noise_cols])
    summary = summarize_groups(records, ("pair", "noise", "split"))
    levels = records.drop_duplicates("noise")[["noise", *noise_cols]]
    out = summary.merge(levels, on="noise", how="left")
    first = ["pair", "noise", "split", *noise_cols]
    return out[first + [c for c in out.columns if c not in first]]


def noise_tables(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The analogue of the paper's Tables 13-18: one display table per noise level.

    Each table (:func:`perturbscope.experiments.tables.wide_table`) has rows ``(metric, split)``
    (accuracy, adversarial susceptibility, random susceptibility per alpha, attack norms
    L1/L2/Linf as "mean (sd)") and one column per pair ("7 vs 8"). Keyed by the noise name
    ("none", "cube-1", ...), in the order of ``summary``.
    """
    if not isinstance(summary, pd.DataFrame) or summary.empty or "noise" not in summary.columns:
        raise ValueError("summary must be a non-empty summarize_noise_records() DataFrame")
    return {str(noise): wide_table(long_metrics(g), with_paper=False)
            for noise, g in summary.groupby("noise", sort=False)}


def _train(cfg: NoiseTrainingConfig, tcfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, progress: bool,
           device: str | torch.device) -> tuple[nn.Module, Any]:
    if cfg.arch == "mlp":
        torch.manual_seed(tcfg.seed)
        model: nn.Module = MLP(int(np.prod(x.shape[1:])), hidden=tuple(cfg.hidden))
        return model, train_binary(model, x, y, tcfg, progress=progress, device=device)
    return train_pair_model(x, y, width=cfg.width, deep=cfg.deep, config=tcfg, progress=progress,
                            device=device, restarts=cfg.restarts)


def result_from_store(store: Any, run: str) -> NoiseTrainingResult:
    """The :class:`NoiseTrainingResult` of a noise-training run kept in ``store`` (finished units)."""
    rid = store.resolve(run)
    doc = store.run_config(rid)
    if doc.get("experiment") != "noise-training":
        raise ValueError(f"run {run!r} is not a noise-training run (experiment: {doc.get('experiment')!r})")
    cfg = NoiseTrainingConfig.from_dict(doc)
    rec = store.records(rid)
    if rec.empty:
        raise ValueError(f"run {run!r} has no finished unit yet")
    keys = [k for k in dict.fromkeys(rec["unit_key"])]
    records = pd.concat([_stored_records(store, rid, k) for k in keys], ignore_index=True)
    lv = records.drop_duplicates("noise")
    levels = [NoiseLevel(str(r.noise_kind), int(r.noise_level), float(r.noise_rho), float(r.noise_size),
                         float(r.noise_mean_l2)) for r in lv.itertuples()]
    units = store.units(rid)
    metas = [m for m in units["meta"] if m]
    meta = {"run_id": rid, "units": metas, "input_dim": next((m.get("input_dim") for m in metas), None),
            "units_done": int((units["status"] == "done").sum()), "units_total": len(units)}
    return NoiseTrainingResult(records, summarize_noise_records(records), levels, cfg, meta)


def _audit_subset(x: torch.Tensor, y: torch.Tensor, k: int | None, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``k`` of the images ``(x, y)`` (class balanced, seeded): the training images that
    are audited are images the model was trained on, as in the paper."""
    from perturbscope.data.tasks import _select_limit

    if k is None or len(y) <= k:
        return x, y
    keep = torch.from_numpy(_select_limit(y.numpy(), int(k), seed))
    return x[keep], y[keep]


def noise_unit_key(pair: str, level: NoiseLevel | str, split: str) -> str:
    """Results-store key of one unit: ``"pair=7-8/noise=cube-1/split=test"``."""
    name = level.name if isinstance(level, NoiseLevel) else str(level)
    return f"pair={pair}/noise={name}/split={split}"


def _stored_records(store: Any, run_id: str, key: str) -> pd.DataFrame:
    """A finished unit's records from the store, columns in the order :func:`run_noise_training` makes."""
    rec = store.records(run_id, unit=key).drop(columns=["unit_key"], errors="ignore")
    first = ["pair", "noise", "noise_kind", "noise_level", "noise_rho", "noise_size", "noise_mean_l2",
             "split"]
    return rec[[c for c in first if c in rec.columns] + [c for c in rec.columns if c not in first]]


def run_noise_training(
    config: NoiseTrainingConfig | None = None,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    on_unit: Callable[[str, NoiseLevel, pd.DataFrame], None] | None = None,
    store: Any = None,
    run_name: str = "noise-training",
) -> NoiseTrainingResult:
    """Train and audit one model per (pair, noise level); see the module docstring.

    Args:
        config: settings (default :class:`NoiseTrainingConfig`).
        progress: show progress bars.
        device: where to train and audit (``"cuda"`` where a GPU exists).
        on_unit: called after each unit trained here with ``(pair, level, records of that unit)``.
        store: optional :class:`~perturbscope.experiments.store.ResultsStore`. Each (pair, noise,
            split) unit is committed as soon as its model is audited (key
            :func:`noise_unit_key`); a rerun with the same configuration reads finished units
            back instead of training again, so an interrupted experiment resumes where it
            stopped. The run id is in ``result.meta["run_id"]``.
        run_name: name of a new run in ``store``.

    Every model of a pair starts from the same seeded initialisation (``config.training.seed``,
    unless a collapsed CNN was retrained from another seed: see ``meta["units"]``). Batch order
    and noise are drawn from one seeded generator, so after the first epoch the batches of
    different levels differ too; the same settings give the same numbers.
    """
    from perturbscope.data import load_pair_task

    cfg = config or NoiseTrainingConfig()
    cfg.validate()
    parts: list[pd.DataFrame] = []
    levels: list[NoiseLevel] = []
    meta: dict[str, Any] = {"units": [], "resumed_units": []}
    run_id, done = None, set()
    if store is not None:
        cfg_doc = {"experiment": "noise-training", **cfg.to_dict()}
        cfg_doc.pop("data_path", None)  # where the data lies does not change numbers
        run_id, _ = store.open_run(run_name, cfg_doc)
        done = set(store.done_units(run_id))
        meta["run_id"] = run_id
    for i, j in cfg.pairs:
        pair = f"{i}-{j}"
        kw = {"path": cfg.data_path, "seed": cfg.data_seed}
        train = load_pair_task(cfg.source, "train", i, j, limit=cfg.train_limit, **kw)
        test = load_pair_task(cfg.source, "test", i, j, limit=cfg.audit_limit, **kw)
        audit_sets = {"train": _audit_subset(train.x, train.y, cfg.audit_limit, cfg.data_seed + 1),
                      "test": (test.x, test.y)}
        d = train.dim
        meta["input_dim"] = d
        levels = noise_levels(cfg.rhos, d, cfg.kinds, cfg.include_clean)
        keys = {(lv.name, s): noise_unit_key(pair, lv, s) for lv in levels for s in audit_sets}
        if store is not None:
            store.plan_units(run_id, list(keys.values()))
        for lv in levels:
            lv_keys = {s: keys[(lv.name, s)] for s in audit_sets}
            if store is not None and all(k in done for k in lv_keys.values()):
                rec = pd.concat([_stored_records(store, run_id, k) for k in lv_keys.values()],
                                ignore_index=True)
                parts.append(rec)
                meta["resumed_units"].extend(lv_keys.values())
                continue
            t0 = time.perf_counter()
            tcfg = replace(cfg.training, noise=None if lv.kind == "none" else lv.kind,
                           noise_size=lv.size)
            model, hist = _train(cfg, tcfg, train.x, train.y, progress, device)
            t_train = time.perf_counter() - t0
            res = audit_splits(model, audit_sets, output="sigmoid", config=cfg.audit, progress=progress)
            rec = res.records
            rec.insert(0, "pair", pair)
            rec.insert(1, "noise", lv.name)
            for pos, (c, v) in enumerate((("noise_kind", lv.kind), ("noise_level", lv.level),
                                          ("noise_rho", lv.rho), ("noise_size", lv.size),
                                          ("noise_mean_l2", lv.mean_l2)), start=2):
                rec.insert(pos, c, v)
            unit = {"pair": pair, "noise": lv.name, "train_seconds": t_train,
                    "audit_seconds": time.perf_counter() - t0 - t_train,
                    "final_train_loss": hist.loss[-1], "seed": getattr(hist, "seed", tcfg.seed),
                    "attempts": getattr(hist, "attempts", 1),
                    "final_train_accuracy_noisy": hist.accuracy[-1], "input_dim": d}
            meta["units"].append(unit)
            if store is not None:
                for s, k in lv_keys.items():
                    if k not in done:
                        store.commit_unit(run_id, k, rec[rec["split"] == s],
                                          seconds=time.perf_counter() - t0, meta=unit)
            parts.append(rec)
            if on_unit is not None:
                on_unit(pair, lv, rec)
    records = pd.concat(parts, ignore_index=True)
    return NoiseTrainingResult(records, summarize_noise_records(records), levels, cfg, meta)
