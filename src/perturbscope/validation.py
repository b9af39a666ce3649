"""Input checks shared by every entry point: one clear error naming what was wrong."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is checked: the CLI parses options without it
    import torch

__all__ = ["check_images", "check_labels", "check_bounds", "check_int", "check_float", "check_floats",
           "check_finite", "check_out_dir", "check_out_file", "OutputPathError", "check_fits",
           "available_memory", "MemoryFitError", "check_frame"]


def check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bounds must be a pair (low, high) of numbers, got {bounds!r}") from exc
    if not lo < hi:
        raise ValueError(f"bounds must satisfy low < high, got {bounds!r}")
    return lo, hi


def check_images(x: torch.Tensor, bounds: tuple[float, float] | None = (0.0, 1.0), name: str = "x"
                 ) -> torch.Tensor:
    """Check a batch of inputs ``(N, ...)``: floating point, finite, inside ``bounds``."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (N, ...) with a batch dimension, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in pixel units, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite values")
    if bounds is not None:
        lo, hi = check_bounds(bounds)
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo - 1e-6 or xmax > hi + 1e-6:
            raise ValueError(
                f"{name} has values in [{xmin:.4g}, {xmax:.4g}], outside the declared bounds "
                f"[{lo:g}, {hi:g}]; rescale the inputs or pass the bounds they really have"
            )
    return x


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None, name: str = "y"
                 ) -> torch.Tensor:
    """Check integer labels ``(N,)`` matching ``n`` inputs (and ``< num_classes`` if given)."""
    import torch

    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the inputs, got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if (y < 0).any():
        raise ValueError(f"{name} has negative labels")
    if num_classes is not None and (y >= num_classes).any():
        raise ValueError(f"{name} has labels >= {num_classes} (max {int(y.max())})")
    return y.long()


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``; a ``ValueError``/``TypeError`` naming ``name`` if not.

    Booleans and floats are refused (``3.0`` is not a count), as in scikit-learn's ``check_scalar``.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ValueError(f"{name} must be an int {_range_text(minimum, maximum, False, False)}, got {v}")
    return v


def check_float(name: str, value: object, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float inside the given interval; an error naming ``name`` if not.

    ``low_open`` / ``high_open`` exclude the end points. NaN and infinities are always refused.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    text = _range_text(low, high, low_open, high_open)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number{' ' + text if text else ''}, got {v}")
    if ((low is not None and (v < low or (low_open and v == low)))
            or (high is not None and (v > high or (high_open and v == high)))):
        raise ValueError(f"{name} must be {text}, got {v:g}")
    return v


def check_floats(name: str, values: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, nonempty: bool = True) -> tuple[float, ...]:
    """A sequence of numbers, each checked as by :func:`check_float`; returned as a tuple."""
    try:
        items = tuple(values)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"{name} must be a list of numbers, got {values!r}") from exc
    if nonempty and not items:
        raise ValueError(f"{name} must not be empty")
    return tuple(check_float(f"{name}[{i}]" if len(items) > 1 else name, v, low=low, high=high,
                             low_open=low_open, high_open=high_open) for i, v in enumerate(items))


def _num(v: float) -> str:
    """``v`` as a reader writes it: ``100000000`` for an integer bound (not ``1e+08``), else ``%g``."""
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 1e16 else f"{f:g}"


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_num(high)}"
    return ""


def check_frame(df: object, columns: Sequence[str], name: str = "records") -> None:
    """``df`` is a pandas DataFrame holding ``columns`` (the error names ``name`` and what is missing)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lack columns {missing}")


def check_finite(name: str, t: torch.Tensor, what: str = "values") -> torch.Tensor:
    """``t`` if every element is finite; else a ValueError naming ``name`` and how many are not."""
    import torch

    if t.is_floating_point() or t.is_complex():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite {what} (of {t.numel()})")
    return t


class MemoryFitError(ValueError):
    """A setting would need more memory than the device has free (checked before any work)."""


def available_memory(device: object) -> int | None:
    """Bytes free for new tensors on ``device`` (``torch.device`` or a name): CUDA's free memory,
    Linux's ``MemAvailable`` for the CPU; ``None`` where it cannot be told."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError):  # pragma: no cover - no driver
            return None
    if dev.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


def check_fits(what: str, nbytes: int, device: object, fix: str) -> None:
    """Refuse, before any work, a step that needs ``nbytes`` when ``device`` has less free
    (:class:`MemoryFitError` naming ``what``, both sizes and ``fix``)."""
    free = available_memory(device)
    if free is not None and nbytes > free:
        raise MemoryFitError(f"{what} needs about {nbytes / 2**30:.3g} GiB, but {device} has "
                             f"{free / 2**30:.3g} GiB free; {fix}")


# --------------------------------------------------------------------------------------------
# output paths: checked before any work, so a mistake costs nothing and leaves nothing behind
# --------------------------------------------------------------------------------------------

class OutputPathError(ValueError):
    """An output path that cannot be written: empty, the wrong kind (file vs folder), under a file,
    on a read-only or full file system, or without write permission. Nothing was written."""


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _what(name: str, path: object) -> str:
    return f"{name} {path}".strip()


def _check_writable_under(name: str, path: Path) -> None:
    """Refuse ``path`` when the folder it would be created in cannot take a new file."""
    import errno

    base = _nearest_existing(path if not path.exists() else (path if path.is_dir() else path.parent))
    what = _what(name, path)
    if not base.is_dir():
        raise OutputPathError(f"{what}: {base} is a file, so nothing can be created under it; give "
                              f"another path")
    try:
        st = os.statvfs(base)
    except (OSError, AttributeError):  # pragma: no cover - statvfs is missing on some platforms
        st = None
    if st is not None and st.f_flag & getattr(os, "ST_RDONLY", 1):
        raise OutputPathError(f"{what}: {base} is on a read-only file system; give a writable path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what}: no permission to write in {base}; give a writable path")
    if st is not None and st.f_bavail * st.f_frsize == 0:
        raise OutputPathError(f"{what}: no space left on the device holding {base} "
                              f"({os.strerror(errno.ENOSPC)}); free some space or give another path")


def check_out_dir(name: str, path: str | os.PathLike) -> Path:
    """``path`` as the folder a command writes into: not empty, not an existing file, and writable
    (it is created when missing, but only when the command writes). Raises :class:`OutputPathError`."""
    text = os.fspath(path)
    if not str(text).strip():
        raise OutputPathError(f"{name or 'the output folder'} is empty; give a folder name such as results/")
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{_what(name, p)} is an existing file, not a folder; give a folder name "
                              f"(it is created if missing)")
    _check_writable_under(name, p)
    return p


def check_out_file(name: str, path: str | os.PathLike, suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a file a command writes: not empty, not a folder, with one of ``suffixes`` (any
    case) when given, in a writable place. Raises :class:`OutputPathError`."""
    text = os.fspath(path)
    example = f"out{suffixes[0]}" if suffixes else "out.txt"
    if not str(text).strip():
        raise OutputPathError(f"{name or 'the output file'} is empty; give a file name such as {example}")
    p = Path(text)
    if p.is_dir() or str(text).endswith(("/", os.sep)):
        raise OutputPathError(f"{_what(name, text)} is a folder; give a file name such as {p / example}")
    if suffixes and p.suffix.lower() not in suffixes:
        got = f"the suffix {p.suffix!r}" if p.suffix else "no suffix"
        raise OutputPathError(f"{_what(name, p)} has {got}; give a file name ending in "
                              f"{' or '.join(suffixes)}")
    _check_writable_under(name, p)
    return p
