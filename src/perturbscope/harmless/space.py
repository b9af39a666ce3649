"""Harmless spaces: the null space of the first layer, as a dense basis, per patch, per group, or matrix-free.

Every space is a :class:`HarmlessSpace`: it knows its dimension (exactly, or as a stated lower
bound), projects any perturbation ``(N, *in_shape)`` onto itself and samples random members of any
L2 size. All arithmetic is float64. Rank tolerance (spec section 1.5)::

    tol = rtol * sigma_max(A),   rtol = eps64 * max(m, n) by default,

and ``rank = #{singular values > tol}``; ``dim = n - rank``.

Construction paths (:func:`harmless_space`, ``method="auto"`` picks the cheapest exact one):

``"patch"``   conv with non-overlapping patches (stride >= kernel, no padding/dilation): one small
              SVD of the ``D x C*kh*kw`` kernel matrix, embedded in every patch, plus one unit
              vector per pixel no patch reads.
``"grouped"`` grouped conv (incl. average pooling): one space per group, on its channel slice.
``"gram"``    tall ``A`` (``m >= n``): a Cholesky factorisation of the shifted Gram matrix
              ``A^T A - tau I`` certifies injectivity without any dense ``A``; undecided cases fall
              back to ``"dense"``.
``"dense"``   float64 SVD of ``A`` (QR-reduced first when ``m > 2n`` or ``n > 2m``); the basis of the null
              space is kept, or the row space ``Q`` when the null space is more than half of
              ``R^n`` (projection ``d - Q Q^T d``).
``"matfree"`` conjugate gradients on ``A A^T y = A d`` with conv / conv_transpose; the projector
              is never formed. Dimension ``n - m`` is exact only if ``A`` has full row rank, which is
              estimated from the Lanczos values of the CG run (reported, not proven).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from perturbscope.harmless.cg import cg_rowspace_solve
from perturbscope.harmless.linear_map import LinearMap, first_layer_map, layer_map
from perturbscope.sampling import make_generator

__all__ = [
    "HarmlessSpace",
    "DenseSpace",
    "PatchSpace",
    "GroupedSpace",
    "MatrixFreeSpace",
    "harmless_space",
    "stacked_harmless_space",
    "nullspace_basis",
    "harmless_dim",
    "harmless_dim_lower_bound",
    "default_rtol",
    "METHODS",
    "bounded_effect_space",
    "layer_report",
]

EPS64 = float(np.finfo(np.float64).eps)
METHODS = ("auto", "dense", "gram", "patch", "grouped", "matfree")


def default_rtol(m: int, n: int) -> float:
    """Relative rank tolerance ``eps64 * max(m, n)`` (numpy's ``matrix_rank`` rule, spec 1.5)."""
    return EPS64 * max(m, n)


def _rank_decision(s: np.ndarray, m: int, n: int, rtol: float | None, atol: float | None = None
                   ) -> tuple[int, dict[str, float]]:
    """The rank ``#(s > tol)`` of an ``(m, n)`` matrix's singular values ``s`` (descending) and what a
    space records about it: ``tol`` (``atol``, else ``rtol * s_max`` with ``rtol`` by default
    :func:`default_rtol`), ``sigma_max``, ``sigma_min`` (smallest kept), ``sigma_dropped`` (largest
    dropped)."""
    smax = float(s[0]) if s.size else 0.0
    tol = atol if atol is not None else (default_rtol(m, n) if rtol is None else rtol) * smax
    r = int((s > tol).sum())
    return r, {"tol": tol, "sigma_max": smax, "sigma_min": float(s[r - 1]) if r else 0.0,
               "sigma_dropped": float(s[r]) if r < s.size else 0.0}


def _as_batch(d: torch.Tensor, in_shape: tuple[int, ...], n: int) -> torch.Tensor:
    if not isinstance(d, torch.Tensor):
        raise TypeError(f"perturbations must be a torch.Tensor, got {type(d).__name__}")
    if tuple(d.shape[1:]) == in_shape or (d.ndim == 2 and d.shape[1] == n):
        return d.reshape(d.shape[0], -1)
    raise ValueError(f"perturbations must have shape (N, *{in_shape}) or (N, {n}), got {tuple(d.shape)}")


@dataclass
class HarmlessSpace:
    """Base class: the harmless (null) space of a linear map on inputs of shape ``in_shape``.

    Attributes:
        in_shape: one input's shape, e.g. ``(3, 28, 28)``.
        m: output dimension of the map; ``n`` (property) is the input dimension.
        dim: harmless dimension ``n - rank`` (a lower bound when ``exact`` is False).
        rank: numerical rank of ``A`` (``None`` if not computed).
        exact: whether ``dim`` is computed (True) or a bound / estimate (False).
        method: the construction used.
        tol: absolute singular-value threshold used for the rank (``nan`` if none).
        sigma_max: largest singular value of ``A``.
        sigma_min: smallest singular value counted in the rank (how far from a larger null space).
        sigma_dropped: largest singular value at or below ``tol`` (0 if none); ``||A d|| <= sigma_dropped
            ||d||`` for members of the space.
        description: the layer(s) the space belongs to.
        notes: extra facts (e.g. CG statistics).
    """

    in_shape: tuple[int, ...]
    m: int
    dim: int
    rank: int | None
    exact: bool
    method: str
    tol: float = float("nan")
    sigma_max: float = float("nan")
    sigma_min: float = float("nan")
    sigma_dropped: float = 0.0
    description: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Input dimension."""
        return math.prod(self.in_shape)

    @property
    def injective(self) -> bool:
        """True when the layer maps distinct inputs to distinct outputs (no harmless direction)."""
        return self.exact and self.dim == 0

    # subclasses implement _project_flat (float64 (N, n) -> (N, n))
    def _project_flat(self, flat: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _raw_sample(self, count: int, gen: torch.Generator) -> torch.Tensor:
        """``count`` draws ``N c`` with ``c ~ N(0, I_k)`` (any orthonormal basis gives the same law).

        Gaussian, not :func:`perturbscope.sampling.uniform_sphere`: the parts of a
        :class:`GroupedSpace` are drawn separately and joined before the one normalisation in
        :meth:`sample`, which is uniform on the joint sphere only for Gaussian parts.
        """
        g = torch.randn(count, self.n, generator=gen, dtype=torch.float64)
        return self._project_flat(g)

    def project(self, d: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection of ``d`` ``(N, *in_shape)`` onto the harmless space (same shape, float64)."""
        flat = _as_batch(d, self.in_shape, self.n).to(torch.float64)
        if self.dim == 0 and self.exact:
            return torch.zeros_like(flat).reshape(d.shape)
        return self._project_flat(flat).reshape(d.shape)

    def project_orthogonal(self, d: torch.Tensor) -> torch.Tensor:
        """``d - P d``: the part of ``d`` the layer sees (its row-space component), float64."""
        return d.to(torch.float64) - self.project(d)

    def sample(
        self,
        count: int = 1,
        norm: float | torch.Tensor = 1.0,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Random harmless perturbations ``(count, *in_shape)``, float64, each of L2 norm ``norm``.

        ``norm`` is a scalar or a ``(count,)`` tensor (pixel units; any size, e.g. 1 to 1e6).
        Directions are ``N c / ||N c||`` with ``c ~ N(0, I_k)`` (spec section 2).
        """
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")
        norms = torch.as_tensor(norm, dtype=torch.float64).flatten()
        if norms.numel() not in (1, count) or not torch.isfinite(norms).all() or (norms < 0).any():
            raise ValueError(f"norm must be a finite non-negative scalar or ({count},) values, got {norm!r}")
        if self.dim == 0:
            raise ValueError(
                f"{self.description or 'this layer'} is injective (harmless dim 0): no harmless "
                "perturbation exists"
            )
        gen = (
            generator if generator is not None else make_generator(0 if seed is None else seed)
        )
        raw = self._raw_sample(count, gen)
        raw = raw / raw.norm(dim=1, keepdim=True)
        return (raw * norms.view(-1, 1)).reshape(count, *self.in_shape)

    def basis(self, max_bytes: int = 1 << 30) -> np.ndarray:
        """A dense orthonormal basis ``(n, dim)`` float64 (refused above ``max_bytes``)."""
        need = self.n * max(self.dim, 1) * 8
        if need > max_bytes:
            raise ValueError(
                f"a dense basis would take {need / 2**30:.2f} GiB (> max_bytes); use project() "
                "and sample(), which never form it"
            )
        return self._basis()

    def _basis(self) -> np.ndarray:
        """Fallback: orthonormalise the projection of the identity (small spaces only)."""
        eye = torch.eye(self.n, dtype=torch.float64)
        p = self._project_flat(eye).numpy()
        s, u = np.linalg.eigh((p + p.T) / 2)
        return u[:, s > 0.5]

    def summary(self) -> dict[str, Any]:
        """Plain-data facts for reports and JSON."""
        return {
            "layer": self.description,
            "in_shape": list(self.in_shape),
            "n": self.n,
            "m": self.m,
            "rank": self.rank,
            "harmless_dim": self.dim,
            "exact": self.exact,
            "lower_bound_n_minus_m": max(0, self.n - self.m),
            "injective": self.injective,
            "method": self.method,
            "tol": self.tol,
            "sigma_max": self.sigma_max,
            "sigma_min": self.sigma_min,
            "sigma_dropped": self.sigma_dropped,
            **self.notes,
        }

    def report(self) -> str:
        """One paragraph in plain words, with the numbers."""
        head = (
            f"{self.description or 'layer'} on input {self.in_shape}: n = {self.n} inputs -> m = {self.m} "
            f"outputs; "
        )
        if self.rank is not None:
            head += (
                f"rank {self.rank} (tol {self.tol:.3g}, sigma_max {self.sigma_max:.4g}, "
                f"smallest kept sigma {self.sigma_min:.4g}); "
            )
        if self.method == "bounded-effect":
            return head + (
                f"{self.dim} directions with ||A d|| <= {self.notes.get('tau', self.tol):.3g} ||d|| "
                f"(largest attained {self.sigma_dropped:.3g}); NOT harmless unless that is 0."
            )
        if self.injective:
            return head + (
                "INJECTIVE: the layer maps distinct inputs to distinct outputs, so no harmless "
                "perturbation exists for it (harmless dim 0)."
            )
        kind = "exactly" if self.exact else "at least (estimate; see notes)"
        return head + (
            f"harmless dim {kind} {self.dim} of {self.n} ({100 * self.dim / self.n:.1f}% of input "
            f"directions), naive bound n - m = {max(0, self.n - self.m)}; method {self.method}."
        )


@dataclass
class DenseSpace(HarmlessSpace):
    """A space held as a dense orthonormal null basis ``N`` (n, k), or a row-space basis ``Q`` (n, r)."""

    null_basis: torch.Tensor | None = None
    row_basis: torch.Tensor | None = None

    def _project_flat(self, flat: torch.Tensor) -> torch.Tensor:
        if self.null_basis is not None:
            nb = self.null_basis.to(flat.device)
            return (flat @ nb) @ nb.T
        q = self.row_basis.to(flat.device)
        return flat - (flat @ q) @ q.T

    def _raw_sample(self, count: int, gen: torch.Generator) -> torch.Tensor:
        if self.null_basis is not None:
            c = torch.randn(count, self.null_basis.shape[1], generator=gen, dtype=torch.float64)
            return c @ self.null_basis.T
        return super()._raw_sample(count, gen)

    def _basis(self) -> np.ndarray:
        if self.null_basis is not None:
            return self.null_basis.numpy()
        q = self.row_basis.numpy()
        full = sla.qr(q, mode="full")[0]
        return full[:, q.shape[1] :]


@dataclass
class PatchSpace(HarmlessSpace):
    """Non-overlapping conv: per-patch null space of the ``D x C*kh*kw`` kernel matrix + uncovered pixels."""

    kernel_null: torch.Tensor | None = None  # (C*kh*kw, k0)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    patches: int = 0

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        return F.unfold(x, self.kernel, stride=self.stride)

    def _fold(self, cols: torch.Tensor) -> torch.Tensor:
        return F.fold(cols, self.in_shape[1:], self.kernel, stride=self.stride)

    def _uncovered(self, like: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(1, *self.in_shape, dtype=like.dtype, device=like.device)
        return 1.0 - self._fold(self._unfold(ones))

    def _project_flat(self, flat: torch.Tensor) -> torch.Tensor:
        x = flat.reshape(-1, *self.in_shape)
        vn = self.kernel_null.to(flat.device)
        cols = self._unfold(x)  # (N, C*kh*kw, L)
        proj = vn @ (vn.T @ cols)
        out = self._fold(proj) + x * self._uncovered(x)
        return out.reshape(flat.shape)

    def _raw_sample(self, count: int, gen: torch.Generator) -> torch.Tensor:
        k0 = self.kernel_null.shape[1]
        c = torch.randn(count, k0, self.patches, generator=gen, dtype=torch.float64)
        free = torch.randn(count, *self.in_shape, generator=gen, dtype=torch.float64)
        out = self._fold(self.kernel_null @ c) + free * self._uncovered(free)
        return out.reshape(count, -1)

    def _basis(self) -> np.ndarray:
        c, h, w = self.in_shape
        kh, kw = self.kernel
        vn = self.kernel_null.numpy()
        k0 = vn.shape[1]
        idx = torch.arange(self.n, dtype=torch.float64).reshape(1, c, h, w)
        cols = self._unfold(idx)[0].round().long().numpy()  # (C*kh*kw, L) pixel index per patch entry
        uncovered = np.flatnonzero(self._uncovered(idx).reshape(-1).numpy() > 0.5)
        out = np.zeros((self.n, cols.shape[1] * k0 + uncovered.size))
        for patch in range(cols.shape[1]):
            out[cols[:, patch], patch * k0 : (patch + 1) * k0] = vn
        out[uncovered, cols.shape[1] * k0 + np.arange(uncovered.size)] = 1.0
        return out


@dataclass
class GroupedSpace(HarmlessSpace):
    """Grouped conv: the direct sum of one space per group, each on its slice of input channels."""

    parts: list[HarmlessSpace] = field(default_factory=list)

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        x = flat.reshape(-1, *self.in_shape)
        cg = self.in_shape[0] // len(self.parts)
        return [x[:, g * cg : (g + 1) * cg].reshape(x.shape[0], -1) for g in range(len(self.parts))]

    def _join(self, pieces: list[torch.Tensor], count: int) -> torch.Tensor:
        shp = (count, self.in_shape[0] // len(self.parts), *self.in_shape[1:])
        return torch.cat([p.reshape(shp) for p in pieces], dim=1).reshape(count, -1)

    def _project_flat(self, flat: torch.Tensor) -> torch.Tensor:
        pieces = [
            p._project_flat(s) if p.dim else torch.zeros_like(s)
            for p, s in zip(self.parts, self._split(flat), strict=True)
        ]
        return self._join(pieces, flat.shape[0])

    def _raw_sample(self, count: int, gen: torch.Generator) -> torch.Tensor:
        pieces = [
            p._raw_sample(count, gen) if p.dim else torch.zeros(count, p.n, dtype=torch.float64)
            for p in self.parts
        ]
        return self._join(pieces, count)

    def _basis(self) -> np.ndarray:
        cg = self.in_shape[0] // len(self.parts)
        per = cg * math.prod(self.in_shape[1:])
        blocks = [p._basis() if p.dim else np.zeros((per, 0)) for p in self.parts]
        return sla.block_diag(*blocks)


@dataclass
class MatrixFreeSpace(HarmlessSpace):
    """Projection ``d - A^T (A A^T)^+ A d`` by conjugate gradients; ``A`` and ``A^T`` are conv ops."""

    lmap: LinearMap | None = None
    cg_tol: float = 1e-12
    cg_maxiter: int = 5000

    def _project_flat(self, flat: torch.Tensor) -> torch.Tensor:
        y, info = cg_rowspace_solve(self.lmap, flat, tol=self.cg_tol, maxiter=self.cg_maxiter)
        self.notes["last_cg"] = info
        return flat - self.lmap.adjoint(y).reshape(flat.shape)


# ----------------------------------------------------------------------------- dense algebra
def nullspace_basis(a, rtol: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Orthonormal float64 basis ``(n, k)`` of ``null(a)``, the singular values and the tolerance used.

    ``a`` is an ``(m, n)`` array or scipy sparse matrix (densified). Full SVD (LAPACK ``gesdd``);
    ``tol = rtol * s_max`` with ``rtol = eps64 * max(m, n)`` by default; ``rank = #(s > tol)``.
    """
    ad = a.toarray() if sp.issparse(a) else np.asarray(a, dtype=np.float64)
    if ad.ndim != 2 or 0 in ad.shape:
        raise ValueError(f"expected a non-empty 2-D matrix, got shape {ad.shape}")
    m, n = ad.shape
    _, s, vt = sla.svd(ad.astype(np.float64), full_matrices=True, check_finite=True)
    r, spectrum = _rank_decision(s, m, n, rtol)
    return vt[r:].T.copy(), s, spectrum["tol"]


def _dense_space(
    a: sp.csr_array | np.ndarray,
    in_shape,
    rtol: float | None,
    max_bytes: int,
    desc: str,
    atol: float | None = None,
) -> DenseSpace:
    m, n = a.shape
    if m * n * 8 > max_bytes:
        raise ValueError(
            f"the dense matrix of {desc} would take {m * n * 8 / 2**30:.2f} GiB (> max_dense_bytes);"
            " use method='matfree' (wide layers) or raise max_dense_bytes"
        )
    ad = a.toarray() if sp.issparse(a) else np.asarray(a, dtype=np.float64)
    if m > 2 * n:
        ad = sla.qr(ad, mode="r", check_finite=False)[0][:n]  # same singular values and right vectors
    if n > 2 * m:
        # wide: A^T = Q R (economic), A = R^T Q^T; SVD of the small R^T = U S W^T gives V = Q W
        q, r_fac = sla.qr(ad.T, mode="economic", check_finite=False)
        _, s, wt = sla.svd(r_fac.T, full_matrices=False, check_finite=False)
        vt = (q @ wt.T).T
        del q
    else:
        _, s, vt = sla.svd(ad, full_matrices=False, check_finite=False)
    r, spectrum = _rank_decision(s, m, n, rtol, atol)
    k = n - r
    common = dict(
        in_shape=tuple(in_shape),
        m=m,
        dim=k,
        rank=r,
        exact=True,
        method="dense",
        **spectrum,
        description=desc,
    )
    if k > n / 2:
        return DenseSpace(**common, row_basis=torch.from_numpy(np.ascontiguousarray(vt[:r].T)))
    if vt.shape[0] == n:
        nb = vt[r:].T
    else:
        if n * n * 8 > max_bytes:
            raise ValueError(f"the null basis of {desc} needs an {n}x{n} float64 factor (> max_dense_bytes)")
        nb = sla.qr(vt[:r].T, mode="full")[0][:, r:]
    return DenseSpace(**common, null_basis=torch.from_numpy(np.ascontiguousarray(nb)))


def _gram_certificate(
    a: sp.csr_array | np.ndarray, rtol: float | None, max_bytes: int
) -> dict[str, float] | None:
    """Prove full column rank of a tall ``A`` from its Gram matrix ``G = A^T A`` (``n x n``), or give up.

    ``sigma_max`` comes from power iteration; then a Cholesky factorisation of ``G - tau I`` with
    ``tau = tol^2 + 10 n eps ||G||_inf`` (rank tolerance plus the rounding error of forming and
    factoring ``G``, bounded with the Gershgorin bound ``||G||_inf >= lambda_max``) succeeds only if
    ``lambda_min(G) > tau``, i.e.
    every singular value of ``A`` exceeds ``tol``. ``sigma_min`` is then estimated by inverse
    iteration with the factor. Returns ``None`` when the test fails (then a dense SVD decides).
    """
    m, n = a.shape
    if n * n * 8 > max_bytes:
        return None
    g = a.T @ a
    g = g.toarray() if sp.issparse(g) else np.asarray(g)
    lam_bound = float(np.abs(g).sum(axis=1).max())  # Gershgorin: a rigorous upper bound on lambda_max
    v = np.random.default_rng(0).standard_normal(n)
    lam_max = 0.0
    at = a.T.tocsr() if sp.issparse(a) else a.T
    for _ in range(60):  # power iteration with the sparse A: O(nnz) per step
        w = at @ (a @ v)
        new = float(np.linalg.norm(w))
        if new == 0.0:
            return None
        v = w / new
        if abs(new - lam_max) <= 1e-7 * new:
            lam_max = new
            break
        lam_max = new
    smax = math.sqrt(lam_max)
    tol = (default_rtol(m, n) if rtol is None else rtol) * smax
    tau = tol * tol + 10.0 * n * EPS64 * lam_bound
    try:
        chol = sla.cho_factor(g - tau * np.eye(n), lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(chol[0])):
        return None
    # inverse iteration: largest eigenvalue mu of (G - tau I)^{-1} gives lambda_min = tau + 1/mu
    u = np.random.default_rng(1).standard_normal(n)
    u /= np.linalg.norm(u)
    mu = 0.0
    for _ in range(12):
        w = sla.cho_solve(chol, u, check_finite=False)
        mu = float(np.linalg.norm(w))
        u = w / mu
    lam_min = tau + 1.0 / mu
    return {
        "sigma_min": math.sqrt(lam_min),
        "sigma_max": smax,
        "tol": tol,
        "gram_margin": (lam_min - tau) / lam_max,
    }


def _patch_space(lmap: LinearMap, rtol: float | None) -> PatchSpace:
    d, c, kh, kw = lmap.weight.shape
    _, h, w = lmap.in_shape
    wr = lmap.weight.reshape(d, c * kh * kw).numpy()
    _, s, vt = sla.svd(wr, full_matrices=True)
    m, n = lmap.m, lmap.n
    r, spectrum = _rank_decision(s, m, n, rtol)
    _, ho, wo = lmap.out_shape
    patches = ho * wo
    uncovered = c * (h * w - patches * kh * kw)
    dim = patches * (c * kh * kw - r) + uncovered
    return PatchSpace(
        in_shape=lmap.in_shape,
        m=m,
        dim=dim,
        rank=n - dim,
        exact=True,
        method="patch",
        **spectrum,
        description=lmap.description,
        notes={
            "kernel_rank": r,
            "kernel_matrix": [d, c * kh * kw],
            "patches": patches,
            "uncovered_pixels": uncovered,
        },
        kernel_null=torch.from_numpy(np.ascontiguousarray(vt[r:].T)),
        kernel=(kh, kw),
        stride=lmap.stride,
        patches=patches,
    )


def _matfree_space(lmap: LinearMap, rtol: float | None, cg_tol: float, cg_maxiter: int) -> MatrixFreeSpace:
    space = MatrixFreeSpace(
        in_shape=lmap.in_shape,
        m=lmap.m,
        dim=max(0, lmap.n - lmap.m),
        rank=None,
        exact=False,
        method="matfree",
        description=lmap.description,
        lmap=lmap,
        cg_tol=cg_tol,
        cg_maxiter=cg_maxiter,
    )
    # one CG run on a random right-hand side gives Lanczos estimates of the spectrum of A A^T
    gen = make_generator(0)
    probe = torch.randn(1, lmap.n, generator=gen, dtype=torch.float64)
    _, info = cg_rowspace_solve(lmap, probe, tol=cg_tol, maxiter=cg_maxiter, lanczos=True)
    smax = math.sqrt(max(info["lanczos_max"], 0.0))
    smin = math.sqrt(max(info["lanczos_min"], 0.0))
    tol = (default_rtol(lmap.m, lmap.n) if rtol is None else rtol) * smax
    space.sigma_max, space.sigma_min, space.tol = smax, smin, tol
    space.notes.update(
        {
            "cg_iterations": info["iterations"],
            "cg_relative_residual": info["relative_residual"],
            "rank_estimate": "full row rank (Lanczos sigma_min > tol)"
            if smin > tol and lmap.m <= lmap.n
            else "undetermined",
            "dim_is": "n - m if A has full row rank, else larger",
        }
    )
    return space


def _as_map(obj, in_shape) -> LinearMap:
    if isinstance(obj, LinearMap):
        return obj
    if isinstance(obj, nn.Module):
        if in_shape is None:
            raise ValueError("in_shape (one input's shape, no batch dimension) is required for a module")
        try:
            return layer_map(obj, in_shape)
        except TypeError:
            return first_layer_map(obj, in_shape)
    raise TypeError(f"expected a LinearMap, a layer or a model, got {type(obj).__name__}")


def harmless_space(
    layer_or_model,
    in_shape=None,
    method: str = "auto",
    rtol: float | None = None,
    max_dense_bytes: int = 1 << 30,
    cg_tol: float = 1e-12,
    cg_maxiter: int = 5000,
    max_dense_flops: float = 3e10,
) -> HarmlessSpace:
    """The harmless space of a layer, a :class:`LinearMap`, or a model's first layer.

    Args:
        layer_or_model: ``nn.Linear``/``nn.Conv2d``/average pool, a :class:`LinearMap`, or a model
            (its first layer is found by :func:`~perturbscope.harmless.linear_map.first_layer_map`,
            with input normalisation and batch norm folded in).
        in_shape: one input's shape (no batch dimension), e.g. ``(3, 28, 28)``; not needed for a map.
        method: one of :data:`METHODS` (see the module docstring).
        rtol: relative rank tolerance (default ``eps64 * max(m, n)``).
        max_dense_bytes: largest dense float64 factor allowed (default 1 GiB).
        cg_tol, cg_maxiter: relative residual and iteration cap of the matrix-free projection.
        max_dense_flops: with ``method="auto"``, a wide layer whose SVD would cost more than this
            (``min(m, n)^2 * max(m, n)``; default 3e10, ~10-30 s on one core) goes matrix-free.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if rtol is not None and not (0 <= rtol < 1):
        raise ValueError(f"rtol must be in [0, 1), got {rtol}")
    lmap = _as_map(layer_or_model, in_shape)
    if lmap.kind == "conv" and lmap.groups > 1 and method in ("auto", "grouped"):
        sub = [
            harmless_space(
                lmap.sub_group(g),
                method="auto",
                rtol=rtol,
                max_dense_bytes=max_dense_bytes,
                cg_tol=cg_tol,
                cg_maxiter=cg_maxiter,
                max_dense_flops=max_dense_flops,
            )
            for g in range(lmap.groups)
        ]
        exact = all(p.exact for p in sub)
        dim = sum(p.dim for p in sub)
        return GroupedSpace(
            in_shape=lmap.in_shape,
            m=lmap.m,
            dim=dim,
            rank=lmap.n - dim if exact else None,
            exact=exact,
            method="grouped[" + ",".join(sorted({p.method for p in sub})) + "]",
            tol=max(p.tol for p in sub),
            sigma_max=max(p.sigma_max for p in sub),
            sigma_min=min(p.sigma_min for p in sub),
            sigma_dropped=max(p.sigma_dropped for p in sub),
            description=lmap.description,
            notes={"groups": lmap.groups},
            parts=sub,
        )
    if method == "grouped":
        raise ValueError("method='grouped' needs a conv with groups > 1")
    if method == "patch" or (method == "auto" and lmap.non_overlapping):
        if not lmap.non_overlapping or lmap.groups != 1:
            raise ValueError("method='patch' needs a conv with stride >= kernel, no padding, no dilation")
        return _patch_space(lmap, rtol)
    m, n = lmap.m, lmap.n
    too_big = m * n * 8 > max_dense_bytes or float(min(m, n)) ** 2 * max(m, n) > max_dense_flops
    if method == "matfree" or (method == "auto" and m < n and too_big):
        return _matfree_space(lmap, rtol, cg_tol, cg_maxiter)  # never builds A
    a = lmap.weight.numpy() if lmap.kind == "linear" else lmap.to_sparse()  # no sparse copy of a dense W
    if method in ("auto", "gram") and m >= n:
        cert = _gram_certificate(a, rtol, max_dense_bytes)
        if cert is not None:
            return DenseSpace(
                in_shape=lmap.in_shape,
                m=m,
                dim=0,
                rank=n,
                exact=True,
                method="gram",
                tol=cert["tol"],
                sigma_max=cert["sigma_max"],
                sigma_min=cert["sigma_min"],
                description=lmap.description,
                notes={"gram_margin": cert["gram_margin"]},
                null_basis=torch.zeros(n, 0, dtype=torch.float64),
            )
        if method == "gram" and m * n * 8 > max_dense_bytes:
            raise ValueError("the Gram test could not prove injectivity and a dense SVD does not fit")
    return _dense_space(a, lmap.in_shape, rtol, max_dense_bytes, lmap.description)


def stacked_harmless_space(
    consumers, in_shape=None, rtol: float | None = None, max_dense_bytes: int = 1 << 30
) -> DenseSpace:
    """Harmless space of a tensor read by several layers (branches): ``null([A1; A2; ...])``.

    ``consumers`` are layers or :class:`LinearMap` objects that all read inputs of ``in_shape``.
    """
    maps = [_as_map(c, in_shape) for c in consumers]
    if not maps:
        raise ValueError("consumers is empty")
    shapes = {mp.in_shape for mp in maps}
    if len(shapes) != 1:
        raise ValueError(f"all consumers must read the same input shape, got {sorted(shapes)}")
    a = sp.vstack([mp.to_sparse() for mp in maps]).tocsr()
    desc = " & ".join(mp.description for mp in maps)
    return _dense_space(a, maps[0].in_shape, rtol, max_dense_bytes, desc)


def harmless_dim(layer_or_model, in_shape=None, **kwargs) -> int:
    """The harmless dimension ``n - rank(A)`` (see :func:`harmless_space` for the arguments)."""
    return harmless_space(layer_or_model, in_shape, **kwargs).dim


def harmless_dim_lower_bound(layer_or_model, in_shape=None) -> int:
    """The naive bound ``max(0, n - m)``, from the shapes alone."""
    lmap = _as_map(layer_or_model, in_shape)
    return max(0, lmap.n - lmap.m)


def bounded_effect_space(
    layer_or_map, in_shape=None, tau: float = 0.0, max_dense_bytes: int = 1 << 30
) -> DenseSpace:
    """Directions the layer shrinks to at most ``tau`` times their size (spec 3.4 (a), a candidate).

    The span of the right singular vectors with ``sigma_i <= tau`` (dense SVD): every member ``d``
    satisfies ``||A d|| <= tau ||d||`` (``space.sigma_dropped`` is the attained bound). ``tau = 0`` is
    the exact harmless space with no rounding slack. The result is *not* harmless: ``exact`` refers
    to its dimension, and ``method`` is ``"bounded-effect"``.
    """
    if not (isinstance(tau, int | float) and math.isfinite(tau) and tau >= 0):
        raise ValueError(f"tau must be a finite number >= 0, got {tau!r}")
    lmap = _as_map(layer_or_map, in_shape)
    a = lmap.weight.numpy() if lmap.kind == "linear" else lmap.to_sparse()
    space = _dense_space(a, lmap.in_shape, None, max_dense_bytes, lmap.description, atol=float(tau))
    space.method = "bounded-effect"
    space.notes["tau"] = float(tau)
    return space


def layer_report(
    model: nn.Module, in_shape, max_dense_bytes: int = 1 << 28, **kwargs
) -> list[dict[str, Any]]:
    """Harmless dimension of every Linear / Conv2d / average-pool layer on the tensor it reads.

    One forward pass with hooks (eval mode) finds each layer's input shape; each layer is analysed
    alone (no batch-norm folding, no branch intersection: a tensor read by a skip connection too has a
    smaller space, see :func:`stacked_harmless_space`). A layer too large to decide within
    ``max_dense_bytes`` gets ``harmless_dim=None`` and its naive bound. Rows are plain data.
    """
    from perturbscope.models.classifier import eval_mode, model_device

    shape = tuple(int(s) for s in in_shape)
    seen: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    names = {m: n for n, m in model.named_modules()}
    kinds = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)

    def hook(mod, inp, _out):
        if inp and isinstance(inp[0], torch.Tensor) and mod not in [s[1] for s in seen]:
            seen.append((names.get(mod, "?"), mod, tuple(inp[0].shape[1:])))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.rand(1, *shape, dtype=dtype, device=model_device(model)))
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, mod, shp in seen:
        lmap = layer_map(mod, shp)
        row: dict[str, Any] = {
            "name": name,
            "layer": lmap.description,
            "in_shape": list(shp),
            "n": lmap.n,
            "m": lmap.m,
            "lower_bound_n_minus_m": max(0, lmap.n - lmap.m),
        }
        try:
            sp_ = harmless_space(lmap, max_dense_bytes=max_dense_bytes, **kwargs)
            row.update(
                {
                    "harmless_dim": sp_.dim,
                    "exact": sp_.exact,
                    "injective": sp_.injective,
                    "method": sp_.method,
                }
            )
        except ValueError as exc:
            row.update(
                {
                    "harmless_dim": None,
                    "exact": False,
                    "injective": None,
                    "method": "not computed",
                    "why": str(exc),
                }
            )
        rows.append(row)
    return rows
