"""Settings of the paper's training protocol (torch-free, so the command line reads its defaults cheaply).

:mod:`perturbscope.train` re-exports :class:`TrainConfig`, :data:`NOISE_KINDS` and
:func:`matched_ball_radius`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TrainConfig", "NOISE_KINDS", "matched_ball_radius", "MIN_WIDTH", "MAX_WIDTH"]

#: additive training noise: none, uniform in the cube [-s, s]^d, or uniform in the L2 ball of radius s
NOISE_KINDS = (None, "cube", "ball")
#: the channel multipliers of the paper's network a checkpoint may have (checked when one is loaded)
MIN_WIDTH, MAX_WIDTH = 1 / 64, 16.0


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the paper's (except ``epochs``: paper 100)."""

    epochs: int = 100
    lr: float = 0.1
    lr_halve_every: int = 20
    batch_size: int = 128
    momentum: float = 0.9
    seed: int = 0
    noise: str | None = None
    noise_size: float = 0.0

    def validate(self) -> None:
        """Check every setting (finite, in range); one ValueError naming the first bad one."""
        from perturbscope.validation import check_float, check_int

        check_int("epochs", self.epochs, minimum=1)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_int("lr_halve_every", self.lr_halve_every, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        check_int("seed", self.seed, minimum=0)
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {self.noise!r}")
        if self.noise is not None:
            check_float("noise_size", self.noise_size, low=0.0, low_open=True)


def matched_ball_radius(rho: float, d: int) -> float:
    """Ball radius whose uniform noise has about the mean L2 norm of cube noise ``U([-rho, rho]^d)``.

    The cube noise has ``E||z||^2 = d rho^2 / 3``; in high ``d`` both norms concentrate, so
    ``R = rho * sqrt(d / 3)`` (paper Section 7.1.4).
    """
    return rho * math.sqrt(d / 3.0)
