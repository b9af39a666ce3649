"""Transfer of universal perturbations across models (UAP paper, Table 2)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from perturbscope.attacks.universal import fooling_mask

__all__ = ["transfer_matrix"]


def transfer_matrix(perturbations: Mapping[str, torch.Tensor],
                    models: Mapping[str, nn.Module | tuple[nn.Module, str]],
                    x: torch.Tensor, *, bounds: tuple[float, float] | None = None,
                    batch_size: int = 256) -> pd.DataFrame:
    """Fooling rate of each source model's perturbation on each target model.

    Args:
        perturbations: ``{source name: v}``, each ``v`` shaped like one input.
        models: ``{target name: model}`` or ``{name: (model, output)}``; a bare model uses its
            ``output_kind`` attribute, else ``"logits"``.
        x: ``(N, *shape)`` held-out inputs (pixel units); fooled = label of ``x + v`` differs
            from the label of ``x`` on that target.

    Returns:
        DataFrame, rows = source, columns = target, entries = fooling rate in [0, 1].
    """
    if not perturbations or not models:
        raise ValueError("perturbations and models must both be non-empty mappings")
    for name, v in perturbations.items():
        if tuple(v.shape) != tuple(x.shape[1:]):
            raise ValueError(f"perturbation {name!r} has shape {tuple(v.shape)}, inputs have "
                             f"{tuple(x.shape[1:])}")
    table = {}
    for tname, spec in models.items():
        model, output = spec if isinstance(spec, tuple) else (
            spec, getattr(spec, "output_kind", None) or "logits")
        table[tname] = {
            sname: float(fooling_mask(model, x, v.to(x.device, x.dtype), output=output,
                                      bounds=bounds, batch_size=batch_size).double().mean())
            for sname, v in perturbations.items()
        }
    df = pd.DataFrame(table)
    df.index.name = "source"
    df.columns.name = "target"
    return df
