"""The sample-dependent harmless set of a fully connected first block ``ReLU(W x + b)`` (spec section 1.4).

At an input ``x`` let ``z = W x + b``, the active set ``Ac = {i : z_i > 0}`` and the inactive set
``In`` (the rest, ``z_i <= 0``). The block's output is unchanged by ``d`` exactly when

    W_Ac d = 0            (active units keep their value)      and
    W_In d <= h,  h = -(W_In x + b_In) >= 0   (inactive units stay off).

So the admissible set is the polyhedron ``null(W_Ac) ∩ {G d <= h}`` with ``G = W_In``: it contains
the sample-independent space ``null(W)`` and is larger (``dim null(W_Ac) >= n - |Ac|``), but along a
direction ``d`` of ``null(W_Ac)`` the size is bounded by :func:`max_safe_scale` unless ``G d <= 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from perturbscope.harmless.linear_map import LinearMap
from perturbscope.harmless.space import nullspace_basis
from perturbscope.sampling import make_generator, uniform_sphere

__all__ = ["ReluExpansion", "relu_expanded_space", "max_safe_scale", "safe_interval"]


@dataclass
class ReluExpansion:
    """The harmless polyhedron of ``ReLU(W x + b)`` at one input.

    Attributes:
        x: the input, float64 ``(n,)``.
        active: bool ``(m,)``, ``z > 0``.
        basis: float64 ``(n, k)`` orthonormal basis of ``null(W_Ac)``.
        G: float64 ``(|In|, n)``, the inactive rows of ``W``; ``h``: ``(|In|,)``, ``-(W_In x + b_In)``.
        dim_null_w: ``dim null(W)`` (the sample-independent space), for comparison.
        tol: rank tolerance used for ``null(W_Ac)``.
    """

    x: torch.Tensor
    active: torch.Tensor
    basis: torch.Tensor
    G: torch.Tensor
    h: torch.Tensor
    dim_null_w: int
    tol: float

    @property
    def dim(self) -> int:
        """``dim null(W_Ac)``: the dimension of the (bounded) expanded set."""
        return int(self.basis.shape[1])

    def sample(self, count: int = 1, seed: int = 0) -> torch.Tensor:
        """``count`` random unit directions ``(count, n)`` in ``null(W_Ac)`` (float64)."""
        if self.dim == 0:
            raise ValueError("null(W_active) is {0} at this input: no direction to sample")
        c = uniform_sphere(count, self.dim, seed=make_generator(seed), dtype=torch.float64)
        d = c @ self.basis.T  # orthonormal basis: unit rows up to rounding
        return d / d.norm(dim=1, keepdim=True)

    def summary(self) -> dict[str, int | float]:
        return {
            "n": int(self.x.numel()),
            "units": int(self.active.numel()),
            "active": int(self.active.sum()),
            "dim_null_W": self.dim_null_w,
            "dim_null_W_active": self.dim,
            "tol": self.tol,
        }


def relu_expanded_space(weight, bias, x: torch.Tensor, rtol: float | None = None) -> ReluExpansion:
    """The expanded harmless set of ``ReLU(W x + b)`` at input ``x`` (spec 1.4).

    Args:
        weight: ``(m, n)`` tensor, or a linear :class:`LinearMap` (then ``bias`` may be ``None`` and
            the map's effective bias, with input normalisation folded in, is used).
        bias: ``(m,)`` or ``None`` (zeros).
        x: one input (any shape with ``n`` elements) in the units ``weight`` reads.
    """
    if isinstance(weight, LinearMap):
        if weight.kind != "linear":
            raise ValueError("the ReLU expansion is implemented for a fully connected first layer only")
        if bias is None:
            bias = weight.bias
        weight = weight.weight
    w = torch.as_tensor(weight).detach().to(torch.float64).cpu()
    if w.ndim != 2:
        raise ValueError(f"weight must be (m, n), got shape {tuple(w.shape)}")
    m, n = w.shape
    b = torch.zeros(m, dtype=torch.float64) if bias is None else torch.as_tensor(bias).detach().double().cpu()
    if b.shape != (m,):
        raise ValueError(f"bias must have shape ({m},), got {tuple(b.shape)}")
    xf = torch.as_tensor(x).detach().double().cpu().reshape(-1)
    if xf.numel() != n:
        raise ValueError(f"x has {xf.numel()} elements, the layer reads {n}")
    z = w @ xf + b
    active = z > 0
    wa = w[active].numpy()
    if wa.shape[0]:
        nb, s, tol = nullspace_basis(wa, rtol=rtol)
    else:
        nb, tol = np.eye(n), 0.0
    nw, _, _ = nullspace_basis(w.numpy(), rtol=rtol)
    return ReluExpansion(
        x=xf,
        active=active,
        basis=torch.from_numpy(np.ascontiguousarray(nb)),
        G=w[~active],
        h=-z[~active],
        dim_null_w=int(nw.shape[1]),
        tol=float(tol),
    )


def safe_interval(
    direction: torch.Tensor, expansion: ReluExpansion, atol: float = 1e-9
) -> tuple[float, float]:
    """``(t_min, t_max)``: the block output is unchanged for ``x + t d`` iff ``t_min <= t <= t_max``.

    ``direction`` must lie in ``null(W_Ac)`` (relative residual below ``atol``), else ValueError.
    ``t_max = min_{(G d)_i > 0} h_i / (G d)_i`` (``inf`` if none); ``t_min`` likewise for ``-d``.
    """
    d = torch.as_tensor(direction).detach().double().cpu().reshape(-1)
    if d.numel() != expansion.x.numel():
        raise ValueError(f"direction has {d.numel()} elements, expected {expansion.x.numel()}")
    dn = float(d.norm())
    if dn == 0:
        raise ValueError("direction is zero")
    inside = expansion.basis @ (expansion.basis.T @ d)
    if float((d - inside).norm()) > atol * dn:
        raise ValueError(
            f"direction is not in null(W_active): relative distance {float((d - inside).norm()) / dn:.3g}"
            " (project it with expansion.basis first)"
        )
    g = expansion.G @ d
    h = expansion.h
    pos, neg = g > 0, g < 0
    t_max = float((h[pos] / g[pos]).min()) if pos.any() else math.inf
    t_min = float((h[neg] / g[neg]).max()) if neg.any() else -math.inf
    return t_min, t_max


def max_safe_scale(direction: torch.Tensor, expansion: ReluExpansion) -> float:
    """Largest ``t >= 0`` with ``ReLU(W(x + t d) + b) = ReLU(W x + b)`` (``inf`` when ``G d <= 0``)."""
    return safe_interval(direction, expansion)[1]
