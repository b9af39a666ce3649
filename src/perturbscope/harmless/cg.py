"""Matrix-free projection onto a layer's null space: conjugate gradients with conv and conv_transpose.

The harmless part of ``d`` is ``d - A^T y`` with ``A A^T y = A d``. The system is consistent (its
right-hand side lies in ``range(A)``), so CG converges even when ``A A^T`` is singular. The CG
residual ``r = A d - A A^T y`` equals ``A (d - A^T y)``: the reported relative residual *is* the
harmlessness defect ``||A p|| / ||A d||`` of the projected vector ``p``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from perturbscope.harmless.linear_map import LinearMap

__all__ = ["cg_rowspace_solve", "project_rowspace_matfree"]


def cg_rowspace_solve(
    lmap: LinearMap, d: torch.Tensor, tol: float = 1e-12, maxiter: int = 5000, lanczos: bool = False
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Solve ``A A^T y = A d`` for a batch ``d`` ``(N, n)`` (float64); returns ``y`` ``(N, m)`` and info.

    Each sample stops when ``||r|| <= tol * ||A d||``. ``info`` holds ``iterations``,
    ``relative_residual`` (max over the batch) and, with ``lanczos=True`` (first sample), the
    extreme Lanczos values ``lanczos_min``/``lanczos_max`` that estimate ``sigma_min^2``/``sigma_max^2``
    of ``A`` on the Krylov space explored.
    """
    if tol <= 0 or maxiter < 1:
        raise ValueError(f"need tol > 0 and maxiter >= 1, got tol={tol}, maxiter={maxiter}")
    d = d.reshape(d.shape[0], -1).to(torch.float64)
    b = lmap.apply(d)
    bnorm = b.norm(dim=1)
    y = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(1)
    active = bnorm > 0
    alphas: list[float] = []
    betas: list[float] = []
    it = 0
    for it in range(1, maxiter + 1):  # noqa: B007 - `it` is reported after the loop
        if not active.any():
            it -= 1
            break
        ap = lmap.apply(lmap.adjoint(p))
        pap = (p * ap).sum(1)
        alpha = torch.where(
            active & (pap > 0), rs / torch.where(pap > 0, pap, torch.ones_like(pap)), torch.zeros_like(pap)
        )
        y += alpha.unsqueeze(1) * p
        r -= alpha.unsqueeze(1) * ap
        rs_new = (r * r).sum(1)
        beta = torch.where(
            rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs)
        )
        if lanczos and bool(active[0]):
            alphas.append(float(alpha[0]))
            betas.append(float(beta[0]))
        p = r + beta.unsqueeze(1) * p
        rs = rs_new
        active = active & (rs.sqrt() > tol * bnorm)
    rel = torch.where(
        bnorm > 0, rs.sqrt() / torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm)), torch.zeros_like(bnorm)
    )
    info: dict[str, Any] = {
        "iterations": it,
        "relative_residual": float(rel.max()),
        "converged": bool(not active.any()),
    }
    if lanczos:
        info.update(_lanczos_extremes(alphas, betas))
    return y, info


def _lanczos_extremes(alphas: list[float], betas: list[float]) -> dict[str, float]:
    """Extreme eigenvalues of the Lanczos tridiagonal matrix built from CG coefficients."""
    k = len(alphas)
    if k == 0 or any(a <= 0 for a in alphas):
        return {"lanczos_min": float("nan"), "lanczos_max": float("nan")}
    diag = np.empty(k)
    off = np.empty(max(k - 1, 0))
    for j in range(k):
        diag[j] = 1.0 / alphas[j] + (betas[j - 1] / alphas[j - 1] if j > 0 else 0.0)
        if j < k - 1:
            off[j] = math.sqrt(max(betas[j], 0.0)) / alphas[j]
    from scipy.linalg import eigvalsh_tridiagonal

    ev = eigvalsh_tridiagonal(diag, off) if k > 1 else diag
    return {"lanczos_min": float(ev.min()), "lanczos_max": float(ev.max())}


def project_rowspace_matfree(
    delta: torch.Tensor, lmap: LinearMap, tol: float = 1e-12, maxiter: int = 5000
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Split ``delta`` ``(N, *in_shape)`` into ``(harmless, row_space, info)`` without any dense matrix.

    ``harmless = delta - A^T y`` and ``row_space = A^T y`` (float64, shaped like ``delta``).
    """
    flat = delta.reshape(delta.shape[0], -1).to(torch.float64)
    y, info = cg_rowspace_solve(lmap, flat, tol=tol, maxiter=maxiter)
    row = lmap.adjoint(y).reshape(delta.shape)
    return delta.to(torch.float64) - row, row, info
