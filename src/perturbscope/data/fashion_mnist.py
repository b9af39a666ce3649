"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): locate, verify, load and download.

Where the files are looked for (first match wins, see :func:`find_fashion_mnist`):

1. the ``path`` argument;
2. the directory in the environment variable ``PERTURBSCOPE_FASHION_MNIST``;
3. the Debian/Ubuntu package ``dataset-fashion-mnist``
   (``/usr/share/datasets/fashion-mnist``).

A directory qualifies when it holds the four official files, each either
gzip-compressed (``train-images-idx3-ubyte.gz``) or raw
(``train-images-idx3-ubyte``); the ``FashionMNIST/raw`` sub-folder that
torchvision creates is also accepted.

Two kinds of SHA-256 are kept (see docs/data.md):

* :data:`OFFICIAL_GZ_SHA256`: the published ``.gz`` files byte for byte; the
  download checks these.
* :data:`OFFICIAL_PAYLOAD_SHA256`: the decompressed IDX bytes; loading checks
  these, so the official data is recognised whether it is stored raw, as the
  official ``.gz`` or re-compressed (the Debian package re-compresses the files:
  its ``.gz`` bytes differ from the published ones, their content does not).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from perturbscope.data.containers import SKIP_VERIFY_HINT
from perturbscope.data.errors import DataError
from perturbscope.data.idx import atomic_output, decode_idx, read_idx_payload, sha256_bytes

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "OFFICIAL_FILE_NAMES",
    "OFFICIAL_GZ_SHA256",
    "OFFICIAL_GZ_MD5",
    "OFFICIAL_PAYLOAD_SHA256",
    "OFFICIAL_URL",
    "MIRROR_URLS",
    "ENV_VAR",
    "DEBIAN_DIRS",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "download_fashion_mnist",
]

#: Class names, indexed by label (official order).
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: split -> (images base name, labels base name); the files are these names + ``.gz``.
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: The four official file names, as published.
OFFICIAL_FILE_NAMES: tuple[str, ...] = tuple(
    f"{base}.gz" for pair in FASHION_MNIST_FILES.values() for base in pair
)

#: SHA-256 of the published .gz files (checked by :func:`download_fashion_mnist`).
OFFICIAL_GZ_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
    "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
    "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
    "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
}

#: MD5 of the published .gz files, as listed in the official README (for reference).
OFFICIAL_GZ_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

#: SHA-256 of the decompressed IDX bytes (checked by :func:`load_fashion_mnist`).
OFFICIAL_PAYLOAD_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: Default download location (HTTPS, the official repository's data folder).
OFFICIAL_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
#: Other official locations of the same files (pass one as ``base_url``).
MIRROR_URLS: tuple[str, ...] = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

#: Environment variable naming a directory that holds the four files.
ENV_VAR = "PERTURBSCOPE_FASHION_MNIST"
#: Where the Debian package ``dataset-fashion-mnist`` installs the files.
DEBIAN_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

Split = Literal["train", "test"]
_SUBDIRS = (".", "FashionMNIST/raw")  # torchvision keeps the files under FashionMNIST/raw


def _file_in(directory: Path, base: str) -> Path | None:
    """``directory/base.gz`` or ``directory/base`` (raw), whichever exists (gz first)."""
    for name in (f"{base}.gz", base):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _check_dir(root: Path) -> tuple[Path | None, str]:
    """(directory holding all four files, "") or (None, why not) for one root."""
    if not root.exists():
        return None, "does not exist"
    if not root.is_dir():
        return None, "is not a directory"
    bases = [base for pair in FASHION_MNIST_FILES.values() for base in pair]
    missing: list[str] = []
    for sub in _SUBDIRS:
        directory = (root / sub) if sub != "." else root
        missing_here = [b for b in bases if _file_in(directory, b) is None]
        if not missing_here:
            return directory, ""
        if sub == ".":
            missing = missing_here
    return None, "missing " + ", ".join(f"{b}[.gz]" for b in missing)


def find_fashion_mnist(path: str | os.PathLike | None = None) -> Path:
    """The directory holding the four Fashion-MNIST files.

    Resolution order: ``path`` if given (then nothing else is tried), else the
    directory in ``$PERTURBSCOPE_FASHION_MNIST`` if set (likewise authoritative, so
    a misconfigured variable is reported instead of silently ignored), else the
    Debian install path(s) :data:`DEBIAN_DIRS`.

    Raises:
        FileNotFoundError: listing every place tried and why each was rejected.
    """
    if path is not None:
        candidates = [(Path(path).expanduser(), "path argument")]
    elif os.environ.get(ENV_VAR):
        candidates = [(Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}")]
    else:
        candidates = [(d, "Debian package dataset-fashion-mnist") for d in DEBIAN_DIRS]
    tried: list[str] = []
    for root, origin in candidates:
        found, why = _check_dir(root)
        if found is not None:
            return found
        tried.append(f"  - {root} ({origin}): {why}")
    raise FileNotFoundError(
        "Fashion-MNIST files not found. Tried:\n"
        + "\n".join(tried)
        + f"\nPass path=<directory>, set ${ENV_VAR}=<directory>, run "
        "`apt-get install dataset-fashion-mnist`, or call "
        "perturbscope.data.download_fashion_mnist(<directory>)."
    )


def _load_checked(file: Path, base: str, verify: bool) -> np.ndarray:
    payload = read_idx_payload(file)
    if verify:
        expected = OFFICIAL_PAYLOAD_SHA256[base]
        actual = sha256_bytes(payload)
        if actual != expected:
            raise DataError(
                f"{file}: SHA-256 of the decompressed data is {actual}, expected {expected} "
                "for the official Fashion-MNIST file; the file is corrupt or not the official "
                f"one; {SKIP_VERIFY_HINT}"
            )
    return decode_idx(payload, source=str(file))


def load_fashion_mnist(
    split: Split, path: str | os.PathLike | None = None, verify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST.

    Args:
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
        path: directory with the files; default: see :func:`find_fashion_mnist`.
        verify: check the SHA-256 of the decompressed data against the official
            values; ``verify=False`` skips it (for a modified copy).

    Returns:
        ``(images, labels)``: uint8 array ``(N, 28, 28)`` with pixel values 0..255
        and int64 array ``(N,)`` with labels 0..9 (names in
        :data:`FASHION_MNIST_CLASSES`).

    Raises:
        ValueError: unknown ``split``.
        FileNotFoundError: no directory with the files (lists the places tried).
        DataError: corrupt or truncated file, checksum mismatch, unexpected array
            shapes, labels out of range, or different image and label counts.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = find_fashion_mnist(path)
    img_base, lab_base = FASHION_MNIST_FILES[split]
    img_file, lab_file = _file_in(directory, img_base), _file_in(directory, lab_base)
    assert img_file is not None and lab_file is not None  # guaranteed by find_fashion_mnist
    images = _load_checked(img_file, img_base, verify)
    labels = _load_checked(lab_file, lab_base, verify)
    return _validate_pair(images, labels, img_file, lab_file, num_classes=10)


def _validate_pair(
    images: np.ndarray, labels: np.ndarray, img_file: Path, lab_file: Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Check an (images, labels) IDX pair and return (uint8 images, int64 labels)."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{img_file}: expected uint8 images of shape (N, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{lab_file}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"image/label count mismatch: {img_file} holds {images.shape[0]} images but "
            f"{lab_file} holds {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(f"{lab_file}: label {int(labels.max())} out of range 0..{num_classes - 1}")
    return images, labels.astype(np.int64)


def _download_one(url: str, target: Path, expected_sha256: str, timeout: float) -> None:
    """Stream ``url`` into a temporary file next to ``target``; rename after the checksum."""
    with atomic_output(target) as (_, out):
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                while block := response.read(1 << 16):
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError) as exc:
            raise OSError(f"download of {url} failed: {exc}") from exc
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise DataError(
                f"{url}: downloaded file has SHA-256 {actual}, expected {expected_sha256}; "
                "it was rejected and not saved (corrupt transfer or wrong server)"
            )


def download_fashion_mnist(
    dest_dir: str | os.PathLike,
    base_url: str = OFFICIAL_URL,
    timeout: float = 30,
    files: Sequence[str] = OFFICIAL_FILE_NAMES,
) -> Path:
    """Download the official Fashion-MNIST ``.gz`` files into ``dest_dir``.

    Each file is streamed to a temporary name in ``dest_dir``, its SHA-256 is
    compared with :data:`OFFICIAL_GZ_SHA256`, and only then is it renamed to its
    final name (an atomic rename), so an interrupted or corrupt download leaves
    no file behind. Files already present with the right checksum are kept.

    Args:
        dest_dir: directory to write into (created if needed).
        base_url: URL prefix the file names are appended to (default: the
            official repository; :data:`MIRROR_URLS` lists another).
        timeout: socket timeout per request, in seconds.
        files: which official files to fetch (default: all four).

    Returns:
        ``dest_dir`` as a :class:`~pathlib.Path`, ready for ``load_fashion_mnist(path=...)``.

    Raises:
        DataError: a downloaded file failed its checksum (nothing is saved for it).
        OSError: network or file-system failure.
    """
    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    if not base_url.endswith("/"):
        base_url += "/"
    for name in files:
        if name not in OFFICIAL_GZ_SHA256:
            raise ValueError(f"unknown Fashion-MNIST file {name!r}; known: {OFFICIAL_FILE_NAMES}")
        expected = OFFICIAL_GZ_SHA256[name]
        target = dest / name
        if target.is_file() and sha256_bytes(target.read_bytes()) == expected:
            continue
        _download_one(base_url + name, target, expected, timeout)
    return dest
