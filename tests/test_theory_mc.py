"""The two Monte Carlo engines against each other and against the exact values; Theorem 7."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perturbscope.analyses.gradient_optimality import check_gradient_direction
from perturbscope.theory import half_balls as hb
from perturbscope.theory import single_point as sp
from perturbscope.theory import two_balls as tb
from perturbscope.theory.engines import Sampler
from perturbscope.theory.montecarlo import monte_carlo, two_engine_agreement

torch.set_num_threads(1)

N_DIM = 24
CASES = [
    ("point", "flip", dict(eps=0.1, r=0.5), lambda n: sp.flip_exact(n, 0.1, 0.5)),
    ("two-balls", "correct", dict(eps=0.1), lambda n: tb.accuracy_exact(n, 0.1)),
    ("two-balls", "susceptible", dict(eps=0.1, delta=0.15), lambda n: tb.susceptibility_exact(n, 0.1, 0.15)),
    ("two-balls", "flip", dict(eps=0.1, r=1.0), lambda n: tb.flip_exact(n, 0.1, 1.0)),
    ("two-balls", "universal", dict(eps=0.1, delta=0.1), lambda n: tb.universality_exact(n, 0.1)),
    ("two-balls", "flip", dict(eps=0.1, r=1.0, A=1.02, density="shifted"),
     lambda n: tb.flip_exact(n, 0.1, 1.0, 1.02, "shifted")),
    ("two-balls", "universal", dict(eps=0.1, delta=0.1, A=1.02, density="shifted"),
     lambda n: tb.universality_exact(n, 0.1, 1.02, "shifted")),
    ("half-balls", "susceptible", dict(eps=0.05, delta=0.1), lambda n: hb.susceptibility_exact(n, 0.05, 0.1)),
    ("half-balls", "flip", dict(eps=0.05, r=1.0), lambda n: hb.flip_exact(n, 0.05, 1.0)),
    ("half-balls", "flip", dict(eps=0.0, r=0.5), lambda n: hb.flip_exact(n, 0.0, 0.5)),
]


@pytest.mark.parametrize(("model", "event", "params", "exact"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_engines_agree_with_each_other_and_with_exact(model, event, params, exact):
    p = exact(N_DIM)
    full = monte_carlo(model, event, n=N_DIM, samples=15_000, engine="full", seed=11, level=0.999, **params)
    coord = monte_carlo(model, event, n=N_DIM, samples=15_000, engine="coord", seed=12, level=0.999,
                        **params)
    assert 0.02 < p < 0.98  # informative cases only
    assert full.contains(p), (full, p)
    assert coord.contains(p), (coord, p)
    assert two_engine_agreement(full, coord, z=3.89)


def test_agreement_check_can_fail():
    a = monte_carlo("two-balls", "flip", n=N_DIM, samples=15_000, engine="coord", seed=1, eps=0.1, r=1.0)
    b = monte_carlo("two-balls", "flip", n=N_DIM, samples=15_000, engine="coord", seed=2, eps=0.1, r=2.0)
    assert not two_engine_agreement(a, b, z=3.89)  # r = 1 vs r = 2 differ by ~0.04
    assert not a.contains(tb.flip_exact(N_DIM, 0.1, 2.0))


@pytest.mark.parametrize("n", [10**4, 10**6])
def test_coord_engine_covers_exact_at_huge_dimension(n):
    eps = 0.3 / math.sqrt(n)  # margin on the 1/sqrt(n) scale keeps the probability O(1)
    cases = [("two-balls", "flip", dict(eps=eps, r=1.0), tb.flip_exact(n, eps, 1.0)),
             ("half-balls", "flip", dict(eps=0.0, r=1.0), 0.25),
             ("two-balls", "universal", dict(eps=0.1, delta=eps), tb.universality_exact(n, eps))]
    for model, event, params, p in cases:
        res = monte_carlo(model, event, n=n, samples=40_000, engine="coord", seed=5, level=0.999, **params)
        assert res.contains(p), (model, event, res, p)


def test_full_engine_samples_are_in_the_model_support():
    s = Sampler("full", 30, seed=0)
    u = tb.sample_smac(s, 2000, A=1.05, density="shifted")
    assert torch.all((u - torch.tensor([1 - 1 / 1.05] + [0.0] * 29, dtype=torch.float64)).norm(dim=1)
                     <= 1 / 1.05 + 1e-12)
    x, lab = hb.sample_half_balls(s, 2000, eps=0.1)
    assert torch.all(((lab == 0) & (x[:, 0] <= -0.1)) | ((lab == 1) & (x[:, 0] >= 0.1)))
    assert torch.all(x.norm(dim=1) <= 1.1 + 1e-12)


def test_radial_density_has_the_stated_radius_law():
    # p(u) = A^n ||u||^k / V_n, k = n (A^n - 1): P(||u|| <= rho) = rho^(n A^n)
    n, A = 8, 1.05
    u = tb.sample_smac(Sampler("full", n, seed=3), 20_000, A=A, density="radial")
    rho = 0.97
    p = rho ** (n * A**n)
    est = float((u.norm(dim=1) <= rho).double().mean())
    assert abs(est - p) < 4.5 * math.sqrt(p * (1 - p) / 20_000)


@pytest.mark.parametrize("n", [2, 50, 400])
def test_theorem7_gradient_points_along_the_optimal_attack(n):
    chk = check_gradient_direction(n, samples=256, eps=0.1, seed=n)
    assert chk.zero_gradients == 0
    assert chk.min_cosine > 1 - 1e-12
    assert chk.max_distance_error < 1e-9
    assert chk.attack_min_cosine > 1 - 1e-9  # the package's attack uses the same direction


def test_monte_carlo_bad_inputs():
    with pytest.raises(ValueError, match="engine"):
        monte_carlo("point", "flip", n=3, samples=10, engine="gpu", eps=0.1, r=1.0)
    with pytest.raises(ValueError, match="samples"):
        monte_carlo("point", "flip", n=3, samples=0, eps=0.1, r=1.0)
    with pytest.raises(ValueError, match="model"):
        monte_carlo("three-balls", "flip", n=3, samples=10, eps=0.1, r=1.0)
    with pytest.raises(ValueError, match="dimension"):
        monte_carlo("point", "flip", n=0, samples=10, eps=0.1, r=1.0)
    with pytest.raises(ValueError, match="r"):
        monte_carlo("two-balls", "flip", n=3, samples=10, eps=0.1, r=-1.0)
    with pytest.raises(ValueError, match="eps"):
        monte_carlo("half-balls", "flip", n=3, samples=10, eps=float("nan"), r=1.0)
    assert np.isfinite(monte_carlo("point", "flip", n=3, samples=10, eps=0.1, r=1.0).estimate)
