"""Adapters that present one model convention as another."""

from __future__ import annotations

import torch
from torch import nn

from perturbscope.models.outputs import check_output_kind, two_logits

__all__ = ["TwoLogitAdapter", "Normalized"]


class TwoLogitAdapter(nn.Module):
    """Wrap a binary model (``output`` = ``"sigmoid"`` or ``"logit"``) as a ``(N, 2)`` logit model.

    ``softmax(adapter(x))[:, 1]`` equals the wrapped model's probability of class 1, and
    ``argmax`` equals its label, so tools that need multi-class logits (DeepFool, foolbox,
    torchattacks, ...) see the same classifier. If the wrapped model has a ``logit`` method
    it is used directly (no loss of precision near p = 0 or 1).
    """

    def __init__(self, model: nn.Module, output: str = "sigmoid") -> None:
        super().__init__()
        check_output_kind(output)
        if output == "logits":
            raise ValueError("TwoLogitAdapter wraps binary models; output='logits' needs no adapter")
        self.model = model
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "logit"):
            return two_logits(self.model.logit(x), "logit")
        return two_logits(self.model(x), self.output)


class Normalized(nn.Module):
    """``model((x - mean) / std)``: keeps inputs (and every norm) in pixel units in [0, 1].

    ``mean`` and ``std`` are per-channel sequences (broadcast over ``(N, C, H, W)``).
    """

    def __init__(self, model: nn.Module, mean, std) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if (std_t <= 0).any():
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.model = model
        self.output_kind = getattr(model, "output_kind", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
