"""CIFAR-10 (Krizhevsky 2009) from the user's copy of the official files; no network.

Accepted (``path``, else ``$PERTURBSCOPE_CIFAR10``; see :func:`find_cifar10`):

* the python version: ``cifar-10-python.tar.gz`` or its folder ``cifar-10-batches-py/``
  (``data_batch_1`` .. ``data_batch_5``, ``test_batch``: pickles);
* the binary version: ``cifar-10-binary.tar.gz`` or its folder ``cifar-10-batches-bin/``
  (``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin``: 10000 records of 1 label
  byte + 3072 pixel bytes, R then G then B plane, rows top to bottom);
* a directory holding any of these (extracted folders are preferred to archives, python to binary).

Python batches are pickles. They are read by :class:`RestrictedUnpickler`, which admits only
numpy's array/dtype reconstruction and plain containers, so a batch that carries code (say a
pickled ``os.system`` call) is refused with a :class:`~perturbscope.data.errors.DataError` and
nothing is executed. The binary version involves no pickle at all.

Checksums (``verify=True``, the default): each batch file, archived or extracted, is checked
against :data:`PYTHON_BATCH_MD5` or :data:`BINARY_BATCH_SHA1`; an archive whose own MD5 equals
the official one (:data:`ARCHIVE_MD5`) is accepted without checking its members. Sources are
given next to each table.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from perturbscope.data.containers import (
    SKIP_VERIFY_HINT,
    Container,
    DirContainer,
    TarContainer,
    bytes_digest,
    check_digest,
    digest_algorithm,
    file_digest,
    merged_checksums,
    open_container,
    resolve_root,
)
from perturbscope.data.errors import DataError
from perturbscope.data.streaming import LabelledImageDataset

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_ENV_VAR",
    "ARCHIVE_NAMES",
    "ARCHIVE_MD5",
    "PYTHON_BATCH_MD5",
    "BINARY_BATCH_SHA1",
    "SPLIT_BATCHES",
    "CifarLocation",
    "RefusedGlobal",
    "RestrictedUnpickler",
    "safe_load_pickle",
    "find_cifar10",
    "load_cifar10",
    "CIFAR10Dataset",
]

#: Class names, indexed by label, as in the official ``batches.meta`` (the paper's Table 3 says
#: "Aeroplane" for 0).
CIFAR10_CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                    "horse", "ship", "truck")

#: Environment variable naming the archive or a folder holding it.
CIFAR10_ENV_VAR = "PERTURBSCOPE_CIFAR10"

Format = Literal["python", "binary"]

#: Official archive name and folder inside it, per format.
ARCHIVE_NAMES: dict[str, tuple[str, str]] = {
    "python": ("cifar-10-python.tar.gz", "cifar-10-batches-py"),
    "binary": ("cifar-10-binary.tar.gz", "cifar-10-batches-bin"),
}

#: MD5 of the official archives, as published on https://www.cs.toronto.edu/~kriz/cifar.html
#: (the same values are used by torchvision's datasets/cifar.py for the python version and by
#: several independent loaders for the binary one).
ARCHIVE_MD5: dict[str, str] = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
}

#: MD5 of each python-version batch file, from torchvision's torchvision/datasets/cifar.py
#: (train_list, test_list, meta); listed identically by many independent projects.
PYTHON_BATCH_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

#: SHA-1 of each binary-version batch file, from Apache MXNet's gluon/data/vision/datasets.py
#: (``CIFAR10._file_hashes``). The CIFAR page publishes no per-file checksums.
BINARY_BATCH_SHA1: dict[str, str] = {
    "data_batch_1.bin": "aadd24acce27caa71bf4b10992e9e7b2d74c2540",
    "data_batch_2.bin": "c0ba65cce70568cd57b4e03e9ac8d2a5367c1795",
    "data_batch_3.bin": "1dd00a74ab1d17a6e7d73e185b69dbf31242f295",
    "data_batch_4.bin": "aab85764eb3584312d3c7f65fd2fd016e36a258e",
    "data_batch_5.bin": "26e2849e66a845b7f1e4614ae70f4889ae604628",
    "test_batch.bin": "67eb016db431130d61cd03c7ad570b013799c88c",
}

#: split -> batch file base names (the binary files add ``.bin``).
SPLIT_BATCHES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{k}" for k in range(1, 6)),
    "test": ("test_batch",),
}

_RECORD = 1 + 3 * 32 * 32  # binary version: label byte + 3072 pixel bytes


# --------------------------------------------------------------------------- safe unpickling
def _numpy_callables() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may reference: numpy array/dtype reconstruction."""
    import _codecs

    try:
        from numpy._core import multiarray as ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,  # bytes written by Python 3 at protocol < 3
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the numpy allow-list (raised before anything is called)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers only.

    ``find_class`` admits ``numpy.ndarray``, ``numpy.dtype``, numpy's ``_reconstruct`` /
    ``scalar`` (under ``numpy.core.multiarray`` and ``numpy._core.multiarray``) and
    ``_codecs.encode``; any other global (``os.system``, ``builtins.eval``, ...) raises
    ``pickle.UnpicklingError`` before it is called. Persistent ids are refused too.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        allowed = type(self)._allowed
        if allowed is None:
            allowed = type(self)._allowed = _numpy_callables()
        try:
            return allowed[(module, name)]
        except KeyError:
            raise RefusedGlobal(
                f"global {module}.{name} is not allowed (only numpy arrays and plain containers)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal("persistent ids are not allowed")


def safe_load_pickle(data: bytes, where: str) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (Python 2 strings read as latin-1).

    Raises :class:`DataError` naming ``where`` for code-carrying, truncated or corrupt pickles.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedGlobal as exc:
        raise DataError(f"{where}: refused to unpickle: {exc}; the file carries code or objects other "
                        "than the data (nothing was executed). Use the official file") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError) as exc:
        raise DataError(f"{where}: not a readable CIFAR-10 batch pickle, or truncated "
                        f"({type(exc).__name__}: {exc})") from exc


def _parse_python_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_load_pickle(data, where)
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a dict with 'data' and 'labels', got {type(obj).__name__}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"{where}: batch lacks 'data' or 'labels' (keys: {sorted(map(str, d))})")
    x, y = d["data"], d["labels"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        shape = getattr(x, "shape", None)
        raise DataError(f"{where}: 'data' must be a uint8 array (N, 3072), got "
                        f"{type(x).__name__} {getattr(x, 'dtype', '')} {shape}")
    try:
        labels = np.asarray(y, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: 'labels' is not a list of integers") from exc
    return x.reshape(-1, 3, 32, 32), _check_labels(labels, x.shape[0], where)


def _parse_binary_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) == 0 or len(data) % _RECORD:
        raise DataError(f"{where}: {len(data)} bytes is not a whole number of {_RECORD}-byte records "
                        "(1 label byte + 3072 pixel bytes); the file is truncated or not a CIFAR-10 "
                        "binary batch")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    images = rec[:, 1:].reshape(-1, 3, 32, 32).copy()
    return images, _check_labels(rec[:, 0].astype(np.int64), rec.shape[0], where)


def _check_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    if labels.shape[0] != n:
        raise DataError(f"{where}: {n} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be 0..9, found {int(labels.min())}..{int(labels.max())}")
    return labels


# --------------------------------------------------------------------------- locating the files
@dataclass(frozen=True)
class CifarLocation:
    """Where the CIFAR-10 files are: ``kind`` ``"folder"`` or ``"archive"``, ``format``, ``path``."""

    kind: Literal["folder", "archive"]
    format: Format
    path: Path

    def member(self, base: str) -> str:
        """The container name of batch ``base`` (``data_batch_1`` -> ``.../data_batch_1.bin``)."""
        name = base + (".bin" if self.format == "binary" else "")
        if self.kind == "folder":
            return name
        return f"{ARCHIVE_NAMES[self.format][1]}/{name}"


def _folder_format(d: Path) -> Format | None:
    if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
        return "python"
    if (d / "data_batch_1.bin").is_file() or (d / "test_batch.bin").is_file():
        return "binary"
    return None


def _archive_format(archive: Path) -> Format:
    c = open_container(archive)
    if not isinstance(c, TarContainer):
        raise DataError(f"{archive}: expected the official .tar.gz archive, not a "
                        f"{type(c).__name__.replace('Container', '').lower()}")
    names = c.names()
    for fmt, (_, folder) in ARCHIVE_NAMES.items():
        if any(n.startswith(folder + "/") for n in names):
            return fmt
    raise DataError(f"{archive}: archive holds neither cifar-10-batches-py/ nor cifar-10-batches-bin/ "
                    f"(first members: {names[:3]})")


def find_cifar10(path: str | os.PathLike | None = None) -> CifarLocation:
    """Locate CIFAR-10: ``path`` (an archive, a batches folder or a directory holding one),
    else ``$PERTURBSCOPE_CIFAR10``.

    In a directory, the first found wins: ``cifar-10-batches-py/``, ``cifar-10-batches-bin/``,
    ``cifar-10-python.tar.gz``, ``cifar-10-binary.tar.gz``; a directory that itself holds the
    batch files is used directly.

    Raises:
        FileNotFoundError: nothing found (lists what was looked for).
        DataError: the archive is unreadable or holds no CIFAR-10 folder.
    """
    root = resolve_root(path, CIFAR10_ENV_VAR, "CIFAR-10")
    if root.is_file():
        return CifarLocation("archive", _archive_format(root), root)
    fmt = _folder_format(root)
    if fmt is not None:
        return CifarLocation("folder", fmt, root)
    for fmt_, (_archive, folder) in ARCHIVE_NAMES.items():
        if (root / folder).is_dir() and _folder_format(root / folder) == fmt_:
            return CifarLocation("folder", fmt_, root / folder)
    for archive, _ in ARCHIVE_NAMES.values():
        if (root / archive).is_file():
            return CifarLocation("archive", _archive_format(root / archive), root / archive)
    raise FileNotFoundError(
        f"CIFAR-10 not found in {root}: looked for the batch files (data_batch_1..5, test_batch, "
        "with .bin for the binary version), the folders cifar-10-batches-py/ and "
        "cifar-10-batches-bin/, and the archives cifar-10-python.tar.gz and cifar-10-binary.tar.gz "
        "(from https://www.cs.toronto.edu/~kriz/cifar.html); see docs/data.md")


# --------------------------------------------------------------------------- reading
def _expected(loc: CifarLocation, base: str, checksums: Mapping[str, Any]) -> Any:
    """The expected digest(s) of batch ``base`` (file name with ``.bin`` for the binary version)."""
    return checksums.get(base + (".bin" if loc.format == "binary" else ""))


def _defaults(fmt: Format) -> dict[str, Any]:
    table = PYTHON_BATCH_MD5 if fmt == "python" else BINARY_BATCH_SHA1
    return {**table, **ARCHIVE_MD5}


def _archive_is_official(loc: CifarLocation, checksums: Mapping[str, Any]) -> bool:
    expected = checksums.get(ARCHIVE_NAMES[loc.format][0])
    if expected is None:
        return False
    wanted = [expected] if isinstance(expected, str) else list(expected)
    return any(file_digest(loc.path, digest_algorithm(e)) == e.lower() for e in wanted)


class _BatchReader:
    """Reads (and verifies once) the batch files of one split of one location."""

    def __init__(self, loc: CifarLocation, split: str, verify: bool,
                 checksums: Mapping[str, Any] | None) -> None:
        if split not in SPLIT_BATCHES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.loc, self.bases, self.verify = loc, SPLIT_BATCHES[split], verify
        self.checksums = merged_checksums(_defaults(loc.format), checksums)
        self.container: Container = DirContainer(loc.path) if loc.kind == "folder" else TarContainer(loc.path)
        self._trusted = False
        if verify and loc.kind == "archive":
            self._trusted = _archive_is_official(loc, self.checksums)

    def where(self, base: str) -> str:
        return self.container.where(self.loc.member(base))

    def _check(self, base: str, data: bytes) -> None:
        if not self.verify or self._trusted:
            return
        expected = _expected(self.loc, base, self.checksums)
        if expected is None:
            raise DataError(f"{self.where(base)}: no official checksum known for this file "
                            f"({SKIP_VERIFY_HINT})")
        check_digest(lambda algo: bytes_digest(data, algo), expected, self.where(base),
                     f"the official CIFAR-10 {self.loc.format} file {base}")

    def parse(self, base: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        self._check(base, data)
        if self.loc.format == "python":
            return _parse_python_batch(data, self.where(base))
        return _parse_binary_batch(data, self.where(base))

    def read_all(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every batch of the split, parsed, in order (one pass over an archive)."""
        if isinstance(self.container, TarContainer):
            blobs = self.container.read_many([self.loc.member(b) for b in self.bases])
            return [self.parse(b, blobs[self.loc.member(b)]) for b in self.bases]
        return [self.parse(b, self.read_bytes(b)) for b in self.bases]

    def read_bytes(self, base: str) -> bytes:
        name = self.loc.member(base)
        if isinstance(self.container, DirContainer) and not (self.loc.path / name).is_file():
            raise DataError(f"{self.loc.path / name}: CIFAR-10 batch file missing (expected "
                            f"{', '.join(self.loc.member(b) for b in self.bases)} in {self.loc.path})")
        return self.container.read(name)

    def read_one(self, base: str) -> tuple[np.ndarray, np.ndarray]:
        return self.parse(base, self.read_bytes(base))


def load_cifar10(split: Literal["train", "test"], path: str | os.PathLike | None = None, *,
                 verify: bool = True, checksums: Mapping[str, Any] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of CIFAR-10 into memory.

    Args:
        split: ``"train"`` (50000 images, data_batch_1..5) or ``"test"`` (10000, test_batch).
        path: archive, batches folder or a directory holding one (:func:`find_cifar10`).
        verify: check every batch file's checksum (see the module docstring); ``False`` skips it.
        checksums: file name -> hex digest (MD5, SHA-1 or SHA-256, told apart by length) to use
            instead of the official values (for a copy you made yourself).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` (RGB, values 0..255) and int64 ``(N,)`` in
        0..9 (names in :data:`CIFAR10_CLASSES`), in the files' order.

    Raises:
        FileNotFoundError: no CIFAR-10 files at ``path``.
        DataError: missing or truncated batch / archive member, checksum mismatch, a pickle that
            carries code, or a batch of the wrong shape.
    """
    reader = _BatchReader(find_cifar10(path), split, verify, checksums)
    parts = reader.read_all()
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class CIFAR10Dataset(LabelledImageDataset):
    """CIFAR-10 as a lazy dataset: at most one batch file (10000 images, 30 MB) in memory.

    Labels are read (and every file verified) when the dataset is made; images are decoded
    from the batch file that holds them, which is kept until an image of another file is asked
    for. From a ``.tar.gz`` each such switch re-reads the archive from its start: iterate in
    order, or extract the archive, for fast random access.

    Args:
        split, path, verify, checksums: as in :func:`load_cifar10`.
        channels: channels of the items (3).
    """

    def __init__(self, split: Literal["train", "test"], path: str | os.PathLike | None = None, *,
                 verify: bool = True, checksums: Mapping[str, Any] | None = None,
                 channels: int = 3) -> None:
        self._reader = _BatchReader(find_cifar10(path), split, verify, checksums)
        counts, labels = [], []
        if isinstance(self._reader.container, TarContainer):
            parts = self._reader.read_all()
        else:
            parts = (self._reader.read_one(b) for b in self._reader.bases)
        for _, lab in parts:
            counts.append(lab.shape[0])
            labels.append(lab)
        self.labels = np.concatenate(labels)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.class_names = CIFAR10_CLASSES
        self.source, self.split, self.channels = "cifar10", split, int(channels)
        self._cache: tuple[int, np.ndarray] | None = None
        self._reader.verify = False  # verified above; re-reads only decode

    @property
    def location(self) -> CifarLocation:
        return self._reader.loc

    def _batch(self, k: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != k:
            images, _ = self._reader.read_one(self._reader.bases[k])
            self._cache = (k, images)
        return self._cache[1]

    def decode(self, index: int) -> np.ndarray:
        i = self._check_index(index)
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return self._batch(k)[i - self._starts[k]]

    def decode_many(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((idx.size, 3, 32, 32), dtype=np.uint8)
        which = np.searchsorted(self._starts, idx, side="right") - 1
        for k in np.unique(which):  # one file at a time
            sel = np.flatnonzero(which == k)
            out[sel] = self._batch(int(k))[idx[sel] - self._starts[k]]
        return out
