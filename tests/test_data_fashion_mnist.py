"""Fashion-MNIST: finding, verifying, loading, downloading; and the shipped subset."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import perturbscope.data.fashion_mnist as fm
from perturbscope.data import DataError, load_fashion_mnist_subset
from perturbscope.data.idx import read_idx_payload, sha256_bytes, sha256_file, write_idx
from perturbscope.data.subset import SUBSET_DIR, SUBSET_FILES, subset_manifest, subset_source_indices

N = {"train": 30, "test": 20}


def make_fake_dir(root: Path, compress: bool = True) -> Path:
    """Four tiny IDX files under the official names (labels cycle 0..9)."""
    rng = np.random.default_rng(1)
    suffix = ".gz" if compress else ""
    for split, (img, lab) in fm.FASHION_MNIST_FILES.items():
        n = N[split]
        write_idx(root / f"{img}{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                  compress=compress)
        write_idx(root / f"{lab}{suffix}", (np.arange(n) % 10).astype(np.uint8), compress=compress)
    return root


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """No env var and no Debian install: the search sees only what a test provides."""
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    monkeypatch.setattr(fm, "DEBIAN_DIRS", (tmp_path / "no-debian-here",))


def test_classes_and_names():
    assert len(fm.FASHION_MNIST_CLASSES) == 10
    assert fm.FASHION_MNIST_CLASSES[0] == "T-shirt/top" and fm.FASHION_MNIST_CLASSES[9] == "Ankle boot"
    assert set(fm.OFFICIAL_GZ_SHA256) == set(fm.OFFICIAL_FILE_NAMES) == set(fm.OFFICIAL_GZ_MD5)
    assert {f"{b}.gz" for b in fm.OFFICIAL_PAYLOAD_SHA256} == set(fm.OFFICIAL_FILE_NAMES)
    for digest in [*fm.OFFICIAL_GZ_SHA256.values(), *fm.OFFICIAL_PAYLOAD_SHA256.values()]:
        assert len(digest) == 64 and int(digest, 16) >= 0


@pytest.mark.parametrize("compress", [True, False])
def test_load_explicit_path_unverified(tmp_path, no_debian, compress):
    root = make_fake_dir(tmp_path / "fm", compress=compress)
    for split in ("train", "test"):
        x, y = fm.load_fashion_mnist(split, path=root, verify=False)
        assert x.dtype == np.uint8 and x.shape == (N[split], 28, 28)
        assert y.dtype == np.int64 and y.shape == (N[split],)
        np.testing.assert_array_equal(y, np.arange(N[split]) % 10)


def test_checksum_mismatch_is_reported(tmp_path, no_debian):
    root = make_fake_dir(tmp_path / "fm")
    with pytest.raises(DataError, match="verify=False") as exc:
        fm.load_fashion_mnist("test", path=root)
    assert "t10k-images-idx3-ubyte.gz" in str(exc.value)
    assert fm.OFFICIAL_PAYLOAD_SHA256["t10k-images-idx3-ubyte"] in str(exc.value)


def test_checksum_match_passes(tmp_path, no_debian, monkeypatch):
    root = make_fake_dir(tmp_path / "fm")
    fake = {b: sha256_bytes(read_idx_payload(root / f"{b}.gz")) for b in fm.OFFICIAL_PAYLOAD_SHA256}
    monkeypatch.setattr(fm, "OFFICIAL_PAYLOAD_SHA256", fake)
    x, _ = fm.load_fashion_mnist("train", path=root)
    assert x.shape == (N["train"], 28, 28)


def test_wrong_path_lists_what_was_tried(tmp_path, no_debian):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError) as exc:
        fm.find_fashion_mnist(missing)
    msg = str(exc.value)
    assert str(missing) in msg and "does not exist" in msg and fm.ENV_VAR in msg

    partial = tmp_path / "partial"
    make_fake_dir(partial)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        fm.load_fashion_mnist("train", path=partial)


def test_default_search_lists_debian_dir(tmp_path, no_debian):
    with pytest.raises(FileNotFoundError) as exc:
        fm.find_fashion_mnist()
    msg = str(exc.value)
    assert str(tmp_path / "no-debian-here") in msg and "Debian" in msg
    assert "download_fashion_mnist" in msg


def test_env_var_resolution(tmp_path, no_debian, monkeypatch):
    root = make_fake_dir(tmp_path / "from-env")
    monkeypatch.setenv(fm.ENV_VAR, str(root))
    assert fm.find_fashion_mnist() == root
    x, _ = fm.load_fashion_mnist("test", verify=False)
    assert x.shape[0] == N["test"]
    # the explicit path wins over the environment variable
    other = make_fake_dir(tmp_path / "explicit")
    assert fm.find_fashion_mnist(other) == other
    # a misconfigured variable is an error naming it, not silently skipped
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match=rf"typo \(\${fm.ENV_VAR}\)"):
        fm.find_fashion_mnist()


def test_debian_dir_and_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    deb = make_fake_dir(tmp_path / "deb")
    monkeypatch.setattr(fm, "DEBIAN_DIRS", (tmp_path / "first-missing", deb))
    assert fm.find_fashion_mnist() == deb
    tv = make_fake_dir(tmp_path / "tv" / "FashionMNIST" / "raw")
    assert fm.find_fashion_mnist(tmp_path / "tv") == tv


def test_count_mismatch(tmp_path, no_debian):
    root = make_fake_dir(tmp_path / "fm")
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(N["train"] - 1, dtype=np.uint8))
    with pytest.raises(DataError, match=r"count mismatch.*30 images.*29 labels"):
        fm.load_fashion_mnist("train", path=root, verify=False)


def test_label_out_of_range_and_wrong_rank(tmp_path, no_debian):
    root = make_fake_dir(tmp_path / "fm")
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.full(N["test"], 10, dtype=np.uint8))
    with pytest.raises(DataError, match="label 10 out of range"):
        fm.load_fashion_mnist("test", path=root, verify=False)
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((N["test"], 784), dtype=np.uint8))
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, H, W\)"):
        fm.load_fashion_mnist("test", path=root, verify=False)


def test_truncated_file_in_data_dir(tmp_path, no_debian):
    root = make_fake_dir(tmp_path / "fm")
    target = root / "train-images-idx3-ubyte.gz"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz") as exc:
        fm.load_fashion_mnist("train", path=root, verify=False)
    assert "truncated" in str(exc.value)


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        fm.load_fashion_mnist("validation")  # type: ignore[arg-type]


# --- download against a local HTTP server -------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests_seen: list[str] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).requests_seen.append(self.path)
        super().do_GET()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A directory of four small .gz files served on 127.0.0.1; expected SHA-256s patched."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = make_fake_dir(tmp_path / "server")
    monkeypatch.setattr(fm, "OFFICIAL_GZ_SHA256",
                        {name: sha256_file(root / name) for name in fm.OFFICIAL_FILE_NAMES})
    _QuietHandler.requests_seen = []
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_download_success_then_load(tmp_path, served, no_debian):
    root, url = served
    dest = fm.download_fashion_mnist(tmp_path / "dl", base_url=url, timeout=5)
    assert sorted(p.name for p in dest.iterdir()) == sorted(fm.OFFICIAL_FILE_NAMES)
    for name in fm.OFFICIAL_FILE_NAMES:
        assert (dest / name).read_bytes() == (root / name).read_bytes()
    x, y = fm.load_fashion_mnist("train", path=dest, verify=False)
    assert x.shape == (N["train"], 28, 28) and y.shape == (N["train"],)
    # files already present with the right checksum are not fetched again
    before = len(_QuietHandler.requests_seen)
    fm.download_fashion_mnist(dest, base_url=url.rstrip("/"), timeout=5)
    assert len(_QuietHandler.requests_seen) == before == 4


def test_corrupted_download_is_rejected_and_leaves_nothing(tmp_path, served):
    root, url = served
    bad = root / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*rejected"):
        fm.download_fashion_mnist(dest, base_url=url, timeout=5)
    names = sorted(p.name for p in dest.iterdir())
    assert "t10k-labels-idx1-ubyte.gz" not in names
    assert not [n for n in names if n.endswith(".part") or n.startswith(".")]
    # the files before it in the list were complete and verified, so they stay
    assert names == sorted(["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                            "t10k-images-idx3-ubyte.gz"])


def test_missing_remote_file_leaves_nothing(tmp_path, served):
    root, url = served
    (root / "train-images-idx3-ubyte.gz").unlink()
    dest = tmp_path / "dl"
    with pytest.raises(OSError, match="404"):
        fm.download_fashion_mnist(dest, base_url=url, timeout=5)
    assert list(dest.iterdir()) == []


# --- the shipped subset ---------------------------------------------------------------------


@pytest.mark.parametrize(("split", "per_class"), [("train", 300), ("test", 100)])
def test_subset_loads(split, per_class):
    x, y = load_fashion_mnist_subset(split)
    assert x.dtype == np.uint8 and x.shape == (10 * per_class, 28, 28)
    assert y.dtype == np.int64 and y.shape == (10 * per_class,)
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, per_class))
    assert x.max() > 200 and x.min() == 0  # real images, not blanks
    idx = subset_source_indices(split)
    assert idx.shape == y.shape and np.all(np.diff(idx) > 0)
    assert idx.max() < (60000 if split == "train" else 10000)


def test_subset_manifest_checksums_match_files():
    manifest = subset_manifest()
    for name in (n for pair in SUBSET_FILES.values() for n in pair):
        assert sha256_file(SUBSET_DIR / name) == manifest["files"][name]["sha256"]
    assert manifest["source"]["payload_sha256"] == fm.OFFICIAL_PAYLOAD_SHA256


def test_subset_tampering_detected(tmp_path):
    copy = tmp_path / "subset"
    shutil.copytree(SUBSET_DIR, copy)
    target = copy / SUBSET_FILES["test"][1]
    data = bytearray(target.read_bytes())
    data[20] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match the manifest"):
        load_fashion_mnist_subset("test", directory=copy)
    load_fashion_mnist_subset("train", directory=copy)  # the untouched split still loads


# --- the real files, when the Debian package is installed -------------------------------------

_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not _DEBIAN.is_dir(),
                    reason=f"{_DEBIAN} absent (apt-get install dataset-fashion-mnist to run)")
def test_debian_files_verify_and_contain_the_subset(monkeypatch):
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    for split, n in (("test", 10000), ("train", 60000)):
        x, y = fm.load_fashion_mnist(split)  # verify=True: checks the official payload SHA-256
        assert x.shape == (n, 28, 28)
        np.testing.assert_array_equal(np.bincount(y), np.full(10, n // 10))
        sx, sy = load_fashion_mnist_subset(split)
        idx = subset_source_indices(split)
        np.testing.assert_array_equal(x[idx], sx)
        np.testing.assert_array_equal(y[idx], sy)
