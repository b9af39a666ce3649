"""Input checks shared by every entry point: one clear error naming what was wrong."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is checked: the CLI parses options without it
    import torch

__all__ = ["check_images", "check_labels", "check_bounds", "check_int", "check_float", "check_floats"]


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


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""
