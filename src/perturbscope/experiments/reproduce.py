"""The paper's Fashion-MNIST experiment (Section 7.2.2, Tables 20 and 21) as a resumable sweep.

For each pair "class i vs class i+1" (nine by default): train the paper's network
(:class:`~perturbscope.models.pair_cnn.PairCNN` without Conv-5/6) with the paper's protocol
(:func:`perturbscope.train.train_pair_model`), then audit it on training and test images
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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from perturbscope.audit import AuditConfig, audit
from perturbscope.experiments.executors import Executor, LocalExecutor
from perturbscope.experiments.store import ResultsStore, UnitAlreadyDone, software_versions, unit_key
from perturbscope.progress import progress_bar
from perturbscope.train import TrainConfig, train_pair_model

__all__ = ["ReproduceConfig", "SweepOutcome", "run_reproduction", "train_job", "audit_job",
           "PAIRS_I_IPLUS1", "parse_pairs", "DATASETS", "guarded"]

#: The paper's Fashion-MNIST tasks: class i vs class i+1, i = 0..8.
PAIRS_I_IPLUS1: tuple[tuple[int, int], ...] = tuple((i, i + 1) for i in range(9))
#: Data sources ``reproduce`` accepts (the subset ships with the package: 300 train / 100 test per class).
DATASETS = ("fashion-mnist", "fashion-mnist-subset")
SPLITS = ("train", "test")


def parse_pairs(items: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``["7-8", "0"]`` -> ``((7, 8), (0, 1))``: ``"I-J"`` or ``"I"`` meaning ``I vs I+1``."""
    out: list[tuple[int, int]] = []
    for it in items:
        s = str(it).strip()
        try:
            if "-" in s:
                a, b = s.split("-", 1)
                pair = (int(a), int(b))
            else:
                pair = (int(s), int(s) + 1)
        except ValueError:
            raise ValueError(f"pair {it!r} is not 'I-J' or 'I' (meaning I vs I+1)") from None
        if not all(0 <= c <= 9 for c in pair) or pair[0] == pair[1]:
            raise ValueError(f"pair {it!r}: classes must be two different labels in 0..9")
        if pair in out:
            raise ValueError(f"pair {it!r} is given twice")
        out.append(pair)
    if not out:
        raise ValueError("no pairs given")
    return tuple(out)


@dataclass(frozen=True)
class ReproduceConfig:
    """Every setting of the reproduction that changes its numbers.

    Attributes:
        source: ``"fashion-mnist"`` (full data set) or ``"fashion-mnist-subset"``.
        pairs: class pairs ``(i, j)``; label 0 is ``i``.
        splits: splits audited (``"train"``, ``"test"``).
        train_images: training images per pair (seeded, class-balanced choice); None = all
            (paper: all 12,000).
        audit_images: images audited per split; None = all (paper). Training-split images are
            drawn from the images the model was trained on.
        data_seed: seed of those choices.
        width: channel multiplier of PairCNN (paper: 1.0). dropout: paper 0.4.
        init: initial weights, ``"glorot"`` (the paper's Keras default) or ``"torch"``.
        restarts: retrain a pair from a new seed when training collapses to one class, at
            most this many times (:func:`perturbscope.train.train_pair_model`; paper: 0).
        train: training protocol (paper: 100 epochs, lr 0.1 halved every 20, batch 128, SGD
            Nesterov 0.9, MSE on the sigmoid).
        audit: audit settings (paper: 2000 draws, alphas 1 2 5 10, 256 line-search steps).
        device: ``"cpu"`` or ``"cuda"`` (numbers can differ between devices).
    """

    source: str = "fashion-mnist"
    pairs: tuple[tuple[int, int], ...] = PAIRS_I_IPLUS1
    splits: tuple[str, ...] = SPLITS
    train_images: int | None = None
    audit_images: int | None = None
    data_seed: int = 0
    width: float = 1.0
    dropout: float = 0.4
    init: str = "glorot"
    restarts: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    device: str = "cpu"

    @classmethod
    def paper(cls, **changes: Any) -> ReproduceConfig:
        """The paper's full protocol (all images, width 1, 100 epochs, 2000 draws)."""
        return replace(cls(), **changes).validated()

    @classmethod
    def scaled_down(cls, **changes: Any) -> ReproduceConfig:
        """The CPU default: 2000 training images, 100 audited images per split, 8 epochs,
        batch 64 (more SGD steps in the short schedule), width 0.25, 200 random draws, up to 2
        restarts of a collapsed training; everything else as in the paper."""
        base = cls(train_images=2000, audit_images=100, width=0.25, restarts=2,
                   train=TrainConfig(epochs=8, batch_size=64), audit=AuditConfig(draws=200))
        return replace(base, **changes).validated()

    def validated(self) -> ReproduceConfig:
        """``self`` after checking every field; raises ValueError naming the bad one."""
        if self.source not in DATASETS:
            raise ValueError(f"source must be one of {DATASETS}, got {self.source!r}")
        if not self.pairs:
            raise ValueError("pairs is empty")
        pairs = tuple((int(a), int(b)) for a, b in self.pairs)
        if len(set(pairs)) != len(pairs) or any(a == b for a, b in pairs):
            raise ValueError(f"pairs must be distinct pairs of different classes, got {pairs}")
        if not self.splits or any(s not in SPLITS for s in self.splits) or len(set(self.splits)) != len(
                self.splits):
            raise ValueError(f"splits must be distinct names from {SPLITS}, got {self.splits}")
        for name in ("train_images", "audit_images"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 2):
                raise ValueError(f"{name} must be an int >= 2 or None (all), got {v!r}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.init not in ("glorot", "torch"):
            raise ValueError(f"init must be 'glorot' or 'torch', got {self.init!r}")
        if not isinstance(self.restarts, int) or self.restarts < 0:
            raise ValueError(f"restarts must be an int >= 0, got {self.restarts!r}")
        if not isinstance(self.train, TrainConfig) or not isinstance(self.audit, AuditConfig):
            raise TypeError("train must be a TrainConfig and audit an AuditConfig")
        self.train.validate()
        if self.audit.draws < 1 or self.audit.steps < 1 or not self.audit.s_max > 0:
            raise ValueError(f"invalid audit settings: {self.audit}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        return replace(self, pairs=pairs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what the store hashes and keeps)."""
        return {"experiment": "fashion-mnist-pairs", "source": self.source,
                "pairs": [list(p) for p in self.pairs], "splits": list(self.splits),
                "train_images": self.train_images, "audit_images": self.audit_images,
                "data_seed": self.data_seed, "model": {"arch": "PairCNN", "width": self.width,
                                                        "deep": False, "dropout": self.dropout,
                                                        "init": self.init},
                "train": asdict(self.train), "restarts": self.restarts, "audit": self.audit.to_dict(),
                "device": self.device}

    def unit_keys(self) -> list[str]:
        """``pair=i-j/split=s`` for every pair and split, pair-major."""
        return [unit_key(p, s) for p in self.pairs for s in self.splits]


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


def _train_task(spec: dict[str, Any]):
    from perturbscope.data import load_pair_task

    i, j = spec["pair"]
    return load_pair_task(spec["source"], "train", i, j, path=spec.get("data_path"),
                          limit=spec["train_images"], seed=spec["data_seed"])


def train_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one pair's model. ``spec``: ``source, data_path, pair, train_images, data_seed,
    width, dropout, init, restarts, train`` (TrainConfig fields), ``device``, ``threads``.

    Returns ``{"state": bytes (torch.save of the CPU state dict), "history": {"loss",
    "accuracy", "seed", "attempts"}, "n_train": int, "seconds": float}``.
    """
    t0 = time.perf_counter()
    with _with_threads(spec.get("threads")):
        task = _train_task(spec)
        model, hist = train_pair_model(task.x, task.y, width=spec["width"], dropout=spec["dropout"],
                                       init=spec["init"], config=TrainConfig(**spec["train"]),
                                       progress=False, device=spec["device"], restarts=spec["restarts"])
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return {"state": buf.getvalue(), "history": {"loss": hist.loss, "accuracy": hist.accuracy,
                                                 "seed": hist.seed, "attempts": hist.attempts},
            "n_train": len(task), "seconds": time.perf_counter() - t0}


def _audit_images(spec: dict[str, Any]):
    """The images one unit audits: (x, y, source_index)."""
    from perturbscope.data import load_pair_task
    from perturbscope.data.tasks import _select_limit

    i, j = spec["pair"]
    k = spec["audit_images"]
    if spec["split"] == "train":
        task = _train_task(spec)  # the training images themselves, as in the paper
        if k is not None and len(task) > k:
            keep = torch.from_numpy(_select_limit(task.y.numpy(), k, spec["data_seed"] + 1))
            return task.x[keep], task.y[keep], task.indices[keep]
        return task.x, task.y, task.indices
    task = load_pair_task(spec["source"], "test", i, j, path=spec.get("data_path"), limit=k,
                          seed=spec["data_seed"])
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
        model = PairCNN(in_channels=x.shape[1], width=spec["width"], dropout=spec["dropout"],
                        init=spec["init"])
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
                     on_unit_done: Callable[[str, int], None] | None = None) -> SweepOutcome:
    """Run (or resume) the sweep of ``config`` into ``store``.

    The run is the store's run with this configuration's hash (created if new). Pairs whose
    model is not in the store yet are trained first (their weights then saved as the
    artifact ``model/pair=i-j``); then every unit not yet done is audited and committed with
    its records in one transaction. With the local executor this goes pair by pair (a pair's
    units are finished before the next pair trains); other executors get all pairs at once.

    Args:
        executor: where jobs run (default :class:`LocalExecutor`).
        name: run name for a new run.
        data_path: folder of the Fashion-MNIST IDX files (default: auto-detected).
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
            "device": config.device, "threads": threads}
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
