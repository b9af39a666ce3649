"""Images and labels from NumPy files: an ``.npz`` archive or a pair of ``.npy`` files.

* ``.npz``: keys given (``x_key=``, ``y_key=``) or found: for a split ``s``, ``x_s`` / ``s_x`` /
  ``images_s`` (e.g. Keras' ``mnist.npz`` holds ``x_train``, ``y_train``, ...), else ``x``,
  ``images``, ``data``; labels likewise ``y``, ``labels``, ``targets``. Optional class names
  under ``class_names`` or ``classes``.
* ``.npy``: ``path="images.npy"`` with ``labels="labels.npy"`` (or ``path=("x.npy", "y.npy")``);
  memory-mapped, so :class:`ArraysDataset` streams them without loading them whole.

Layout: ``(N, H, W)`` is grey; for 4-D arrays the channel axis is the one of size 1, 3 or 4 at
position 1 (NCHW) or 3 (NHWC). A shape where both fit (e.g. ``(N, 3, 8, 3)``) or neither does
is refused with a message asking for ``layout="NCHW"`` or ``"NHWC"``.

Values: uint8 are 0..255 (divided by 255). Anything else needs the value range stated:
``value_range=(0, 1)`` or ``(0, 255)`` (any ``(lo, hi)`` works: pixels become
``(x - lo) / (hi - lo)``); values outside it, NaN or infinite are refused. Files are read with
``allow_pickle=False``: object arrays are refused.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from perturbscope.data.errors import DataError
from perturbscope.data.streaming import LabelledImageDataset

__all__ = ["X_KEYS", "Y_KEYS", "detect_layout", "open_arrays", "ArraysDataset", "load_arrays"]

X_KEYS: tuple[str, ...] = ("x", "images", "data")
Y_KEYS: tuple[str, ...] = ("y", "labels", "targets")
_NAME_KEYS = ("class_names", "classes")

Layout = Literal["NCHW", "NHWC", "NHW"]
PathArg = str | os.PathLike | Sequence[str | os.PathLike]


def detect_layout(shape: Sequence[int], layout: str | None = None, where: str = "images") -> Layout:
    """``"NCHW"``, ``"NHWC"`` or ``"NHW"`` for an image array of ``shape``.

    Raises ``ValueError`` for 1-, 2- or 5+-D arrays, and for 4-D shapes whose channel axis is
    ambiguous or absent unless ``layout`` says which.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        if layout not in (None, "NHW"):
            raise ValueError(f"{where}: a 3-D array {shape} is grey (N, H, W); layout={layout!r} "
                             "does not fit")
        return "NHW"
    if len(shape) != 4:
        raise ValueError(f"{where}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C), got shape "
                         f"{shape}" + (" (flattened? reshape to (N, C, H, W))" if len(shape) == 2 else ""))
    if layout is not None:
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        return layout  # type: ignore[return-value]
    c1, c3 = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
    if c1 and not c3:
        return "NCHW"
    if c3 and not c1:
        return "NHWC"
    why = "both axis 1 and axis 3 could be" if c1 else "neither axis 1 nor axis 3 is"
    raise ValueError(f"{where}: cannot tell the channel axis of shape {shape}: {why} a channel axis "
                     "(size 1, 3 or 4); pass layout='NCHW' or layout='NHWC'")


def _read_error(file: Path | str, exc: BaseException) -> DataError:
    if isinstance(exc, ValueError) and "pickle" in str(exc).lower():
        return DataError(f"{file}: holds pickled Python objects (object arrays); refused, only numeric "
                         "arrays are read")
    return DataError(f"{file}: not a readable .npy/.npz file, or truncated ({exc})")


def _load(file: Path, mmap: bool) -> Any:
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist")
    try:
        return np.load(file, mmap_mode="r" if mmap and file.suffix == ".npy" else None, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise _read_error(file, exc) from exc


def _pick(keys: Sequence[str], wanted: Sequence[str], given: str | None, what: str, file: Path) -> str:
    if given is not None:
        if given not in keys:
            raise DataError(f"{file}: no key {given!r} ({what}); keys: {sorted(keys)}")
        return given
    for k in wanted:
        if k in keys:
            return k
    raise DataError(f"{file}: no {what} found under {', '.join(wanted)}; keys: {sorted(keys)} "
                    f"(give {'x_key' if what == 'images' else 'y_key'}=)")


def _split_keys(base: Sequence[str], split: str | None) -> list[str]:
    out: list[str] = []
    if split:
        for b in base:
            out += [f"{b}_{split}", f"{split}_{b}"]
    return out + list(base)


def open_arrays(path: PathArg, split: str | None = None, *, labels: str | os.PathLike | None = None,
                x_key: str | None = None, y_key: str | None = None, mmap: bool = True
                ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None, str]:
    """The raw arrays: ``(images, labels, class names or None, description of the source)``.

    ``.npy`` files are memory-mapped when ``mmap``; nothing is converted yet.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 2 or labels is not None:
            raise ValueError("give path=(images.npy, labels.npy), or path=images.npy with labels=")
        path, labels = path[0], path[1]
    file = Path(path).expanduser()  # type: ignore[arg-type]
    names: tuple[str, ...] | None = None
    if file.suffix == ".npz":
        if labels is not None:
            raise ValueError("labels= is for a .npy images file; an .npz holds its labels (y_key=)")
        archive = _load(file, mmap=False)
        try:
            keys = list(archive.files)
            xk = _pick(keys, _split_keys(X_KEYS, split), x_key, "images", file)
            yk = _pick(keys, _split_keys(Y_KEYS, split), y_key, "labels", file)
            x, y = archive[xk], archive[yk]
            for nk in _NAME_KEYS:
                if nk in keys:
                    names = tuple(str(v) for v in np.asarray(archive[nk]).reshape(-1))
                    break
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise _read_error(file, exc) from exc
        finally:
            archive.close()
        where = f"{file}[{xk}, {yk}]"
    elif file.suffix == ".npy":
        if labels is None:
            raise ValueError(f"{file} holds only images: give the labels file too (labels=labels.npy, "
                             "or path=(images.npy, labels.npy))")
        x = _load(file, mmap)
        y = _load(Path(labels).expanduser(), mmap=False)
        where = f"{file} + {labels}"
    else:
        raise ValueError(f"{file}: expected an .npz file or a .npy images file")
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(f"{where}: expected arrays")
    return x, _check_labels(y, x.shape[0] if x.ndim else -1, where), names, where


def _check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be (N,) integers, got shape {y.shape}"
                        + (" (one-hot? pass y.argmax(1))" if y.ndim == 2 else ""))
    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"{where}: float labels must be whole numbers")
        y = y.astype(np.int64)
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if y.shape[0] != n:
        raise DataError(f"{where}: {n} images but {y.shape[0]} labels")
    if y.size and int(y.min()) < 0:
        raise DataError(f"{where}: labels must be >= 0, found {int(y.min())}")
    return y.astype(np.int64)


def _check_range(x: np.ndarray, value_range: tuple[float, float] | None, where: str
                 ) -> tuple[float, float] | None:
    """The (lo, hi) to scale by, or ``None`` for uint8 0..255 kept as is."""
    if x.dtype == np.uint8 and value_range in (None, (0, 255), (0.0, 255.0)):
        return None
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{where}: images must be numeric, got dtype {x.dtype}")
    if value_range is None:
        raise ValueError(f"{where}: images are {x.dtype}; state their value range: value_range=(0, 1) "
                         "or value_range=(0, 255) (on the command line --value-range 0 1 or --value-range "
                         "0 255; only uint8 is assumed to be 0..255)")
    lo, hi = (float(v) for v in value_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite (lo, hi) with lo < hi, got {value_range}")
    if x.size:
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{where}: images contain NaN or infinite values")
        a, b = float(x.min()), float(x.max())
        if a < lo or b > hi:
            raise DataError(f"{where}: values lie in [{a:.6g}, {b:.6g}], outside the stated "
                            f"value_range=({lo:g}, {hi:g})")
    return lo, hi


def _convert(x: np.ndarray, layout: Layout, scale: tuple[float, float] | None) -> np.ndarray:
    """Raw images (or one image with a leading axis) -> NCHW / NHW, uint8 or float32 in [0, 1]."""
    if layout == "NHWC":
        x = np.moveaxis(x, -1, 1)
    if scale is None:
        return np.ascontiguousarray(x, dtype=np.uint8)
    lo, hi = scale
    return ((np.asarray(x, dtype=np.float64) - lo) / (hi - lo)).clip(0.0, 1.0).astype(np.float32)


class ArraysDataset(LabelledImageDataset):
    """NumPy images as a lazy dataset (``.npy`` memory-mapped; an ``.npz`` is read whole).

    Args: as :func:`load_arrays`, plus ``channels`` (3; grey repeated).
    """

    def __init__(self, path: PathArg, split: str | None = None, *, labels: str | os.PathLike | None = None,
                 x_key: str | None = None, y_key: str | None = None, layout: str | None = None,
                 value_range: tuple[float, float] | None = None, channels: int = 3) -> None:
        x, y, names, where = open_arrays(path, split, labels=labels, x_key=x_key, y_key=y_key)
        self.layout = detect_layout(x.shape, layout, where)
        c = {"NCHW": 1, "NHWC": 3}.get(self.layout)
        if c is not None and x.shape[c] not in (1, channels):
            raise DataError(f"{where}: images have {x.shape[c]} channels; expected 1 (grey) or "
                            f"{channels} (drop an alpha channel first, e.g. x[..., :3])")
        self._scale = _check_range(x, value_range, where)
        self._x, self.labels, self.where = x, y, where
        k = int(y.max()) + 1 if y.size else 0
        if names is not None and len(names) < k:
            raise DataError(f"{where}: {len(names)} class names for labels up to {k - 1}")
        self.class_names = names if names is not None else tuple(str(i) for i in range(k))
        self.source = "npz"
        self.split, self.channels = split or "", int(channels)

    def decode(self, index: int) -> np.ndarray:
        return _convert(np.asarray(self._x[self._check_index(index)])[None], self.layout, self._scale)[0]

    def decode_many(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        return _convert(np.asarray(self._x[idx]), self.layout, self._scale)


def load_arrays(path: PathArg, split: str | None = None, *, labels: str | os.PathLike | None = None,
                x_key: str | None = None, y_key: str | None = None, layout: str | None = None,
                value_range: tuple[float, float] | None = None
                ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images and labels from an ``.npz`` or a ``.npy`` pair, in memory.

    Args:
        path: an ``.npz``, a ``.npy`` of images (with ``labels=``) or a pair ``(images.npy, labels.npy)``.
        split: prefer the split's keys in an ``.npz`` (``x_train`` ...), see the module docstring.
        labels: the labels ``.npy`` when ``path`` is a ``.npy``.
        x_key, y_key: the ``.npz`` keys, instead of looking them up.
        layout: ``"NCHW"`` or ``"NHWC"`` when the shape does not tell.
        value_range: value range of non-uint8 images, e.g. ``(0, 1)`` or ``(0, 255)``.

    Returns:
        ``(images, labels, class_names)``: images ``(N, C, H, W)`` (or grey ``(N, H, W)``),
        uint8 0..255 or float32 in [0, 1]; int64 labels ``(N,)``; names indexed by label.

    Raises:
        ValueError: ambiguous layout, missing ``value_range``, bad arguments.
        DataError: unreadable / truncated file, missing key, pickled objects, values outside
            ``value_range``, bad labels.
    """
    ds = ArraysDataset(path, split, labels=labels, x_key=x_key, y_key=y_key, layout=layout,
                       value_range=value_range)
    return ds.decode_many(np.arange(len(ds))), ds.labels.copy(), ds.class_names
