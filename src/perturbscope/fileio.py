"""Atomic file writes: write to a hidden temporary file next to the target, then rename it into place.

``os.replace`` within one directory is atomic on POSIX and Windows, so a reader (or a run that
was interrupted half way) sees either the old file or the complete new one, never a partial file.
If writing fails the temporary file is removed and the old target, if any, is left untouched.

The temporary file is ``.<name>.<random>.tmp<suffix>`` in the target's directory: hidden, and it
keeps the target's suffix so writers that infer a format or append an extension from the file name
(``np.save``, ``DataFrame.to_csv`` compression, ``savefig``) behave as they would on the target.
It is created empty with mode ``0o666`` masked by the umask (the usual mode of a new file), so the
final file gets the same permissions a plain ``open(path, "w")`` would give it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_many", "atomic_savefig"]


def _create_temp(path: Path) -> Path:
    """Create a new empty hidden file next to ``path`` (exclusive create, usual mode) and return it."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {path}")  # pragma: no cover


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: call ``write(tmp)`` on a temporary file, then ``os.replace`` it.

    Args:
        path: the target file. Its parent directory is created if missing.
        write: called once with the temporary file's path (a ``Path`` in the same directory, which
            already exists and is empty); it must write the complete content there, e.g.
            ``lambda t: df.to_csv(t, index=False)``. Its return value is ignored.

    Returns:
        ``path`` as a ``Path``.

    On any exception (``KeyboardInterrupt`` included) the temporary file is deleted, ``path`` is
    left as it was, and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_many(writes: dict[str | os.PathLike, Callable[[Path], object]]) -> list[Path]:
    """Write several files so that either all of them are replaced or none is.

    Every ``write(tmp)`` runs first, each on a temporary file next to its target; only when all
    succeeded are the temporary files renamed into place (renames do not run out of space). On any
    failure every temporary file is deleted and no target is touched. Returns the targets.
    """
    done: list[tuple[Path, Path]] = []
    try:
        for target, write in writes.items():
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _create_temp(path)
            done.append((tmp, path))
            write(tmp)
        for tmp, path in done:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)
        raise
    return [path for _, path in done]


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write the string ``text`` to ``path`` atomically (see :func:`atomic_write`); returns ``path``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return atomic_write(path, lambda t: t.write_text(text, encoding=encoding))


def atomic_savefig(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure to ``path`` atomically (see :func:`atomic_write`); returns ``path``.

    The file format comes from ``path``'s suffix (``.png``, ``.pdf``, ``.svg``, ...; matplotlib's
    ``savefig.format`` default when there is none) and is passed to ``savefig`` explicitly, unless
    ``savefig_kwargs`` gives ``format``. Other keyword arguments (``dpi``, ``bbox_inches``, ...)
    go to ``fig.savefig`` unchanged. The figure is not closed.
    """
    path = Path(path)
    if "format" not in savefig_kwargs:
        fmt = path.suffix[1:].lower()
        if not fmt:
            import matplotlib

            fmt = matplotlib.rcParams["savefig.format"]
        savefig_kwargs["format"] = fmt
    return atomic_write(path, lambda t: fig.savefig(t, **savefig_kwargs))
