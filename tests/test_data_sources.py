"""Data sources read from local copies: CIFAR-10, GTSRB, ImageNet, image folders, NumPy arrays.

Every test writes a tiny copy in the official layout into ``tmp_path`` and checks that the
loader reads back exactly what was written, and that broken copies (wrong checksum, truncated
member, pickled code, wrong path) are refused with a clear error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from perturbscope.data import DataError, MultiClassTask, PairTask, iter_batches, load_pair_task
from perturbscope.data.arrays import ArraysDataset, detect_layout, load_arrays
from perturbscope.data.cifar10 import CIFAR10_CLASSES, CIFAR10Dataset, find_cifar10, load_cifar10
from perturbscope.data.folder import ImageFolderDataset, load_image_folder
from perturbscope.data.gtsrb import (
    GTSRB_CLASSES,
    GTSRB_PAPER_CLASS_IDS,
    GTSRB_PAPER_CLASS_NAMES,
    GTSRBDataset,
    load_gtsrb,
)
from perturbscope.data.imagenet import (
    IMAGENET_WNIDS,
    ImageNetDataset,
    imagenet_paper_sample,
    load_imagenet,
    preprocess_imagenet,
)
from perturbscope.data.imagenet_classes import _TABLE, IMAGENET_TABLE_SHA256
from perturbscope.data.sources import SOURCE_NAMES, load_source, open_source, task_from_dataset
from perturbscope.data.tasks import multiclass_task, sample_covering

SKIP_WORDS = ("verify=False", "--no-verify")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ============================================================================ CIFAR-10
class Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING), the way the official batches were written."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n])) if n < 256 else
                   (pickle.BINSTRING + struct.pack("<i", n)))
        self.write(obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_batch(x: np.ndarray, labels: list[int]) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump({b"batch_label": b"tiny", b"labels": labels, b"data": x,
                                      b"filenames": [b"f.png"] * len(labels)})
    # numpy 2 names numpy._core; the official files (numpy 1, Python 2) name numpy.core
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_cifar(root: Path, fmt: str = "python", sizes=(3, 2, 4, 1, 2), n_test: int = 3, seed: int = 0,
                py2: bool = False) -> dict:
    """A tiny CIFAR-10 folder in the official layout; returns the arrays and each file's MD5/SHA-1."""
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-10-batches-py" if fmt == "python" else "cifar-10-batches-bin")
    folder.mkdir(parents=True)
    out: dict = {"folder": folder, "sums": {}, "train": [], "test": []}
    names = [(f"data_batch_{k + 1}", n, "train") for k, n in enumerate(sizes)]
    names.append(("test_batch", n_test, "test"))
    for base, n, split in names:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.int64)
        if fmt == "python":
            name = base
            data = py2_batch(x, y.tolist()) if py2 else pickle.dumps(
                {"batch_label": "tiny", "labels": y.tolist(), "data": x}, protocol=2)
        else:
            name = base + ".bin"
            data = np.concatenate([y.astype(np.uint8)[:, None], x], axis=1).tobytes()
        (folder / name).write_bytes(data)
        out["sums"][name] = md5(data)
        out[split].append((x.reshape(n, 3, 32, 32), y))
    for split in ("train", "test"):
        out[split] = (np.concatenate([p[0] for p in out[split]]), np.concatenate([p[1] for p in out[split]]))
    return out


def tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


@pytest.mark.parametrize("fmt", ["python", "binary"])
@pytest.mark.parametrize("where", ["folder", "parent", "archive", "archive-parent"])
def test_cifar_reads_back_what_was_written(tmp_path, fmt, where):
    made = write_cifar(tmp_path / "src", fmt)
    archive = tar_gz(made["folder"], tmp_path / f"cifar-10-{fmt}.tar.gz")
    path = {"folder": made["folder"], "parent": tmp_path / "src", "archive": archive,
            "archive-parent": tmp_path}[where]
    if where == "archive-parent":
        import shutil

        shutil.rmtree(tmp_path / "src")
    loc = find_cifar10(path)
    assert loc.format == fmt and loc.kind == ("archive" if "archive" in where else "folder")
    for split in ("train", "test"):
        x, y = load_cifar10(split, path, checksums=made["sums"])  # verified against the tiny files' MD5s
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and y.dtype == np.int64
        np.testing.assert_array_equal(x, made[split][0])
        np.testing.assert_array_equal(y, made[split][1])


def test_cifar_python2_pickles_as_in_the_official_files(tmp_path):
    made = write_cifar(tmp_path, py2=True)
    x, y = load_cifar10("train", made["folder"], verify=False)
    np.testing.assert_array_equal(x, made["train"][0])
    np.testing.assert_array_equal(y, made["train"][1])


@pytest.mark.parametrize("archive", [False, True])
def test_cifar_checksum_mismatch_is_refused_and_says_how_to_skip(tmp_path, archive):
    made = write_cifar(tmp_path / "src")
    path = tar_gz(made["folder"], tmp_path / "c.tar.gz") if archive else made["folder"]
    with pytest.raises(DataError) as err:  # the official MD5s do not match the tiny files
        load_cifar10("train", path)
    msg = str(err.value)
    assert "data_batch_1" in msg and "c99cafc152244af753f735de768cd75f" in msg
    assert all(w in msg for w in SKIP_WORDS)
    bad = dict(made["sums"], test_batch="0" * 32)
    with pytest.raises(DataError, match="test_batch.*checksum mismatch"):
        load_cifar10("test", path, checksums=bad)
    load_cifar10("test", path, verify=False)  # skipping works


def test_cifar_official_archive_md5_vouches_for_its_members(tmp_path):
    made = write_cifar(tmp_path / "src")
    archive = tar_gz(made["folder"], tmp_path / "cifar-10-python.tar.gz")
    sums = {"cifar-10-python.tar.gz": md5(archive.read_bytes())}  # members keep the official (wrong) MD5s
    x, _ = load_cifar10("test", archive, checksums=sums)
    np.testing.assert_array_equal(x, made["test"][0])


def test_cifar_truncated_files_are_refused(tmp_path):
    made = write_cifar(tmp_path / "py")
    archive = tar_gz(made["folder"], tmp_path / "c.tar.gz")
    raw = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.tar\.gz.*(truncated|corrupt)"):
        load_cifar10("train", cut, verify=False)
    pkl = made["folder"] / "test_batch"
    pkl.write_bytes(pkl.read_bytes()[:-50])
    with pytest.raises(DataError, match=r"test_batch: .*truncated"):
        load_cifar10("test", made["folder"], verify=False)
    binary = write_cifar(tmp_path / "bin", "binary")
    f = binary["folder"] / "data_batch_2.bin"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"data_batch_2\.bin: .*3073-byte records"):
        load_cifar10("train", binary["folder"], verify=False)


def test_cifar_missing_files_and_wrong_paths(tmp_path):
    made = write_cifar(tmp_path / "src")
    (made["folder"] / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4.*missing"):
        load_cifar10("train", made["folder"], verify=False)
    with tarfile.open(tmp_path / "partial.tar.gz", "w:gz") as tar:
        tar.add(made["folder"], arcname="cifar-10-batches-py")
    with pytest.raises(DataError, match="no member cifar-10-batches-py/data_batch_4"):
        load_cifar10("train", tmp_path / "partial.tar.gz", verify=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10("test", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        load_cifar10("test", tmp_path / "empty")
    with pytest.raises(ValueError, match="split"):
        load_cifar10("val", made["folder"], verify=False)


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Open:
    def __init__(self, file: str) -> None:
        self.file = file

    def __reduce__(self):
        return (open, (self.file, "w"))


@pytest.mark.parametrize("payload", ["system", "open"])
@pytest.mark.parametrize("archive", [False, True])
def test_cifar_batch_carrying_code_is_refused_and_nothing_runs(tmp_path, payload, archive):
    made = write_cifar(tmp_path / "src")
    marker = tmp_path / "MARKER_created_by_pickle"
    evil = _System(f"touch {marker}") if payload == "system" else _Open(str(marker))
    data = pickle.dumps({"labels": [0], "data": evil}, protocol=2)
    (made["folder"] / "test_batch").write_bytes(data)
    path = tar_gz(made["folder"], tmp_path / "evil.tar.gz") if archive else made["folder"]
    with pytest.raises(DataError) as err:
        # the checksum passes: it is the pickle that is refused
        load_cifar10("test", path, checksums={"test_batch": md5(data)})
    assert "refused to unpickle" in str(err.value) and "nothing was executed" in str(err.value)
    assert ("system" in str(err.value)) if payload == "system" else ("open" in str(err.value))
    with pytest.raises(DataError):
        CIFAR10Dataset("test", path, verify=False)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_cifar_streaming_equals_memory(tmp_path, fmt):
    made = write_cifar(tmp_path, fmt, sizes=(5, 4, 3, 6, 2))
    ds = CIFAR10Dataset("train", tmp_path, checksums=made["sums"])
    x, y = load_cifar10("train", tmp_path, checksums=made["sums"])
    assert len(ds) == 20 and ds.class_names[3] == "cat"
    np.testing.assert_array_equal(ds.labels, y)
    want = torch.from_numpy(x.astype(np.float32) / 255)
    xs, ys = zip(*iter_batches(ds, 7), strict=True)
    assert [b.shape[0] for b in xs] == [7, 7, 6]
    assert torch.equal(torch.cat(xs), want) and torch.equal(torch.cat(ys), torch.from_numpy(y))
    xl, yl = zip(*iter_batches(DataLoader(ds, batch_size=3, shuffle=False), 8), strict=True)
    assert torch.equal(torch.cat(xl), want) and torch.equal(torch.cat(yl), torch.from_numpy(y))
    assert torch.equal(ds[13][0], want[13]) and ds[13][1] == int(y[13])
    idx = [19, 0, 7, 7, 12]
    assert np.array_equal(ds.decode_many(idx), x[idx])


def test_cifar_source_pairs_equal_pair_task_on_the_full_split(tmp_path):
    from perturbscope.data import pair_task

    made = write_cifar(tmp_path, sizes=(40, 40, 40, 40, 40), n_test=2)
    x, y = made["train"]
    present = np.unique(y)
    i, j = int(present[0]), int(present[1])
    task = load_source("cifar10", "train", path=tmp_path, classes=(i, j), limit=6, seed=4, verify=False)
    ref = pair_task(x, y, i, j, limit=6, seed=4, class_names=CIFAR10_CLASSES)
    assert isinstance(task, PairTask) and task.source == "cifar10" and task.class_names == ref.class_names
    assert torch.equal(task.x, ref.x) and torch.equal(task.y, ref.y)
    assert torch.equal(task.indices, ref.indices)
    multi = load_source("cifar10", "train", path=tmp_path, verify=False)
    assert isinstance(multi, MultiClassTask) and multi.classes == tuple(range(10)) and len(multi) == 200
    assert torch.equal(multi.y, torch.from_numpy(y))


# ============================================================================ GTSRB
def ppm(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PPM")
    return buf.getvalue()


def gt_csv(rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    w.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"])
    w.writerows(rows)
    return buf.getvalue().encode()


def write_gtsrb(root: Path, train_classes=(0, 42, 38, 1), n_per_class: int = 3, n_test: int = 6,
                seed: int = 0) -> dict:
    """Tiny official GTSRB zips: training (per-class folders + GT CSVs), test images, test GT."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    made: dict = {"train": [], "test": []}

    def image() -> tuple[np.ndarray, tuple[int, int, int, int]]:
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x1, y1 = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        return img, (x1, y1, w - int(rng.integers(2, 6)), h - int(rng.integers(2, 6)))

    with zipfile.ZipFile(root / "GTSRB_Final_Training_Images.zip", "w") as z:
        z.writestr("GTSRB/Readme-Images.txt", "tiny copy")
        for c in sorted(train_classes):
            folder = f"GTSRB/Final_Training/Images/{c:05d}"
            rows = []
            for k in range(n_per_class):
                img, roi = image()
                name = f"00000_{k:05d}.ppm"
                z.writestr(f"{folder}/{name}", ppm(img))
                rows.append((name, img.shape[1], img.shape[0], *roi, c))
                made["train"].append((img, roi, c))
            z.writestr(f"{folder}/GT-{c:05d}.csv", gt_csv(rows))
    test_rows = []
    with zipfile.ZipFile(root / "GTSRB_Final_Test_Images.zip", "w") as z:
        for k in range(n_test):
            img, roi = image()
            c = int(train_classes[k % len(train_classes)])
            name = f"{k:05d}.ppm"
            z.writestr(f"GTSRB/Final_Test/Images/{name}", ppm(img))
            test_rows.append((name, img.shape[1], img.shape[0], *roi, c))
            made["test"].append((img, roi, c))
        z.writestr("GTSRB/Final_Test/Images/GT-final_test.test.csv", gt_csv(test_rows))  # no real ids needed
    with zipfile.ZipFile(root / "GTSRB_Final_Test_GT.zip", "w") as z:
        z.writestr("GT-final_test.csv", gt_csv(test_rows))
    names = ("GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip")
    made["sums"] = {n: md5((root / n).read_bytes()) for n in names}
    return made


def expected(items, classes, roi=True, size=None):
    ids = list(classes)
    xs, ys = [], []
    for img, (x1, y1, x2, y2), c in items:
        if c not in ids:
            continue
        a = img[y1:y2, x1:x2] if roi else img
        if size is not None:
            a = np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR))
        xs.append(a.transpose(2, 0, 1))
        ys.append(ids.index(c))
    return xs, np.asarray(ys)


def test_gtsrb_paper_classes_match_the_official_list():
    assert GTSRB_PAPER_CLASS_IDS == (0, 42, 38, 33, 25, 18, 6)
    official = [GTSRB_CLASSES[c] for c in GTSRB_PAPER_CLASS_IDS]
    assert official == ["Speed limit (20km/h)", "End of no passing by vehicles over 3.5 metric tons",
                        "Keep right", "Turn right ahead", "Road work", "General caution",
                        "End of speed limit (80km/h)"]
    assert len(GTSRB_CLASSES) == 43 and len(GTSRB_PAPER_CLASS_NAMES) == 7


@pytest.mark.parametrize("split", ["train", "test"])
def test_gtsrb_reads_back_crops_and_relabels_the_paper_classes(tmp_path, split):
    made = write_gtsrb(tmp_path)
    ds = GTSRBDataset(split, tmp_path, size=None, checksums=made["sums"])  # paper preset: 0, 42, 38 kept
    xs, ys = expected(made[split], GTSRB_PAPER_CLASS_IDS)
    assert len(ds) == len(xs) and ds.class_names == GTSRB_PAPER_CLASS_NAMES
    np.testing.assert_array_equal(ds.labels, ys)
    for k in range(len(ds)):
        np.testing.assert_array_equal(ds.decode(k), xs[k])  # exactly the ROI crop of what was written
    full = GTSRBDataset(split, tmp_path, classes="all", size=None, roi=False, verify=False)
    xs_all, ys_all = expected(made[split], range(43), roi=False)
    np.testing.assert_array_equal(full.labels, ys_all)  # official ids, class 1 included
    assert all(np.array_equal(full.decode(k), xs_all[k]) for k in range(len(full)))
    x, y = load_gtsrb(split, tmp_path, checksums=made["sums"])  # default 32x32
    xs32, ys32 = expected(made[split], GTSRB_PAPER_CLASS_IDS, size=32)
    assert x.shape == (len(xs32), 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, np.stack(xs32))
    np.testing.assert_array_equal(y, ys32)
    picked = GTSRBDataset(split, tmp_path, classes=[38, 0], size=8, verify=False)
    assert picked.class_ids == (38, 0) and set(picked.labels.tolist()) == {0, 1}


def test_gtsrb_extracted_folders_and_streaming(tmp_path):
    made = write_gtsrb(tmp_path / "zips")
    ext = tmp_path / "ext"
    for n in ("GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip"):
        with zipfile.ZipFile(tmp_path / "zips" / n) as z:
            z.extractall(ext)
    for split in ("train", "test"):
        a, ya = load_gtsrb(split, ext)  # folders: no archive checksum to check
        b, yb = load_gtsrb(split, tmp_path / "zips", checksums=made["sums"])
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ya, yb)
        ds = GTSRBDataset(split, ext)
        xs, ys = zip(*iter_batches(ds, 2), strict=True)
        assert torch.equal(torch.cat(xs), torch.from_numpy(a.astype(np.float32) / 255))
        assert torch.equal(torch.cat(ys), torch.from_numpy(ya))
    task = load_source("gtsrb", "train", path=ext, classes=(0, 1))
    assert isinstance(task, PairTask) and task.class_names == GTSRB_PAPER_CLASS_NAMES[:2]
    assert task.x.shape[1:] == (3, 32, 32) and task.class_counts() == (3, 3)


def test_gtsrb_checksum_truncation_and_missing_members(tmp_path):
    made = write_gtsrb(tmp_path)
    with pytest.raises(DataError) as err:
        load_gtsrb("train", tmp_path)  # the official MD5 does not match the tiny zip
    assert "GTSRB_Final_Training_Images.zip" in str(err.value)
    assert "f33fd80ac59bff73c82d25ab499e03a3" in str(err.value)
    assert all(w in str(err.value) for w in SKIP_WORDS)
    no_gt = {k: v for k, v in made["sums"].items() if not k.endswith("_GT.zip")}  # GT: official MD5
    with pytest.raises(DataError, match="GTSRB_Final_Test_GT.zip.*checksum"):
        load_gtsrb("test", tmp_path, checksums=no_gt)
    raw = (tmp_path / "GTSRB_Final_Test_Images.zip").read_bytes()
    (tmp_path / "GTSRB_Final_Test_Images.zip").write_bytes(raw[: len(raw) - 40])
    with pytest.raises(DataError, match="GTSRB_Final_Test_Images.zip.*(truncated|not a readable zip)"):
        load_gtsrb("test", tmp_path, verify=False)
    with zipfile.ZipFile(tmp_path / "GTSRB_Final_Training_Images.zip") as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(tmp_path / "GTSRB_Final_Training_Images.zip", "w") as z:
        for n, data in members.items():
            if not n.endswith("00042/00000_00001.ppm"):
                z.writestr(n, data)
    with pytest.raises(DataError, match=r"00042/00000_00001\.ppm.*missing"):
        load_gtsrb("train", tmp_path, verify=False)
    with pytest.raises(FileNotFoundError):
        load_gtsrb("train", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="official GTSRB ids"):
        load_gtsrb("train", tmp_path, classes=[43], verify=False)


def test_gtsrb_corrupt_image_is_named(tmp_path):
    made = write_gtsrb(tmp_path, train_classes=(0,), n_per_class=2)
    with zipfile.ZipFile(tmp_path / "GTSRB_Final_Training_Images.zip") as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(tmp_path / "GTSRB_Final_Training_Images.zip", "w") as z:
        for n, data in members.items():
            z.writestr(n, data[:20] if n.endswith("00000_00001.ppm") else data)
    ds = GTSRBDataset("train", tmp_path, verify=False)
    ds.decode(0)
    with pytest.raises(DataError, match=r"00000_00001\.ppm: not a readable image"):
        ds.decode(1)
    assert len(made["train"]) == 2


# ============================================================================ ImageNet
WN = (IMAGENET_WNIDS[0], IMAGENET_WNIDS[281], IMAGENET_WNIDS[999])  # tench, tabby, toilet tissue


def png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def test_imagenet_class_table():
    assert len(IMAGENET_WNIDS) == 1000 == len(set(IMAGENET_WNIDS))
    assert list(IMAGENET_WNIDS) == sorted(IMAGENET_WNIDS)
    assert IMAGENET_WNIDS[0] == "n01440764" and IMAGENET_WNIDS[-1] == "n15075141"
    assert hashlib.sha256(_TABLE.encode()).hexdigest() == IMAGENET_TABLE_SHA256


def test_imagenet_imagefolder_reads_back_and_uses_the_1000_class_index(tmp_path):
    rng = np.random.default_rng(0)
    written = []
    for wnid, n in zip(WN, (2, 3, 1), strict=True):
        for k in range(n):
            img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            png(tmp_path / "val" / wnid / f"img{k}.png", img)
            written.append((img.transpose(2, 0, 1), IMAGENET_WNIDS.index(wnid)))
    ds = ImageNetDataset(tmp_path, resize=8, crop=8)  # identity preprocessing for 8x8 images
    assert ds.layout == "imagefolder" and len(ds) == 6
    np.testing.assert_array_equal(ds.labels, [w[1] for w in written])
    assert set(ds.labels.tolist()) == {0, 281, 999}
    for k in range(6):
        np.testing.assert_array_equal(ds.decode(k), written[k][0])
    x, y, idx = load_imagenet(tmp_path, resize=8, crop=8)
    np.testing.assert_array_equal(x, np.stack([w[0] for w in written]))
    task = load_source("imagenet", "val", path=tmp_path, resize=8, crop=8)
    assert isinstance(task, MultiClassTask) and task.num_classes == 1000 and task.class_names[281] == "tabby"
    assert torch.equal(task.y, torch.from_numpy(y))  # labels kept: a pretrained model's indices apply
    pair = load_source("imagenet", "test", path=tmp_path, classes=(281, 999), resize=8, crop=8)
    assert pair.class_names == ("tabby", "toilet_tissue") and pair.class_counts() == (3, 1)


def test_imagenet_resize_and_centre_crop_follow_torchvision(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)  # H 30, W 20
    out = preprocess_imagenet(Image.fromarray(img), resize=16, crop=12)
    ref = Image.fromarray(img).resize((16, 24), Image.Resampling.BILINEAR)  # long side int(16 * 30 / 20)
    ref_a = np.asarray(ref)[6:18, 2:14]  # top round((24 - 12) / 2) = 6, left round((16 - 12) / 2) = 2
    np.testing.assert_array_equal(out, ref_a.transpose(2, 0, 1))
    grey = preprocess_imagenet(Image.fromarray(img[..., 0]), resize=None, crop=10)
    assert grey.shape == (3, 10, 10) and grey.dtype == np.uint8
    with pytest.raises(ValueError, match="resize"):
        preprocess_imagenet(Image.fromarray(img), resize=8, crop=12)


def write_flat(root: Path, n: int = 6, seed: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    imgs = []
    for k in range(1, n + 1):
        img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        png(root / f"ILSVRC2012_val_{k:08d}.png", img)
        imgs.append(img.transpose(2, 0, 1))
    return imgs


def write_meta(path: Path) -> None:
    from scipy.io import savemat

    rec = np.zeros((4,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    rec[0] = (1, WN[1], "tabby", 0)  # ILSVRC ids are not the sorted-WNID order
    rec[1] = (2, WN[0], "tench", 0)
    rec[2] = (3, WN[2], "toilet tissue", 0)
    rec[3] = (1001, "n00001740", "entity", 5)  # a non-leaf synset, ignored
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"synsets": rec.reshape(-1, 1)})


def test_imagenet_flat_with_devkit_ground_truth(tmp_path):
    imgs = write_flat(tmp_path / "val")
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    write_meta(data / "meta.mat")
    ids = [3, 1, 2, 2, 1, 3]
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, ids)) + "\n")
    ds = ImageNetDataset(tmp_path, resize=8, crop=8)
    by_id = {1: 281, 2: 0, 3: 999}
    assert ds.layout == "devkit"
    np.testing.assert_array_equal(ds.labels, [by_id[i] for i in ids])
    assert all(np.array_equal(ds.decode(k), imgs[k]) for k in range(6))
    (tmp_path / "val" / "ILSVRC2012_val_00000009.png").write_bytes((tmp_path / "val" /
                                                                   "ILSVRC2012_val_00000001.png").read_bytes())
    with pytest.raises(DataError, match="beyond the 6 lines"):
        ImageNetDataset(tmp_path)


def test_imagenet_flat_with_labels_txt_and_missing_labels(tmp_path):
    imgs = write_flat(tmp_path, n=3)
    with pytest.raises(FileNotFoundError, match="labels.txt.*ILSVRC2012_validation_ground_truth.txt"):
        ImageNetDataset(tmp_path)
    (tmp_path / "labels.txt").write_text(f"ILSVRC2012_val_00000001.png {WN[2]}\n"
                                         "ILSVRC2012_val_00000002.png 281\n"
                                         "ILSVRC2012_val_00000003.png 0\n")
    ds = ImageNetDataset(tmp_path, resize=8, crop=8)
    assert ds.layout == "labels.txt"
    np.testing.assert_array_equal(ds.labels, [999, 281, 0])
    assert np.array_equal(ds.decode(2), imgs[2])
    (tmp_path / "labels.txt").write_text("ILSVRC2012_val_00000001.png n99999999\n")
    with pytest.raises(DataError, match="n99999999 is not one of the 1000"):
        ImageNetDataset(tmp_path)


def test_imagenet_paper_sample_covers_every_class():
    labels = np.repeat(np.arange(50), np.arange(1, 51))  # 1275 images, unbalanced
    s = imagenet_paper_sample(labels, 300, seed=3)
    assert s.size == 300 and np.all(np.diff(s) > 0) and set(labels[s].tolist()) == set(range(50))
    assert np.array_equal(s, imagenet_paper_sample(labels, 300, seed=3))
    assert not np.array_equal(s, imagenet_paper_sample(labels, 300, seed=4))
    assert np.array_equal(sample_covering(labels, 5000), np.arange(labels.size))
    with pytest.raises(ValueError, match="every class must be represented"):
        imagenet_paper_sample(labels, 40)
    # the rest is uniform: class 49 (50 images) is drawn ~ (300 - 50) * 49 / 1225 + 1 = 11 times
    counts = np.bincount(labels[imagenet_paper_sample(labels, 300, seed=0)], minlength=50)
    assert counts.min() >= 1 and 4 <= counts[49] <= 20


# ============================================================================ folders and arrays
def test_image_folder_reads_back_and_checks_sizes(tmp_path):
    rng = np.random.default_rng(5)
    written = []
    for name, n in (("zebra", 2), ("ant", 3), ("mouse", 1)):
        for k in range(n):
            img = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
            png(tmp_path / "train" / name / f"{k}.png", img)
    for name in ("ant", "mouse", "zebra"):  # classes in sorted order
        for f in sorted((tmp_path / "train" / name).iterdir()):
            label = ("ant", "mouse", "zebra").index(name)
            written.append((np.asarray(Image.open(f)).transpose(2, 0, 1), label))
    x, y, names = load_image_folder(tmp_path, "train")
    assert names == ("ant", "mouse", "zebra")
    np.testing.assert_array_equal(x, np.stack([w[0] for w in written]))
    np.testing.assert_array_equal(y, [w[1] for w in written])
    task = load_source("folder", "train", path=tmp_path, classes=("zebra", "ant"))
    assert isinstance(task, PairTask) and task.class_names == ("zebra", "ant")
    assert task.class_counts() == (2, 3)
    png(tmp_path / "train" / "ant" / "big.png", rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="give size="):
        load_image_folder(tmp_path, "train")
    x2, _, _ = load_image_folder(tmp_path, "train", size=5)
    assert x2.shape == (7, 3, 5, 5)
    ds = ImageFolderDataset(tmp_path, "train", size=(4, 6))
    xs, _ = zip(*iter_batches(ds, 4), strict=True)
    assert torch.cat(xs).shape == (7, 3, 4, 6)
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(tmp_path / "train" / "ant")


def test_detect_layout():
    assert detect_layout((5, 3, 8, 9)) == "NCHW" and detect_layout((5, 8, 9, 3)) == "NHWC"
    assert detect_layout((5, 8, 9)) == "NHW" and detect_layout((5, 1, 8, 8)) == "NCHW"
    with pytest.raises(ValueError, match="layout='NCHW' or layout='NHWC'"):
        detect_layout((5, 3, 8, 3))
    with pytest.raises(ValueError, match="neither"):
        detect_layout((5, 7, 8, 9))
    assert detect_layout((5, 3, 8, 3), "NHWC") == "NHWC"
    with pytest.raises(ValueError, match="flattened"):
        detect_layout((5, 64))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_npz_uint8_both_layouts(tmp_path, layout):
    rng = np.random.default_rng(6)
    nchw = rng.integers(0, 256, (9, 3, 5, 6), dtype=np.uint8)
    y = rng.integers(0, 4, 9)
    stored = nchw if layout == "NCHW" else nchw.transpose(0, 2, 3, 1)
    np.savez(tmp_path / "d.npz", images=stored, labels=y, class_names=np.array(["a", "b", "c", "d"]))
    x, yy, names = load_arrays(tmp_path / "d.npz")
    np.testing.assert_array_equal(x, nchw)
    np.testing.assert_array_equal(yy, y)
    assert names == ("a", "b", "c", "d") and x.dtype == np.uint8
    task = load_source("npz", path=tmp_path / "d.npz")
    assert torch.equal(task.x, torch.from_numpy(nchw.astype(np.float32) / 255))


def test_npz_float_value_ranges(tmp_path):
    rng = np.random.default_rng(7)
    u8 = rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "f255.npz", x=u8.astype(np.float32), y=np.arange(4))
    np.savez(tmp_path / "f1.npz", x=u8.astype(np.float64) / 255, y=np.arange(4))
    a, _, _ = load_arrays(tmp_path / "f255.npz", value_range=(0, 255))
    b, _, _ = load_arrays(tmp_path / "f1.npz", value_range=(0, 1))
    want = u8.transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert a.dtype == np.float32 and np.allclose(a, want, atol=1e-7) and np.allclose(b, want, atol=1e-7)
    with pytest.raises(ValueError, match=r"value_range=\(0, 1\) or value_range=\(0, 255\)"):
        load_arrays(tmp_path / "f1.npz")
    with pytest.raises(DataError, match=r"outside the stated value_range=\(0, 1\)"):
        load_arrays(tmp_path / "f255.npz", value_range=(0, 1))
    np.savez(tmp_path / "amb.npz", x=rng.integers(0, 256, (4, 3, 5, 3), dtype=np.uint8), y=np.arange(4))
    with pytest.raises(ValueError, match="layout="):
        load_arrays(tmp_path / "amb.npz")
    assert load_arrays(tmp_path / "amb.npz", layout="NCHW")[0].shape == (4, 3, 5, 3)


def test_npz_keys_splits_and_refusals(tmp_path):
    rng = np.random.default_rng(8)
    xtr = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    xte = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=np.arange(5) % 2, x_test=xte,
             y_test=np.arange(3) % 2)
    np.testing.assert_array_equal(load_arrays(tmp_path / "mnist.npz", "test")[0], xte)
    task = load_source("npz", "train", path=tmp_path / "mnist.npz", classes=(0, 1))
    assert isinstance(task, PairTask) and task.x.shape == (5, 3, 4, 4)
    np.savez(tmp_path / "odd.npz", pixels=xtr, target=np.arange(5))
    with pytest.raises(DataError, match="no images found under .*keys: \\['pixels', 'target'\\]"):
        load_arrays(tmp_path / "odd.npz")
    assert load_arrays(tmp_path / "odd.npz", x_key="pixels", y_key="target")[0].shape == (5, 4, 4)
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 2, dtype=object), y=np.arange(2))
    with pytest.raises(DataError, match="pickled Python objects"):
        load_arrays(tmp_path / "obj.npz")
    raw = (tmp_path / "mnist.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.npz.*truncated"):
        load_arrays(tmp_path / "cut.npz")
    np.savez(tmp_path / "onehot.npz", x=xtr, y=np.eye(5))
    with pytest.raises(DataError, match="one-hot"):
        load_arrays(tmp_path / "onehot.npz")


def test_npy_pair_is_memory_mapped_and_streams(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (11, 5, 5, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 11)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ds = ArraysDataset((tmp_path / "x.npy", tmp_path / "y.npy"))
    assert isinstance(ds._x, np.memmap)
    xs, ys = zip(*iter_batches(ds, 4), strict=True)
    assert torch.equal(torch.cat(xs), torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255))
    assert torch.equal(torch.cat(ys), torch.from_numpy(y))
    a, _, _ = load_arrays(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    np.testing.assert_array_equal(a, x.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="labels"):
        load_arrays(tmp_path / "x.npy")
    np.save(tmp_path / "y_short.npy", y[:5])
    with pytest.raises(DataError, match="11 images but 5 labels"):
        load_arrays(tmp_path / "x.npy", labels=tmp_path / "y_short.npy")


# ============================================================================ batches, tasks, registry
def test_iter_batches_accepts_datasets_loaders_and_nhwc_iterables():
    rng = np.random.default_rng(10)
    x = rng.integers(0, 256, (10, 5, 6, 3), dtype=np.uint8)
    y = np.arange(10)
    want = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    chunks = [(x[:3], y[:3]), (x[3:4], y[3:4]), (x[4:], y[4:])]  # NHWC numpy batches
    out = list(iter_batches(chunks, 4))
    assert [b[0].shape[0] for b in out] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in out]), want)
    assert torch.equal(torch.cat([b[1] for b in out]), torch.from_numpy(y))
    tds = torch.utils.data.TensorDataset(want, torch.from_numpy(y))
    assert torch.equal(torch.cat([b[0] for b in iter_batches(tds, 3)]), want)
    dl = DataLoader(tds, batch_size=4)
    assert torch.equal(torch.cat([b[0] for b in iter_batches(dl, 5)]), want)
    with pytest.raises(ValueError, match="channel axis"):
        list(iter_batches([(np.zeros((2, 5, 6, 7), np.uint8), np.zeros(2))], 2))
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_batches(chunks, 0))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        list(iter_batches([(x[:2], y[:3])], 2))


def test_multiclass_task_relabels_and_keeps_labels():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 5, 40)
    images = rng.integers(0, 256, (40, 3, 2, 2), dtype=np.uint8)
    names = tuple("abcde")
    allc = multiclass_task(images, labels, class_names=names)
    assert allc.classes == (0, 1, 2, 3, 4) and torch.equal(allc.y, torch.from_numpy(labels))
    some = multiclass_task(images, labels, (4, 1, 2), class_names=names, limit=9, seed=2)
    assert some.class_names == ("e", "b", "c") and len(some) == 9 and all(c >= 1 for c in some.class_counts())
    orig = labels[some.indices.numpy()]
    np.testing.assert_array_equal(np.array((4, 1, 2))[some.y.numpy()], orig)
    assert torch.equal(some.x, torch.from_numpy(images[some.indices.numpy()].astype(np.float32) / 255))


def test_load_source_registry_and_errors(tmp_path):
    assert {"fashion-mnist", "fashion-mnist-subset", "digits", "cifar10", "gtsrb", "imagenet", "folder",
            "npz"} <= set(SOURCE_NAMES)
    a = load_source("fashion-mnist-subset", "test", classes=(7, 9), limit=200, seed=1)
    b = load_pair_task("fashion-mnist-subset", "test", 7, 9, limit=200, seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.indices, b.indices)
    assert a.class_names == b.class_names == ("Sneaker", "Ankle boot")
    named = load_source("fashion-mnist-subset", "test", classes="sneaker,Ankle boot", limit=200, seed=1)
    assert torch.equal(named.x, a.x)
    m = load_source("digits", "test", limit=30, seed=0)
    assert isinstance(m, MultiClassTask) and len(m) == 30 and min(m.class_counts()) >= 1
    ds = open_source("digits", "train")
    sub = ds.subset([5, 1, 9])
    t = task_from_dataset(sub)
    assert torch.equal(t.indices, torch.tensor([5, 1, 9]))
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("mnist", "test")
    with pytest.raises(ValueError, match="takes no path"):
        load_source("digits", "test", path=tmp_path)
    with pytest.raises(ValueError, match="needs path"):
        load_source("folder", "train")
    with pytest.raises(TypeError, match="does not take option"):
        load_source("digits", "test", size=32)
    with pytest.raises(ValueError, match="split"):
        load_source("cifar10", "validation", path=tmp_path)
    with pytest.raises(ValueError, match="different"):
        load_source("fashion-mnist-subset", "test", classes=(3, 3))
    with pytest.raises(ValueError, match="neither a label nor a class name"):
        load_source("fashion-mnist-subset", "test", classes=("Sneaker", "Boot"))


def test_environment_variable_is_used_and_missing_location_is_explained(tmp_path, monkeypatch):
    monkeypatch.delenv("PERTURBSCOPE_CIFAR10", raising=False)
    with pytest.raises(FileNotFoundError, match="PERTURBSCOPE_CIFAR10"):
        load_source("cifar10", "test")
    made = write_cifar(tmp_path)
    monkeypatch.setenv("PERTURBSCOPE_CIFAR10", str(tmp_path))
    task = load_source("cifar10", "test", verify=False)
    assert torch.equal(task.y, torch.from_numpy(made["test"][1]))
