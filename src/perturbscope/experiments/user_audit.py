"""The audit of a user's own model on a registered data source: what ``perturbscope audit`` runs.

* :func:`open_views`: the images of each split as lazy views (nothing decoded yet), the task
  chosen by ``classes`` and the labels by ``labels`` (:func:`perturbscope.data.sources.task_view`);
* :func:`resolve_labels`: what ``labels="auto"`` means for a given model;
* :func:`audit_views`: the audit of every split, in memory or streamed a group at a time
  (:func:`perturbscope.audit.stream.audit_stream`, resumable), with perturbations computed
  elsewhere when given; returns one :class:`~perturbscope.audit.run.AuditResult`.

A pair task ("i vs j") is labelled 0 / 1 as in the paper (``labels="task"``): right for a binary
model trained on that pair. A model trained on every class of the data set (a pretrained
CIFAR-10 or ImageNet classifier) keeps its own class indices (``labels="source"``): its images
of classes i and j are labelled i and j, and any change of its top-1 label is a flip
(one-vs-all, as the paper's ImageNet experiment). ``"auto"`` picks ``"source"`` when the model
has as many outputs as the data set has classes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from perturbscope.audit.config import AuditConfig
from perturbscope.audit.run import AuditResult, audit
from perturbscope.audit.stream import DEFAULT_GROUP_SIZE, audit_stream
from perturbscope.data.sources import SOURCE_REGISTRY, open_source, resolve_classes, task_view
from perturbscope.data.streaming import LabelledImageDataset
from perturbscope.models.classifier import Classifier

__all__ = ["default_splits", "open_views", "resolve_labels", "audit_views", "default_group_size",
           "STREAM_BYTES"]

#: image sets larger than this (as float32) are streamed even without ``stream=True``
STREAM_BYTES = 2**30


def default_splits(source: str) -> tuple[str | None, ...]:
    """The splits audited when none are named: train and test, ImageNet's val, or the whole
    folder / array file (``None``)."""
    info = SOURCE_REGISTRY[source]
    if "train" in info.splits and "test" in info.splits and source != "imagenet":
        return ("train", "test")
    if source == "imagenet":
        return ("val",)
    return (None,)


def default_group_size(batch_size: int, target: int = DEFAULT_GROUP_SIZE) -> int:
    """The multiple of ``batch_size`` nearest ``target`` from below (at least ``batch_size``)."""
    return int(batch_size) * max(1, int(target) // int(batch_size))


def _class_list(classes: Sequence[str] | str | None) -> Sequence[str] | str | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        return None if classes.strip().lower() == "all" else classes
    items = [str(c) for c in classes]
    if len(items) == 1 and items[0].strip().lower() == "all":
        return None
    if len(items) == 1 and "," in items[0]:
        return items[0]
    return items


def open_datasets(source: str, splits: Sequence[str | None], *, path: str | os.PathLike | None = None,
                  verify: bool = True, channels: int = 3, options: Mapping[str, Any] | None = None
                  ) -> dict[str, LabelledImageDataset]:
    """Each split of ``source`` as its lazy dataset, keyed by the name its records get."""
    out: dict[str, LabelledImageDataset] = {}
    for s in splits:
        ds = open_source(source, s, path=path, verify=verify, channels=channels, **dict(options or {}))
        name = s if s else (ds.split or "all")
        if source == "imagenet":
            name = ds.split  # the validation images are the paper's test column
        out[name] = ds
    return out


def resolve_labels(clf: Classifier, dataset: LabelledImageDataset, classes: Sequence[str] | str | None,
                   labels: str = "auto") -> str:
    """``"task"`` or ``"source"`` for ``labels="auto"`` (see the module docstring); checks the others.

    Raises:
        ValueError: a binary model without a pair, or a model whose number of outputs fits
            neither the data set's classes nor ``classes``.
    """
    cls = resolve_classes(_class_list(classes), dataset.class_names)
    n_task = None if cls is None else len(cls)
    if clf.binary:
        if n_task != 2:
            raise ValueError(f"a binary model (output={clf.output}) is audited on a pair task: give "
                             "--classes I J (two classes of the data set)")
        if labels == "source":
            raise ValueError("a binary model predicts 0 / 1: audit it with --labels task (class I = 0, "
                             "J = 1)")
        return "task"
    if labels != "auto":
        return labels
    if cls is None:
        return "source"
    x, _ = dataset.batch([0])
    clf.predict(x.to(clf.device))  # one forward pass tells the number of outputs
    k = int(clf.num_classes or 0)
    if k == len(dataset.class_names):
        return "source"
    if k == n_task:
        return "task"
    raise ValueError(f"the model outputs {k} logits, the data set has {len(dataset.class_names)} classes "
                     f"and --classes names {n_task}: say how to label the images, --labels source (the "
                     f"data set's class indices) or --labels task (0..{n_task - 1} in the order given)")


def open_views(datasets: Mapping[str, LabelledImageDataset], classes: Sequence[str] | str | None, *,
               limit: int | None = None, seed: int = 0, labels: str = "task"
               ) -> dict[str, LabelledImageDataset]:
    """The audited images of each split (lazy): :func:`~perturbscope.data.sources.task_view`."""
    cls = _class_list(classes)
    return {name: task_view(ds, cls, limit=limit, seed=seed, labels=labels) for name, ds in datasets.items()}


def _bytes(view: LabelledImageDataset) -> int:
    x, _ = view.batch([0])
    return len(view) * int(x[0].numel()) * 4


def audit_views(clf: Classifier, views: Mapping[str, LabelledImageDataset], config: AuditConfig, *,
                out: str | os.PathLike | None = None, stream: bool | None = None,
                group_size: int | None = None,
                given: Any = None, given_kind: str = "perturbations", progress: bool = True,
                memory_format: torch.memory_format = torch.contiguous_format,
                describe: Mapping[str, Any] | None = None) -> AuditResult:
    """Audit ``clf`` on every split of ``views``; one :class:`AuditResult` (``summary`` by split).

    Args:
        views: split name -> the audited images (:func:`open_views`).
        out: folder of the per-group files of a streamed split (``out/stream/<split>``, resumable).
        stream: ``True`` streams, ``False`` decodes every split into memory, ``None`` streams
            ImageNet and image sets over :data:`STREAM_BYTES` as float32.
        group_size: images per group (default :func:`default_group_size`).
        given: perturbations (or adversarial images, ``given_kind="adversarial"``) ``(N, ...)``
            aligned with the images of the only split (tensor, array or memory-mapped ``.npy``).

    Returns:
        The records of all splits, ``meta["streamed"]``: the splits that were streamed.
    """
    if given is not None and len(views) != 1:
        raise ValueError(f"perturbations computed elsewhere are aligned with the images of one split; "
                         f"audit one split (--splits), not {list(views)}")
    if given_kind not in ("perturbations", "adversarial"):
        raise ValueError(f"given_kind must be 'perturbations' or 'adversarial', got {given_kind!r}")
    if config.batch_size is None and views:  # --forward-batch auto: one choice for every split and group
        from dataclasses import replace

        from perturbscope.audit.run import auto_batch_size

        x1, _ = next(iter(views.values())).batch([0])
        config = replace(config, batch_size=auto_batch_size(clf, x1))
    gsize = group_size or default_group_size(config.batch_size)
    parts: list[AuditResult] = []
    streamed = []
    for name, view in views.items():
        big = view.source == "imagenet" or _bytes(view) > STREAM_BYTES
        if given is not None and int(given.shape[0]) != len(view):
            raise ValueError(f"the {given_kind} file has {int(given.shape[0])} rows, the audited images of "
                             f"split {name!r} number {len(view)}: they must be aligned row for row")
        if stream or (stream is None and big):
            state = None if out is None else Path(out) / "stream" / name
            kw = {given_kind: given} if given is not None else {}
            res = audit_stream(clf, view, config=config, state=state, split=name, group_size=gsize,
                               describe=describe, progress=progress, memory_format=memory_format, **kw)
            streamed.append(name)
        else:
            x, y = view.batch(range(len(view)))
            pert = None
            if given is not None:
                g = given if isinstance(given, torch.Tensor) else torch.from_numpy(np.array(given))
                g = g.to(torch.float32)
                if tuple(g.shape) != tuple(x.shape):
                    raise ValueError(f"the {given_kind} have shape {tuple(g.shape)}, the audited images "
                                     f"{tuple(x.shape)}")
                pert = g if given_kind == "perturbations" else g - x
            x, y = x.to(clf.device), y.to(clf.device)
            if memory_format == torch.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            res = audit(clf, x, y, config=config, perturbations=pert, split=name, progress=progress,
                        memory_format=memory_format)
        parts.append(res)
    records = pd.concat([p.records for p in parts], ignore_index=True)
    summary = {k: v for p in parts for k, v in p.summary.items()}
    meta = dict(parts[0].meta, forwards=sum(int(p.meta.get("forwards", 0)) for p in parts),
                streamed=streamed, group_size=gsize if streamed else None)
    meta = {k: v for k, v in meta.items() if not (isinstance(v, float) and not math.isfinite(v))}
    return AuditResult(records, summary, config, meta)
