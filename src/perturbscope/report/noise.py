"""Every output of a noise-training run in one folder: records, summary, tables, Figures 15/16, HTML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from perturbscope.fileio import atomic_write_text

__all__ = ["FIGURE_OF_KIND", "tables_text", "write_noise_outputs"]

#: the paper's figure for each noise kind
FIGURE_OF_KIND = {"cube": 15, "ball": 16}


def tables_text(result: Any) -> str:
    """The analogues of the paper's Tables 13-18 as text, one block per noise level."""
    import pandas as pd

    tables = result.tables()
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        return "\n\n".join(f"== noise {name} ==\n{t.to_string()}" for name, t in tables.items())


def write_noise_outputs(result: Any, out: str | os.PathLike) -> dict[str, Any]:
    """Write a :class:`~perturbscope.experiments.noise.NoiseTrainingResult` to ``out``.

    ``records.csv``, ``summary.csv``, ``config.json`` (:meth:`NoiseTrainingResult.save`),
    ``noise_cube.png`` / ``noise_ball.png`` for the kinds run (paper Figures 15, 16),
    ``tables.txt`` and a self-contained ``report.html``.

    Returns:
        ``{"records", "summary", "config", "report", "tables": Path, "tables_text": str,
        "figures": {title: Path}}``.
    """
    from perturbscope.report.html import noise_report
    from perturbscope.report.plots import plot_noise_curves

    out = Path(out)
    paths: dict[str, Any] = dict(result.save(out))
    figures = {}
    for kind, fig in FIGURE_OF_KIND.items():
        if kind in result.config.kinds:
            p = plot_noise_curves(result.summary, kind, out / f"noise_{kind}.png")
            figures[f"Noise uniform in the {kind} against its size (paper Figure {fig})"] = p
    text = tables_text(result)
    paths["tables"] = atomic_write_text(out / "tables.txt", text + "\n")
    paths["tables_text"] = text
    paths["figures"] = figures
    paths["report"] = noise_report(result, figures).write(out / "report.html")
    return paths
