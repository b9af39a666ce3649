"""ImageNet-1k (ILSVRC 2012) validation images from the user's folder; no network.

Layouts (``path``, else ``$PERTURBSCOPE_IMAGENET``; a ``val/`` sub-folder is used if present):

* **ImageFolder**: one sub-folder per class, named by its WordNet id (``n01440764/...``);
* **flat** (as the official ``ILSVRC2012_img_val.tar`` extracts): ``ILSVRC2012_val_00000001.JPEG``
  ... with labels from either

  - ``labels.txt`` (next to the images, or ``labels_file=``): one ``filename label`` line per
    image, the label a WNID or a class index 0..999 in the order below; or
  - the devkit (``ILSVRC2012_devkit_t12``): ``data/ILSVRC2012_validation_ground_truth.txt`` (line
    ``k`` = ILSVRC id 1..1000 of ``ILSVRC2012_val_{k:08d}.JPEG``) and ``data/meta.mat`` (ILSVRC id
    -> WNID, read with ``scipy.io.loadmat``), found next to the images, in their parent, in
    ``ILSVRC2012_devkit_t12/data/`` under either, or given as ``ground_truth=`` / ``meta=``.

Labels are indices into :data:`~perturbscope.data.imagenet_classes.IMAGENET_WNIDS` (the 1000
WNIDs sorted): the class order of the usual Keras and torchvision pretrained models, whatever
subset of classes the folder holds.

Preprocessing (each image, on demand): RGB; shorter side resized to ``resize`` (256) with
bilinear filtering; centre crop ``crop`` x ``crop`` (224), exactly as torchvision's
``Resize(256)`` + ``CenterCrop(224)``; uint8 ``(3, 224, 224)``, divided by 255 in the tasks and
batches. ``resize=None`` resizes straight to ``crop`` x ``crop`` (Keras' ``load_img``). A
model's own normalisation (mean/std, Keras' BGR mean subtraction) belongs in its
:class:`~perturbscope.models.classifier.Classifier`, not here.

The paper's sample (Section 7.1.5: 20,480 validation images, every class represented, classes
not balanced) is :func:`imagenet_paper_sample` (:func:`~perturbscope.data.tasks.sample_covering`).
There are no official checksums for the individual validation images; none are checked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perturbscope.data.containers import IMAGE_EXTENSIONS, open_image_file, resolve_root
from perturbscope.data.errors import DataError
from perturbscope.data.imagenet_classes import IMAGENET_CLASS_NAMES, IMAGENET_WNIDS
from perturbscope.data.streaming import LabelledImageDataset
from perturbscope.data.tasks import sample_covering

__all__ = [
    "IMAGENET_ENV_VAR",
    "IMAGENET_WNIDS",
    "IMAGENET_CLASS_NAMES",
    "PAPER_SAMPLE_SIZE",
    "RESIZE",
    "CROP",
    "GROUND_TRUTH_NAME",
    "META_NAME",
    "LABELS_NAME",
    "read_devkit_meta",
    "imagenet_items",
    "preprocess_imagenet",
    "imagenet_paper_sample",
    "ImageNetDataset",
    "load_imagenet",
]

IMAGENET_ENV_VAR = "PERTURBSCOPE_IMAGENET"
#: Images in the paper's ImageNet sample (Section 7.1.5).
PAPER_SAMPLE_SIZE = 20480
#: Standard evaluation preprocessing: shorter side, then centre crop (pixels).
RESIZE, CROP = 256, 224
GROUND_TRUTH_NAME = "ILSVRC2012_validation_ground_truth.txt"
META_NAME = "meta.mat"
LABELS_NAME = "labels.txt"

_WNID = re.compile(r"^n\d{8}$")
_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d{8})")
_INDEX = {w: k for k, w in enumerate(IMAGENET_WNIDS)}


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def read_devkit_meta(path: str | os.PathLike) -> dict[int, str]:
    """ILSVRC id (1..1000) -> WNID of the 1000 leaf classes, from the devkit's ``data/meta.mat``.

    Raises :class:`DataError` naming the file if it cannot be read (MATLAB v7.3 files are not
    supported: the official one is v5) or lacks the ``synsets`` struct.
    """
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path, squeeze_me=True)
    except FileNotFoundError:
        raise
    except (ValueError, TypeError, OSError, NotImplementedError, EOFError) as exc:
        raise DataError(f"{path}: not a readable MATLAB file (expected the devkit's meta.mat): {exc}"
                        ) from exc
    synsets = mat.get("synsets")
    if not isinstance(synsets, np.ndarray) or synsets.dtype.names is None or \
            not {"ILSVRC2012_ID", "WNID"} <= set(synsets.dtype.names):
        raise DataError(f"{path}: no 'synsets' struct with ILSVRC2012_ID and WNID fields")
    out: dict[int, str] = {}
    for rec in np.atleast_1d(synsets):
        try:
            sid = int(np.asarray(rec["ILSVRC2012_ID"]).squeeze())
            wnid = str(np.asarray(rec["WNID"]).squeeze())
            children = int(np.asarray(rec["num_children"]).squeeze()) if "num_children" in \
                synsets.dtype.names else 0
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: malformed synsets entry ({exc})") from exc
        if children == 0 and 1 <= sid <= 1000:
            out[sid] = wnid
    unknown = sorted(w for w in out.values() if w not in _INDEX)
    if unknown:
        raise DataError(f"{path}: WNIDs {unknown[:3]} are not ImageNet-1k classes")
    return out


def _first_existing(candidates: Sequence[Path]) -> Path | None:
    for c in candidates:
        if c.is_file():
            return c
    return None


def _devkit_candidates(root: Path, name: str) -> list[Path]:
    out = []
    for base in (root, root.parent):
        out += [base / name, base / "data" / name, base / "ILSVRC2012_devkit_t12" / "data" / name]
    return out


def _label_of(token: str, where: str) -> int:
    if _WNID.match(token):
        if token not in _INDEX:
            raise DataError(f"{where}: {token} is not one of the 1000 ImageNet-1k classes")
        return _INDEX[token]
    try:
        k = int(token)
    except ValueError:
        raise DataError(f"{where}: label {token!r} is neither a WNID nor a class index 0..999") from None
    if not 0 <= k < 1000:
        raise DataError(f"{where}: class index {k} outside 0..999")
    return k


def _read_labels_file(file: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for n, line in enumerate(file.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 2:
            raise DataError(f"{file}: line {n}: expected 'filename label', got {line!r}")
        out[Path(parts[0]).name] = _label_of(parts[1], f"{file}: line {n}")
    return out


def _read_ground_truth(gt: Path, meta: Path) -> np.ndarray:
    """Class index (0..999, sorted-WNID order) of validation image k+1, for k = 0, 1, ..."""
    by_id = read_devkit_meta(meta)
    out = []
    for n, line in enumerate(gt.read_text().split(), start=1):
        try:
            sid = int(line)
        except ValueError:
            raise DataError(f"{gt}: line {n}: {line!r} is not an ILSVRC id") from None
        if sid not in by_id:
            raise DataError(f"{gt}: line {n}: ILSVRC id {sid} is not a class of {meta}")
        out.append(_INDEX[by_id[sid]])
    if not out:
        raise DataError(f"{gt}: file is empty")
    return np.asarray(out, dtype=np.int64)


def imagenet_items(path: str | os.PathLike | None = None, split: str = "val", *,
                   ground_truth: str | os.PathLike | None = None, meta: str | os.PathLike | None = None,
                   labels_file: str | os.PathLike | None = None) -> tuple[list[Path], np.ndarray, str]:
    """Every image of the folder and its class index, without decoding any image.

    Returns ``(files, labels, layout)``: sorted image paths, int64 labels (indices into
    :data:`IMAGENET_WNIDS`) and ``"imagefolder"``, ``"labels.txt"`` or ``"devkit"``.

    Raises:
        FileNotFoundError: no folder, no images, or a flat folder without labels (lists what
            was looked for).
        DataError: an unknown WNID folder, a malformed labels file / ground truth / meta.mat, or
            images that the labels do not cover.
    """
    if split not in ("val", "test", "validation", "train"):
        raise ValueError(f"split must be 'val' (alias 'test') or 'train', got {split!r}")
    root = resolve_root(path, IMAGENET_ENV_VAR, "ImageNet")
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet: {root} is not a directory of images")
    sub = root / ("train" if split == "train" else "val")
    if sub.is_dir():
        root = sub
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and _WNID.match(d.name))
    if class_dirs:
        files: list[Path] = []
        labels: list[int] = []
        for d in class_dirs:
            if d.name not in _INDEX:
                raise DataError(f"{d}: folder {d.name} is not one of the 1000 ImageNet-1k classes")
            imgs = sorted(p for p in d.iterdir() if _is_image(p))
            files += imgs
            labels += [_INDEX[d.name]] * len(imgs)
        if not files:
            raise FileNotFoundError(f"ImageNet: no images in the class folders of {root}")
        return files, np.asarray(labels, dtype=np.int64), "imagefolder"
    files = sorted(p for p in root.iterdir() if _is_image(p))
    if not files:
        raise FileNotFoundError(f"ImageNet: {root} holds neither WNID class folders (n01440764/...) "
                                "nor images")
    lab_file = Path(labels_file) if labels_file is not None else (root / LABELS_NAME)
    if labels_file is not None or lab_file.is_file():
        table = _read_labels_file(lab_file)
        missing = [f.name for f in files if f.name not in table]
        if missing:
            raise DataError(f"{lab_file}: no label for {len(missing)} of the {len(files)} images "
                            f"(first: {missing[0]})")
        return files, np.asarray([table[f.name] for f in files], dtype=np.int64), "labels.txt"
    gt = Path(ground_truth) if ground_truth is not None else _first_existing(
        _devkit_candidates(root, GROUND_TRUTH_NAME))
    mt = Path(meta) if meta is not None else _first_existing(_devkit_candidates(root, META_NAME))
    if gt is None or mt is None or not gt.is_file() or not mt.is_file():
        raise FileNotFoundError(
            f"ImageNet: {root} is a flat folder of images but no labels were found. Put a "
            f"{LABELS_NAME} ('filename label' lines) next to the images, or the devkit's "
            f"{GROUND_TRUTH_NAME} and {META_NAME} (ILSVRC2012_devkit_t12/data/) next to or above "
            "them, or give labels_file= / ground_truth= and meta=; or use one sub-folder per WNID")
    truth = _read_ground_truth(gt, mt)
    labels_out = []
    for f in files:
        m = _VAL_NUMBER.search(f.name)
        if m is None:
            raise DataError(f"{f}: not named ILSVRC2012_val_NNNNNNNN.*, so the ground truth {gt} "
                            "cannot label it (use a labels.txt)")
        k = int(m.group(1))
        if not 1 <= k <= truth.size:
            raise DataError(f"{f}: image number {k} beyond the {truth.size} lines of {gt}")
        labels_out.append(truth[k - 1])
    return files, np.asarray(labels_out, dtype=np.int64), "devkit"


def preprocess_imagenet(img: Any, resize: int | None = RESIZE, crop: int = CROP) -> np.ndarray:
    """A ``PIL.Image`` -> uint8 ``(3, crop, crop)``: RGB, shorter side ``resize`` (bilinear), centre crop.

    Follows torchvision's ``Resize(resize)`` (long side ``int(resize * long / short)``) and
    ``CenterCrop(crop)`` (offsets ``round((size - crop) / 2)``). ``resize=None``: resize to
    ``crop`` x ``crop`` directly.
    """
    from PIL import Image

    img = img.convert("RGB")
    if resize is None:
        img = img.resize((crop, crop), Image.Resampling.BILINEAR)
    else:
        if resize < crop:
            raise ValueError(f"resize ({resize}) must be >= crop ({crop})")
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = resize, int(resize * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
        top = int(round((new_h - crop) / 2.0))
        left = int(round((new_w - crop) / 2.0))
        img = img.crop((left, top, left + crop, top + crop))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def imagenet_paper_sample(labels: np.ndarray, n: int = PAPER_SAMPLE_SIZE, seed: int = 0) -> np.ndarray:
    """The paper's sampling: ``n`` (20,480) positions, every class present represented, sorted.

    One image of each class present, then the rest uniformly; see
    :func:`~perturbscope.data.tasks.sample_covering`. Same seed, same images.
    """
    return sample_covering(labels, n, seed)


class ImageNetDataset(LabelledImageDataset):
    """ImageNet validation images as a lazy dataset (one JPEG decoded per item).

    Args:
        path, split, ground_truth, meta, labels_file: as in :func:`imagenet_items`.
        resize, crop: as in :func:`preprocess_imagenet`.
        channels: channels of the items (3).

    Attributes:
        files: the image paths; layout: how the labels were found.
    """

    def __init__(self, path: str | os.PathLike | None = None, split: str = "val", *,
                 ground_truth: str | os.PathLike | None = None, meta: str | os.PathLike | None = None,
                 labels_file: str | os.PathLike | None = None, resize: int | None = RESIZE,
                 crop: int = CROP, channels: int = 3) -> None:
        self.files, self.labels, self.layout = imagenet_items(
            path, split, ground_truth=ground_truth, meta=meta, labels_file=labels_file)
        if resize is not None and resize < crop:
            raise ValueError(f"resize ({resize}) must be >= crop ({crop})")
        self.resize, self.crop = resize, int(crop)
        self.class_names = IMAGENET_CLASS_NAMES
        self.source = "imagenet"
        self.split = "train" if split == "train" else "test"
        self.channels = int(channels)

    def decode(self, index: int) -> np.ndarray:
        return preprocess_imagenet(open_image_file(self.files[self._check_index(index)]), self.resize,
                                   self.crop)


def load_imagenet(path: str | os.PathLike | None = None, split: str = "val", *, limit: int | None = None,
                  seed: int = 0, ground_truth: str | os.PathLike | None = None,
                  meta: str | os.PathLike | None = None, labels_file: str | os.PathLike | None = None,
                  resize: int | None = RESIZE, crop: int = CROP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode ImageNet validation images into memory (only the sampled ones).

    Args:
        limit: keep this many with :func:`imagenet_paper_sample` (``limit=20480`` is the paper's
            sample); ``None`` keeps all. At 150 KB per uint8 image, 20,480 images take 3 GB
            (12 GB as float32): stream them with :class:`ImageNetDataset` and
            :func:`~perturbscope.data.streaming.iter_batches` instead.
        seed: seed of the sample. Other arguments: as in :class:`ImageNetDataset`.

    Returns:
        ``(images, labels, indices)``: uint8 ``(N, 3, crop, crop)``, int64 ``(N,)`` class indices
        (:data:`IMAGENET_WNIDS` order) and int64 ``(N,)`` positions in the sorted file list.
    """
    ds = ImageNetDataset(path, split, ground_truth=ground_truth, meta=meta, labels_file=labels_file,
                         resize=resize, crop=crop)
    if limit is None:
        idx = np.arange(len(ds), dtype=np.int64)
    else:
        idx = imagenet_paper_sample(ds.labels, limit, seed)
    return ds.decode_many(idx), ds.labels[idx].copy(), idx
