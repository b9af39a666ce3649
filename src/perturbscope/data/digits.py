"""scikit-learn's bundled 8x8 handwritten digits (1797 images), as a second data source.

The data ships inside scikit-learn (UCI "optdigits" test set), so loading never
touches the network. Pixel values are counts 0..16; they are scaled to [0, 1].

The digits have no official train/test split. :func:`digits_split` makes a
deterministic, stratified 75 % / 25 % one: within each class the images are
shuffled with ``numpy.random.default_rng(DIGITS_SPLIT_SEED)`` and the first
``ceil(0.75 * n_class)`` go to train (1352 train, 445 test images).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = ["DIGITS_CLASSES", "DIGITS_SPLIT_SEED", "TRAIN_FRACTION", "load_digits_data",
           "digits_split"]

DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
DIGITS_SPLIT_SEED = 0
TRAIN_FRACTION = 0.75


def load_digits_data() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits: float32 images ``(N, 8, 8)`` in [0, 1] (counts / 16) and int64 labels."""
    from sklearn.datasets import load_digits  # imported lazily: scikit-learn is slow to import

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)).clip(0.0, 1.0)
    return images, np.asarray(bunch.target, dtype=np.int64)


def digits_split(split: Literal["train", "test"], seed: int = DIGITS_SPLIT_SEED
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic stratified 75/25 train/test split of :func:`load_digits_data`.

    Returns ``(images, labels)`` for ``split``, in the original order of the data.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = load_digits_data()
    rng = np.random.default_rng(seed)
    is_train = np.zeros(labels.shape[0], dtype=bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        is_train[members[: math.ceil(TRAIN_FRACTION * members.size)]] = True
    keep = is_train if split == "train" else ~is_train
    return images[keep], labels[keep]
