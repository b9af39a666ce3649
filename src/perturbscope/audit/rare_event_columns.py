"""The audit's view of the rare-event estimate: one row per image, a few columns per alpha.

:func:`rare_event_columns` turns :func:`~.estimate.flip_probability_table` (one row per image
and alpha) into columns that sit beside the paper's 2000-draw indicator ``flips_a{alpha}`` in
the audit records; :func:`summarize_rare_event` gives the summary entries derived from them
and :func:`records_to_table` converts them back to the long table that
:func:`~.plot.plot_flip_probability` draws.

Columns, for each alpha with key ``k = alpha_key(alpha)`` (``a1``, ``a2``, ``a2.5``...):

``p_hat_k``, ``p_lo_k``, ``p_hi_k``
    estimated probability that noise uniform in the L2 ball of radius ``alpha * eps_adv`` flips
    the prediction, and its confidence interval (NaN where the image has no ``eps_adv``).
``log10_p_hat_k``
    its base-10 log (finite even where ``p_hat`` underflows float64; ``-inf`` if no flip seen).
``draws_needed_k``
    expected number of uniform draws to see one flip, ``1 / p_hat`` (inf if no flip seen).
``p_probe_sees_flip_k``
    chance that a ``probe_draws``-draw random probe sees at least one flip,
    ``1 - (1 - p_hat)^probe_draws``.
``p_first_order_k``
    the first-order (plane) estimate, the exact cap fraction at the plane's distance.
``rare_rel_error_k``, ``rare_hits_k``
    estimated relative standard error and the number of flipping draws behind the estimate.

and ``rare_forwards`` (forward passes spent on the image, all alphas).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from perturbscope.audit.schema import RARE_EVENT_COLUMNS, alpha_key
from perturbscope.models.classifier import Classifier
from perturbscope.probes.rare_event.estimate import flip_probability_table

__all__ = ["RARE_COLUMN_PREFIXES", "rare_event_columns", "summarize_rare_event",
           "records_to_table"]

#: per-alpha column prefixes written by :func:`rare_event_columns` (``{prefix}_{alpha_key}``), as
#: the record schema names them.
RARE_COLUMN_PREFIXES: tuple[str, ...] = tuple(c.name.removesuffix("_{a}") for c in RARE_EVENT_COLUMNS)

_FROM_TABLE = {"p_hat": "p_hat", "p_lo": "ci_low", "p_hi": "ci_high", "log10_p_hat": "log10_p_hat",
               "draws_needed": "expected_draws", "p_probe_sees_flip": "p_probe_sees_flip",
               "p_first_order": "first_order_p", "rare_rel_error": "rel_error",
               "rare_hits": "hits"}


def rare_event_columns(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps_adv: torch.Tensor | np.ndarray | Sequence[float],
    alphas: Sequence[float] = (1.0, 2.0, 5.0, 10.0),
    **options,
) -> pd.DataFrame:
    """Flip probability per image and alpha as audit-record columns (one row per image).

    Args:
        model: the audited classifier, a :class:`~perturbscope.models.classifier.Classifier`
            or an ``nn.Module`` wrapped with ``output`` (binary ``"sigmoid"``/``"logit"`` or
            ``"logits"``).
        x: ``(N, *shape)`` images inside the classifier's bounds (pixel units).
        y: ``(N,)`` reference labels a flip is measured against (the audit passes the clean
            predictions), or ``None`` to use the model's clean predictions.
        eps_adv: ``(N,)`` adversarial L2 sizes (pixel units); NaN or non-positive (no
            adversarial found) gives NaN columns and costs no forward pass.
        alphas: radius multipliers; the ball radius is ``alpha * eps_adv``.
        options: keyword arguments of :func:`~.estimate.flip_probability_table`, checked there,
            with its defaults: ``output``, ``direction`` (optional ``(N, *shape)`` sampling
            directions; default the margin gradient, i.e. the direction of the paper's line
            search), ``budget`` (forward passes per image and alpha, default 2000;
            ``"splitting"`` with ``n_per_level`` draws per level (default 200) resolves p down
            to ``0.1^((budget - n_per_level) / (0.9 n_per_level))``, 1e-10 for the defaults;
            below that ``p_hat = 0`` and ``p_hi`` is an upper bound), ``seed``, ``method``,
            ``level``, ``probe_draws`` (size of the paper's probe, for
            ``p_probe_sees_flip_k``), ``batch_size``, ``progress`` and the estimator's own.

    Returns:
        DataFrame with ``N`` rows in the order of ``x`` (index ``0..N-1``) and the columns listed
        in the module docstring.
    """
    tab = flip_probability_table(model, x, y, torch.as_tensor(np.asarray(eps_adv, dtype=np.float64)),
                                 alphas, **options)
    n = x.shape[0]
    out: dict[str, np.ndarray] = {}
    alphas = tuple(float(a) for a in alphas)
    for j, a in enumerate(alphas):
        rows = tab.iloc[j::len(alphas)]  # the table is ordered (image, alpha)
        key = alpha_key(a)
        for prefix, col in _FROM_TABLE.items():
            vals = rows[col].to_numpy(dtype=np.float64, na_value=np.nan)
            out[f"{prefix}_{key}"] = vals
        # image without eps_adv: no estimate (NaN), not "no flip"
        out[f"draws_needed_{key}"] = np.where(np.isnan(out[f"p_hat_{key}"]), np.nan,
                                              out[f"draws_needed_{key}"])
    fw = tab["forwards"].to_numpy(dtype=np.int64).reshape(n, len(alphas)).sum(1)
    out["rare_forwards"] = fw
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def summarize_rare_event(records: pd.DataFrame, alphas: Sequence[float]) -> dict:
    """Summary entries from :func:`rare_event_columns`' columns (images with an estimate only).

    Returns ``{"n_images": int, "median_p": {alpha: float}, "median_log10_p": {...},
    "median_draws_needed": {...}, "median_p_first_order": {...}, "forwards": int}``; a median
    over no image is NaN.
    """
    need = [f"{p}_{alpha_key(a)}" for a in alphas for p in ("p_hat", "log10_p_hat",
                                                           "draws_needed", "p_first_order")]
    missing = [c for c in need if c not in records.columns]
    if missing:
        raise ValueError(f"records lack rare-event columns {missing}; run rare_event_columns()")

    def med(col: str) -> float:
        v = records[col].to_numpy(dtype=np.float64, na_value=np.nan)
        v = v[~np.isnan(v)]
        return float(np.median(v)) if v.size else math.nan

    out: dict = {"n_images": int(records[f"p_hat_{alpha_key(alphas[0])}"].notna().sum())
                 if len(alphas) else 0}
    for name, prefix in (("median_p", "p_hat"), ("median_log10_p", "log10_p_hat"),
                         ("median_draws_needed", "draws_needed"),
                         ("median_p_first_order", "p_first_order")):
        out[name] = {float(a): med(f"{prefix}_{alpha_key(a)}") for a in alphas}
    out["forwards"] = int(records["rare_forwards"].sum()) if "rare_forwards" in records else 0
    return out


def records_to_table(records: pd.DataFrame, alphas: Sequence[float]) -> pd.DataFrame:
    """Long table ``(image, alpha, log10_p_hat, log10_ci_low, log10_ci_high,
    log10_first_order_p)`` from audit records, for :func:`~.plot.plot_flip_probability`.

    ``image`` is the record's row position (records of several splits stay distinct); rows
    without an estimate are dropped.
    """
    parts = []
    for a in alphas:
        k = alpha_key(a)
        cols = [f"p_hat_{k}", f"p_lo_{k}", f"p_hi_{k}", f"log10_p_hat_{k}", f"p_first_order_{k}"]
        missing = [c for c in cols if c not in records.columns]
        if missing:
            raise ValueError(f"records lack rare-event columns {missing}; run rare_event_columns()")
        with np.errstate(divide="ignore"):
            part = pd.DataFrame({
                "image": np.arange(len(records)), "alpha": float(a),
                "log10_p_hat": records[f"log10_p_hat_{k}"].to_numpy(dtype=np.float64),
                "log10_ci_low": np.log10(records[f"p_lo_{k}"].to_numpy(dtype=np.float64)),
                "log10_ci_high": np.log10(records[f"p_hi_{k}"].to_numpy(dtype=np.float64)),
                "log10_first_order_p": np.log10(records[f"p_first_order_{k}"]
                                                .to_numpy(dtype=np.float64)),
            })
        parts.append(part[~np.isnan(part["log10_p_hat"])])
    return pd.concat(parts, ignore_index=True).sort_values(["image", "alpha"], ignore_index=True)
