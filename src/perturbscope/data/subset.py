"""A small stratified Fashion-MNIST subset shipped inside the package.

300 training and 100 test images per class (3000 + 1000 images), drawn with a
fixed seed from the official splits by ``scripts/make_fmnist_subset.py`` and
stored as gzip IDX files under ``perturbscope/assets/fmnist-subset/`` with a
``manifest.json`` that records each file's SHA-256 and the index of every image
in the official split. Tests and the demo use it, so neither needs the network
nor the full data set.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from perturbscope.data.errors import DataError
from perturbscope.data.idx import decode_idx, read_idx_payload, sha256_file

__all__ = [
    "SUBSET_DIR",
    "SUBSET_FILES",
    "subset_manifest",
    "subset_source_indices",
    "load_fashion_mnist_subset",
]

#: Directory of the shipped subset.
SUBSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "fmnist-subset"
MANIFEST_NAME = "manifest.json"

#: split -> (images file, labels file) inside :data:`SUBSET_DIR`.
SUBSET_FILES: dict[str, tuple[str, str]] = {
    "train": ("subset-train-images-idx3-ubyte.gz", "subset-train-labels-idx1-ubyte.gz"),
    "test": ("subset-t10k-images-idx3-ubyte.gz", "subset-t10k-labels-idx1-ubyte.gz"),
}


@cache
def _manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"subset manifest not found: {path}; the package data is incomplete "
            "(regenerate with scripts/make_fmnist_subset.py)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def subset_manifest(directory: str | Path | None = None) -> dict[str, Any]:
    """The subset's manifest (a fresh copy): files, SHA-256s, seed, source indices."""
    return json.loads(json.dumps(_manifest(Path(directory or SUBSET_DIR))))


def subset_source_indices(split: Literal["train", "test"], directory: str | Path | None = None
                          ) -> np.ndarray:
    """int64 ``(N,)``: for each subset image, its index in the official ``split``."""
    _check_split(split)
    return np.asarray(_manifest(Path(directory or SUBSET_DIR))["indices"][split], dtype=np.int64)


def _check_split(split: str) -> None:
    if split not in SUBSET_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _read_verified(file: Path, entry: dict[str, Any], verify: bool) -> np.ndarray:
    if verify:
        if not file.is_file():
            raise FileNotFoundError(f"subset file not found: {file}")
        actual = sha256_file(file)
        if actual != entry["sha256"]:
            raise DataError(
                f"{file}: SHA-256 {actual} does not match the manifest's {entry['sha256']}; "
                "the shipped subset is corrupt or was modified"
            )
    return decode_idx(read_idx_payload(file), source=str(file))


def load_fashion_mnist_subset(
    split: Literal["train", "test"],
    verify: bool = True,
    directory: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load the shipped Fashion-MNIST subset.

    Args:
        split: ``"train"`` (3000 images, 300 per class) or ``"test"`` (1000, 100 per class).
        verify: check each file's SHA-256 against ``manifest.json``.
        directory: another directory with the same layout (default :data:`SUBSET_DIR`).

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28)`` in 0..255 and int64 ``(N,)`` in 0..9,
        in the order of the official split (see :func:`subset_source_indices`).

    Raises:
        DataError: checksum mismatch, corrupt file or inconsistent counts.
    """
    _check_split(split)
    root = Path(directory or SUBSET_DIR)
    manifest = _manifest(root)
    img_name, lab_name = SUBSET_FILES[split]
    images = _read_verified(root / img_name, manifest["files"][img_name], verify)
    labels = _read_verified(root / lab_name, manifest["files"][lab_name], verify)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{root / img_name}: expected uint8 (N, H, W), got {images.dtype} "
                        f"{images.shape}")
    if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"image/label count mismatch: {root / img_name} holds {images.shape[0]} images, "
            f"{root / lab_name} holds labels of shape {labels.shape}"
        )
    return images, labels.astype(np.int64)
