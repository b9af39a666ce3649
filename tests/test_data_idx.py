"""IDX reader/writer: round trips and every kind of broken file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from perturbscope.data.idx import DataError, encode_idx, read_idx, write_idx


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
)
def test_round_trip(tmp_path, compress, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((5, 3, 4)) * 50).astype(dtype)
    path = write_idx(tmp_path / "a.idx", arr, compress=compress)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress


def test_compression_detected_by_magic_not_suffix(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw_named_gz = write_idx(tmp_path / "raw.gz", arr, compress=False)
    gz_named_raw = write_idx(tmp_path / "gz.idx", arr, compress=True)
    np.testing.assert_array_equal(read_idx(raw_named_gz), arr)
    np.testing.assert_array_equal(read_idx(gz_named_raw), arr)


def test_compress_none_follows_suffix_and_is_deterministic(tmp_path):
    arr = np.arange(100, dtype=np.uint8)
    a = write_idx(tmp_path / "a.gz", arr)
    b = write_idx(tmp_path / "b.gz", arr)
    assert a.read_bytes()[:2] == b"\x1f\x8b"
    assert a.read_bytes() == b.read_bytes()
    assert write_idx(tmp_path / "c.idx", arr).read_bytes()[:2] == b"\x00\x00"
    assert not list(tmp_path.glob(".*.part"))


def test_header_layout_matches_the_format():
    data = encode_idx(np.zeros((2, 3), dtype=np.uint8))
    assert data[:4] == bytes([0, 0, 0x08, 2])
    assert data[4:12] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert len(data) == 12 + 6


def test_big_endian_payload():
    data = encode_idx(np.array([1, 256], dtype=np.int32))
    assert data[8:] == (1).to_bytes(4, "big") + (256).to_bytes(4, "big")


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data(tmp_path, compress):
    payload = encode_idx(np.ones((10, 4, 4), dtype=np.uint8))[:-5]
    path = tmp_path / "t.idx"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(DataError, match=r"truncated IDX data.*\(10, 4, 4\).*155 bytes") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_truncated_gzip_stream(tmp_path):
    full = gzip.compress(encode_idx(np.arange(5000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="gzip stream is truncated") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_corrupt_gzip_crc(tmp_path):
    full = bytearray(gzip.compress(encode_idx(np.arange(50, dtype=np.uint8))))
    full[-8] ^= 0xFF  # CRC32 of the trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(full))
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "h.idx"
    path.write_bytes(bytes([0, 0, 8, 3]) + (7).to_bytes(4, "big"))
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path)


def test_extra_bytes(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(encode_idx(np.zeros(4, dtype=np.uint8)) + b"\x00\x00")
    with pytest.raises(DataError, match="2 extra"):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "png.idx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="bad IDX magic") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_unknown_dtype_code(tmp_path):
    path = tmp_path / "code.idx"
    path.write_bytes(bytes([0, 0, 0x0A, 1]) + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError, match="unknown IDX dtype code 0x0A"):
        read_idx(path)


def test_zero_dims_and_tiny_and_empty(tmp_path):
    (tmp_path / "z").write_bytes(bytes([0, 0, 8, 0]))
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DataError, match="0 dimensions"):
        read_idx(tmp_path / "z")
    with pytest.raises(DataError, match="too short"):
        read_idx(tmp_path / "tiny")
    with pytest.raises(DataError, match="empty"):
        read_idx(tmp_path / "empty")


def test_data_error_is_value_error_and_missing_file(tmp_path):
    assert issubclass(DataError, ValueError)
    with pytest.raises(FileNotFoundError, match="nope.idx"):
        read_idx(tmp_path / "nope.idx")


def test_write_rejects_unsupported(tmp_path):
    with pytest.raises(ValueError, match="no IDX code"):
        write_idx(tmp_path / "b.idx", np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="no IDX code"):
        write_idx(tmp_path / "u.idx", np.zeros(3, dtype=np.uint16))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "s.idx", np.array(3, dtype=np.uint8))
    assert not list(tmp_path.iterdir())
