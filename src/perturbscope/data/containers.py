"""Reading the user's local copy of a data set: roots, archives, checksums and image decoding.

Shared by the CIFAR-10, GTSRB, ImageNet and image-folder loaders:

* :func:`resolve_root`: the ``path`` argument, else an environment variable, else a clear error;
* :class:`ZipContainer` / :class:`TarContainer` / :class:`DirContainer`: one ``names()`` /
  ``read(name)`` interface over a ``.zip``, a ``.tar(.gz)`` or an extracted folder; a missing,
  truncated or corrupt member raises :class:`~perturbscope.data.errors.DataError` naming the
  archive and the member (members are read into memory, never extracted to disk);
* :func:`file_digest` / :func:`check_digest`: MD5 / SHA-1 / SHA-256 checks whose error says how to
  skip verification (``verify=False`` in Python, ``--no-verify`` on the command line);
* :func:`open_image` / :func:`open_image_file`: Pillow decoding of bytes (of a file) with errors
  that name the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from perturbscope.data.errors import DataError

__all__ = [
    "SKIP_VERIFY_HINT",
    "resolve_root",
    "digest_algorithm",
    "bytes_digest",
    "file_digest",
    "check_digest",
    "merged_checksums",
    "Container",
    "DirContainer",
    "ZipContainer",
    "TarContainer",
    "open_container",
    "open_image",
    "open_image_file",
    "IMAGE_EXTENSIONS",
]

#: The words every checksum error ends with (valid for the API and the command line).
SKIP_VERIFY_HINT = ("to load it anyway, skip the check: verify=False in Python, "
                    "--no-verify on the command line")

#: File name suffixes read as images by the folder loaders (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".bmp", ".gif",
                                     ".tif", ".tiff", ".webp")

_ALGORITHMS = {32: "md5", 40: "sha1", 64: "sha256"}


def resolve_root(path: str | os.PathLike | None, env_var: str, what: str) -> Path:
    """``path`` (expanded), else ``$env_var``; a ``FileNotFoundError`` if neither names something.

    Args:
        path: the user's argument (a file or a directory), or ``None``.
        env_var: environment variable consulted when ``path`` is ``None``.
        what: the data set, for messages (e.g. ``"CIFAR-10"``).
    """
    if path is None:
        value = os.environ.get(env_var)
        if not value:
            raise FileNotFoundError(
                f"no {what} location given: pass path=<file or directory> (command line: --data-path) "
                f"or set ${env_var}; see docs/data.md for the files needed")
        root, origin = Path(value).expanduser(), f"${env_var}"
    else:
        root, origin = Path(path).expanduser(), "path argument"
    if not root.exists():
        raise FileNotFoundError(f"{what}: {root} ({origin}) does not exist")
    return root


def digest_algorithm(hexdigest: str) -> str:
    """``"md5"``, ``"sha1"`` or ``"sha256"`` from the length of a hex digest."""
    algo = _ALGORITHMS.get(len(hexdigest))
    if algo is None or any(c not in "0123456789abcdef" for c in hexdigest.lower()):
        raise ValueError(f"not an MD5 / SHA-1 / SHA-256 hex digest: {hexdigest!r}")
    return algo


def bytes_digest(data: bytes, algorithm: str) -> str:
    """Hex digest of ``data`` with ``algorithm`` (``md5``, ``sha1``, ``sha256``)."""
    return hashlib.new(algorithm, data).hexdigest()


def file_digest(path: str | os.PathLike, algorithm: str, chunk: int = 1 << 20) -> str:
    """Hex digest of the bytes of the file at ``path``, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_digest(actual_of: Any, expected: str | Iterable[str], where: str, what: str) -> None:
    """Raise :class:`DataError` unless the data's digest is one of ``expected``.

    Args:
        actual_of: a callable ``algorithm -> hex digest`` (so each algorithm is computed once).
        expected: one hex digest, or several (any match passes, e.g. two official versions).
        where: the file (or ``archive:member``) for the message.
        what: what the digest is, e.g. ``"the official CIFAR-10 data_batch_1"``.
    """
    wanted = [expected] if isinstance(expected, str) else list(expected)
    seen: dict[str, str] = {}
    for exp in wanted:
        algo = digest_algorithm(exp)
        if algo not in seen:
            seen[algo] = actual_of(algo)
        if seen[algo] == exp.lower():
            return
    got = ", ".join(f"{a.upper()} {d}" for a, d in seen.items())
    want = " or ".join(f"{digest_algorithm(e).upper()} {e}" for e in wanted)
    raise DataError(f"{where}: checksum mismatch: {got}, expected {want} for {what}; the file is "
                    f"corrupt, truncated or not the official one ({SKIP_VERIFY_HINT})")


def merged_checksums(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``defaults`` updated with ``overrides`` (file name -> hex digest(s)); checks the digests."""
    out = dict(defaults)
    for name, value in (overrides or {}).items():
        for v in ([value] if isinstance(value, str) else value):
            digest_algorithm(v)
        out[name] = value
    return out


class Container:
    """Files addressed by a POSIX relative name: a folder, a zip or a tar archive."""

    path: Path

    def names(self) -> list[str]:
        """Every regular file, as a POSIX path relative to the container."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        """The bytes of member ``name``; :class:`DataError` if missing, truncated or corrupt."""
        raise NotImplementedError

    def where(self, name: str) -> str:
        """``name`` as shown in messages."""
        return f"{self.path}:{name}"

    def close(self) -> None:
        """Release open file handles (reopened on demand)."""

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        state = dict(self.__dict__)
        state.pop("_handle", None)
        state.pop("_pid", None)
        return state


class DirContainer(Container):
    """An extracted folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is not a directory")
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        if self._names is None:
            self._names = sorted(p.relative_to(self.path).as_posix()
                                 for p in self.path.rglob("*") if p.is_file())
        return self._names

    def read(self, name: str) -> bytes:
        file = self.path / PurePosixPath(name)
        if not file.is_file():
            raise DataError(f"{file}: file not found")
        return file.read_bytes()

    def where(self, name: str) -> str:
        return str(self.path / PurePosixPath(name))


class ZipContainer(Container):
    """A ``.zip`` archive, opened lazily once per process (so DataLoader workers each get a handle)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._names_cache: list[str] | None = None
        self._handle: zipfile.ZipFile | None = None
        self._pid = -1
        self.names()  # fail early on a file that is not a zip archive

    def _zip(self) -> zipfile.ZipFile:
        if self._handle is None or self._pid != os.getpid():
            try:
                self._handle = zipfile.ZipFile(self.path)
            except FileNotFoundError:
                raise
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise DataError(f"{self.path}: not a readable zip archive, or truncated (its "
                                f"central directory at the end is missing): {exc}") from exc
            self._pid = os.getpid()
        return self._handle

    def names(self) -> list[str]:
        if self._names_cache is None:
            self._names_cache = sorted(i.filename for i in self._zip().infolist() if not i.is_dir())
        return self._names_cache

    def read(self, name: str) -> bytes:
        z = self._zip()
        try:
            return z.read(name)
        except KeyError as exc:
            raise DataError(f"{self.path}: archive has no member {name}") from exc
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise DataError(f"{self.where(name)}: archive member is truncated or corrupt ({exc})") from exc

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class TarContainer(Container):
    """A ``.tar``, ``.tar.gz`` (or bz2/xz) archive. Members are read, never extracted.

    A compressed tar has no random access: :meth:`read_many` reads several members in one pass;
    :meth:`read` re-scans the archive from its start.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._names_cache: list[str] | None = None

    def _open(self) -> tarfile.TarFile:
        try:
            return tarfile.open(self.path, mode="r:*")
        except FileNotFoundError:
            raise
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{self.path}: not a readable tar archive ({exc})") from exc

    def _fail(self, exc: BaseException, name: str | None = None) -> DataError:
        where = self.where(name) if name else str(self.path)
        return DataError(f"{where}: archive is truncated or corrupt ({type(exc).__name__}: {exc}); "
                         "copy or download it again")

    def names(self) -> list[str]:
        if self._names_cache is None:
            names: list[str] = []
            try:
                with self._open() as tar:
                    for m in tar:
                        if m.isfile():
                            names.append(m.name)
            except DataError:
                raise
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise self._fail(exc) from exc
            self._names_cache = sorted(names)
        return self._names_cache

    def read_many(self, names: Iterable[str]) -> dict[str, bytes]:
        """``{name: bytes}`` for every wanted member, in one pass over the archive."""
        wanted = set(names)
        out: dict[str, bytes] = {}
        current: str | None = None
        try:
            with self._open() as tar:
                for m in tar:
                    if m.name in wanted and m.isfile():
                        current = m.name
                        fh = tar.extractfile(m)
                        assert fh is not None
                        data = fh.read()
                        if len(data) != m.size:
                            raise EOFError(f"member has {len(data)} of its {m.size} bytes")
                        out[m.name] = data
                        current = None
                        if len(out) == len(wanted):
                            break
        except DataError:
            raise
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise self._fail(exc, current) from exc
        missing = sorted(wanted - set(out))
        if missing:
            raise DataError(f"{self.path}: archive has no member {', '.join(missing)}")
        return out

    def read(self, name: str) -> bytes:
        return self.read_many([name])[name]


def open_container(path: str | os.PathLike) -> Container:
    """A :class:`DirContainer`, :class:`ZipContainer` or :class:`TarContainer` for ``path``.

    The kind is read from the file's first bytes (zip ``PK``, gzip ``1f 8b``, bzip2 ``BZh``,
    xz ``fd 37 7a``, or a tar header), never from its name.
    """
    p = Path(path)
    if p.is_dir():
        return DirContainer(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist")
    with open(p, "rb") as fh:
        head = fh.read(512)
    if not head:
        raise DataError(f"{p}: file is empty (0 bytes), expected an archive")
    if head[:2] == b"PK":
        return ZipContainer(p)
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or \
            (len(head) >= 262 and head[257:262] == b"ustar"):
        return TarContainer(p)
    raise DataError(f"{p}: not a zip or tar archive (first bytes {head[:4].hex()})")


def open_image(data: bytes, where: str) -> Any:
    """A loaded ``PIL.Image`` from encoded bytes; :class:`DataError` naming ``where`` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where}: not a readable image, or truncated ({exc})") from exc
    return img


def open_image_file(path: Path) -> Any:
    """:func:`open_image` of the file ``path``; :class:`DataError` naming it if it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    return open_image(data, str(path))
