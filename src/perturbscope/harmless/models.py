"""A small CNN whose stem has a harmless input space: a patchify conv with fewer outputs than inputs."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PatchCNN"]


class PatchCNN(nn.Module):
    """Binary CNN with a patchify stem; ``forward`` returns the sigmoid probability ``(N,)``.

    Stem ``Conv2d(C, stem, k=patch, s=patch)`` reads each ``C x patch x patch`` patch once and maps
    it to ``stem`` numbers; when ``stem < C * patch**2`` every patch keeps
    ``C * patch**2 - rank`` harmless directions (spec 1.3, non-overlapping case). Then ReLU, a 3x3
    conv, global average pooling and a linear output.
    """

    output_kind = "sigmoid"

    def __init__(self, in_channels: int = 3, patch: int = 4, stem: int = 16, width: int = 32) -> None:
        super().__init__()
        if min(in_channels, patch, stem, width) < 1:
            raise ValueError("in_channels, patch, stem and width must be >= 1")
        self.config = {"in_channels": in_channels, "patch": patch, "stem": stem, "width": width}
        self.stem = nn.Conv2d(in_channels, stem, patch, stride=patch)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(stem, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, 1)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid score ``(N,)`` for inputs ``(N, C, H, W)`` in [0, 1]."""
        h = self.body(self.stem(x)).mean(dim=(2, 3))
        return self.head(h)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))
