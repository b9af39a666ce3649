"""A folder of the user's own images, one sub-folder per class.

::

    root/                  (or root/<split>/ when that folder exists)
        cat/  a.png b.jpg ...
        dog/  c.png ...

Classes are the sub-folder names in sorted order (label ``k`` = the ``k``-th name); images are
found recursively inside each and taken in sorted path order. Every image is decoded with
Pillow on demand and converted to RGB (or grey with ``grayscale=True``); ``size`` resizes it
(bilinear), otherwise all images must share one size to form a batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perturbscope.data.containers import IMAGE_EXTENSIONS, open_image_file
from perturbscope.data.errors import DataError
from perturbscope.data.streaming import LabelledImageDataset

__all__ = ["image_folder_items", "ImageFolderDataset", "load_image_folder"]


def image_folder_items(path: str | os.PathLike, split: str | None = None, *,
                       extensions: Sequence[str] = IMAGE_EXTENSIONS
                       ) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """``(files, labels, class_names)`` of an image folder, without decoding any image.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a directory.
        DataError: no class sub-folders, or no images at all.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    if split and (root / split).is_dir():
        root = root / split
    exts = tuple(e.lower() for e in extensions)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class name>/<images>")
    files: list[Path] = []
    labels: list[int] = []
    for k, d in enumerate(class_dirs):
        imgs = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in exts
                      and not p.name.startswith("."))
        files += imgs
        labels += [k] * len(imgs)
    if not files:
        raise DataError(f"{root}: the class folders {[d.name for d in class_dirs][:5]} hold no images "
                        f"with suffix {', '.join(exts)}")
    return files, np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs)


class ImageFolderDataset(LabelledImageDataset):
    """An image folder as a lazy dataset.

    Args:
        path: the root folder; split: use ``path/split`` when it exists (recorded either way).
        size: resize every image to ``size`` x ``size`` (int) or ``(H, W)``; ``None`` keeps sizes.
        grayscale: decode as grey (1 channel, repeated to ``channels``) instead of RGB.
        channels: channels of the items (3).
        extensions: file suffixes read as images.
    """

    def __init__(self, path: str | os.PathLike, split: str | None = None, *,
                 size: int | tuple[int, int] | None = None, grayscale: bool = False, channels: int = 3,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.files, self.labels, self.class_names = image_folder_items(path, split, extensions=extensions)
        if isinstance(size, (int, np.integer)):
            size = (int(size), int(size))
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be a positive int or (H, W), got {size}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.grayscale = bool(grayscale)
        self.source, self.split, self.channels = "folder", split or "", int(channels)

    def decode(self, index: int) -> np.ndarray:
        from PIL import Image

        img = open_image_file(self.files[self._check_index(index)]).convert("L" if self.grayscale else "RGB")
        if self.size is not None and img.size != (self.size[1], self.size[0]):
            img = img.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        return np.ascontiguousarray(a if a.ndim == 2 else a.transpose(2, 0, 1))


def load_image_folder(path: str | os.PathLike, split: str | None = None, *,
                      size: int | tuple[int, int] | None = None, grayscale: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """All images of a folder: uint8 ``(N, 3, H, W)`` (``(N, H, W)`` grey), int64 labels, class names.

    Raises:
        DataError: an unreadable image, or images of different sizes without ``size``
            (the message names both files).
    """
    ds = ImageFolderDataset(path, split, size=size, grayscale=grayscale)
    first = ds.decode(0)
    out = np.empty((len(ds), *first.shape), dtype=np.uint8)
    out[0] = first
    for i in range(1, len(ds)):
        img = ds.decode(i)
        if img.shape != first.shape:
            raise DataError(f"{ds.files[i]}: image of shape {img.shape} but {ds.files[0]} is "
                            f"{first.shape}; give size= to resize all images to one size")
        out[i] = img
    return out, ds.labels.copy(), ds.class_names
