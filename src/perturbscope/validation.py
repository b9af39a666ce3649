"""Input checks shared by every entry point: one clear error naming what was wrong."""

from __future__ import annotations

import torch

__all__ = ["check_images", "check_labels", "check_bounds"]


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
