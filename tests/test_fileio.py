"""Tests for perturbscope.fileio: atomic writes leave either the old or the complete new file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from perturbscope.fileio import atomic_savefig, atomic_write, atomic_write_text  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_atomic_write_creates_parents_and_passes_hidden_temp_in_same_dir(tmp_path):
    target = tmp_path / "a" / "b" / "out.csv"
    seen: list[Path] = []

    def write(t: Path) -> None:
        seen.append(t)
        assert t.exists() and t.stat().st_size == 0  # created empty before write is called
        t.write_text("x,y\n1,2\n")

    got = atomic_write(target, write)
    assert got == target and isinstance(got, Path)
    assert target.read_text() == "x,y\n1,2\n"
    (t,) = seen
    assert isinstance(t, Path)
    assert t.parent == target.parent
    assert t.name.startswith(".") and t.suffix == ".csv" and t != target
    assert not t.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.csv"]


def test_atomic_write_replaces_existing_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old content that is longer than the new one")
    atomic_write(str(target), lambda t: t.write_text("new"))
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_old_file_and_leaves_nothing(tmp_path, exc):
    target = tmp_path / "keep.json"
    target.write_text('{"old": 1}')

    def write(t: Path) -> None:
        t.write_text('{"new": ')  # half written, then the writer dies
        raise exc

    with pytest.raises(type(exc)):
        atomic_write(target, write)
    assert target.read_text() == '{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]


def test_failed_write_without_old_file_leaves_empty_dir(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        atomic_write(tmp_path / "new.csv", lambda t: (_ for _ in ()).throw(ValueError("boom")))
    assert list(tmp_path.iterdir()) == []


def test_final_file_gets_usual_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "m.txt", "hi")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_suffix_kept_so_np_save_writes_the_target(tmp_path):
    # np.save appends ".npy" to names not ending in it; the temp name must keep the suffix.
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = atomic_write(tmp_path / "u.npy", lambda t: np.save(t, arr))
    np.testing.assert_array_equal(np.load(p), arr)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["u.npy"]


def test_atomic_write_text_utf8_and_type_check(tmp_path):
    text = "ε_adv ≤ 0.5 — Ölçü\n"
    p = atomic_write_text(tmp_path / "t" / "r.html", text)
    assert p.read_bytes() == text.encode("utf-8")
    with pytest.raises(TypeError, match="text must be a str"):
        atomic_write_text(tmp_path / "b.txt", b"bytes")  # type: ignore[arg-type]
    assert not (tmp_path / "b.txt").exists()


def _fig():
    fig, ax = plt.subplots(figsize=(2.0, 1.0))
    ax.plot([0, 1], [0, 1])
    return fig


def test_atomic_savefig_writes_valid_png_with_requested_size(tmp_path):
    fig = _fig()
    try:
        p = atomic_savefig(fig, tmp_path / "plots" / "f.png", dpi=50)
    finally:
        plt.close(fig)
    assert p.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(p)
    assert img.shape[:2] == (50, 100)  # 1 x 2 inches at 50 dpi: height 50, width 100 pixels
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.png"]


def test_atomic_savefig_format_follows_final_suffix(tmp_path):
    fig = _fig()
    try:
        pdf = atomic_savefig(fig, tmp_path / "f.pdf")
        bare = atomic_savefig(fig, tmp_path / "noext", dpi=20)
        forced = atomic_savefig(fig, tmp_path / "forced.bin", format="png", dpi=20)
    finally:
        plt.close(fig)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert bare.read_bytes()[:8] == PNG_MAGIC  # matplotlib's default format, no ".png" appended
    assert forced.read_bytes()[:8] == PNG_MAGIC
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.pdf", "forced.bin", "noext"]


def test_atomic_savefig_unknown_format_raises_and_leaves_nothing(tmp_path):
    target = tmp_path / "f.notaformat"
    target.write_bytes(b"old")
    fig = _fig()
    try:
        with pytest.raises(ValueError):
            atomic_savefig(fig, target)
    finally:
        plt.close(fig)
    assert target.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.notaformat"]
