"""Read and write IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or raw.

Layout of an IDX file (all integers big-endian)::

    byte 0-1   0x00 0x00
    byte 2     dtype code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
               0x0D float32, 0x0E float64
    byte 3     number of dimensions k (>= 1)
    4k bytes   k dimension sizes, unsigned 32-bit
    rest       prod(sizes) items of the dtype, C order

Compression is detected from the first two bytes (gzip magic ``1f 8b``), never
from the file name, so a raw file called ``*.gz`` or a gzip file without the
suffix both read correctly.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from perturbscope.data.errors import DataError

__all__ = [
    "DataError",
    "IDX_DTYPES",
    "read_idx",
    "read_idx_payload",
    "decode_idx",
    "encode_idx",
    "write_idx",
    "sha256_bytes",
    "sha256_file",
    "atomic_output",
]

GZIP_MAGIC = b"\x1f\x8b"

#: IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_BY_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}


@contextmanager
def atomic_output(target: str | os.PathLike) -> Iterator[tuple[Path, BinaryIO]]:
    """Write to a hidden temporary file next to ``target``; rename it into place on success.

    Yields ``(temporary path, binary file handle)``. If the block raises, the
    temporary file is removed and ``target`` is untouched. The file gets the usual
    permissions (umask applies), unlike :func:`tempfile.mkstemp`'s 0600.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        with open(tmp, "xb") as fh:
            yield tmp, fh
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the bytes of the file at ``path`` (as stored, not decompressed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_idx_payload(path: str | os.PathLike) -> bytes:
    """The uncompressed IDX bytes of ``path``: gunzipped if it starts with the gzip magic.

    Raises :class:`FileNotFoundError` if the file is missing and :class:`DataError`
    if it is empty or a broken gzip stream (truncated, bad CRC, bad length).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"{path}: file is empty (0 bytes), expected an IDX file")
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise DataError(
            f"{path}: gzip stream is truncated ({len(raw)} compressed bytes read); "
            "the file is incomplete, download or copy it again"
        ) from exc
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc})") from exc


def decode_idx(payload: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into an array in native byte order.

    ``source`` names the data in error messages (usually the file path).
    Validates the magic bytes, the dtype code, the number of dimensions and that
    the byte count equals exactly what the header declares.
    """
    if len(payload) < 4:
        raise DataError(
            f"{source}: only {len(payload)} bytes, too short for an IDX header (needs >= 4)"
        )
    if payload[0] != 0 or payload[1] != 0:
        raise DataError(
            f"{source}: bad IDX magic {payload[:4].hex()} (the first two bytes must be 00 00); "
            "not an IDX file"
        )
    code, ndim = payload[2], payload[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{source}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(payload) < header_len:
        raise DataError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header_len} bytes, "
            f"file has {len(payload)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(payload, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(payload) - header_len
    if actual < expected:
        raise DataError(
            f"{source}: truncated IDX data: header declares shape {shape} of {dtype.name} "
            f"= {expected} bytes, but only {actual} bytes follow the header"
        )
    if actual > expected:
        raise DataError(
            f"{source}: IDX size mismatch: header declares shape {shape} of {dtype.name} "
            f"= {expected} bytes, but {actual} bytes follow the header ({actual - expected} extra)"
        )
    arr = np.frombuffer(payload, dtype=dtype, offset=header_len).reshape(shape)
    # Own, writable, native-endian copy (frombuffer on bytes is read-only).
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw (detected from the magic bytes).

    Returns an array of the declared shape, native byte order, dtype one of
    uint8, int8, int16, int32, float32, float64.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: bad magic, unknown dtype code, truncated or oversized data, or
            a broken gzip stream; the message names the file and the problem.
    """
    return decode_idx(read_idx_payload(path), source=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Uncompressed IDX bytes for ``array`` (see :func:`write_idx` for the accepted dtypes)."""
    arr = np.asarray(array)
    if arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"array must have between 1 and 255 dimensions, got shape {arr.shape}")
    code = _CODE_BY_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None or arr.dtype.kind == "b":
        raise ValueError(
            f"array dtype {arr.dtype} has no IDX code; use uint8, int8, int16, int32, "
            "float32 or float64"
        )
    if any(s >= 2**32 for s in arr.shape):
        raise ValueError(f"array dimension too large for IDX (< 2**32 each), got {arr.shape}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file at ``path``; gzip it if ``compress``.

    ``compress=None`` compresses when the name ends in ``.gz``. Compressed output
    is deterministic (gzip mtime 0, no file name in the header), so the same array
    always gives the same bytes and the same SHA-256 with a given zlib.
    The file is written to a temporary name and renamed into place, so a failed
    write never leaves a partial file. Returns the path written.
    """
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    data = encode_idx(array)
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    with atomic_output(path) as (_, fh):
        fh.write(data)
    return path
