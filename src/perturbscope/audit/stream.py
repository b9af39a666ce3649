"""The audit over a stream of images, a group at a time: memory bounded by one group, resumable.

:func:`audit_stream` cuts a data set (a :class:`~perturbscope.data.streaming.LabelledImageDataset`,
any ``Dataset``, a ``DataLoader``, an iterable of ``(x, y)`` batches, or an ``(x, y)`` pair of
tensors) into groups of ``group_size`` images and runs :func:`~perturbscope.audit.run.audit` on
each group. Only one group of images (``group_size x C x H x W`` float32) is in memory at a
time; the per-image records (a few hundred bytes each) of all groups are kept and returned.

On the same images, in the same order, with the same :class:`~perturbscope.audit.config.AuditConfig`,
the records are exactly those of the in-memory ``audit(model, x, y, config=...)`` (bit for bit,
``index`` counting from the start of the stream): the audit evaluates the model block by block
(``config.batch_size`` consecutive images; :func:`~perturbscope.audit.run.audit`), every number
of a record depends on its own block only, the random probe's draw ``k`` is a pure function of
``(seed, k)`` (:mod:`perturbscope.sampling`), and ``group_size`` must be a multiple of
``config.batch_size`` so that groups are unions of whole blocks.

Where the records go (a *sink*, one commit per group, as soon as the group is done):

* ``out=DIR``: :class:`GroupFiles`: ``DIR/stream/manifest.json`` (what is audited: the
  configuration, a fingerprint of the model's weights and of the data) and one
  ``DIR/stream/group-00000.jsonl`` per group, each written atomically; at the end
  ``DIR/records.csv`` and ``DIR/summary.json`` (:meth:`AuditResult.save`). Running the same call
  again after an interruption skips the groups already written (their images are not even
  decoded for a ``LabelledImageDataset``); a manifest that does not match is refused.
* ``sink=``: any object with ``done() -> {group: records}`` and ``commit(group, records, meta)``,
  e.g. :class:`perturbscope.experiments.stream_store.StoreSink` (one results-store unit per
  group, used by ``perturbscope reproduce imagenet``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from perturbscope.audit.config import AuditConfig
from perturbscope.audit.run import AuditResult, _classifier, audit
from perturbscope.audit.schema import column_names, dtype_of
from perturbscope.audit.summary import summarize_records
from perturbscope.fileio import atomic_write_text
from perturbscope.models.classifier import Classifier
from perturbscope.progress import progress_bar
from perturbscope.validation import check_int

__all__ = ["audit_stream", "RecordSink", "GroupFiles", "model_fingerprint", "data_fingerprint",
           "typed_records", "DEFAULT_GROUP_SIZE"]

#: images per group by default (1024 ImageNet images are 0.6 GB as float32); a multiple of the
#: default batch size
DEFAULT_GROUP_SIZE = 1024


class RecordSink(Protocol):
    """Where :func:`audit_stream` puts each finished group's records."""

    def done(self) -> dict[int, pd.DataFrame]:
        """Records of the groups already finished (resumed), by group number."""
        ...

    def commit(self, group: int, records: pd.DataFrame, meta: dict[str, Any]) -> None:
        """Keep one finished group's records (atomically: all of them or none)."""
        ...


def typed_records(records: pd.DataFrame) -> pd.DataFrame:
    """Records read back from text with the dtypes of :mod:`perturbscope.audit.schema`."""
    out = records.copy()
    for c in out.columns:
        kind = dtype_of(str(c))
        if kind == "bool":
            out[c] = out[c].astype(bool)
        elif kind == "float64":
            out[c] = pd.to_numeric(out[c], errors="coerce").astype(np.float64)
        elif kind == "int64" and out[c].notna().all():
            out[c] = pd.to_numeric(out[c]).astype(np.int64)
        elif kind == "str":
            out[c] = out[c].fillna("").astype(str)
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _jsonl(records: pd.DataFrame) -> str:
    rows = records.to_dict(orient="records")
    return "".join(json.dumps({k: _plain(v) for k, v in r.items()}, allow_nan=True) + "\n" for r in rows)


def _canonical(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True, default=str)


class GroupFiles:
    """A folder of per-group record files (JSON lines) plus a manifest: a resumable :class:`RecordSink`.

    Args:
        folder: the folder (created); files ``manifest.json`` and ``group-NNNNN.jsonl``.
        manifest: plain data describing the audit (configuration, fingerprints). A folder that
            already holds another manifest is refused, so results of two audits never mix.
    """

    def __init__(self, folder: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        doc = json.loads(_canonical(manifest))
        path = self.folder / "manifest.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if _canonical(old) != _canonical(doc):
                diff = sorted(k for k in set(old) | set(doc) if _canonical({k: old.get(k)}) !=
                              _canonical({k: doc.get(k)}))
                raise ValueError(f"{self.folder} holds the records of another audit (it differs in "
                                 f"{', '.join(diff)}); give another output folder or delete {self.folder}")
        else:
            atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")

    def _file(self, group: int) -> Path:
        return self.folder / f"group-{group:05d}.jsonl"

    def done(self) -> dict[int, pd.DataFrame]:
        out: dict[int, pd.DataFrame] = {}
        for p in sorted(self.folder.glob("group-*.jsonl")):
            try:
                k = int(p.stem.split("-", 1)[1])
            except ValueError:
                continue
            rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            out[k] = typed_records(pd.DataFrame.from_records(rows))
        return out

    def commit(self, group: int, records: pd.DataFrame, meta: dict[str, Any]) -> None:
        atomic_write_text(self._file(group), _jsonl(records))


def model_fingerprint(clf: Classifier) -> dict[str, Any]:
    """What identifies a classifier's numbers: class, output kind, bounds, normalisation, and the
    SHA-256 of its parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in clf.module.state_dict().items():
        a = t.detach().cpu().contiguous()
        h.update(f"{name}|{a.dtype}|{tuple(a.shape)}|".encode())
        h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    m = clf.module
    return {"class": f"{type(m).__module__}.{type(m).__qualname__}", "output": clf.output,
            "bounds": list(clf.bounds) if clf.bounds is not None else None,
            "normalization": [list(v) for v in clf.normalization] if clf.normalization else None,
            "weights_sha256": h.hexdigest()}


def data_fingerprint(data: Any) -> dict[str, Any]:
    """What identifies a stream's images without decoding them: for a
    :class:`~perturbscope.data.streaming.LabelledImageDataset` its source, split, size and the
    SHA-256 of its labels (and of its positions in the parent data set for a subset); for other
    data its type (their labels are checked group by group when a run is resumed)."""
    from perturbscope.data.streaming import LabelledImageDataset, SubsetImageDataset

    if isinstance(data, LabelledImageDataset):
        doc: dict[str, Any] = {"kind": type(data).__name__, "source": data.source, "split": data.split,
                               "n": len(data), "channels": data.channels,
                               "labels_sha256": hashlib.sha256(
                                   np.ascontiguousarray(data.labels, dtype=np.int64).tobytes()).hexdigest()}
        if isinstance(data, SubsetImageDataset):
            doc["parent"] = data_fingerprint(data.parent)
            doc["indices_sha256"] = hashlib.sha256(
                np.ascontiguousarray(data.indices, dtype=np.int64).tobytes()).hexdigest()
        return doc
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return {"kind": "tensors", "n": int(data[0].shape[0]), "shape": list(data[0].shape[1:]),
                "labels_sha256": hashlib.sha256(data[1].detach().cpu().long().numpy().tobytes()).hexdigest()}
    return {"kind": type(data).__name__}


@dataclass
class _Group:
    number: int
    start: int
    labels: np.ndarray | None          # known before decoding (datasets, tensors)
    load: Any                          # () -> (x, y)


def _groups(data: Any, group_size: int) -> Iterator[_Group]:
    """The stream as groups; images are decoded only when ``group.load()`` is called."""
    from perturbscope.data.streaming import LabelledImageDataset, as_nchw_batch, iter_batches

    if isinstance(data, LabelledImageDataset):
        n = len(data)
        for k, start in enumerate(range(0, n, group_size)):
            idx = np.arange(start, min(n, start + group_size))
            yield _Group(k, start, data.labels[idx], lambda idx=idx: data.batch(idx))
        return
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"data has {x.shape[0]} images but {y.shape[0]} labels")
        for k, start in enumerate(range(0, x.shape[0], group_size)):
            sl = slice(start, start + group_size)
            yield _Group(k, start, y[sl].cpu().numpy(), lambda sl=sl: (x[sl], y[sl]))
        return
    start = 0
    for k, (xb, yb) in enumerate(iter_batches(data, group_size)):
        xb, yb = as_nchw_batch(xb, yb)
        yield _Group(k, start, None, lambda xb=xb, yb=yb: (xb, yb))
        start += xb.shape[0]


def _rows(array: Any, start: int, n: int, what: str, total: int | None) -> torch.Tensor:
    """Rows ``start .. start + n`` of a tensor / array (a memory-mapped ``.npy`` is read lazily)."""
    if total is not None and int(array.shape[0]) != total:
        raise ValueError(f"{what} has {int(array.shape[0])} rows, the data {total} images; they must be "
                         "aligned row for row with the audited images")
    if start + n > int(array.shape[0]):
        raise ValueError(f"{what} has {int(array.shape[0])} rows, fewer than the {start + n} images streamed")
    part = array[start:start + n]
    t = part if isinstance(part, torch.Tensor) else torch.from_numpy(np.array(part))
    if not t.is_floating_point():
        raise TypeError(f"{what} must be floating point, got dtype {t.dtype}")
    return t.detach().cpu().to(torch.float32)


def _ends_sha256(array: Any) -> str:
    """SHA-256 of the first and last rows of a tensor / array (cheap, even memory-mapped): enough to
    tell two files of perturbations apart when a streamed audit is resumed."""
    h = hashlib.sha256()
    for row in (array[:1], array[-1:]):
        a = row.detach().cpu().numpy() if isinstance(row, torch.Tensor) else np.asarray(row)
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def _release_memory() -> None:
    """Give the freed memory of a finished group back to the system (glibc's ``malloc_trim``).

    Without it glibc keeps the freed buffers of earlier groups (its mmap threshold grows with the
    sizes freed), and the resident memory of a long stream creeps up by tens of MB per group;
    elsewhere this does nothing."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def _stream_length(data: Any) -> int | None:
    from perturbscope.data.streaming import LabelledImageDataset

    if isinstance(data, LabelledImageDataset):
        return len(data)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return int(data[0].shape[0])
    return None


def audit_stream(
    model: nn.Module | Classifier,
    data: Any,
    *,
    config: AuditConfig | None = None,
    out: str | os.PathLike | None = None,
    state: str | os.PathLike | None = None,
    sink: RecordSink | None = None,
    split: str = "all",
    group_size: int = DEFAULT_GROUP_SIZE,
    output: str | None = None,
    perturbations: Any = None,
    adversarial: Any = None,
    describe: Mapping[str, Any] | None = None,
    progress: bool = True,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> AuditResult:
    """Audit ``model`` on a stream of images, ``group_size`` images at a time.

    Args:
        model: an ``nn.Module`` (wrapped with ``output`` and ``config.bounds``) or a Classifier.
        data: a ``LabelledImageDataset`` (``open_source(...)``, ``ds.subset(...)``), any map-style
            or iterable ``Dataset`` of ``(x, y)`` items, a ``DataLoader``, an iterable of ``(x, y)``
            batches (NCHW / NHWC / grey, uint8 or float in [0, 1]), or a pair ``(x, y)`` of tensors.
            Images float ``(C, H, W)`` in pixel units inside ``config.bounds``.
        config: the audit's settings (default :class:`AuditConfig`).
        out: a folder: per-group files (resumable, :class:`GroupFiles` under ``out/stream``) and,
            at the end, ``records.csv`` + ``summary.json``. ``None``: nothing written (unless ``sink``).
        state: the folder of the per-group files instead of ``out/stream`` (e.g. one per split).
        sink: where each group's records go instead (see the module docstring).
        split: the records' ``split`` column.
        group_size: images per group (memory: one group of images); a multiple of
            ``config.batch_size``.
        perturbations: optional ``(N, *shape)`` adversarial perturbations computed elsewhere, aligned
            row for row with the stream (tensor, array or memory-mapped ``.npy``; NaN rows = none
            found); each is re-checked, as by :func:`~perturbscope.audit.run.audit`.
        adversarial: the adversarial inputs themselves instead (``x_adv``; ``x_adv - x`` is used).
        describe: plain data added to the manifest (e.g. the command line's data options).
        progress: one progress bar over the images.

    Returns:
        :class:`~perturbscope.audit.run.AuditResult` of all images (``summary[split]``); ``meta``
        adds ``groups``, ``groups_resumed`` and ``group_size``.

    Raises:
        ValueError: bad settings, misaligned perturbations, or an ``out`` folder (or sink) holding
            another audit, or resumed groups whose labels differ from the data's.
    """
    cfg = config or AuditConfig()
    cfg.validate()
    group_size = check_int("group_size", group_size, minimum=1)
    if group_size % cfg.batch_size:
        fit = cfg.batch_size * max(1, group_size // cfg.batch_size)
        raise ValueError(f"group_size ({group_size}) must be a multiple of config.batch_size "
                         f"({cfg.batch_size}; --forward-batch on the command line): the audit evaluates "
                         f"blocks of batch_size images, and aligned groups give exactly the records of one "
                         f"in-memory audit; e.g. group_size {fit}")
    if perturbations is not None and adversarial is not None:
        raise ValueError("give perturbations or adversarial, not both")
    clf = _classifier(model, output, cfg)
    total = _stream_length(data)
    given = perturbations if perturbations is not None else adversarial
    what = "perturbations" if perturbations is not None else "adversarial"
    manifest = {"experiment": "audit-stream", "split": split, "group_size": group_size,
                "audit": cfg.to_dict(), "model": model_fingerprint(clf), "data": data_fingerprint(data),
                "given": None if given is None else {"kind": what, "shape": list(given.shape),
                                                     "ends_sha256": _ends_sha256(given)},
                "describe": dict(describe or {}),
                "columns": column_names(cfg.alphas, rare_event=cfg.rare_event)}
    if sink is None and (state is not None or out is not None):
        sink = GroupFiles(Path(state) if state is not None else Path(out) / "stream", manifest)
    done = sink.done() if sink is not None else {}
    parts: dict[int, pd.DataFrame] = {}
    forwards, resumed, input_shape = 0, 0, None
    t0 = time.perf_counter()
    show = progress and total is not None
    with progress_bar(f"audit stream ({split}): images", total or 0, show) as advance:
        for g in _groups(data, group_size):
            if g.number in done:
                rec = done[g.number]
                missing = [c for c in manifest["columns"] if c not in rec.columns]
                if missing:
                    raise ValueError(f"group {g.number} was recorded without the columns {missing[:4]} "
                                     "(by another perturbscope version?): audit into a new folder or run")
                if g.labels is not None and not np.array_equal(rec["label"].to_numpy(), g.labels):
                    raise ValueError(f"group {g.number} (images {g.start}..) was recorded with other "
                                     "labels: the data differ from those of the audit being resumed")
                if g.labels is None:  # an iterable: its images must be read to move on; check them
                    _, yb = g.load()
                    if not np.array_equal(rec["label"].to_numpy(), yb.numpy()):
                        raise ValueError(f"group {g.number}: the data differ from those of the audit "
                                         "being resumed (other labels)")
                parts[g.number] = rec
                resumed += 1
                advance(len(rec))
                continue
            xb, yb = g.load()
            n = int(xb.shape[0])
            input_shape = list(xb.shape[1:])
            pert = None
            if given is not None:
                pert = _rows(given, g.start, n, what, total)
                if tuple(pert.shape) != tuple(xb.shape):
                    raise ValueError(f"{what} rows have shape {tuple(pert.shape[1:])}, the images "
                                     f"{tuple(xb.shape[1:])}")
                if adversarial is not None:
                    pert = pert - xb.to(pert.dtype)
            res = audit(clf, xb, yb, config=cfg, perturbations=pert, split=split, progress=False,
                        memory_format=memory_format)
            rec = res.records
            rec["index"] = rec["index"].to_numpy() + g.start
            forwards += int(res.meta["forwards"])
            if sink is not None:
                sink.commit(g.number, rec, {"forwards": int(res.meta["forwards"]), "start": g.start, "n": n})
            parts[g.number] = rec
            advance(n)
            del xb, yb, pert, res
            _release_memory()
    if not parts:
        raise ValueError("the data stream holds no images")
    records = pd.concat([parts[k] for k in sorted(parts)], ignore_index=True)
    alphas = tuple(float(a) for a in cfg.alphas)
    records = typed_records(records[column_names(alphas, rare_event=cfg.rare_event)])
    summary = {split: summarize_records(records, alphas)}
    if cfg.rare_event:
        from perturbscope.audit.rare_event_columns import summarize_rare_event

        summary[split]["rare_event"] = summarize_rare_event(records, alphas)
    meta = {"output": clf.output, "forwards": forwards, "input_shape": input_shape,
            "groups": len(parts), "groups_resumed": resumed, "group_size": group_size,
            "seconds": time.perf_counter() - t0}
    result = AuditResult(records, summary, cfg, meta)
    if out is not None:
        result.save(out)
    return result


def iter_groups(data: Any, group_size: int) -> Iterable[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, x, y)`` groups of ``group_size`` images of any data :func:`audit_stream` takes."""
    for g in _groups(data, check_int("group_size", group_size, minimum=1)):
        x, y = g.load()
        yield g.start, x, y
