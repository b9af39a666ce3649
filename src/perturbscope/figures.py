"""One way to make and save a figure: a bare ``matplotlib.figure.Figure``, saved atomically and freed.

* :func:`new_figure` is ``plt.subplots`` without pyplot: the figure belongs to no pyplot window
  list and needs no GUI backend, so perturbscope never calls ``matplotlib.use`` and a notebook
  user keeps their own backend (and their own open figures);
* :func:`save_figure` writes it with :func:`perturbscope.fileio.atomic_savefig` (a reader never
  sees a half-written file), then always frees it, also when saving fails, and returns the path.

Every figure perturbscope writes goes through these two functions. matplotlib is imported on
the first call, not when this module is imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perturbscope.fileio import atomic_savefig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure", "close_figure", "DEFAULT_DPI"]

#: resolution of the PNG files perturbscope writes (dots per inch)
DEFAULT_DPI = 110


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
               layout: str | None = None, **subplots_kw: Any) -> tuple[Figure, Any]:
    """A new figure and its axes, as ``plt.subplots(nrows, ncols, ...)`` returns them.

    Args:
        nrows, ncols: the grid of axes.
        figsize: ``(width, height)`` in inches (default: matplotlib's ``figure.figsize``).
        layout: ``None``, ``"tight"``, ``"constrained"``, ... (as ``matplotlib.figure.Figure``).
        **subplots_kw: ``sharex``, ``sharey``, ``squeeze``, ``gridspec_kw``, ``subplot_kw``,
            ``width_ratios``, ``height_ratios`` (as ``Figure.subplots``).

    Returns:
        ``(fig, axes)``: one ``Axes`` for a 1 x 1 grid, else an array of them (unless
        ``squeeze=False``). The figure is not registered with pyplot.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **subplots_kw)


def close_figure(fig: Any) -> None:
    """Free ``fig``: close it in pyplot if pyplot knows it (without importing pyplot), then clear it."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: float = DEFAULT_DPI, **savefig_kw: Any) -> Path:
    """Write ``fig`` to ``path`` atomically, free it (always, also on error) and return ``path``.

    The format comes from ``path``'s suffix (see :func:`~perturbscope.fileio.atomic_savefig`);
    other keyword arguments (``format``, ``bbox_inches``, ...) go to ``fig.savefig``. The
    parent folder is created if missing.
    """
    try:
        return atomic_savefig(fig, path, dpi=dpi, **savefig_kw)
    finally:
        close_figure(fig)
