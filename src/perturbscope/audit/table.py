"""The audit's table in the paper's layout, with counts and 95% intervals beside each percentage."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["format_table", "format_cell"]


def format_cell(p: dict | None, digits: int = 2) -> str:
    """``"53.01 (k/n) [lo, hi]"`` from a :func:`~perturbscope.audit.summary.proportion` dict."""
    if p is None or p.get("n", 0) == 0 or p.get("pct") is None or not math.isfinite(p["pct"]):
        return "n/a"
    return f"{p['pct']:.{digits}f} ({p['k']}/{p['n']}) [{p['lo']:.{digits - 1}f}, {p['hi']:.{digits - 1}f}]"


def format_table(summary: dict[str, dict], alphas: Sequence[float], notes: Sequence[str] = ()) -> str:
    """One column per split; rows images, accuracy, adversarial, random(alpha) (paper eqs 6-8).

    Each cell: percentage, count ``k/n`` and its 95% Clopper-Pearson interval. Below the table:
    how the attack and the probe treat the bounds (the summaries' ``attack_mode`` /
    ``probe_mode``: "unclipped (paper)" or "clipped to [0, 1]") and each of ``notes`` as a
    ``WARNING:`` line (e.g. :func:`perturbscope.audit.quality.quality_warnings`).
    """
    names = list(summary)
    cells = {n: summary[n].get("intervals") for n in names}
    label_w = 30
    cols = {n: [format_cell(cells[n]["accuracy"] if cells[n] else None),
                format_cell(cells[n]["adversarial_susceptibility"] if cells[n] else None)]
               + [format_cell(cells[n]["random_susceptibility"].get(float(a)) if cells[n] else None)
                  for a in alphas] for n in names}
    width = max([len(c) for n in names for c in cols[n]] + [len(n) for n in names] + [8]) + 2
    head = f"{'% (paper eqs 6-8), 95% CI':<{label_w}}" + "".join(f"{n:>{width}}" for n in names)
    rows = [head, "-" * len(head)]
    rows.append(f"{'images':<{label_w}}" + "".join(f"{summary[n]['n_images']:>{width}d}" for n in names))
    labels = ["accuracy", "adversarial susceptibility"] + [f"random susceptibility a={a:g}" for a in alphas]
    for i, label in enumerate(labels):
        rows.append(f"{label:<{label_w}}" + "".join(f"{cols[n][i]:>{width}}" for n in names))
    modes = {(summary[n].get("attack_mode"), summary[n].get("probe_mode")) for n in names} - {(None, None)}
    for attack_mode, probe_mode in sorted(modes, key=str):
        rows.append(f"attack: {attack_mode}; random probe: {probe_mode}")
    rows.extend(f"WARNING: {note}" for note in notes)
    return "\n".join(rows)
