"""The two Monte Carlo engines' random sources.

Every event in the paper's models depends on points only through their first
coordinate (the classifier is ``f(x) = 1[x_1 >= 0]``). The two engines draw the same
random objects in two representations:

- ``"full"``: whole vectors in ``R^n``, shape ``(size, n)``, uniform-ball points drawn as
  ``U^{1/n} g / ||g||`` (``perturbscope.sampling.uniform_ball``), torch float64. Cost O(n)
  per draw; practical up to a few thousand dimensions.
- ``"coord"``: only the first coordinate, shape ``(size, 1)``, drawn from its exact law
  (``u_1 = ±sqrt(Beta(1/2, (n+1)/2))``). Cost O(1) per draw in any ``n``.

Model code written against :class:`Sampler` and :func:`first_axis` runs on both.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from perturbscope.sampling import make_generator, uniform_ball, uniform_sphere
from perturbscope.theory.caps import _check_n
from perturbscope.theory.coordinate import sample_ball_coord, sample_sphere_coord

__all__ = ["Engine", "ENGINES", "Sampler", "first_axis"]

Engine = Literal["full", "coord"]
ENGINES: tuple[str, ...] = ("full", "coord")


def first_axis(width: int) -> torch.Tensor:
    """``e_1`` of length ``width`` (float64), the normal of the models' decision plane."""
    e = torch.zeros(width, dtype=torch.float64)
    e[0] = 1.0
    return e


class Sampler:
    """Random pieces for one engine: unit-ball / unit-sphere points, uniforms, labels.

    Args:
        engine: ``"full"`` (vectors ``(size, n)``) or ``"coord"`` (first coordinates ``(size, 1)``).
        n: the dimension of the model.
        seed: int or ``None``; ``"full"`` seeds a ``torch.Generator``, ``"coord"`` a numpy one.
    """

    def __init__(self, engine: Engine, n: int, seed: int | None = 0) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        _check_n(n)
        self.engine = engine
        self.n = int(n)
        self.width = self.n if engine == "full" else 1
        if engine == "full":
            self._gen = make_generator(seed)
        else:
            self._rng = np.random.default_rng(seed)

    def ball(self, size: int) -> torch.Tensor:
        """Points uniform in the unit ball: ``(size, width)`` float64."""
        if self.engine == "full":
            return uniform_ball(size, self.n, seed=self._gen, dtype=torch.float64)
        return torch.from_numpy(sample_ball_coord(self.n, size, seed=self._rng))[:, None]

    def sphere(self, size: int) -> torch.Tensor:
        """Points uniform on the unit sphere: ``(size, width)`` float64."""
        if self.engine == "full":
            return uniform_sphere(size, self.n, seed=self._gen, dtype=torch.float64)
        return torch.from_numpy(sample_sphere_coord(self.n, size, seed=self._rng))[:, None]

    def uniform(self, size: int) -> torch.Tensor:
        """``U(0, 1)`` draws, ``(size,)`` float64."""
        if self.engine == "full":
            return torch.rand(size, generator=self._gen, dtype=torch.float64)
        return torch.from_numpy(self._rng.random(size))

    def labels(self, size: int) -> torch.Tensor:
        """Equiprobable labels in {0, 1}, ``(size,)`` int64."""
        if self.engine == "full":
            return torch.randint(0, 2, (size,), generator=self._gen)
        return torch.from_numpy(self._rng.integers(0, 2, size=size)).long()
