"""Binary "class i vs class j" tasks, the unit every audit in the paper works on.

A :class:`PairTask` holds float32 images ``(N, C, H, W)`` in [0, 1] and labels
0 (class ``i``) / 1 (class ``j``). Grayscale images are duplicated to
``channels`` channels (3 by default) as the paper did for Fashion-MNIST, so the
same network architecture serves grey and colour data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Self

import numpy as np
import torch

__all__ = ["PairTask", "pair_task", "load_pair_task", "SOURCES", "MultiClassTask", "multiclass_task",
           "pair_positions", "multiclass_positions", "sample_covering"]

#: Sources understood by :func:`load_pair_task`.
SOURCES: tuple[str, ...] = ("fashion-mnist", "fashion-mnist-subset", "digits")


class _Images:
    """What every task has beside its fields: its size, its input dimension, a copy on a device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def dim(self) -> int:
        """Input dimension d = C * H * W (the d of the d-ball in the random probe)."""
        return int(np.prod(self.x.shape[1:]))

    def to(self, device: torch.device | str) -> Self:
        """A copy with ``x`` and ``y`` on ``device`` (metadata shared)."""
        return replace(self, x=self.x.to(device), y=self.y.to(device))


@dataclass
class PairTask(_Images):
    """A binary task built from two classes of a labelled image set.

    Attributes:
        x: float32 ``(N, C, H, W)``, pixel values in [0, 1].
        y: int64 ``(N,)``, 0 for ``classes[0]`` and 1 for ``classes[1]``.
        classes: the original labels ``(i, j)``.
        class_names: human-readable names of ``i`` and ``j``.
        source: where the images came from (e.g. ``"fashion-mnist"``).
        split: ``"train"``, ``"test"`` or ``""`` when unknown.
        indices: int64 ``(N,)``, the position of each image in the arrays given to
            :func:`pair_task` (provenance; lets a record be traced to its image).
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[int, int]
    class_names: tuple[str, str]
    source: str = ""
    split: str = ""
    indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    def class_counts(self) -> tuple[int, int]:
        """Number of images labelled 0 and 1."""
        n1 = int(self.y.sum())
        return len(self) - n1, n1

    def describe(self) -> str:
        """One line, e.g. ``fashion-mnist/test: 'Sneaker' (7) vs 'Bag' (8), 2000 images 3x28x28``."""
        n0, n1 = self.class_counts()
        where = "/".join(p for p in (self.source, self.split) if p) or "data"
        shape = "x".join(str(s) for s in self.x.shape[1:])
        return (f"{where}: {self.class_names[0]!r} ({self.classes[0]}) vs "
                f"{self.class_names[1]!r} ({self.classes[1]}), {len(self)} images {shape} "
                f"({n0} + {n1})")


def _as_numpy(a: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")


def _to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 / 255; float -> float32 checked to lie in [0, 1]."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(images.dtype, np.floating):
        if images.size and not np.isfinite(images).all():
            bad = int((~np.isfinite(images)).sum())
            raise ValueError(f"images contain {bad} NaN or infinite values")
        if images.size:
            lo, hi = float(images.min()), float(images.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"float images must already be in [0, 1], found values in [{lo:.4g}, {hi:.4g}]; "
                    "divide by the maximum (e.g. 255) first, or pass uint8 images"
                )
        return images.astype(np.float32, copy=False)
    raise ValueError(
        f"images must be uint8 (0..255) or floating point in [0, 1], got dtype {images.dtype}"
    )


def _check_arrays(images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                  channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``images`` as ``(N, C, H, W)`` and ``labels`` as ``(N,)`` numpy arrays, checked."""
    imgs = _as_numpy(images, "images")
    labs = _as_numpy(labels, "labels")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if labs.ndim != 1 or not np.issubdtype(labs.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labs.dtype} {labs.shape}")
    if imgs.ndim == 3:
        imgs = imgs[:, None]
    elif imgs.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {imgs.shape}")
    if imgs.shape[1] not in (1, channels):
        raise ValueError(f"images have {imgs.shape[1]} channels; expected 1 (grey, repeated to "
                         f"{channels}) or channels={channels}")
    if imgs.shape[0] != labs.shape[0]:
        raise ValueError(f"images ({imgs.shape[0]}) and labels ({labs.shape[0]}) differ in length")
    return imgs, labs


def _task_images(imgs: np.ndarray, pos: np.ndarray, channels: int) -> torch.Tensor:
    """float32 ``(n, channels, H, W)`` in [0, 1] of the images at ``pos`` (grey repeated)."""
    x = _to_unit_float(imgs[pos])
    if x.shape[1] != channels:
        x = np.repeat(x, channels, axis=1)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _select_limit(y01: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``limit`` items, as balanced between 0/1 as the counts allow."""
    pos0, pos1 = np.flatnonzero(y01 == 0), np.flatnonzero(y01 == 1)
    k0 = min(pos0.size, limit // 2)
    k1 = min(pos1.size, limit - k0)
    k0 = min(pos0.size, limit - k1)  # give class 0 what class 1 could not use
    rng = np.random.default_rng(seed)
    pick0 = rng.choice(pos0, size=k0, replace=False)
    pick1 = rng.choice(pos1, size=k1, replace=False)
    return np.sort(np.concatenate([pick0, pick1]))


def pair_positions(labels: np.ndarray, i: int, j: int, *, limit: int | None = None, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The images :func:`pair_task` keeps: sorted positions ``(n,)`` and their 0/1 labels ``(n,)``.

    Only the labels are needed, so a lazy source can decode just these images and get the
    same task as :func:`pair_task` on the whole array.

    Raises:
        ValueError: ``i == j``, ``limit < 2`` or a class with no images.
    """
    labs = np.asarray(labels)
    if i == j:
        raise ValueError(f"i and j must be different classes, got i == j == {i}")
    if limit is not None and int(limit) < 2:
        raise ValueError(f"limit must be >= 2 (one image per class at least) or None, got {limit}")
    present = set(np.unique(labs).tolist())
    missing = [c for c in (i, j) if c not in present]
    if missing:
        raise ValueError(f"class(es) {missing} have no images; classes present: {sorted(present)}")
    pos = np.flatnonzero((labs == i) | (labs == j))
    y01 = (labs[pos] == j).astype(np.int64)
    if limit is not None and pos.size > limit:
        keep = _select_limit(y01, int(limit), seed)
        pos, y01 = pos[keep], y01[keep]
    return pos, y01


def pair_task(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    i: int,
    j: int,
    *,
    channels: int = 3,
    limit: int | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    source: str = "",
    split: str = "",
) -> PairTask:
    """Build the binary task "class ``i`` (label 0) vs class ``j`` (label 1)".

    Args:
        images: ``(N, H, W)`` or ``(N, 1, H, W)`` grayscale, or ``(N, channels, H, W)``;
            uint8 in 0..255 (divided by 255) or float already in [0, 1].
        labels: integer class labels ``(N,)``.
        i, j: the two classes to keep (different).
        channels: output channels; a grey image is repeated ``channels`` times
            (3, as the paper did, so one network serves grey and RGB data).
        limit: keep at most this many images: half from each class where
            possible, drawn with ``seed`` (same seed, same images), then kept in
            their original order. ``None`` keeps all.
        seed: seed of that selection.
        class_names: names of all classes, indexed by label (e.g.
            ``FASHION_MNIST_CLASSES``); default: the labels as strings.
        source, split: recorded in the result for reports.

    Returns:
        A :class:`PairTask` with ``x`` float32 ``(n, channels, H, W)`` in [0, 1] and
        ``y`` int64 ``(n,)`` in {0, 1}, on the CPU.

    Raises:
        ValueError: ``i == j``, a class with no images, NaN or out-of-range
            pixels, mismatched lengths, bad shapes, ``limit < 2`` or ``channels < 1``.
    """
    imgs, labs = _check_arrays(images, labels, channels)
    i, j = int(i), int(j)
    pos, y01 = pair_positions(labs, i, j, limit=limit, seed=seed)
    if class_names is not None:
        names = tuple(str(n) for n in class_names)
        if max(i, j) >= len(names) or min(i, j) < 0:
            raise ValueError(f"class_names has {len(names)} entries, cannot name classes {i}, {j}")
        pair_names = (names[i], names[j])
    else:
        pair_names = (str(i), str(j))
    return PairTask(
        x=_task_images(imgs, pos, channels),
        y=torch.from_numpy(y01),
        classes=(i, j),
        class_names=pair_names,
        source=source,
        split=split,
        indices=torch.from_numpy(pos.astype(np.int64)),
    )


def load_pair_task(
    source: Literal["fashion-mnist", "fashion-mnist-subset", "digits"],
    split: Literal["train", "test"],
    i: int,
    j: int,
    *,
    path: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    channels: int = 3,
) -> PairTask:
    """Load a data set and build the pair task in one call.

    Args:
        source: ``"fashion-mnist"`` (full data, found as described in
            :func:`~perturbscope.data.fashion_mnist.find_fashion_mnist`),
            ``"fashion-mnist-subset"`` (shipped with the package, 300 train / 100
            test images per class) or ``"digits"`` (scikit-learn 8x8 digits, with
            the deterministic 75/25 split of :func:`~perturbscope.data.digits.digits_split`).
        split: ``"train"`` or ``"test"``.
        i, j: classes, label 0 and label 1.
        path: data directory, only for ``source="fashion-mnist"``.
        limit, seed, channels: as in :func:`pair_task`.
    """
    from perturbscope.data.digits import DIGITS_CLASSES, digits_split
    from perturbscope.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
    from perturbscope.data.subset import load_fashion_mnist_subset

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if path is not None and source != "fashion-mnist":
        raise ValueError(f"path applies only to source='fashion-mnist', not {source!r}")
    if source == "fashion-mnist":
        images, labels = load_fashion_mnist(split, path=path)
        names: Sequence[str] = FASHION_MNIST_CLASSES
    elif source == "fashion-mnist-subset":
        images, labels = load_fashion_mnist_subset(split)
        names = FASHION_MNIST_CLASSES
    else:
        images, labels = digits_split(split)
        names = DIGITS_CLASSES
    return pair_task(images, labels, i, j, channels=channels, limit=limit, seed=seed,
                     class_names=names, source=source, split=split)


@dataclass
class MultiClassTask(_Images):
    """A multi-class task: some (or all) classes of a labelled image set.

    Attributes:
        x: float32 ``(N, C, H, W)``, pixel values in [0, 1].
        y: int64 ``(N,)``: the position of each image's original class in ``classes``. With all
            classes kept (``classes = (0, ..., K-1)``) this is the original label, so the class
            indices of a model trained on the full set (e.g. a pretrained ImageNet model) apply.
        classes: the original labels, in the order of the new labels.
        class_names: names of ``classes``, in the same order.
        source, split: where the images came from.
        indices: int64 ``(N,)``, each image's position in the source (provenance).
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    source: str = ""
    split: str = ""
    indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    @property
    def num_classes(self) -> int:
        """K, the number of classes of the task (present or not)."""
        return len(self.classes)

    def class_counts(self) -> tuple[int, ...]:
        """Number of images of each class, in the order of ``classes``."""
        return tuple(int(c) for c in torch.bincount(self.y.cpu(), minlength=self.num_classes))

    def describe(self) -> str:
        """One line, e.g. ``cifar10/test: 10 classes (10 present), 1000 images 3x32x32``."""
        where = "/".join(p for p in (self.source, self.split) if p) or "data"
        shape = "x".join(str(s) for s in self.x.shape[1:])
        present = sum(1 for c in self.class_counts() if c)
        return f"{where}: {self.num_classes} classes ({present} present), {len(self)} images {shape}"


def sample_covering(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A seeded choice of at most ``n`` positions that includes every class present.

    The paper's ImageNet sampling (Section 7.1.5: 20,480 validation images, every class
    represented, classes not balanced): with ``rng = numpy.random.default_rng(seed)``, one image
    of each class present (classes in increasing order, each chosen uniformly among that class's
    images), then the rest drawn uniformly without replacement from the remaining images.
    Returns the positions sorted (original order). ``n >= len(labels)`` keeps all.

    Raises:
        ValueError: ``n`` smaller than the number of classes present.
    """
    labs = np.asarray(labels)
    if labs.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labs.shape}")
    n = int(n)
    if n >= labs.size:
        return np.arange(labs.size, dtype=np.int64)
    present = np.unique(labs)
    if n < present.size:
        raise ValueError(f"limit={n} is smaller than the {present.size} classes present; every class "
                         "must be represented (give limit >= the number of classes)")
    rng = np.random.default_rng(seed)
    first = np.array([rng.choice(np.flatnonzero(labs == c)) for c in present], dtype=np.int64)
    rest = np.setdiff1d(np.arange(labs.size, dtype=np.int64), first)
    fill = rng.choice(rest, size=n - first.size, replace=False) if n > first.size else rest[:0]
    return np.sort(np.concatenate([first, fill.astype(np.int64)]))


def multiclass_positions(labels: np.ndarray, classes: Sequence[int], *, limit: int | None = None,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(n,)`` of the images of ``classes`` and their new labels (index in ``classes``).

    ``limit`` keeps at most that many with :func:`sample_covering` (every class present stays).
    """
    labs = np.asarray(labels)
    cls = [int(c) for c in classes]
    if len(set(cls)) != len(cls):
        raise ValueError(f"classes must be different, got {cls}")
    present = set(np.unique(labs).tolist())
    missing = [c for c in cls if c not in present]
    if missing:
        raise ValueError(f"class(es) {missing} have no images; classes present: {sorted(present)}")
    lookup = {c: k for k, c in enumerate(cls)}
    pos = np.flatnonzero(np.isin(labs, cls))
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        pos = pos[sample_covering(labs[pos], int(limit), seed)]
    new = np.fromiter((lookup[int(v)] for v in labs[pos]), dtype=np.int64, count=pos.size)
    return pos, new


def multiclass_task(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    channels: int = 3,
    limit: int | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    source: str = "",
    split: str = "",
) -> MultiClassTask:
    """Build a multi-class task from ``classes`` (default: all classes, labels kept).

    Args:
        images: ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, channels, H, W)``; uint8 in 0..255 or
            float in [0, 1] (as :func:`pair_task`).
        labels: integer class labels ``(N,)``.
        classes: original labels to keep, relabelled 0..k-1 in this order. ``None``: every class
            ``0..K-1`` (``K = len(class_names)``, else ``max(labels) + 1``), labels unchanged.
        channels: output channels (grey repeated).
        limit: keep at most this many images, every class present still represented
            (:func:`sample_covering`, seeded by ``seed``), in their original order.
        class_names: names of all classes, indexed by original label.
        source, split: recorded in the result.

    Returns:
        A :class:`MultiClassTask` (``x`` float32 ``(n, channels, H, W)`` in [0, 1], on the CPU).
    """
    imgs, labs = _check_arrays(images, labels, channels)
    if labs.size and int(labs.min()) < 0:
        raise ValueError(f"labels must be >= 0, found {int(labs.min())}")
    names = tuple(str(n) for n in class_names) if class_names is not None else None
    if classes is None:
        k = len(names) if names is not None else (int(labs.max()) + 1 if labs.size else 0)
        if labs.size and int(labs.max()) >= k:
            raise ValueError(f"label {int(labs.max())} has no name: class_names has {k} entries")
        cls: tuple[int, ...] = tuple(range(k))
        pos = np.arange(labs.size, dtype=np.int64)
        if limit is not None:
            pos = sample_covering(labs, int(limit), seed)
        new = labs[pos].astype(np.int64)
    else:
        cls = tuple(int(c) for c in classes)
        if not cls:
            raise ValueError("classes must name at least one class, or be None for all")
        pos, new = multiclass_positions(labs, cls, limit=limit, seed=seed)
    if names is not None:
        bad = [c for c in cls if not 0 <= c < len(names)]
        if bad:
            raise ValueError(f"class_names has {len(names)} entries, cannot name classes {bad}")
        task_names = tuple(names[c] for c in cls)
    else:
        task_names = tuple(str(c) for c in cls)
    return MultiClassTask(
        x=_task_images(imgs, pos, channels),
        y=torch.from_numpy(new.astype(np.int64)),
        classes=cls,
        class_names=task_names,
        source=source,
        split=split,
        indices=torch.from_numpy(pos.astype(np.int64)),
    )
