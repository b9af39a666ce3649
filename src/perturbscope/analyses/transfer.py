"""Transfer of universal perturbations across models (UAP paper, Table 2)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from perturbscope.attacks.universal import fooling_mask
from perturbscope.models.classifier import Classifier, as_classifier
from perturbscope.validation import check_images

__all__ = ["transfer_matrix"]


def transfer_matrix(perturbations: Mapping[str, torch.Tensor],
                    models: Mapping[str, nn.Module | Classifier | tuple[nn.Module, str]],
                    x: torch.Tensor, *, clip: bool = False, batch_size: int = 256) -> pd.DataFrame:
    """Fooling rate of each source model's perturbation on each target model.

    Args:
        perturbations: ``{source name: v}``, each ``v`` shaped like one input.
        models: ``{target name: model}`` or ``{name: (model, output)}``; a model is an
            ``nn.Module`` (its ``output_kind`` attribute, else ``"logits"``) or a Classifier.
        x: ``(N, *shape)`` held-out inputs (pixel units, inside every target's bounds); fooled
            = label of ``x + v`` differs from the label of ``x`` on that target.
        clip: clip ``x + v`` to each target's bounds.

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
        if isinstance(spec, tuple):
            clf = as_classifier(*spec)
        elif isinstance(spec, Classifier):
            clf = spec
        else:
            clf = as_classifier(spec, getattr(spec, "output_kind", None) or "logits")
        check_images(x, clf.bounds)
        xt = x.to(clf.device)
        clean = clf.predict(xt, batch_size)
        table[tname] = {
            sname: float(fooling_mask(clf, xt, v.to(xt.device, xt.dtype), clean_labels=clean,
                                      clip=clip, batch_size=batch_size).double().mean())
            for sname, v in perturbations.items()
        }
    df = pd.DataFrame(table)
    df.index.name = "source"
    df.columns.name = "target"
    return df
