"""The result type shared by minimal-norm attacks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AttackResult", "norms"]


def norms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L1, L2 and Linf norms ``(N,)`` of perturbations ``(N, ...)``, computed in float64."""
    flat = delta.reshape(delta.shape[0], -1).double()
    return flat.abs().sum(1), flat.norm(dim=1), flat.abs().amax(1)


@dataclass
class AttackResult:
    """Per-image outcome of a minimal-norm attack on ``N`` inputs.

    Attributes:
        perturbation: ``(N, *input_shape)``; zero where the attack failed.
        eps_l2, eps_l1, eps_linf: ``(N,)`` float64 norms of ``perturbation`` in input units
            (pixel units in [0, 1]); NaN where the attack failed.
        success: ``(N,)`` bool, ``True`` where ``perturbation`` changes the prediction.
        forwards: number of single-image forward passes spent (gradients count one each).
    """

    perturbation: torch.Tensor
    eps_l2: torch.Tensor
    eps_l1: torch.Tensor
    eps_linf: torch.Tensor
    success: torch.Tensor
    forwards: int

    @classmethod
    def from_perturbation(cls, delta: torch.Tensor, success: torch.Tensor, forwards: int
                          ) -> AttackResult:
        delta = torch.where(success.view(-1, *([1] * (delta.ndim - 1))), delta,
                            torch.zeros_like(delta))
        l1, l2, linf = norms(delta)
        nan = torch.full_like(l2, float("nan"))
        return cls(delta, torch.where(success, l2, nan), torch.where(success, l1, nan),
                   torch.where(success, linf, nan), success.clone(), int(forwards))
