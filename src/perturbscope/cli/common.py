"""Run-time helpers shared by the commands: the task the data options name, device, threads.

The options themselves are defined in :mod:`perturbscope.cli.options`; this module re-exports
``add_data_args``, ``add_progress_arg`` and ``DATA_SOURCES`` from there. Nothing here imports
torch at import time.
"""

from __future__ import annotations

import argparse
from typing import Any

from perturbscope.cli.options import DATA_SOURCES, add_data_args, add_progress_arg  # noqa: F401


def load_task(args: argparse.Namespace, split: str, classes: tuple[int, int] | None = None):
    """The :class:`~perturbscope.data.tasks.PairTask` that the data arguments name."""
    from perturbscope.data import load_pair_task

    i, j = classes if classes is not None else args.classes
    return load_pair_task(args.data, split, i, j, path=args.data_path, limit=args.limit,
                          seed=args.data_seed)


def load_model(args: argparse.Namespace) -> tuple[Any, dict, tuple[int, int]]:
    """``(model, meta, classes)`` of ``--checkpoint``; the classes are ``--classes`` or the checkpoint's.

    Raises :class:`~perturbscope.cli.main.UsageError` when neither names the task.
    """
    from perturbscope.cli.main import UsageError
    from perturbscope.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(args.checkpoint)
    classes = tuple(args.classes) if args.classes else tuple(meta.get("classes") or ())
    if len(classes) != 2:
        raise UsageError("--classes I J is required: the checkpoint does not record its task")
    mismatch = check_task(args, meta, classes=tuple(args.classes) if args.classes else None)
    if mismatch:
        meta = {**meta, "forced_mismatch": mismatch}
    return model, meta, classes


def check_task(args: argparse.Namespace, meta: dict, *, classes: Any = None,
               input_shape: Any = None) -> list[str]:
    """The checkpoint's recorded task (``meta``) against ``--data``, the classes and the input shape
    (:func:`~perturbscope.models.checkpoint.check_checkpoint_task`): a mismatch is refused unless
    ``--force``; forced, each mismatch is printed as a WARNING line and returned (to be recorded)."""
    import sys

    from perturbscope.models.checkpoint import check_checkpoint_task

    found = check_checkpoint_task(meta, data=getattr(args, "data", None), classes=classes,
                                  input_shape=input_shape, force=bool(getattr(args, "force", False)),
                                  name=f"checkpoint {args.checkpoint}")
    for line in found:
        print(f"WARNING (--force): {line}", file=sys.stderr)
    return found


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` when ``n`` is given (``--threads``)."""
    if n:
        import torch

        torch.set_num_threads(n)


def use_device(name: str | None) -> Any:
    """The ``torch.device`` that ``--device`` names, after checking that torch can use it here.

    Raises :class:`~perturbscope.cli.main.UsageError` (exit code 2, one line) for a CUDA or MPS
    device that this machine does not have.
    """
    import torch

    from perturbscope.cli.main import UsageError

    name = name or "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available to torch here")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    elif name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("--device mps: the MPS backend is not available to torch here")
    return torch.device(name)


def place(args: argparse.Namespace, model: Any, *tensors: Any) -> tuple[Any, ...]:
    """Move ``model`` and ``tensors`` to ``args.device`` (checked); returns ``(model, *tensors)``.

    ``None`` entries stay ``None``. The model's train/eval mode is not changed.
    """
    device = use_device(getattr(args, "device", None))
    moved = tuple(t.to(device) if t is not None else None for t in tensors)
    return (model.to(device), *moved)
