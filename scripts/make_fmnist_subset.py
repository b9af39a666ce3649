#!/usr/bin/env python
"""Regenerate the Fashion-MNIST subset shipped in src/perturbscope/assets/fmnist-subset/.

Draws, with a fixed seed, the same number of images of every class from each
official split (default 300 train + 100 test per class), keeps them in their
official order, writes deterministic gzip IDX files and a manifest.json with
their SHA-256s, the source files' checksums and every image's source index.

    .venv/bin/python scripts/make_fmnist_subset.py            # Debian files or $PERTURBSCOPE_FASHION_MNIST
    .venv/bin/python scripts/make_fmnist_subset.py --source DIR --out /tmp/subset

Same seed and same source data give byte-identical files (with the same zlib).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from perturbscope.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    OFFICIAL_PAYLOAD_SHA256,
    find_fashion_mnist,
    load_fashion_mnist,
)
from perturbscope.data.idx import read_idx_payload, sha256_bytes, sha256_file, write_idx
from perturbscope.data.subset import MANIFEST_NAME, SUBSET_DIR, SUBSET_FILES


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator
                       ) -> np.ndarray:
    """Sorted indices with exactly ``per_class`` images of every class, drawn without replacement."""
    chosen = []
    for c in range(len(FASHION_MNIST_CLASSES)):
        pool = np.flatnonzero(labels == c)
        if pool.size < per_class:
            raise SystemExit(f"class {c} has only {pool.size} images, {per_class} requested")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--source", type=Path, default=None,
                        help="directory with the official files (default: the usual search)")
    parser.add_argument("--out", type=Path, default=SUBSET_DIR, help="output directory")
    parser.add_argument("--train-per-class", type=int, default=300, help="images per class")
    parser.add_argument("--test-per-class", type=int, default=100, help="images per class")
    parser.add_argument("--seed", type=int, default=0, help="numpy Generator seed")
    args = parser.parse_args(argv)

    source = find_fashion_mnist(args.source)
    rng = np.random.default_rng(args.seed)
    manifest: dict = {
        "description": "Stratified subset of Fashion-MNIST (Xiao et al. 2017, MIT licence), "
                       "regenerate with scripts/make_fmnist_subset.py",
        "classes": list(FASHION_MNIST_CLASSES),
        "seed": args.seed,
        "per_class": {"train": args.train_per_class, "test": args.test_per_class},
        "source": {"payload_sha256": {}},
        "files": {},
        "indices": {},
    }
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        for base in FASHION_MNIST_FILES[split]:
            file = source / f"{base}.gz" if (source / f"{base}.gz").is_file() else source / base
            manifest["source"]["payload_sha256"][base] = sha256_bytes(read_idx_payload(file))
            assert manifest["source"]["payload_sha256"][base] == OFFICIAL_PAYLOAD_SHA256[base]
        images, labels = load_fashion_mnist(split, path=source)
        idx = stratified_indices(labels, per_class, rng)
        manifest["indices"][split] = idx.tolist()
        for name, arr in zip(SUBSET_FILES[split], (images[idx], labels[idx].astype(np.uint8)),
                             strict=True):
            path = write_idx(args.out / name, arr, compress=True)
            manifest["files"][name] = {
                "sha256": sha256_file(path),
                "payload_sha256": sha256_bytes(read_idx_payload(path)),
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "bytes": path.stat().st_size,
            }
            print(f"wrote {path} {arr.shape} ({path.stat().st_size} bytes)")
    text = json.dumps(manifest, indent=1)
    # one line per list of numbers (the index lists are long)
    text = re.sub(r"\[\s*(-?\d[\d,\s-]*?)\s*\]",
                  lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    (args.out / MANIFEST_NAME).write_text(text + "\n")
    print(f"wrote {args.out / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
