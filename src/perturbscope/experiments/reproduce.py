"""The paper's pair experiments as resumable sweeps: Fashion-MNIST (Section 7.2.2, Tables 20 and
21), CIFAR-10 (all 45 pairs, Tables 4-12) and GTSRB (pairs 0-1 .. 4-5, Tables 23-24).

For each pair "class i vs class j" (Fashion-MNIST's nine i vs i+1 by default): train the
paper's network (:class:`~perturbscope.models.pair_cnn.PairCNN`, with Conv-5/6 for CIFAR-10)
with the paper's protocol (:func:`perturbscope.train.train_pair_model`), then audit it on
training and test images
(:func:`perturbscope.audit.audit`). The units of work are ``pair x split``; each unit's
records are committed to a :class:`~perturbscope.experiments.store.ResultsStore` in one
transaction as soon as it finishes, and the trained weights of each pair are kept in the
store too, so a killed sweep resumes without retraining or re-auditing anything finished.

:class:`ReproduceConfig` holds every setting that changes numbers (its hash names the run);
where the work runs (executor, threads, store path, data path) does not change numbers and
is not part of it. :meth:`ReproduceConfig.paper` is the full protocol;
:meth:`ReproduceConfig.scaled_down` the CPU default of ``perturbscope reproduce``.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbscope.audit import AuditConfig, audit
from perturbscope.experiments.executors import Executor, LocalExecutor
from perturbscope.experiments.reproduce_config import (  # noqa: F401 (re-exported)
    DATASETS,
    PAIRS_I_IPLUS1,
    SPLITS,
    ReproduceConfig,
    parse_pairs,
)
from perturbscope.experiments.store import ResultsStore, UnitAlreadyDone, software_versions, unit_key
from perturbscope.progress import progress_bar
from perturbscope.train import TrainConfig, train_pair_model

__all__ = ["ReproduceConfig", "SweepOutcome", "run_reproduction", "train_job", "audit_job",
           "PAIRS_I_IPLUS1", "parse_pairs", "DATASETS", "guarded", "reproduction_tables",
           "write_reproduction_tables"]

# ---------------------------------------------------------------------------------------------
# jobs: module-level functions of plain specs (run locally or as Ray tasks)
# ---------------------------------------------------------------------------------------------

def _with_threads(threads: int | None):
    class _Ctx:
        def __enter__(self):
            self.old = torch.get_num_threads()
            if threads:
                torch.set_num_threads(int(threads))

        def __exit__(self, *exc):
            torch.set_num_threads(self.old)
    return _Ctx()


def _pair_task(spec: dict[str, Any], split: str, limit: int | None):
    """The pair task ``spec["pair"]`` of ``split``: Fashion-MNIST as it always was, CIFAR-10 and GTSRB
    from their files (:func:`perturbscope.data.sources.load_source`, the same task as ``pair_task``)."""
    from perturbscope.data import load_pair_task

    i, j = spec["pair"]
    if spec["source"] in DATASETS:
        return load_pair_task(spec["source"], split, i, j, path=spec.get("data_path"), limit=limit,
                              seed=spec["data_seed"])
    from perturbscope.data.sources import load_source

    opts = {"size": spec["image_size"]} if spec["source"] == "gtsrb" and spec.get("image_size") else {}
    return load_source(spec["source"], split, path=spec.get("data_path"), classes=(i, j), limit=limit,
                       seed=spec["data_seed"], verify=spec.get("verify", True), **opts)


def _train_task(spec: dict[str, Any]):
    return _pair_task(spec, "train", spec["train_images"])


def train_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one pair's model. ``spec``: ``source, data_path, pair, train_images, data_seed,
    width, dropout, init, restarts, train`` (TrainConfig fields), ``device``, ``threads``.

    Returns ``{"state": bytes (torch.save of the CPU state dict), "history": {"loss",
    "accuracy", "seed", "attempts"}, "n_train": int, "seconds": float}``.
    """
    t0 = time.perf_counter()
    with _with_threads(spec.get("threads")):
        task = _train_task(spec)
        model, hist = train_pair_model(task.x, task.y, width=spec["width"], deep=spec.get("deep", False),
                                       dropout=spec["dropout"], init=spec["init"],
                                       config=TrainConfig(**spec["train"]),
                                       progress=False, device=spec["device"], restarts=spec["restarts"])
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return {"state": buf.getvalue(), "history": {"loss": hist.loss, "accuracy": hist.accuracy,
                                                 "seed": hist.seed, "attempts": hist.attempts,
                                                 "collapsed": [list(c) for c in hist.collapsed]},
            "n_train": len(task), "seconds": time.perf_counter() - t0}


def _audit_images(spec: dict[str, Any]):
    """The images one unit audits: (x, y, source_index)."""
    from perturbscope.data.tasks import _select_limit

    k = spec["audit_images"]
    if spec["split"] == "train":
        task = _train_task(spec)  # the training images themselves, as in the paper
        if k is not None and len(task) > k:
            keep = torch.from_numpy(_select_limit(task.y.numpy(), k, spec["data_seed"] + 1))
            return task.x[keep], task.y[keep], task.indices[keep]
        return task.x, task.y, task.indices
    task = _pair_task(spec, "test", k)
    return task.x, task.y, task.indices


def audit_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Audit one ``pair x split`` unit. ``spec``: the train-job keys plus ``split``,
    ``audit_images``, ``state`` (bytes from :func:`train_job`) and ``audit`` (AuditConfig fields).

    Returns ``{"records": DataFrame (audit records + ``source_index``, the image's position in
    the data set's split, and ``classes``), "seconds": float, "forwards": int}``.
    """
    from perturbscope.models.pair_cnn import PairCNN

    t0 = time.perf_counter()
    with _with_threads(spec.get("threads")):
        x, y, src = _audit_images(spec)
        model = PairCNN(in_channels=x.shape[1], width=spec["width"], deep=spec.get("deep", False),
                        dropout=spec["dropout"], init=spec["init"])
        state = torch.load(io.BytesIO(spec["state"]), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.to(spec["device"]).eval()
        a = dict(spec["audit"])  # AuditConfig.to_dict(): its keys are the constructor's fields
        cfg = AuditConfig(**{**a, "alphas": tuple(a["alphas"]), "bounds": tuple(a["bounds"])})
        res = audit(model, x, y, output="sigmoid", config=cfg, split=spec["split"], progress=False)
    rec = res.records
    rec.insert(2, "source_index", src.numpy().astype(np.int64))
    return {"records": rec, "seconds": time.perf_counter() - t0, "forwards": res.meta["forwards"]}


# ---------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------

def guarded(fn_job: tuple[Callable[[dict[str, Any]], Any], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn(job)`` for ``(fn, job)``; an ``Exception`` becomes ``{"ok": False, "error": text}``
    so one failing unit does not stop the sweep (KeyboardInterrupt and the like still do)."""
    fn, job = fn_job
    try:
        return {"ok": True, "out": fn(job)}
    except Exception as exc:  # noqa: BLE001 - reported per unit, in the store
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


@dataclass
class SweepOutcome:
    """What one call of :func:`run_reproduction` did (``units_failed``: marked ``failed`` in the
    store with their error; a rerun retries them)."""

    run_id: str
    created: bool
    units_total: int
    units_run: list[str]
    units_skipped: int
    models_trained: list[str]
    seconds: float
    units_failed: list[str] = field(default_factory=list)


def _model_key(pair: tuple[int, int]) -> str:
    return f"model/pair={pair[0]}-{pair[1]}"


def run_reproduction(config: ReproduceConfig, store: ResultsStore, *, executor: Executor | None = None,
                     name: str = "fashion-mnist", data_path: str | None = None, threads: int | None = None,
                     progress: bool = True,
                     on_unit_done: Callable[[str, int], None] | None = None,
                     verify: bool = True) -> SweepOutcome:
    """Run (or resume) the sweep of ``config`` into ``store``.

    The run is the store's run with this configuration's hash (created if new). Pairs whose
    model is not in the store yet are trained first (their weights then saved as the
    artifact ``model/pair=i-j``); then every unit not yet done is audited and committed with
    its records in one transaction. With the local executor this goes pair by pair (a pair's
    units are finished before the next pair trains); other executors get all pairs at once.

    Args:
        executor: where jobs run (default :class:`LocalExecutor`).
        name: run name for a new run.
        data_path: the data set's files: the Fashion-MNIST IDX folder (default: auto-detected), the
            CIFAR-10 archive / folder, the GTSRB archives' folder (default: their environment
            variable, docs/data.md).
        verify: check the data files' official checksums (CIFAR-10, GTSRB, Fashion-MNIST).
        threads: torch threads inside each job (None: leave as is). Use the same value to get
            bitwise-equal numbers across executors.
        on_unit_done: called as ``on_unit_done(unit_key, n_records)`` after each commit.

    A job that raises marks its unit(s) ``failed`` (with the error) and the sweep goes on;
    the outcome lists them.
    """
    config = config.validated()
    executor = executor or LocalExecutor()
    t0 = time.perf_counter()
    extra = ("ray",) if getattr(executor, "name", "") == "ray" else ()
    run_id, created = store.open_run(name, config.to_dict(), software_versions(extra))
    keys = config.unit_keys()
    store.plan_units(run_id, keys)
    pending = set(store.pending_units(run_id))
    base = {"source": config.source, "data_path": data_path, "train_images": config.train_images,
            "data_seed": config.data_seed, "width": config.width, "dropout": config.dropout,
            "init": config.init, "restarts": config.restarts, "train": asdict(config.train),
            "device": config.device, "threads": threads, "deep": config.deep, "image_size": config.image_size,
            "verify": verify}
    todo_pairs = [p for p in config.pairs if any(unit_key(p, s) in pending for s in config.splits)]
    groups = ([[p] for p in todo_pairs] if isinstance(executor, LocalExecutor) else
              ([todo_pairs] if todo_pairs else []))
    trained: list[str] = []
    ran: list[str] = []
    failed: list[str] = []
    n_units = sum(1 for p in todo_pairs for s in config.splits if unit_key(p, s) in pending)
    have = set(store.artifact_keys(run_id))
    n_models = sum(1 for p in todo_pairs if _model_key(p) not in have)
    with progress_bar(f"reproduce [{config.source}]: models trained + units audited", n_models + n_units,
                      progress) as advance:
        for group in groups:
            need = [p for p in group if _model_key(p) not in have]
            jobs = [(train_job, dict(base, pair=list(p))) for p in need]
            failed_pairs = set()
            for pos, res in executor.map(guarded, jobs):
                p = need[pos]
                advance(1)
                if not res["ok"]:
                    failed_pairs.add(p)
                    for s in config.splits:
                        if unit_key(p, s) in pending:
                            store.fail_unit(run_id, unit_key(p, s), f"training failed: {res['error']}")
                            failed.append(unit_key(p, s))
                            advance(1)
                    continue
                out = res["out"]
                store.put_artifact(run_id, _model_key(p), out["state"],
                                   {"history": out["history"], "n_train": out["n_train"],
                                    "seconds": out["seconds"]})
                trained.append(f"{p[0]}-{p[1]}")
            ajobs, akeys = [], []
            for p in group:
                if p in failed_pairs:
                    continue
                state = store.get_artifact(run_id, _model_key(p))[0]
                for s in config.splits:
                    k = unit_key(p, s)
                    if k in pending:
                        ajobs.append((audit_job, dict(base, pair=list(p), split=s,
                                                      audit_images=config.audit_images, state=state,
                                                      audit=config.audit.to_dict())))
                        akeys.append(k)
            for pos, res in executor.map(guarded, ajobs):
                k = akeys[pos]
                if not res["ok"]:
                    store.fail_unit(run_id, k, res["error"])
                    failed.append(k)
                    advance(1)
                    continue
                out = res["out"]
                try:
                    n = store.commit_unit(run_id, k, out["records"], seconds=out["seconds"],
                                          meta={"forwards": out["forwards"], "threads": threads,
                                                "executor": getattr(executor, "name", "?")})
                except UnitAlreadyDone:  # another process running the same sweep was faster
                    advance(1)
                    continue
                ran.append(k)
                advance(1)
                if on_unit_done is not None:
                    on_unit_done(k, n)
    return SweepOutcome(run_id=run_id, created=created, units_total=len(keys), units_run=ran,
                        units_skipped=len(keys) - len(pending), models_trained=trained,
                        seconds=time.perf_counter() - t0, units_failed=failed)


def reproduction_tables(store: ResultsStore, run_id: str, config: ReproduceConfig) -> dict[str, Any]:
    """Tables 20 and 21 of a run beside the paper's values.

    Returns:
        ``{"note": protocol note, "warnings": sentences of
        :func:`~perturbscope.audit.quality.quality_warnings` (weak models, retried trainings,
        attack failures, probes far outside [0, 1]), "table20", "table21": long tables (with
        counts, 95% intervals and ``paper_outside``), "summaries": the run's summaries, "text":
        note, the attack's and the probe's box mode, the warnings and both tables as printed
        text}``.
    """
    from perturbscope.experiments.tables import protocol_note, table20_long, table21_long

    note = protocol_note(config.to_dict())
    summ = store.summaries(run_id)
    pairs = [f"{i}-{j}" for i, j in config.pairs]
    dataset = config.paper_key
    t20 = table20_long(summ, alphas=config.audit.alphas, pairs=pairs, dataset=dataset)
    t21 = table21_long(summ, pairs=pairs, dataset=dataset)
    warnings = run_warnings(store, run_id, config.to_dict())
    modes = f"attack: {config.audit.attack_mode}; random probe: {config.audit.probe_mode}"
    head = "\n".join([modes, *(f"WARNING: {w}" for w in warnings)])
    text = "\n\n".join([note, head, tables_text(t20, t21, dataset)])
    return {"note": note, "warnings": warnings, "table20": t20, "table21": t21, "summaries": summ,
            "text": text}


#: pairs per block of the printed tables (45 CIFAR-10 pairs side by side would be 700 columns wide)
PAIRS_PER_BLOCK = 9


def tables_text(t20: Any, t21: Any, dataset: str, per_block: int = PAIRS_PER_BLOCK) -> str:
    """The rate and norm tables (:func:`~perturbscope.experiments.tables.table20_long` /
    ``table21_long`` output) as text under the paper's table names for ``dataset``, in blocks of
    ``per_block`` pairs."""
    from perturbscope.experiments.tables import format_table20, format_table21, table_titles

    rates, norms = table_titles(dataset)
    pairs = list(dict.fromkeys(t20["pair"]))
    chunks = [pairs[k:k + per_block] for k in range(0, len(pairs), per_block)] or [pairs]
    out = []
    for name, long, fmt in (("rates", t20, format_table20), ("norms", t21, format_table21)):
        title = rates if name == "rates" else norms
        for n, chunk in enumerate(chunks, start=1):
            part = f" (pairs {n} of {len(chunks)} blocks)" if len(chunks) > 1 else ""
            out.append(fmt(long[long["pair"].isin(chunk)], title=title + part))
    return "\n\n".join(out)


def run_warnings(store: ResultsStore, run_id: str, config: dict[str, Any]) -> list[str]:
    """:func:`~perturbscope.audit.quality.quality_warnings` of a stored run: its records, the paper's
    values for its data set and the training histories kept with its models."""
    from perturbscope.audit.quality import quality_warnings
    from perturbscope.experiments.tables import paper_long

    records = store.records(run_id)
    if records.empty:
        return []
    histories = {}
    for key in store.artifact_keys(run_id):
        if key.startswith("model/pair="):
            art = store.get_artifact(run_id, key)
            histories[key.split("=", 1)[1]] = (art[1] if art else {}).get("history") or {}
    return quality_warnings(records, paper=paper_long(str(config.get("paper") or config.get("source", ""))),
                            histories=histories, config=config)


def write_reproduction_tables(out_dir: str | os.PathLike, tables: dict[str, Any]) -> dict[str, Path]:
    """Write :func:`reproduction_tables` to ``out_dir``: ``tables.txt``, ``table20.csv``,
    ``table21.csv`` and ``summaries.csv`` (atomically); returns their paths."""
    from perturbscope.fileio import atomic_write_text

    out = Path(out_dir)
    return {"tables": atomic_write_text(out / "tables.txt", tables["text"] + "\n"),
            "table20": atomic_write_text(out / "table20.csv", tables["table20"].to_csv(index=False)),
            "table21": atomic_write_text(out / "table21.csv", tables["table21"].to_csv(index=False)),
            "summaries": atomic_write_text(out / "summaries.csv", tables["summaries"].to_csv(index=False))}
