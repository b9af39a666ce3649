"""Are the decision boundaries near the data correlated? (UAP paper, Section 4.)

Stack the unit DeepFool directions ``r(x) / ||r(x)||_2`` found at ``n`` inputs into an
``(n, d)`` matrix and compare its singular values with those of ``n`` iid uniform unit vectors
in ``R^d``. Normals that concentrate near a low-dimensional subspace give singular values
that decay much faster than the random ones: a few directions carry most of the energy
(squared singular mass), which is what makes universal perturbations possible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from perturbscope.attacks.deepfool import DeepFool
from perturbscope.attacks.universal import fooling_mask
from perturbscope.figures import new_figure, save_figure
from perturbscope.models.classifier import Classifier, as_classifier
from perturbscope.sampling import make_generator, uniform_sphere

__all__ = ["NormalsResult", "boundary_normals", "energy_rank", "subspace_fooling_rate",
           "plot_singular_values"]


def energy_rank(singular_values: torch.Tensor, fraction: float = 0.9) -> int:
    """Smallest ``k`` whose top-``k`` squared singular values hold ``fraction`` of the total."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    e = singular_values.double() ** 2
    total = float(e.sum())
    if total == 0.0:
        return 0
    cum = torch.cumsum(e, 0) / total
    return int((cum < fraction - 1e-12).sum()) + 1


@dataclass
class NormalsResult:
    """Singular values of the stacked boundary normals and of random unit vectors.

    Attributes:
        normals: ``(n, d)`` unit rows (DeepFool directions of the successful inputs).
        singular_values: ``(min(n, d),)`` descending, of ``normals``.
        random_singular_values: same for ``n`` uniform unit vectors in ``R^d`` (seeded).
        basis: ``(k, d)`` top right singular vectors of ``normals`` (``k = min(n, d)``).
        fraction: energy fraction used by ``k_normals`` / ``k_random``.
        k_normals, k_random: directions holding ``fraction`` of the squared singular mass.
        n_attempted: inputs DeepFool ran on (failures are left out of ``normals``).
    """

    normals: torch.Tensor
    singular_values: torch.Tensor
    random_singular_values: torch.Tensor
    basis: torch.Tensor
    fraction: float
    k_normals: int
    k_random: int
    n_attempted: int

    def summary(self) -> dict:
        n, d = self.normals.shape
        return {"n_normals": n, "dimension": d, "n_attempted": self.n_attempted,
                "energy_fraction": self.fraction, "k_normals": self.k_normals,
                "k_random": self.k_random,
                "singular_values": [float(s) for s in self.singular_values],
                "random_singular_values": [float(s) for s in self.random_singular_values]}


def boundary_normals(model: nn.Module | Classifier, x: torch.Tensor, *, output: str | None = None,
                     fraction: float = 0.9, seed: int | torch.Generator | None = 0,
                     max_iter: int = 50, candidates: int = 9, batch_size: int = 256
                     ) -> NormalsResult:
    """DeepFool normals at ``x`` ``(N, *shape)`` and their spectrum against random directions.

    ``model``: an ``nn.Module`` (output kind ``output`` or its ``output_kind``) or a Classifier;
    ``x`` in pixel units inside its bounds. L2 DeepFool (unclipped) with ``max_iter`` iterations
    and ``candidates`` rival classes moves each input away from its clean prediction; the
    normals are the unit perturbations of the inputs it flipped.
    """
    df = DeepFool(norm="l2", max_iter=max_iter, candidates=candidates,
                  batch_size=batch_size)(model, x, output=output)
    ok = df.success & (df.eps_l2 > 0)
    if int(ok.sum()) < 2:
        raise ValueError(f"DeepFool succeeded on {int(ok.sum())} of {x.shape[0]} inputs; "
                         "need at least 2 normals")
    r = df.perturbation[ok].reshape(int(ok.sum()), -1).double()
    normals = r / r.norm(dim=1, keepdim=True)
    n, d = normals.shape
    _, s, vh = torch.linalg.svd(normals, full_matrices=False)
    rnd = uniform_sphere(n, d, 1.0, seed=make_generator(seed), dtype=torch.float64)
    s_rnd = torch.linalg.svdvals(rnd.to(normals.device))
    return NormalsResult(normals=normals, singular_values=s, random_singular_values=s_rnd,
                         basis=vh, fraction=fraction, k_normals=energy_rank(s, fraction),
                         k_random=energy_rank(s_rnd, fraction), n_attempted=x.shape[0])


def subspace_fooling_rate(model: nn.Module | Classifier, x: torch.Tensor, basis: torch.Tensor,
                          k: int, radius: float, *, output: str | None = None, draws: int = 10,
                          seed: int | torch.Generator | None = 0, batch_size: int = 256
                          ) -> torch.Tensor:
    """Fooling rate ``(draws,)`` of random vectors of L2 norm ``radius`` in the span of the top
    ``k`` rows of ``basis``, on held-out ``x`` (the paper's test: ~38% vs ~10% fully random)."""
    if not 1 <= k <= basis.shape[0]:
        raise ValueError(f"k must be in [1, {basis.shape[0]}], got {k!r}")
    clf = as_classifier(model, output)
    coef = uniform_sphere(draws, k, radius, seed=make_generator(seed), dtype=torch.float64)
    vs = (coef.to(basis.device) @ basis[:k]).to(x.dtype).reshape(draws, *x.shape[1:])
    return torch.tensor([float(fooling_mask(clf, x, vs[j], batch_size=batch_size).double().mean())
                         for j in range(draws)])


def plot_singular_values(result: NormalsResult, path: str | os.PathLike, title: str = "") -> Path:
    """Plot both spectra (normalised by the largest) and the cumulative energy, to a PNG."""
    fig, (ax0, ax1) = new_figure(1, 2, figsize=(11, 4.2))
    for s, lab, k in ((result.singular_values, "DeepFool normals", result.k_normals),
                      (result.random_singular_values, "random unit vectors", result.k_random)):
        s = s.cpu().double()
        idx = torch.arange(1, s.numel() + 1)
        ax0.plot(idx, s / s[0], label=lab)
        e = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
        ax1.plot(idx, e, label=f"{lab}: k={k} for {100 * result.fraction:g}%")
    ax0.set_xlabel("index")
    ax0.set_ylabel("singular value / largest")
    ax0.set_title("singular values")
    ax0.legend()
    ax1.axhline(result.fraction, color="grey", ls=":", lw=0.8)
    ax1.set_xlabel("number of directions k")
    ax1.set_ylabel("share of squared singular mass")
    ax1.set_title("energy in the top k directions")
    ax1.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, format="png")
