"""Running a user's model without changing it: eval mode restored, device and output kind found."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from perturbscope.models.outputs import check_output_kind

__all__ = ["eval_mode", "model_device", "resolve_output", "predict"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in eval mode; restore each module's own flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def resolve_output(model: nn.Module, output: str | None) -> str:
    """``output`` if given, else the model's ``output_kind`` attribute; error if neither says."""
    if output is None:
        output = getattr(model, "output_kind", None)
        if output is None:
            raise ValueError(
                "output is not given and the model has no 'output_kind' attribute: pass "
                "output='sigmoid' (binary probability), 'logit' (binary score) or 'logits' (N, K)"
            )
    check_output_kind(output)
    return output


def predict(model: nn.Module, x: torch.Tensor, output: str, batch_size: int = 256) -> torch.Tensor:
    """Labels ``(N,)`` for inputs ``(N, ...)`` in batches, in eval and inference mode.

    The model's own train/eval flags are restored afterwards.
    """
    from perturbscope.models.outputs import predict_labels

    device = model_device(model)
    out = torch.empty(x.shape[0], dtype=torch.long)
    with eval_mode(model), torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device)
            out[start:start + batch_size] = predict_labels(model(xb), output).cpu()
    return out
