"""Safe checkpoint IO: weights and a plain-data config only, never pickled code.

A checkpoint is a ``torch.save`` of a dict of plain data::

    {"format": "perturbscope-checkpoint", "version": 1, "arch": "PairCNN",
     "config": {...constructor kwargs...}, "state_dict": {name: tensor}, "meta": {...}}

It is loaded with ``torch.load(..., weights_only=True)``, which refuses any file that
would run code while unpickling; that refusal is reported as :class:`CheckpointError`.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from perturbscope import __version__
from perturbscope.fileio import atomic_write
from perturbscope.models.pair_cnn import MLP, PairCNN
from perturbscope.train_config import MAX_WIDTH, MIN_WIDTH

__all__ = ["CheckpointError", "CheckpointMismatchError", "save_checkpoint", "load_checkpoint",
           "check_checkpoint_task", "checkpoint_task", "check_torch_file", "ARCHITECTURES", "CONFIG_LIMITS",
           "DATA_SHAPES"]

FORMAT = "perturbscope-checkpoint"
ARCHITECTURES: dict[str, type[nn.Module]] = {"PairCNN": PairCNN, "MLP": MLP}


class CheckpointError(ValueError):
    """A file is missing, is not a perturbscope checkpoint, or holds more than weights."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint is used on data, an input shape or classes other than those it was trained on."""


#: what each architecture's config may hold, checked before the model is built (a hostile or
#: damaged config cannot allocate gigabytes): name -> (kind, low, high) with kind "int", "float",
#: "bool", "ints" (a list of ints, at most ``high`` long... see :func:`_check_config`), "choice"
CONFIG_LIMITS: dict[str, dict[str, tuple]] = {
    "PairCNN": {"in_channels": ("int", 1, 64), "width": ("float", MIN_WIDTH, MAX_WIDTH), "deep": ("bool",),
                "dropout": ("fraction",), "init": ("choice", ("glorot", "torch"))},
    "MLP": {"in_features": ("int", 1, 10**7), "hidden": ("ints", 1, 65536, 64), "dropout": ("fraction",)},
}
#: the input shape (C, H, W) of a model trained by ``perturbscope train`` on each data source
#: (used for checkpoints written before the shape was recorded)
DATA_SHAPES: dict[str, tuple[int, ...]] = {"digits": (3, 8, 8), "fashion-mnist": (3, 28, 28),
                                           "fashion-mnist-subset": (3, 28, 28)}
#: sources holding the same images (the subset is drawn from the full set)
_SAME_IMAGES = {"fashion-mnist-subset": "fashion-mnist"}
#: the largest model a checkpoint may describe (parameters; about 8 GB of float32)
MAX_PARAMETERS = 2 * 10**9


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_config(path: Path, arch: str, config: Any) -> dict[str, Any]:
    """The architecture's constructor arguments, each checked against :data:`CONFIG_LIMITS`."""
    from perturbscope.validation import check_float, check_int

    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the config of {arch} must be a dict of settings, got "
                              f"{type(config).__name__}")
    limits = CONFIG_LIMITS[arch]
    unknown = sorted(set(config) - set(limits))
    if unknown:
        raise CheckpointError(f"{path}: unknown {arch} settings {unknown}; {arch} takes {sorted(limits)}")
    out: dict[str, Any] = {}
    for key, value in config.items():
        kind, *lim = limits[key]
        what = f"{path}: config {key}"
        try:
            if kind == "int":
                out[key] = check_int(what, value, minimum=lim[0], maximum=lim[1])
            elif kind == "float":
                out[key] = check_float(what, value, low=lim[0], high=lim[1])
            elif kind == "fraction":
                out[key] = check_float(what, value, low=0.0, high=1.0, high_open=True)
            elif kind == "bool":
                if not isinstance(value, bool):
                    raise TypeError(f"{what} must be true or false, got {value!r}")
                out[key] = value
            elif kind == "choice":
                if value not in lim[0]:
                    raise ValueError(f"{what} must be one of {lim[0]}, got {value!r}")
                out[key] = value
            else:  # "ints": a list of ints in [lim[0], lim[1]], at most lim[2] of them
                if not isinstance(value, list | tuple) or len(value) > lim[2]:
                    raise ValueError(f"{what} must be a list of at most {lim[2]} ints, got {value!r}")
                out[key] = [check_int(f"{what}[{i}]", v, minimum=lim[0], maximum=lim[1])
                            for i, v in enumerate(value)]
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{exc} (the checkpoint is damaged or not written by perturbscope)"
                                  ) from None
    return out


def check_torch_file(path: Path, what: str = "checkpoint",
                     fix: str = "give a file written by 'perturbscope train'") -> None:
    """Refuse, before unpickling, a file that cannot be a ``torch.save`` file: empty, or not starting
    like a zip archive (torch's format) or a pickle (its legacy format)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if not magic:
        raise CheckpointError(f"{what} {path} is empty (0 bytes); it was not written completely")
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a readable torch {what}: it is not a zip archive (the format "
                              f"of torch.save; first bytes {magic!r}); {fix}")


def _read_payload(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load(weights_only=True)`` of ``path``, each failure named for what it is."""
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file; give the .pt "
                              f"file written by 'perturbscope train'")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    check_torch_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text or "Unsupported operand" in text:
            detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), _first_line(exc))
            detail = detail.split(" was not an allowed global")[0].replace("WeightsUnpickler error: ", "")
            raise CheckpointError(
                f"refusing {path}: it holds pickled objects or code, not only weights (loaded with "
                f"weights_only=True, nothing was run). Detail: {detail}") from exc
        raise CheckpointError(f"{path} is damaged: torch could not unpickle it ({_first_line(exc)})") from exc
    except Exception as exc:  # torch raises many types for a damaged or truncated archive
        raise CheckpointError(f"{path} is damaged or truncated, not a readable torch checkpoint "
                              f"({_first_line(exc)})") from exc


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns ``(model, meta)``.

    The model is in eval mode. Raises :class:`CheckpointError` (naming the file) for a missing
    file or a directory, a file that is not a torch checkpoint or is damaged, a checkpoint holding
    pickled code or objects, a config outside :data:`CONFIG_LIMITS` (checked before anything is
    built: the model is first built on the ``meta`` device, which allocates nothing, and its
    weight shapes compared with the file's), weights that do not fit the architecture, and NaN or
    infinite weights. Check the data it is used on with :func:`check_checkpoint_task`.
    """
    path = Path(path)
    payload = _read_payload(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not a perturbscope checkpoint "
            f"(expected a dict with format={FORMAT!r})"
        )
    arch = payload.get("arch")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    config = _check_config(path, arch, payload.get("config") or {})
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: state_dict must be a dict of tensors (the checkpoint is damaged)")
    for name, t in state.items():
        if not t.is_floating_point():
            raise CheckpointError(f"{path}: weight {name!r} has dtype {t.dtype}, not floating point")
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise CheckpointError(
                f"{path} holds NaN or infinite weights ({int(bad.sum())} of {t.numel()} values of "
                f"{name!r}): the training diverged; retrain it (e.g. with a lower --lr)")
    try:
        with torch.device("meta"):  # allocates nothing: the shapes are compared before any memory is used
            model = ARCHITECTURES[arch](**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build {arch}({config}): {exc}") from exc
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    size = sum(math.prod(s) for s in expected.values())
    if size > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: {arch}({config}) would have {size:,} parameters, more than "
                              f"{MAX_PARAMETERS:,}; the config is damaged")
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = [f"{k}: file {got[k]}, model {expected[k]}" for k in expected if k in got
                 and got[k] != expected[k]]
        detail = "; ".join(filter(None, (f"missing {missing}" if missing else "",
                                         f"unexpected {extra}" if extra else "", "; ".join(wrong[:3]))))
        raise CheckpointError(f"{path}: weights do not fit {arch}({config}): {detail}")
    try:
        model.load_state_dict(state, assign=True)
    except (TypeError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not fit {arch}({config}): {_first_line(exc)}") from exc
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{path}: the checkpoint lacks {left[:3]}")
    model.to(map_location).eval()
    return model, dict(payload.get("meta") or {})


def checkpoint_task(meta: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's meta says it was trained on: ``data``, ``input_shape`` (``(C, H, W)``,
    from the meta or, for older checkpoints, :data:`DATA_SHAPES`), ``classes``, ``class_names``
    (``None`` where it does not say)."""
    data = meta.get("data")
    shape = meta.get("input_shape")
    if shape is None and data in DATA_SHAPES:
        shape = DATA_SHAPES[data]
    classes = meta.get("classes")
    names = meta.get("class_names")
    return {"data": data, "input_shape": tuple(int(s) for s in shape) if shape is not None else None,
            "classes": [str(c) for c in classes] if classes else None,
            "class_names": [str(c) for c in names] if names else None}


def check_checkpoint_task(meta: dict[str, Any], *, data: str | None = None,
                          input_shape: Sequence[int] | None = None, classes: Sequence[Any] | None = None,
                          force: bool = False, name: str = "the checkpoint") -> list[str]:
    """Compare what a checkpoint was trained on (its ``meta``) with the data it is about to be used on.

    Args:
        meta: the checkpoint's meta (from :func:`load_checkpoint`).
        data: the data source's name (``"digits"``, ``"fashion-mnist"``...); the Fashion-MNIST subset
            counts as Fashion-MNIST.
        input_shape: one input's shape ``(C, H, W)``.
        classes: the task's classes in label order (labels or class names); ``(8, 7)`` for a model
            of ``7 vs 8`` swaps its labels.
        force: return the mismatches instead of raising (the caller records and prints them).

    Returns:
        One sentence per mismatch (empty when everything agrees or the meta does not say).

    Raises:
        CheckpointMismatchError: a mismatch, unless ``force``.
    """
    task = checkpoint_task(meta)
    out: list[str] = []
    if data is not None and task["data"] is not None:
        a, b = _SAME_IMAGES.get(str(data), str(data)), _SAME_IMAGES.get(task["data"], task["data"])
        if a != b:
            out.append(f"it was trained on {task['data']}, the data is {data}")
    if input_shape is not None and task["input_shape"] is not None:
        got = tuple(int(s) for s in input_shape)
        if got != task["input_shape"]:
            out.append(f"it was trained on inputs {'x'.join(map(str, task['input_shape']))}, the data's are "
                       f"{'x'.join(map(str, got))}")
    if classes is not None and task["classes"] is not None:
        given = [str(c) for c in classes]
        known = [task["classes"], task["class_names"] or []]
        if not any(given == k for k in known):
            if any(sorted(given) == sorted(k) and k for k in known):
                zero, one = task["classes"][:2]
                out.append(f"its label 0 is class {zero} and label 1 class {one}, the classes "
                           f"{' '.join(given)} swap them")
            else:
                names = task["class_names"]
                out.append(f"it was trained on classes {' '.join(task['classes'])}"
                           + (f" ({', '.join(names)})" if names and names != task["classes"] else "")
                           + f", the task is classes {' '.join(given)}")
    out = [f"{name}: {m}" for m in out]
    if out and not force:
        raise CheckpointMismatchError(
            "; ".join(out) + ". Use it on the data it was trained on (data "
            f"{task['data']}, classes {' '.join(task['classes'] or ['?'])}), or pass --force (Python: "
            "force=True) to run anyway: the mismatch is then printed as a warning (and 'audit' records it in "
            "summary.json)")
    return out
