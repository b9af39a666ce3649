"""Safe checkpoint IO: weights and a plain-data config only, never pickled code.

A checkpoint is a ``torch.save`` of a dict of plain data::

    {"format": "perturbscope-checkpoint", "version": 1, "arch": "PairCNN",
     "config": {...constructor kwargs...}, "state_dict": {name: tensor}, "meta": {...}}

It is loaded with ``torch.load(..., weights_only=True)``, which refuses any file that
would run code while unpickling; that refusal is reported as :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from perturbscope import __version__
from perturbscope.fileio import atomic_write
from perturbscope.models.pair_cnn import MLP, PairCNN

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "ARCHITECTURES"]

FORMAT = "perturbscope-checkpoint"
ARCHITECTURES: dict[str, type[nn.Module]] = {"PairCNN": PairCNN, "MLP": MLP}


class CheckpointError(ValueError):
    """A file is missing, is not a perturbscope checkpoint, or holds more than weights."""


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (an architecture in :data:`ARCHITECTURES`) to ``path`` atomically.

    The file is written to a temporary name in the same folder and renamed, so an
    interrupted save never leaves a half-written checkpoint. ``meta`` must be plain data
    (numbers, strings, lists, dicts).
    """
    arch = type(model).__name__
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"cannot save a {arch}: supported architectures are {sorted(ARCHITECTURES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": 1,
        "arch": arch,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": {"perturbscope_version": __version__, **(meta or {})},
    }
    return atomic_write(path, lambda t: torch.save(payload, t))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns ``(model, meta)``.

    The model is in eval mode. Raises :class:`CheckpointError` (naming the file) for a
    missing file, a file that is not a torch checkpoint, a checkpoint holding pickled
    code or objects, or one whose weights do not fit its architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing {path}: it holds pickled objects or code, not only weights "
            f"(loaded with weights_only=True). Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not a perturbscope checkpoint "
            f"(expected a dict with format={FORMAT!r})"
        )
    arch = payload.get("arch")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    config = payload.get("config") or {}
    try:
        model = ARCHITECTURES[arch](**config)
        model.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not fit {arch}({config}): {exc}") from exc
    model.to(map_location).eval()
    return model, dict(payload.get("meta") or {})
