"""Streaming images: lazy datasets and one batch iterator for every kind of input.

* :class:`LabelledImageDataset`: the map-style ``torch.utils.data.Dataset`` every source
  returns. Its labels are known up front (``dataset.labels``, no image decoded); item ``i`` is
  decoded on demand as ``(x, y)``: ``x`` float32 ``(C, H, W)`` in [0, 1] (grey repeated to
  ``channels``), ``y`` an int. It works with a ``DataLoader`` (also with worker processes).
* :class:`ArrayImageDataset`: the same over arrays already in memory (or memory-mapped).
* :func:`iter_batches`: ``(x, y)`` batches, float32 NCHW in [0, 1] and int64, from a
  Dataset, a DataLoader or any iterable of ``(x, y)`` batches (NHWC converted).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

__all__ = ["LabelledImageDataset", "SubsetImageDataset", "ArrayImageDataset", "iter_batches",
           "as_nchw_batch", "to_unit_float"]


def to_unit_float(images: np.ndarray, channels: int | None = None) -> np.ndarray:
    """uint8 -> float32 / 255, float -> float32 (must lie in [0, 1]); grey repeated to ``channels``.

    ``images``: ``(N, C, H, W)``, ``(N, H, W)`` (grey) or a single ``(C, H, W)`` / ``(H, W)``
    when the caller says so by passing ``channels``; shapes are otherwise kept.
    """
    a = np.asarray(images)
    if a.dtype == np.uint8:
        out = a.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(a.dtype, np.floating):
        out = a.astype(np.float32, copy=False)
        if out.size and not (np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0):
            raise ValueError(f"float images must be finite and in [0, 1], found [{out.min():.4g}, "
                             f"{out.max():.4g}]")
    else:
        raise ValueError(f"images must be uint8 (0..255) or float in [0, 1], got dtype {a.dtype}")
    return out


class LabelledImageDataset(Dataset):
    """A labelled image set whose images are decoded only when asked for.

    Subclasses implement :meth:`decode` (one raw image: uint8 ``(C, H, W)`` / ``(H, W)`` or float
    in [0, 1]) and set ``labels`` (int64 ``(N,)``) and ``class_names`` (indexed by label).

    Attributes:
        labels: int64 ``(N,)``, known without decoding any image.
        class_names: names of all classes of the label space, indexed by label.
        source: the source's name (e.g. ``"cifar10"``); split: ``"train"``, ``"test"``, ...
        channels: channels of the returned items (grey images are repeated).
    """

    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""
    split: str = ""
    channels: int = 3

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def decode(self, index: int) -> np.ndarray:
        """The raw image ``index``: uint8 ``(C, H, W)`` or ``(H, W)``, or float in [0, 1]."""
        raise NotImplementedError

    def decode_many(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Raw images ``(n, C, H, W)`` (or ``(n, H, W)``) for ``indices``, in that order."""
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        if not idx:
            raise ValueError("decode_many needs at least one index")
        first = self.decode(idx[0])
        out = np.empty((len(idx), *first.shape), dtype=first.dtype)
        out[0] = first
        for k, i in enumerate(idx[1:], start=1):
            img = self.decode(i)
            if img.shape != first.shape:
                raise ValueError(f"{self.source or 'dataset'}: image {i} has shape {img.shape}, image "
                                 f"{idx[0]} has {first.shape}; images of one batch must have one size "
                                 "(give the loader a size= to resize them)")
            out[k] = img
        return out

    def _check_index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return i

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        """Raw ``(n, C, H, W)`` / ``(n, H, W)`` -> float32 ``(n, channels, H, W)`` in [0, 1]."""
        x = to_unit_float(raw)
        if x.ndim == 3:
            x = x[:, None]
        if x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise ValueError(f"images have {x.shape[1]} channels, the dataset was asked for "
                                 f"channels={self.channels} (only grey images are repeated)")
            x = np.repeat(x, self.channels, axis=1)
        return np.ascontiguousarray(x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i = self._check_index(index)
        x = self._finish(self.decode(i)[None])[0]
        return torch.from_numpy(x), int(self.labels[i])

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 ``(n, channels, H, W)`` in [0, 1] and int64 ``(n,)`` for ``indices``."""
        idx = np.asarray([self._check_index(int(i)) for i in np.asarray(indices).reshape(-1)],
                         dtype=np.int64)
        x = self._finish(self.decode_many(idx))
        return torch.from_numpy(x), torch.from_numpy(self.labels[idx].astype(np.int64))

    def subset(self, indices: Sequence[int] | np.ndarray) -> SubsetImageDataset:
        """A lazy view of the images at ``indices`` (in that order); ``view.indices`` maps back."""
        return SubsetImageDataset(self, indices)

    def describe(self) -> str:
        """One line: source, split, number of images and classes."""
        where = "/".join(p for p in (self.source, self.split) if p) or "dataset"
        present = np.unique(self.labels).size if len(self) else 0
        return f"{where}: {len(self)} images, {present} of {len(self.class_names)} classes present"


class SubsetImageDataset(LabelledImageDataset):
    """Some images of a :class:`LabelledImageDataset`, still lazy.

    Args:
        parent: the full dataset; indices: positions in ``parent``, in the order wanted.
        labels: optional new labels ``(n,)`` of those images (e.g. 0/1 of a pair task); default:
            the parent's. class_names: names indexed by the new labels (default: the parent's).

    Attributes:
        parent: the full dataset; indices: int64 ``(n,)``, positions in ``parent``.
    """

    def __init__(self, parent: LabelledImageDataset, indices: Sequence[int] | np.ndarray,
                 labels: Sequence[int] | np.ndarray | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(parent)):
            raise IndexError(f"indices must lie in 0..{len(parent) - 1}")
        self.parent, self.indices = parent, idx
        if labels is None:
            self.labels = parent.labels[idx]
        else:
            lab = np.asarray(labels, dtype=np.int64).reshape(-1)
            if lab.shape != idx.shape:
                raise ValueError(f"labels must have shape {idx.shape} like the indices, got {lab.shape}")
            self.labels = lab
        self.class_names = parent.class_names if class_names is None else tuple(str(c) for c in class_names)
        self.source, self.split, self.channels = parent.source, parent.split, parent.channels

    def decode(self, index: int) -> np.ndarray:
        return self.parent.decode(int(self.indices[self._check_index(index)]))

    def decode_many(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.parent.decode_many(self.indices[np.asarray(indices, dtype=np.int64)])


class ArrayImageDataset(LabelledImageDataset):
    """A :class:`LabelledImageDataset` over arrays in memory (or ``np.memmap``).

    Args:
        images: uint8 or float (in [0, 1]) ``(N, C, H, W)`` or grey ``(N, H, W)``.
        labels: integer ``(N,)``.
        class_names: names indexed by label (default: ``"0"``, ``"1"``, ...).
        source, split, channels: as in :class:`LabelledImageDataset`.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None,
                 *, source: str = "", split: str = "", channels: int = 3) -> None:
        if images.ndim not in (3, 4):
            raise ValueError(f"images must be (N, C, H, W) or (N, H, W), got shape {images.shape}")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be (N,) with N = {images.shape[0]}, got {labels.shape}")
        if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
        self.images = images
        self.labels = labels.astype(np.int64)
        k = int(self.labels.max()) + 1 if self.labels.size else 0
        self.class_names = tuple(class_names) if class_names is not None else tuple(map(str, range(k)))
        self.source, self.split, self.channels = source, split, int(channels)

    def decode(self, index: int) -> np.ndarray:
        return np.asarray(self.images[index])

    def decode_many(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(self.images[np.asarray(indices, dtype=np.int64)])


def _to_tensor(a: Any, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu()
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))
    if isinstance(a, (list, tuple, int, np.integer)):
        return torch.as_tensor(a)
    raise TypeError(f"{what} must be a tensor or numpy array, got {type(a).__name__}")


def as_nchw_batch(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch as float32 ``(N, C, H, W)`` in [0, 1] and int64 ``(N,)``.

    ``x`` may be NCHW, NHWC (a last axis of 1, 3 or 4 and a second axis that is not, or is
    larger: ``(N, 4, 4, 3)``; a tie such as ``(N, 3, 5, 3)`` is read as NCHW), or grey ``(N, H, W)``;
    uint8 is divided by 255, float is kept (it must already lie in [0, 1]).
    Other shapes raise a ``ValueError`` naming the shape.
    """
    xt, yt = _to_tensor(x, "x"), _to_tensor(y, "y")
    if xt.ndim == 3:
        xt = xt[:, None]
    elif xt.ndim == 4:
        c1, c3 = xt.shape[1] in (1, 3, 4), xt.shape[3] in (1, 3, 4)
        if not (c1 or c3):
            raise ValueError(f"cannot find the channel axis of a batch of shape {tuple(xt.shape)}: "
                             "expected (N, C, H, W) or (N, H, W, C) with C in 1, 3, 4")
        if c3 and (not c1 or xt.shape[3] < xt.shape[1]):  # (N, 4, 4, 3) is NHWC, (N, 3, 5, 3) NCHW
            xt = xt.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"a batch of images must be (N, C, H, W), (N, H, W, C) or (N, H, W), got "
                         f"shape {tuple(xt.shape)}")
    if xt.dtype == torch.uint8:
        xt = xt.to(torch.float32) / 255.0
    elif xt.is_floating_point():
        xt = xt.to(torch.float32)
    else:
        raise ValueError(f"images must be uint8 or floating point, got dtype {xt.dtype}")
    yt = yt.reshape(-1)
    if yt.is_floating_point() or yt.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {yt.dtype}")
    if yt.shape[0] != xt.shape[0]:
        raise ValueError(f"a batch has {xt.shape[0]} images but {yt.shape[0]} labels")
    return xt.contiguous(), yt.to(torch.int64)


def _item_batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = len(dataset)  # type: ignore[arg-type]
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        xs = [_to_tensor(it[0], "x") for it in items]
        yield torch.stack(xs), torch.as_tensor([int(it[1]) for it in items])


def iter_batches(data: Dataset | DataLoader | Iterable[Any], batch_size: int = 256
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches: float32 ``(B, C, H, W)`` in [0, 1] and int64 ``(B,)``.

    Args:
        data: a :class:`LabelledImageDataset` (decoded ``batch_size`` images at a time), any
            map-style ``Dataset`` of ``(x, y)`` items (``x`` ``(C, H, W)`` or ``(H, W, C)``), an
            ``IterableDataset`` of such items, a ``DataLoader``, or any iterable of ``(x, y)``
            batches (NCHW, NHWC or ``(N, H, W)``; uint8 or float in [0, 1]).
        batch_size: images per batch (>= 1); the last batch may be smaller. Batches from a
            DataLoader or an iterable are re-cut to this size.

    Only one batch (plus what the input holds) is in memory at a time.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    bs = int(batch_size)
    if isinstance(data, LabelledImageDataset):
        n = len(data)
        for start in range(0, n, bs):
            yield data.batch(np.arange(start, min(n, start + bs)))
        return
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__"):
        batches: Iterable[Any] = _item_batches(data, bs)
    elif isinstance(data, IterableDataset):
        def _grouped() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            buf: list[Any] = []
            for it in data:
                buf.append(it)
                if len(buf) == bs:
                    yield torch.stack([_to_tensor(b[0], "x") for b in buf]), torch.as_tensor(
                        [int(b[1]) for b in buf])
                    buf = []
            if buf:
                yield torch.stack([_to_tensor(b[0], "x") for b in buf]), torch.as_tensor(
                    [int(b[1]) for b in buf])
        batches = _grouped()
    elif isinstance(data, Iterable):
        batches = data
    else:
        raise TypeError(f"iter_batches needs a Dataset, a DataLoader or an iterable of (x, y) batches, "
                        f"got {type(data).__name__}")
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    held = 0
    for k, b in enumerate(batches):
        if not isinstance(b, (tuple, list)) or len(b) < 2:
            raise ValueError(f"batch {k} is a {type(b).__name__}, expected an (x, y) pair")
        x, y = as_nchw_batch(b[0], b[1])
        xs.append(x)
        ys.append(y)
        held += x.shape[0]
        while held >= bs:
            xa, ya = torch.cat(xs), torch.cat(ys)
            yield xa[:bs], ya[:bs]
            xs, ys, held = [xa[bs:]], [ya[bs:]], xa.shape[0] - bs
    if held:
        yield torch.cat(xs), torch.cat(ys)
