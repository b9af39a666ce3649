"""GTSRB, the German Traffic Sign Recognition Benchmark (Stallkamp et al. 2011), from the user's
copy of the official archives; no network.

Files (``path``: the directory holding them, else ``$PERTURBSCOPE_GTSRB``):

* train: ``GTSRB_Final_Training_Images.zip`` (``GTSRB/Final_Training/Images/000NN/*.ppm`` with
  ``GT-000NN.csv`` per class) or the later ``GTSRB-Training_fixed.zip``
  (``GTSRB/Training/000NN/...``), or either one extracted;
* test: ``GTSRB_Final_Test_Images.zip`` (``GTSRB/Final_Test/Images/*.ppm``) and
  ``GTSRB_Final_Test_GT.zip`` (``GT-final_test.csv``, with the class ids), or extracted.

The annotation CSVs are ``;``-separated: ``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;
ClassId``. Each image is read with Pillow, cropped to its region of interest (``roi=True``, the
default and usual practice: the box ``(X1, Y1)``-``(X2, Y2)`` with ``X2``/``Y2`` exclusive, i.e.
Pillow's ``crop((X1, Y1, X2, Y2))``, which leaves the documented border of at least 5 pixels
outside), then resized to ``size`` x ``size`` (default 32: the paper's input size is lost from its
text) with bilinear filtering.

Classes: ``classes="paper"`` (default) keeps the seven classes of the paper's Table 22,
relabelled 0..6 in that order (official ids :data:`GTSRB_PAPER_CLASS_IDS` = 0, 42, 38, 33, 25,
18, 6); ``"all"`` keeps the 43 official classes with their official ids; a sequence of official
ids keeps those, relabelled 0..k-1 in the given order.

Checksums (``verify=True``): the MD5 of each zip archive, :data:`ARCHIVE_MD5`. Extracted
folders have no published checksums; they are checked for structure only (every image listed
in a CSV must exist and decode).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from perturbscope.data.containers import (
    Container,
    DirContainer,
    ZipContainer,
    check_digest,
    file_digest,
    merged_checksums,
    open_container,
    open_image,
    resolve_root,
)
from perturbscope.data.errors import DataError
from perturbscope.data.streaming import LabelledImageDataset

__all__ = [
    "GTSRB_CLASSES",
    "GTSRB_PAPER_CLASS_IDS",
    "GTSRB_PAPER_CLASS_NAMES",
    "GTSRB_ENV_VAR",
    "ARCHIVE_MD5",
    "TRAIN_ARCHIVES",
    "TEST_ARCHIVE",
    "TEST_GT_ARCHIVE",
    "DEFAULT_SIZE",
    "GTSRBItem",
    "gtsrb_items",
    "load_gtsrb",
    "GTSRBDataset",
]

#: The 43 official class names, indexed by official ClassId (the benchmark's list, as in the
#: widely used ``signnames.csv``).
GTSRB_CLASSES: tuple[str, ...] = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)",
    "Speed limit (100km/h)", "Speed limit (120km/h)", "No passing",
    "No passing for vehicles over 3.5 metric tons", "Right-of-way at the next intersection",
    "Priority road", "Yield", "Stop", "No vehicles", "Vehicles over 3.5 metric tons prohibited",
    "No entry", "General caution", "Dangerous curve to the left", "Dangerous curve to the right",
    "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right", "Road work",
    "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits",
    "Turn right ahead", "Turn left ahead", "Ahead only", "Go straight or right",
    "Go straight or left", "Keep right", "Keep left", "Roundabout mandatory", "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)

#: Official ClassIds of the paper's Table 22 classes 0..6 (checked against :data:`GTSRB_CLASSES`).
GTSRB_PAPER_CLASS_IDS: tuple[int, ...] = (0, 42, 38, 33, 25, 18, 6)

#: The paper's names (Table 22), indexed by the paper's label 0..6.
GTSRB_PAPER_CLASS_NAMES: tuple[str, ...] = (
    "Speed limit (20km/h)", "End of no passing by vehicles over 3.5 tons", "Keep right",
    "Turn right ahead", "Road work", "General caution", "End of speed limit (80km/h)",
)

#: Environment variable naming the directory with the archives.
GTSRB_ENV_VAR = "PERTURBSCOPE_GTSRB"

#: Official archive names.
TRAIN_ARCHIVES: tuple[str, ...] = ("GTSRB_Final_Training_Images.zip", "GTSRB-Training_fixed.zip")
TEST_ARCHIVE = "GTSRB_Final_Test_Images.zip"
TEST_GT_ARCHIVE = "GTSRB_Final_Test_GT.zip"

#: MD5 of the official archives (https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/).
#: The benchmark page lists no checksums; these are the values independent loaders enforce:
#: torchvision's datasets/gtsrb.py (Training_fixed, Test_Images, Test_GT) and several other
#: projects that agree on all three Final_* archives (e.g. Keras-style GTSRB loaders).
ARCHIVE_MD5: dict[str, str] = {
    "GTSRB_Final_Training_Images.zip": "f33fd80ac59bff73c82d25ab499e03a3",
    "GTSRB-Training_fixed.zip": "513f3c79a4c5141765e10e952eaa2478",
    "GTSRB_Final_Test_Images.zip": "c7e4e6327067d32654124b0fe9e82185",
    "GTSRB_Final_Test_GT.zip": "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
}

#: Default side of the resized images (the paper's GTSRB input size is lost from its text).
DEFAULT_SIZE = 32

_TRAIN_CSV = re.compile(r"(?:^|/)(?:Final_Training/Images|Training)/(\d{5})/GT-(\d{5})\.csv$")
_TEST_DIR = "Final_Test/Images/"
_GT_NAME = "GT-final_test.csv"
_REQUIRED = ("Filename", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")


@dataclass(frozen=True)
class GTSRBItem:
    """One annotated image: ``member`` (name in its container), ROI box and official ``class_id``."""

    member: str
    roi: tuple[int, int, int, int]
    class_id: int


def _resolve_classes(classes: Literal["paper", "all"] | Sequence[int]) -> tuple[tuple[int, ...],
                                                                                tuple[str, ...]]:
    """(official ids in label order, names in label order)."""
    if isinstance(classes, str):
        if classes == "paper":
            return GTSRB_PAPER_CLASS_IDS, GTSRB_PAPER_CLASS_NAMES
        if classes == "all":
            return tuple(range(len(GTSRB_CLASSES))), GTSRB_CLASSES
        raise ValueError(f"classes must be 'paper', 'all' or a sequence of official ids, got {classes!r}")
    ids = tuple(int(c) for c in classes)
    bad = [c for c in ids if not 0 <= c < len(GTSRB_CLASSES)]
    if not ids or bad or len(set(ids)) != len(ids):
        raise ValueError(f"classes must be different official GTSRB ids in 0..42, got {list(classes)}")
    return ids, tuple(GTSRB_CLASSES[c] for c in ids)


def _read_csv(data: bytes, where: str, need_class: bool = True) -> list[dict[str, str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: annotation CSV is not text ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text), delimiter=";", skipinitialspace=True)
    fields = [f.strip() for f in (reader.fieldnames or [])]
    need = _REQUIRED if need_class else _REQUIRED[:-1]
    missing = [f for f in need if f not in fields]
    if missing:
        raise DataError(f"{where}: annotation CSV lacks column(s) {missing} (has {fields}); expected "
                        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId")
    rows = []
    for row in reader:
        rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items()})
    return rows


def _item(row: dict[str, str], member: str, where: str, line: int) -> GTSRBItem:
    try:
        roi = (int(row["Roi.X1"]), int(row["Roi.Y1"]), int(row["Roi.X2"]), int(row["Roi.Y2"]))
        cid = int(row["ClassId"])
    except ValueError as exc:
        raise DataError(f"{where}: line {line}: bad number ({exc})") from exc
    return GTSRBItem(member, roi, cid)


def _container_for(root: Path, names: Sequence[str], what: str) -> Container | None:
    """The first of ``root/name`` (zip archives) that exists, else ``None``."""
    for n in names:
        if (root / n).is_file():
            c = open_container(root / n)
            if not isinstance(c, ZipContainer):
                raise DataError(f"{root / n}: expected a zip archive ({what})")
            return c
    return None


def _verify_zip(c: Container, names: Sequence[str], checksums: Mapping[str, Any], what: str) -> None:
    if not isinstance(c, ZipContainer):
        return  # extracted folders: no published checksums
    expected: list[str] = []
    for n in names:
        v = checksums.get(n)
        if v is not None:
            expected.extend([v] if isinstance(v, str) else v)
    if not expected:
        return
    check_digest(lambda algo: file_digest(c.path, algo), expected, str(c.path), f"the official {what}")


def _train_items(c: Container, wanted: set[int]) -> list[GTSRBItem]:
    names = c.names()
    present = set(names)
    csvs = sorted((m.group(1), n) for n in names if (m := _TRAIN_CSV.search(n)))
    if not csvs:
        raise DataError(f"{c.path}: no Final_Training/Images/000NN/GT-000NN.csv annotation files "
                        "found; expected the official GTSRB training archive or its extracted folder")
    items: list[GTSRBItem] = []
    for folder_id, name in csvs:
        if int(folder_id) not in wanted:
            continue
        where = c.where(name)
        base = str(PurePosixPath(name).parent)
        for line, row in enumerate(_read_csv(c.read(name), where), start=2):
            member = f"{base}/{row['Filename']}"
            if member not in present:
                raise DataError(f"{c.where(member)}: image listed in {where} (line {line}) is missing "
                                "from the archive (truncated or incomplete copy)")
            it = _item(row, member, where, line)
            if it.class_id != int(folder_id):
                raise DataError(f"{where}: line {line}: ClassId {it.class_id} in the folder of class "
                                f"{int(folder_id)}")
            items.append(it)
    return items


def _test_items(images: Container, gt: tuple[Container, str], wanted: set[int]) -> list[GTSRBItem]:
    ppms = [n for n in images.names() if n.lower().endswith(".ppm")]
    by_file = {PurePosixPath(n).name: n for n in ppms if _TEST_DIR in f"/{n}"}
    if not by_file:  # the images folder itself was given
        by_file = {n: n for n in ppms if "/" not in n}
    if not by_file:
        raise DataError(f"{images.path}: no Final_Test/Images/*.ppm found; expected the official "
                        f"{TEST_ARCHIVE} or its extracted folder")
    gc, gname = gt
    where = gc.where(gname)
    items: list[GTSRBItem] = []
    for line, row in enumerate(_read_csv(gc.read(gname), where), start=2):
        member = by_file.get(row["Filename"])
        if member is None:
            raise DataError(f"{images.path}: test image {row['Filename']} (listed in {where}, line "
                            f"{line}) is missing (truncated or incomplete copy)")
        it = _item(row, member, where, line)
        if it.class_id in wanted:
            items.append(it)
    return items


def _find_gt(root: Path, images: Container, checksums: Mapping[str, Any], verify: bool
             ) -> tuple[Container, str]:
    z = _container_for(root, [TEST_GT_ARCHIVE], "test ground truth")
    if z is not None:
        if verify:
            _verify_zip(z, [TEST_GT_ARCHIVE], checksums, TEST_GT_ARCHIVE)
        for n in z.names():
            if PurePosixPath(n).name == _GT_NAME:
                return z, n
        raise DataError(f"{z.path}: archive has no member {_GT_NAME}")
    if (root / _GT_NAME).is_file():
        return DirContainer(root), _GT_NAME
    for n in images.names():
        if PurePosixPath(n).name == _GT_NAME:
            return images, n
    raise FileNotFoundError(f"GTSRB test ground truth not found: expected {root / TEST_GT_ARCHIVE} or "
                            f"{root / _GT_NAME} (GT-final_test.test.csv in the images archive has no "
                            "class ids)")


def gtsrb_items(split: Literal["train", "test"], path: str | os.PathLike | None = None, *,
                classes: Literal["paper", "all"] | Sequence[int] = "paper", verify: bool = True,
                checksums: Mapping[str, Any] | None = None) -> tuple[Container, list[GTSRBItem]]:
    """The annotated images of ``split`` of the wanted classes, without decoding any image.

    Returns ``(container of the images, items)``; items are in the archive's order (train: by
    class folder, then CSV row; test: CSV row). See :func:`load_gtsrb` for the arguments.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    ids, _ = _resolve_classes(classes)
    sums = merged_checksums(ARCHIVE_MD5, checksums)
    root = resolve_root(path, GTSRB_ENV_VAR, "GTSRB")
    if split == "train":
        if root.is_file():
            c: Container = open_container(root)
        else:
            z = _container_for(root, TRAIN_ARCHIVES, "training images")
            c = z if z is not None else DirContainer(root)
        if verify:
            _verify_zip(c, TRAIN_ARCHIVES, sums, "GTSRB training archive (Final_Training_Images or "
                        "Training_fixed)")
        return c, _train_items(c, set(ids))
    if root.is_file():
        images: Container = open_container(root)
        root = root.parent
    else:
        z = _container_for(root, [TEST_ARCHIVE], "test images")
        images = z if z is not None else DirContainer(root)
    if verify:
        _verify_zip(images, [TEST_ARCHIVE], sums, TEST_ARCHIVE)
    return images, _test_items(images, _find_gt(root, images, sums, verify), set(ids))


def _size_pair(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def decode_gtsrb(data: bytes, where: str, roi: tuple[int, int, int, int] | None,
                 size: tuple[int, int] | None) -> np.ndarray:
    """One image: RGB, cropped to ``roi`` (x1, y1, x2, y2; x2/y2 exclusive), resized to ``size``
    (H, W) bilinear. Returns uint8 ``(3, H, W)``."""
    from PIL import Image

    img = open_image(data, where).convert("RGB")
    if roi is not None:
        x1, y1, x2, y2 = roi
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(img.width, x2), min(img.height, y2)
        if x2 <= x1 or y2 <= y1:
            raise DataError(f"{where}: empty region of interest {roi} for a {img.width}x{img.height} image")
        img = img.crop((x1, y1, x2, y2))
    if size is not None:
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


class GTSRBDataset(LabelledImageDataset):
    """GTSRB as a lazy dataset: each item is read from the archive and decoded when asked for.

    Args:
        split, path, classes, verify, checksums: as in :func:`load_gtsrb`.
        size: output side (int) or ``(H, W)``; ``None`` keeps each crop's own size.
        roi: crop to the annotated region of interest (default ``True``).
        channels: channels of the items (3).

    Attributes:
        class_ids: official ClassId of each label (``class_ids[label]``).
        items: the :class:`GTSRBItem` of every image.
    """

    def __init__(self, split: Literal["train", "test"], path: str | os.PathLike | None = None, *,
                 classes: Literal["paper", "all"] | Sequence[int] = "paper",
                 size: int | tuple[int, int] | None = DEFAULT_SIZE, roi: bool = True, verify: bool = True,
                 checksums: Mapping[str, Any] | None = None, channels: int = 3) -> None:
        ids, names = _resolve_classes(classes)
        self._container, self.items = gtsrb_items(split, path, classes=classes, verify=verify,
                                                  checksums=checksums)
        lookup = {c: k for k, c in enumerate(ids)}
        self.labels = np.array([lookup[it.class_id] for it in self.items], dtype=np.int64)
        self.class_ids, self.class_names = ids, names
        self.size, self.roi = _size_pair(size), bool(roi)
        self.source = "gtsrb" if classes == "paper" else "gtsrb-all" if classes == "all" else "gtsrb"
        self.split, self.channels = split, int(channels)

    def decode(self, index: int) -> np.ndarray:
        it = self.items[self._check_index(index)]
        return decode_gtsrb(self._container.read(it.member), self._container.where(it.member),
                            it.roi if self.roi else None, self.size)


def load_gtsrb(split: Literal["train", "test"], path: str | os.PathLike | None = None, *,
               classes: Literal["paper", "all"] | Sequence[int] = "paper",
               size: int | tuple[int, int] | None = DEFAULT_SIZE, roi: bool = True, verify: bool = True,
               checksums: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of GTSRB into memory.

    Args:
        split: ``"train"`` (the Final_Training images) or ``"test"`` (Final_Test with its ground truth).
        path: the directory holding the official archives (or extracted folders), or the
            training / test-images zip itself; default ``$PERTURBSCOPE_GTSRB``.
        classes: ``"paper"`` (Table 22: official ids 0, 42, 38, 33, 25, 18, 6 as labels 0..6),
            ``"all"`` (43 classes, official ids) or official ids (relabelled 0..k-1 in order).
        size: side of the resized images (default 32) or ``(H, W)``.
        roi: crop to the annotated region of interest first (default ``True``).
        verify: check the MD5 of each zip archive; ``False`` skips it.
        checksums: archive name -> hex digest, instead of :data:`ARCHIVE_MD5`.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, H, W)`` RGB 0..255 and int64 ``(N,)``.

    Raises:
        FileNotFoundError: no archive / folder / ground truth at ``path``.
        DataError: checksum mismatch, not a zip or truncated archive, a missing or unreadable
            image, a CSV without the expected columns.
    """
    ds = GTSRBDataset(split, path, classes=classes, size=size, roi=roi, verify=verify, checksums=checksums)
    if not len(ds):
        raise DataError(f"GTSRB {split}: no images of the requested classes {ds.class_ids}")
    return ds.decode_many(np.arange(len(ds))), ds.labels.copy()
