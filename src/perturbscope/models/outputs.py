"""How a classifier's raw outputs become labels, margins and two-logit scores.

perturbscope accepts three output conventions, named by ``output``:

``"sigmoid"``
    binary model returning a probability ``p`` in [0, 1], shape ``(N,)`` or ``(N, 1)``;
    label ``1`` iff ``p >= 0.5`` (the paper's convention).
``"logit"``
    binary model returning a single pre-sigmoid score ``z``, shape ``(N,)`` or ``(N, 1)``;
    label ``1`` iff ``z >= 0``.
``"logits"``
    multi-class model returning ``(N, K)`` scores, ``K >= 2``; label = argmax.
"""

from __future__ import annotations

from typing import Literal

import torch

OutputKind = Literal["sigmoid", "logit", "logits"]
OUTPUT_KINDS: tuple[str, ...] = ("sigmoid", "logit", "logits")

__all__ = ["OutputKind", "OUTPUT_KINDS", "check_output_kind", "binary_scores", "predict_labels",
           "margin", "two_logits"]


def check_output_kind(output: str) -> None:
    if output not in OUTPUT_KINDS:
        raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")


def binary_scores(out: torch.Tensor, output: str) -> torch.Tensor:
    """Flatten a binary model's output to shape ``(N,)``; error if it is not binary-shaped."""
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim != 1:
        raise ValueError(
            f"a model with output={output!r} must return shape (N,) or (N, 1), "
            f"got {tuple(out.shape)}; use output='logits' for (N, K) scores"
        )
    return out


def predict_labels(out: torch.Tensor, output: str) -> torch.Tensor:
    """Labels ``(N,)`` int64 from raw outputs under convention ``output``."""
    check_output_kind(output)
    if output == "logits":
        if out.ndim != 2 or out.shape[1] < 2:
            raise ValueError(f"output='logits' needs shape (N, K) with K >= 2, got {tuple(out.shape)}")
        return out.argmax(dim=1)
    s = binary_scores(out, output)
    threshold = 0.5 if output == "sigmoid" else 0.0
    return (s >= threshold).long()


def margin(out: torch.Tensor, labels: torch.Tensor, output: str) -> torch.Tensor:
    """Signed margin ``(N,)``: positive iff the prediction equals ``labels``.

    Binary: ``z`` (or ``p - 1/2``) with the sign flipped for label 0. Multi-class:
    ``score[label] - max_{k != label} score[k]``. (Ties count as label 1 for binary
    models, as :func:`predict_labels` does; the margin is then 0.)
    """
    check_output_kind(output)
    if output == "logits":
        true = out.gather(1, labels.view(-1, 1))[:, 0]
        other = out.scatter(1, labels.view(-1, 1), float("-inf")).amax(dim=1)
        return true - other
    s = binary_scores(out, output)
    centred = s - 0.5 if output == "sigmoid" else s
    sign = labels.to(centred.dtype) * 2 - 1
    return centred * sign


def two_logits(out: torch.Tensor, output: str) -> torch.Tensor:
    """Present a binary output as ``(N, 2)`` logits whose softmax equals the model's probabilities.

    For a pre-sigmoid score ``z`` the logits are ``(-z/2, z/2)``; a probability ``p`` is first
    turned into ``z = log(p / (1 - p))`` (clamped away from 0 and 1 by float eps).
    """
    if output == "logits":
        return out
    s = binary_scores(out, output)
    if output == "sigmoid":
        eps = torch.finfo(s.dtype).eps
        s = torch.logit(s.clamp(eps, 1 - eps))
    half = s / 2
    return torch.stack([-half, half], dim=1)
