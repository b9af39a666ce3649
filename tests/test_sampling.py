import math

import numpy as np
import pytest
import torch
from scipy import stats

from perturbscope.sampling import gaussian, make_generator, uniform_ball, uniform_cube, uniform_sphere


@pytest.mark.parametrize("d", [1, 3, 50, 2352])
def test_ball_radius_law_ks(d):
    z = uniform_ball(4000, d, radius=2.5, seed=1, dtype=torch.float64)
    r = z.norm(dim=1).numpy() / 2.5
    assert r.max() <= 1 + 1e-12
    # (||z|| / R)^d is uniform on [0, 1] exactly when the radius law is right
    p = stats.kstest(r**d, "uniform").pvalue
    assert p > 1e-3


def test_ball_radius_law_rejects_wrong_law():
    # the same KS check must fail for the naive (wrong) law R * U
    d = 50
    g = torch.randn(4000, d, generator=make_generator(2), dtype=torch.float64)
    wrong = g / g.norm(dim=1, keepdim=True) * torch.rand(4000, 1, dtype=torch.float64)
    assert stats.kstest(wrong.norm(dim=1).numpy() ** d, "uniform").pvalue < 1e-6


def test_ball_isotropy():
    d, n = 20, 20000
    z = uniform_ball(n, (d,), seed=3, dtype=torch.float64)
    unit = z / z.norm(dim=1, keepdim=True)
    # mean of unit directions: each coordinate has sd 1/sqrt(d n)
    assert unit.mean(0).abs().max().item() < 5 / math.sqrt(d * n)
    # second moment E[u u^T] = I / d
    cov = (unit.T @ unit / n).numpy()
    assert np.abs(cov - np.eye(d) / d).max() < 6 / (d * math.sqrt(n))
    # first coordinate of a uniform-ball point: u_1^2 ~ Beta(1/2, (d+1)/2)
    assert stats.kstest(z[:, 0].numpy() ** 2, stats.beta(0.5, (d + 1) / 2).cdf).pvalue > 1e-3


def test_shapes_seeds_and_dtypes():
    a = uniform_ball(5, (3, 4, 4), seed=7)
    b = uniform_ball(5, (3, 4, 4), seed=7)
    assert a.shape == (5, 3, 4, 4) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, uniform_ball(5, (3, 4, 4), seed=8))
    s = uniform_sphere(100, 10, radius=3.0, seed=0, dtype=torch.float64)
    assert torch.allclose(s.norm(dim=1), torch.full((100,), 3.0, dtype=torch.float64))
    c = uniform_cube(1000, 6, half_width=0.2, seed=0)
    assert c.abs().max() <= 0.2 and c.abs().max() > 0.19
    g = gaussian(10000, 2, sigma=2.0, seed=0)
    assert abs(g.std().item() - 2.0) < 0.05


def test_sampler_errors():
    with pytest.raises(ValueError, match="shape"):
        uniform_ball(3, (0, 2))
    with pytest.raises(ValueError, match="n"):
        uniform_ball(-1, 3)
    with pytest.raises(TypeError, match="seed"):
        uniform_ball(3, 3, seed="x")


@pytest.mark.parametrize("draw_dtype", [torch.float64, torch.float32])
def test_ball_orthogonal_to_a_direction_per_row(draw_dtype):
    """``orthogonal_to``: points in the (d-1)-ball orthogonal to each row's unit vector, radius law
    ``(||x|| / r)^(d-1)`` uniform (KS), direction isotropic inside the hyperplane (mean zero,
    covariance ``r^2 / (d + 1) (I - u u^T)``), per-row radii."""
    d, n = 6, 20000
    gen = make_generator(4)
    u = torch.randn(n, d, generator=gen, dtype=torch.float64)
    u /= u.norm(dim=1, keepdim=True)
    r = 0.5 + torch.rand(n, generator=gen, dtype=torch.float64)
    z = uniform_ball(n, d, r, seed=5, dtype=torch.float64, orthogonal_to=u, draw_dtype=draw_dtype)
    tol = 1e-12 if draw_dtype == torch.float64 else 1e-6
    assert float((z * u).sum(1).abs().max()) < tol
    q = (z.norm(dim=1) / r).clamp(max=1.0) ** (d - 1)
    assert stats.kstest(q.numpy(), "uniform").pvalue > 1e-3
    e = torch.zeros(d, dtype=torch.float64)
    e[0] = 1.0
    one = uniform_ball(n, d, 2.0, seed=6, dtype=torch.float64, orthogonal_to=e)  # one vector for all
    cov = one.T @ one / n
    want = 4.0 / (d - 1 + 2) * (torch.eye(d, dtype=torch.float64) - torch.outer(e, e))
    assert float((cov - want).abs().max()) < 0.03 and float(one.mean(0).abs().max()) < 0.03
    s = uniform_sphere(n, d, 3.0, seed=7, dtype=torch.float64, orthogonal_to=e)
    assert torch.allclose(s.norm(dim=1), torch.full((n,), 3.0, dtype=torch.float64))
    assert float(s[:, 0].abs().max()) < 1e-12


def test_one_seed_convention_counter_based():
    """Draw k of an int seed depends only on (seed, k): chunks, start offsets and calls agree;
    a generator is advanced by one integer draw per call; different samplers are independent."""
    whole = uniform_ball(50, (3, 4), seed=3, dtype=torch.float64)
    assert torch.equal(uniform_ball(50, (3, 4), seed=3, dtype=torch.float64), whole)
    parts = torch.cat([uniform_ball(17, (3, 4), seed=3, start=0, dtype=torch.float64),
                       uniform_ball(33, (3, 4), seed=3, start=17, dtype=torch.float64)])
    assert torch.equal(parts, whole)
    assert not torch.equal(uniform_ball(50, (3, 4), seed=4, dtype=torch.float64), whole)
    gen = make_generator(3)
    a, b = uniform_ball(4, 5, seed=gen), uniform_ball(4, 5, seed=gen)
    assert a.device.type == "cpu" and not torch.equal(a, b)  # the generator passed on was advanced
    gen2 = make_generator(3)
    assert torch.equal(uniform_ball(4, 5, seed=gen2), a)  # the same generator state, the same draws
    g = gaussian(2000, 5, seed=3, dtype=torch.float64)
    sph = uniform_sphere(2000, 5, seed=3, dtype=torch.float64)
    assert abs(float((g / g.norm(dim=1, keepdim=True) * sph).sum(1).mean())) < 0.05  # not the same normals
    with pytest.raises(ValueError, match="start"):
        uniform_ball(4, 5, seed=1, start=-1)
    with pytest.raises(ValueError, match="orthogonal_to"):
        uniform_ball(4, 5, orthogonal_to=torch.ones(3, 5))
