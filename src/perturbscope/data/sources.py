"""One registry of data sources: name -> loader, and one call that gives a task.

>>> from perturbscope.data.sources import load_source
>>> task = load_source("fashion-mnist-subset", "test", classes=(7, 9), limit=200)   # PairTask
>>> task = load_source("cifar10", "test", path="~/data/cifar-10-python.tar.gz")       # MultiClassTask
>>> ds = open_source("imagenet", "val", path="~/data/imagenet")                      # lazy Dataset

``classes`` with two entries gives the same :class:`~perturbscope.data.tasks.PairTask` as
:func:`~perturbscope.data.tasks.pair_task` on the whole split (only those images are decoded);
``None`` or more entries give a :class:`~perturbscope.data.tasks.MultiClassTask`. Every source
can also be streamed: :func:`open_source` returns a
:class:`~perturbscope.data.streaming.LabelledImageDataset` for
:func:`~perturbscope.data.streaming.iter_batches` or a ``DataLoader``.

Sources, their options and files: :data:`SOURCE_REGISTRY` and docs/data.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from perturbscope.data.streaming import ArrayImageDataset, LabelledImageDataset, SubsetImageDataset
from perturbscope.data.tasks import (
    MultiClassTask,
    PairTask,
    multiclass_positions,
    multiclass_task,
    pair_positions,
    pair_task,
    sample_covering,
)

__all__ = ["SourceInfo", "SOURCE_REGISTRY", "SOURCE_NAMES", "open_source", "load_source",
           "task_from_dataset", "resolve_classes", "task_view", "LABEL_MODES"]


@dataclass(frozen=True)
class SourceInfo:
    """One registered source.

    Attributes:
        name: the registry key (``--source`` on the command line).
        summary: one line for help texts.
        splits: accepted splits (``()``: any, e.g. a sub-folder name, or none).
        needs_path: whether ``path`` is required (else it must be ``None``, or it is optional
            with an environment variable / default location).
        path_optional: ``path`` may be omitted (an environment variable or a system location).
        options: extra keyword options the opener accepts.
        verifies: whether ``verify`` does anything for this source.
        opener: ``(split, path, verify, channels, **options) -> LabelledImageDataset``.
    """

    name: str
    summary: str
    splits: tuple[str, ...]
    needs_path: bool
    path_optional: bool
    options: tuple[str, ...]
    verifies: bool
    opener: Callable[..., LabelledImageDataset]


def _fashion_mnist(split: str, path: Any, verify: bool, channels: int) -> LabelledImageDataset:
    from perturbscope.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

    x, y = load_fashion_mnist(split, path=path, verify=verify)  # type: ignore[arg-type]
    return ArrayImageDataset(x, y, FASHION_MNIST_CLASSES, source="fashion-mnist", split=split,
                             channels=channels)


def _fashion_mnist_subset(split: str, path: Any, verify: bool, channels: int) -> LabelledImageDataset:
    from perturbscope.data.fashion_mnist import FASHION_MNIST_CLASSES
    from perturbscope.data.subset import load_fashion_mnist_subset

    x, y = load_fashion_mnist_subset(split, verify=verify)  # type: ignore[arg-type]
    return ArrayImageDataset(x, y, FASHION_MNIST_CLASSES, source="fashion-mnist-subset", split=split,
                             channels=channels)


def _digits(split: str, path: Any, verify: bool, channels: int) -> LabelledImageDataset:
    from perturbscope.data.digits import DIGITS_CLASSES, digits_split

    x, y = digits_split(split)  # type: ignore[arg-type]
    return ArrayImageDataset(x, y, DIGITS_CLASSES, source="digits", split=split, channels=channels)


def _cifar10(split: str, path: Any, verify: bool, channels: int, **opts: Any) -> LabelledImageDataset:
    from perturbscope.data.cifar10 import CIFAR10Dataset

    return CIFAR10Dataset(split, path, verify=verify, channels=channels, **opts)  # type: ignore[arg-type]


def _gtsrb(classes: str) -> Callable[..., LabelledImageDataset]:
    def opener(split: str, path: Any, verify: bool, channels: int, **opts: Any) -> LabelledImageDataset:
        from perturbscope.data.gtsrb import GTSRBDataset

        return GTSRBDataset(split, path, classes=classes, verify=verify, channels=channels,  # type: ignore
                            **opts)
    return opener


def _imagenet(split: str, path: Any, verify: bool, channels: int, **opts: Any) -> LabelledImageDataset:
    from perturbscope.data.imagenet import ImageNetDataset

    return ImageNetDataset(path, split, channels=channels, **opts)


def _folder(split: str, path: Any, verify: bool, channels: int, **opts: Any) -> LabelledImageDataset:
    from perturbscope.data.folder import ImageFolderDataset

    return ImageFolderDataset(path, split or None, channels=channels, **opts)


def _arrays(split: str, path: Any, verify: bool, channels: int, **opts: Any) -> LabelledImageDataset:
    from perturbscope.data.arrays import ArraysDataset

    return ArraysDataset(path, split or None, channels=channels, **opts)


_TT = ("train", "test")
_GTSRB_OPTS = ("size", "roi", "checksums")
_ARRAY_OPTS = ("labels", "x_key", "y_key", "layout", "value_range")

#: Every source by name.
SOURCE_REGISTRY: dict[str, SourceInfo] = {s.name: s for s in (
    SourceInfo("fashion-mnist", "full Fashion-MNIST, official IDX files (path, $PERTURBSCOPE_FASHION_MNIST "
               "or the Debian package)", _TT, False, True, (), True, _fashion_mnist),
    SourceInfo("fashion-mnist-subset", "stratified Fashion-MNIST subset shipped in the package (300 train "
               "/ 100 test per class)", _TT, False, False, (), True, _fashion_mnist_subset),
    SourceInfo("digits", "scikit-learn's 8x8 digits, deterministic 75/25 split", _TT, False, False, (),
               False, _digits),
    SourceInfo("cifar10", "CIFAR-10, official python or binary archive / folder (path or "
               "$PERTURBSCOPE_CIFAR10)", _TT, False, True, ("checksums",), True, _cifar10),
    SourceInfo("gtsrb", "GTSRB, the paper's 7 classes (Table 22) as labels 0..6, official zips (path or "
               "$PERTURBSCOPE_GTSRB)", _TT, False, True, _GTSRB_OPTS, True, _gtsrb("paper")),
    SourceInfo("gtsrb-all", "GTSRB, all 43 classes with their official ids", _TT, False, True,
               _GTSRB_OPTS, True, _gtsrb("all")),
    SourceInfo("imagenet", "ImageNet validation images, WNID folders or flat + labels (path or "
               "$PERTURBSCOPE_IMAGENET)", ("val", "test", "train"), False, True,
               ("ground_truth", "meta", "labels_file", "resize", "crop"), False, _imagenet),
    SourceInfo("folder", "your images, one sub-folder per class (classes = sorted folder names)", (),
               True, False, ("size", "grayscale", "extensions"), False, _folder),
    SourceInfo("npz", "your arrays: an .npz (x/images/data, y/labels/targets) or a .npy pair", (), True,
               False, _ARRAY_OPTS, False, _arrays),
)}
SOURCE_REGISTRY["arrays"] = SOURCE_REGISTRY["npz"]

#: Registered names (``"arrays"`` is an alias of ``"npz"``).
SOURCE_NAMES: tuple[str, ...] = tuple(SOURCE_REGISTRY)


def open_source(name: str, split: str | None = None, *, path: str | os.PathLike | Sequence[Any] | None = None,
                verify: bool = True, channels: int = 3, **options: Any) -> LabelledImageDataset:
    """The lazy dataset of source ``name`` (see :data:`SOURCE_REGISTRY`).

    Args:
        name: a registered source.
        split: one of the source's splits (``"train"`` / ``"test"``; ImageNet ``"val"`` = ``"test"``;
            for ``folder`` a sub-folder name or ``None``; for ``npz`` the key suffix or ``None``).
        path: the user's file or folder (see docs/data.md); required for ``folder`` / ``npz``.
        verify: check official checksums where the source has them (``False``: skip, the
            command line's ``--no-verify``).
        channels: channels of the images (grey repeated; 3 by default).
        options: source options, e.g. ``size=32`` (GTSRB / folder), ``value_range=(0, 1)`` (npz).

    Raises:
        ValueError: unknown name or split, a path where none applies or none where one is needed.
        TypeError: an option the source does not take.
    """
    info = SOURCE_REGISTRY.get(name)
    if info is None:
        raise ValueError(f"unknown data source {name!r}; known: {', '.join(SOURCE_NAMES)}")
    if info.splits and split not in info.splits:
        raise ValueError(f"split must be one of {info.splits} for source {name!r}, got {split!r}")
    if path is not None and not (info.needs_path or info.path_optional):
        raise ValueError(f"source {name!r} takes no path (its data ships with the package)")
    if path is None and info.needs_path:
        raise ValueError(f"source {name!r} needs path=<your file or folder> (see docs/data.md)")
    bad = sorted(set(options) - set(info.options))
    if bad:
        allowed = ", ".join(info.options) or "none"
        raise TypeError(f"source {name!r} does not take option(s) {bad}; its options: {allowed}")
    if isinstance(channels, bool) or int(channels) < 1:
        raise ValueError(f"channels must be an int >= 1, got {channels!r}")
    return info.opener(split or "", path, bool(verify), int(channels), **options)


def resolve_classes(classes: Sequence[int | str] | str | None, class_names: Sequence[str]
                    ) -> tuple[int, ...] | None:
    """Class labels from ints, digit strings, class names or ``"3,5"``; ``None`` stays ``None``."""
    if classes is None:
        return None
    items: Sequence[Any] = classes.split(",") if isinstance(classes, str) else classes
    out: list[int] = []
    lower = {n.lower(): k for k, n in enumerate(class_names)}
    for c in items:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            out.append(int(c))
        elif isinstance(c, str) and c.strip().lstrip("-").isdigit():
            out.append(int(c.strip()))
        elif isinstance(c, str) and c.strip().lower() in lower:
            out.append(lower[c.strip().lower()])
        else:
            raise ValueError(f"class {c!r} is neither a label nor a class name; names: "
                             f"{', '.join(class_names[:12])}{' ...' if len(class_names) > 12 else ''}")
    k = len(class_names)
    bad = [c for c in out if not 0 <= c < k]
    if bad:
        raise ValueError(f"class(es) {bad} outside the labels 0..{k - 1} of this source")
    return tuple(out)


def task_from_dataset(dataset: LabelledImageDataset, classes: Sequence[int | str] | str | None = None, *,
                      limit: int | None = None, seed: int = 0) -> PairTask | MultiClassTask:
    """A task from a lazy dataset, decoding only the images it keeps.

    Two classes give the :class:`PairTask` that :func:`pair_task` gives on the whole split
    (first class label 0, second label 1, ``limit`` balanced); ``None`` (all classes, labels
    kept) or another number of classes give a :class:`MultiClassTask` (``limit``: every class
    present represented, :func:`sample_covering`). ``task.indices`` are positions in the
    dataset (in its parent for a :class:`SubsetImageDataset`).
    """
    cls = resolve_classes(classes, dataset.class_names)
    labels = dataset.labels
    if cls is not None and len(cls) == 2:
        i, j = cls
        pos, _ = pair_positions(labels, i, j, limit=limit, seed=seed)
        task: PairTask | MultiClassTask = pair_task(
            dataset.decode_many(pos), labels[pos], i, j, channels=dataset.channels,
            class_names=dataset.class_names, source=dataset.source, split=dataset.split)
    else:
        if cls is None:
            pos = np.arange(labels.size, dtype=np.int64) if limit is None else \
                sample_covering(labels, int(limit), seed)
        else:
            pos, _ = multiclass_positions(labels, cls, limit=limit, seed=seed)
        if pos.size == 0:
            raise ValueError(f"{dataset.describe()}: no images to build a task from")
        task = multiclass_task(dataset.decode_many(pos), labels[pos], cls, channels=dataset.channels,
                               class_names=dataset.class_names, source=dataset.source, split=dataset.split)
    kept = pos[task.indices.numpy()]
    if isinstance(dataset, SubsetImageDataset):
        kept = dataset.indices[kept]
    task.indices = torch.from_numpy(kept.astype(np.int64))
    return task


#: how :func:`task_view` labels the images: positions in ``classes`` (a pair: 0 / 1) or the source's own
LABEL_MODES: tuple[str, ...] = ("task", "source")


def task_view(dataset: LabelledImageDataset, classes: Sequence[int | str] | str | None = None, *,
              limit: int | None = None, seed: int = 0, labels: str = "task") -> SubsetImageDataset:
    """The images :func:`task_from_dataset` keeps, as a lazy view (nothing decoded), for streaming.

    Args:
        dataset: a source's dataset (:func:`open_source`).
        classes: two classes: the pair task (``limit`` balanced, seeded, as :func:`pair_task`);
            ``None`` / ``"all"``: every image (``limit``: every class present represented,
            :func:`sample_covering`); other lists: the images of those classes.
        labels: ``"task"``: a pair is labelled 0 (``classes[0]``) / 1 (``classes[1]``) and a class
            list 0..k-1 in its order (the paper's binary tasks; a model trained on that task);
            ``"source"``: the source's own labels are kept (a model trained on every class of the
            data set, e.g. a pretrained ImageNet or CIFAR-10 model audited on some of them).
            With all classes both are the source's labels.

    Returns:
        A :class:`~perturbscope.data.streaming.SubsetImageDataset`; ``view.indices`` are positions
        in ``dataset`` (in its parent for a subset), ``view.class_names`` the names of its labels.
        Its images, decoded, are exactly those of :func:`task_from_dataset` (same order).
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
    if isinstance(classes, str) and classes.strip().lower() == "all":
        classes = None
    if isinstance(classes, (list, tuple)) and len(classes) == 1 and str(classes[0]).strip().lower() == "all":
        classes = None
    cls = resolve_classes(classes, dataset.class_names)
    labs = dataset.labels
    names: Sequence[str] | None = None
    if cls is not None and len(cls) == 2:
        i, j = cls
        pos, new = pair_positions(labs, i, j, limit=limit, seed=seed)
        if labels == "task":
            names = (dataset.class_names[i], dataset.class_names[j])
    elif cls is None:
        pos = (np.arange(labs.size, dtype=np.int64) if limit is None
               else sample_covering(labs, int(limit), seed))
        new = labs[pos]
    else:
        pos, new = multiclass_positions(labs, cls, limit=limit, seed=seed)
        if labels == "task":
            names = tuple(dataset.class_names[c] for c in cls)
    if pos.size == 0:
        raise ValueError(f"{dataset.describe()}: no images to audit")
    view = SubsetImageDataset(dataset, pos, labels=new if labels == "task" else labs[pos], class_names=names)
    if isinstance(dataset, SubsetImageDataset):  # positions in the original data set
        view = SubsetImageDataset(dataset.parent, dataset.indices[pos], labels=view.labels,
                                  class_names=view.class_names)
    return view


def load_source(name: str, split: str | None = None, *, path: str | os.PathLike | Sequence[Any] | None = None,
                classes: Sequence[int | str] | str | None = None, limit: int | None = None, seed: int = 0,
                channels: int = 3, verify: bool = True, **options: Any) -> PairTask | MultiClassTask:
    """Load source ``name`` and build its task in one call.

    Args:
        name, split, path, verify, channels, options: as in :func:`open_source`.
        classes: two classes -> a :class:`PairTask` (``classes[0]`` label 0, ``classes[1]`` label 1);
            ``None`` -> every class, labels kept; other lists -> those classes relabelled 0..k-1 in
            order (:class:`MultiClassTask`). Labels (ints / digit strings) or class names.
        limit: at most this many images (pairs: half per class; multi-class: every class
            present represented); seed: seed of that choice.

    Returns:
        :class:`PairTask` or :class:`MultiClassTask`, ``x`` float32 NCHW in [0, 1].
    """
    ds = open_source(name, split, path=path, verify=verify, channels=channels, **options)
    return task_from_dataset(ds, classes, limit=limit, seed=seed)
