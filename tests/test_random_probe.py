import numpy as np
import pytest
import torch

from perturbscope.models import LinearBinary
from perturbscope.probes.random_probe import random_probe
from perturbscope.stats import binomial_ci
from perturbscope.theory.caps import cap_fraction


def test_linear_flip_fraction_matches_exact_cap_fraction():
    # A point at distance eps from a plane, noise uniform in the ball of radius alpha*eps:
    # P(flip) = F_d(1/alpha), the cap fraction (spec section 2.2), for every eps.
    d, n, draws = 16, 6, 4000
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(n, d, generator=g, dtype=torch.float64)
    model = LinearBinary(w, bias=-float((x @ w).mean()))
    eps = model.distance(x)
    alphas = (1.0, 1.5, 2.0, 5.0)
    res = random_probe(model, x, eps, alphas=alphas, draws=draws, seed=3, batch_size=512)
    assert res.forwards == n * len(alphas) * draws
    exact = np.array([cap_fraction(1 / a, d) for a in alphas])
    lo, hi = binomial_ci(res.counts.numpy(), draws, level=0.999)
    assert ((lo <= exact) & (exact <= hi)).all(), (res.counts / draws, exact)
    # at alpha = 1 the ball only touches the plane: no flips
    assert (res.counts[:, 0] == 0).all()
    # the smallest flipping perturbation has an L2 norm of at least the distance
    ok = res.counts > 0
    assert (res.min_l2[ok] >= eps.unsqueeze(1).expand_as(ok)[ok] - 1e-9).all()
    assert (res.min_l2[ok] <= (eps.unsqueeze(1) * torch.tensor(alphas))[ok] + 1e-9).all()


def test_probe_counts_against_a_direct_loop():
    # a different code path (a plain loop over images and draws) gives the same counts
    d, n, draws = 8, 3, 300
    torch.manual_seed(1)
    w = torch.randn(d, dtype=torch.float64)
    x = torch.rand(n, d, dtype=torch.float64)
    model = LinearBinary(w, bias=-float((x @ w).mean()))
    eps = model.distance(x)
    from perturbscope.sampling import uniform_ball

    zeta = uniform_ball(draws, (d,), seed=5, dtype=torch.float64)
    res = random_probe(model, x, eps, alphas=(2.0, 4.0), draws=draws, seed=5, batch_size=7)
    clean = (model.logit(x) >= 0).long()
    for i in range(n):
        for j, a in enumerate((2.0, 4.0)):
            pert = (model.logit(x[i] + a * eps[i] * zeta) >= 0).long()
            assert int((pert != clean[i]).sum()) == int(res.counts[i, j])
            flips = (pert != clean[i]).nonzero()[:, 0]
            if len(flips):
                k = flips[zeta[flips].norm(dim=1).argmin()]
                assert int(res.min_index[i, j]) == int(k)
                assert res.min_l2[i, j] == pytest.approx(float(a * eps[i] * zeta[k].norm()))


def test_probe_errors():
    model = LinearBinary(torch.ones(4))
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="eps"):
        random_probe(model, x, torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="eps"):
        random_probe(model, x, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="alphas"):
        random_probe(model, x, torch.ones(2), alphas=(0.0,))
    with pytest.raises(ValueError, match="directions"):
        random_probe(model, x, torch.ones(2), draws=3, directions=torch.ones(2, 4))


def test_clipped_probe_never_flips_where_the_flip_region_is_outside_the_box():
    """Boundary x_1 = 1.05, just outside [0, 1]: the paper's unclipped probe flips images at
    x_1 = 0.99 (its draws leave the box), the clipped probe cannot (every input it evaluates has
    x_1 <= 1)."""
    d = 6
    w = torch.zeros(d, dtype=torch.float64)
    w[0] = 1.0
    model = LinearBinary(w, bias=-1.05)
    x = torch.full((3, d), 0.5, dtype=torch.float64)
    x[:, 0] = 0.99
    eps = torch.full((3,), 0.06, dtype=torch.float64)  # distance to the plane
    free = random_probe(model, x, eps, alphas=(5.0,), draws=400, seed=2)
    clipped = random_probe(model, x, eps, alphas=(5.0,), draws=400, seed=2, clip=True)
    assert (free.counts > 50).all() and (clipped.counts == 0).all()
    assert torch.isnan(clipped.min_l2).all() and (clipped.min_index == -1).all()
    with pytest.raises(ValueError, match="bounds"):
        from perturbscope.models.classifier import Classifier

        random_probe(Classifier(model, bounds=None), x, eps, clip=True)
    with pytest.raises(TypeError, match="clip"):
        random_probe(model, x, eps, clip=1)


def test_clipped_probe_counts_and_norms_against_a_direct_loop():
    """clip=True evaluates clamp(x + alpha eps zeta_k, 0, 1); its smallest flipping draw is the one
    whose clipped perturbation has the smallest L2 norm, with the clipped norms reported."""
    from perturbscope.sampling import uniform_ball

    d, draws = 10, 300
    torch.manual_seed(4)
    w = torch.randn(d, dtype=torch.float64)
    x = torch.rand(3, d, dtype=torch.float64) * 0.2  # near the corner 0: clipping matters
    model = LinearBinary(w, bias=-float((x @ w).mean()))
    eps = model.distance(x)
    res = random_probe(model, x, eps, alphas=(3.0,), draws=draws, seed=7, batch_size=11, clip=True)
    zeta = uniform_ball(draws, (d,), seed=7, dtype=torch.float64)
    clean = (model.logit(x) >= 0).long()
    seen = 0
    for i in range(3):
        xp = (x[i] + 3.0 * eps[i] * zeta).clamp(0.0, 1.0)
        flips = ((model.logit(xp) >= 0).long() != clean[i]).nonzero()[:, 0]
        assert len(flips) == int(res.counts[i, 0])
        if len(flips):
            seen += 1
            delta = xp[flips] - x[i]
            k = int(delta.norm(dim=1).argmin())
            assert int(res.min_index[i, 0]) == int(flips[k])
            assert float(res.min_l2[i, 0]) == pytest.approx(float(delta[k].norm()))
            assert float(res.min_l1[i, 0]) == pytest.approx(float(delta[k].abs().sum()))
            assert float(res.min_linf[i, 0]) == pytest.approx(float(delta[k].abs().max()))
            assert float(res.min_l2[i, 0]) < float(3.0 * eps[i] * zeta[flips[k]].norm()) + 1e-12
    assert seen >= 1
