"""Cap fractions, the coordinate law and Lemma 23 against closed forms, mpmath and brute force."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy import integrate, stats

from perturbscope.sampling import uniform_ball
from perturbscope.theory import caps
from perturbscope.theory.coordinate import coord_density, sample_ball_coord, sample_sphere_coord


def _log_f_ref(t: float, n: int) -> float:
    """log F_n(t) by 40-digit quadrature of c_n (1 - s^2)^((n-1)/2) over [t, 1] (t > 0)."""
    with mp.workdps(40):
        t_, n_ = mp.mpf(t), mp.mpf(n)
        logc = mp.loggamma(n_ / 2 + 1) - mp.log(mp.pi) / 2 - mp.loggamma((n_ + 1) / 2)
        m = (n_ - 1) / 2 * mp.log(1 - t_ * t_)
        w = 1 / (n_ * t_)
        pts = [t_] + [t_ + k * w for k in (1, 4, 16, 64, 256) if t_ + k * w < 1] + [mp.mpf(1)]
        val = mp.quad(lambda s: mp.exp((n_ - 1) / 2 * mp.log(1 - s * s) - m), pts)
        return float(logc + m + mp.log(val))


@pytest.mark.parametrize("t", [-0.7, -0.2, 0.0, 0.1, 0.3, 0.5, 0.8, 0.999])
def test_closed_forms_low_dimension(t):
    # n = 1: segment; n = 2: circular segment; n = 3: spherical cap (Archimedes); evaluated in
    # 40-digit arithmetic because the float64 closed forms cancel near t = 1
    with mp.workdps(40):
        tm = mp.mpf(t)
        f1 = float((1 - tm) / 2)
        f2 = float((mp.acos(tm) - tm * mp.sqrt(1 - tm * tm)) / mp.pi)
        f3 = float((1 - tm) ** 2 * (2 + tm) / 4)
    assert caps.cap_fraction(t, 1) == pytest.approx(f1, rel=2e-15)
    assert caps.cap_fraction(t, 2) == pytest.approx(f2, rel=2e-15)
    assert caps.cap_fraction(t, 3) == pytest.approx(f3, rel=2e-15)
    assert caps.log_cap_fraction(t, 3) == pytest.approx(math.log(f3), rel=2e-15, abs=1e-16)


@pytest.mark.parametrize(("n", "t"), [(10, 0.5), (100, 0.999), (1000, 0.3), (150_528, 0.1), (10**6, 0.01),
                                      (10**6, 0.1), (10**7, 0.05), (10**7, 0.9)])
def test_log_cap_fraction_matches_mpmath(n, t):
    ref = _log_f_ref(t, n)
    got = caps.log_cap_fraction(t, n)
    assert math.isfinite(got)
    assert abs(got - ref) <= 1e-14 * abs(ref)
    lin = caps.cap_fraction(t, n)
    if ref > math.log(1e-300):
        assert lin == pytest.approx(math.exp(ref), rel=1e-13)
    else:
        assert lin < 1e-280  # underflows (or nearly) in float64; the log stays exact


def test_spec_value_at_imagenet_dimension():
    # spec 2.0: n = 150528, t = 0.1 gives 3.1e-331 (log -761.0115)
    lg = caps.log_cap_fraction(0.1, 150_528)
    assert lg == pytest.approx(-761.0115, abs=1e-4)
    assert lg / math.log(10) == pytest.approx(math.log10(3.1) - 331, abs=0.01)


@pytest.mark.parametrize(("n", "r"), [(2, 1.0), (3, 2.0), (5, 0.5)])
def test_cap_fraction_vs_brute_force_monte_carlo(n, r):
    """Fraction of B_n(r) in a cap of height h = fraction with x_1 >= r - h, by full-vector sampling."""
    m = 200_000
    x = uniform_ball(m, n, radius=r, seed=123 + n, dtype=torch.float64)[:, 0].numpy()
    for h_frac in (0.05, 0.3, 0.7, 1.0, 1.5):
        h = h_frac * r
        exact = caps.cap_fraction(1.0 - h / r, n)
        est = float(np.mean(x >= r - h))
        se = math.sqrt(exact * (1 - exact) / m)
        assert abs(est - exact) <= 4.5 * se + 1e-12, (n, r, h, est, exact)


def test_log_cap_fraction_finite_and_monotone_where_float64_underflows():
    dims = [10**3, 3 * 10**3, 10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6, 3 * 10**6, 10**7]
    logs = [caps.log_cap_fraction(0.1, n) for n in dims]
    assert all(math.isfinite(v) for v in logs)
    assert all(b < a for a, b in zip(logs, logs[1:], strict=False))
    assert logs[-1] < -700 * 10  # far below float64's range
    assert caps.cap_fraction(0.1, 10**7) == 0.0
    # and decreasing in t at fixed n
    ts = np.linspace(0.01, 0.99, 50)
    lt = caps.log_cap_fraction_array(ts, 10**6)
    assert np.all(np.isfinite(lt)) and np.all(np.diff(lt) < 0)


def test_array_matches_scalar_and_symmetry():
    ts = np.array([-1.5, -1.0, -0.4, 0.0, 0.2, 0.9, 1.0, 2.0])
    for n in (1, 4, 1000):
        arr = caps.cap_fraction_array(ts, n)
        assert np.allclose(arr, [caps.cap_fraction(t, n) for t in ts], rtol=0, atol=0)
        assert np.allclose(caps.cap_fraction_array(-ts, n), 1 - arr, rtol=0, atol=1e-15)
    assert caps.cap_fraction(1.0, 5) == 0.0 and caps.log_cap_fraction(1.0, 5) == -math.inf
    assert caps.cap_fraction(-1.0, 5) == 1.0 and caps.log_cap_fraction(-3.0, 5) == 0.0


@pytest.mark.parametrize("n", [1, 2, 5, 50, 1000, 10**5])
def test_lemma23_bound_holds(n):
    ts = np.linspace(0.0, 1.0, 101)
    exact = caps.log_cap_fraction_array(ts, n)
    bound = caps.log_cap_bound(ts, n)
    assert np.all(exact <= bound + 1e-12)
    assert caps.cap_bound(0.0, n) == pytest.approx(0.5)  # tight at the half-ball


def test_log_gamma_half_ratio_matches_mpmath():
    for a in (0.5, 1.0, 7.25, 29.9, 30.5, 1000.5, 75264.5, 5e6 + 0.5, 1e12):
        with mp.workdps(40):
            ref = float(mp.loggamma(mp.mpf(a) + 0.5) - mp.loggamma(mp.mpf(a)))
        assert caps.log_gamma_half_ratio(a) == pytest.approx(ref, rel=2e-15, abs=1e-16)


@pytest.mark.parametrize("n", [1, 2, 3, 30, 10**6])
def test_coordinate_density_integrates_to_one_and_matches_cap(n):
    total = integrate.quad(lambda s: float(coord_density(s, n)), -1, 1, points=[0.0], limit=200)[0]
    assert total == pytest.approx(1.0, abs=1e-9)
    if n <= 30:
        tail = integrate.quad(lambda s: float(coord_density(s, n)), 0.3, 1)[0]
        assert tail == pytest.approx(caps.cap_fraction(0.3, n), rel=1e-9)


@pytest.mark.parametrize("n", [1, 3, 40, 10**6])
def test_coordinate_sampler_has_the_exact_law(n):
    s = sample_ball_coord(n, 20_000, seed=7)
    res = stats.kstest(s, lambda x: 1.0 - caps.cap_fraction_array(np.asarray(x), n))
    assert res.pvalue > 1e-3
    if n >= 2:  # sphere coordinate: theta_1^2 ~ Beta(1/2, (n-1)/2), E theta_1^2 = 1/n
        th = sample_sphere_coord(n, 20_000, seed=8)
        assert np.mean(th**2) == pytest.approx(1.0 / n, rel=0.05)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_dimension_raises(bad):
    with pytest.raises(ValueError, match="dimension"):
        caps.cap_fraction(0.1, bad)


def test_nan_and_out_of_range_raise():
    with pytest.raises(ValueError, match="NaN"):
        caps.cap_fraction(float("nan"), 3)
    with pytest.raises(ValueError, match="NaN"):
        caps.log_cap_fraction_array(np.array([0.1, np.nan]), 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        caps.cap_bound(1.5, 3)


@pytest.mark.parametrize("n", [1, 3, 98, 2350, 150528])
def test_inverse_log_cap_fraction_round_trip(n):
    """``inverse_log_cap_fraction`` inverts ``log_cap_fraction_array`` on both sides of t = 0, from
    p ~ 1 down to e^-700, to the rounding of t itself."""
    lf = -np.array([1e-6, 0.01, 0.5, 0.69, 0.7, 2.0, 10.0, 50.0, 200.0, 700.0])
    lf = np.concatenate([lf, np.log1p(-np.exp(lf[:6]))])  # F > 1/2: t < 0
    t = caps.inverse_log_cap_fraction(lf, n)
    assert np.all(np.abs(t) <= 1.0) and np.all((t < 0) == (lf > -math.log(2)))
    back = caps.log_cap_fraction_array(t, n)
    ok = np.abs(t) < 1.0
    # |d log F / dt| ~ n / (1 - t^2): the error of log F from rounding t alone
    slack = 4e-16 * (n + 1) / np.maximum(1.0 - t[ok] ** 2, 1e-300) + 1e-14 * np.abs(lf[ok])
    assert np.all(np.abs(back[ok] - lf[ok]) <= slack)
    with pytest.raises(ValueError, match="log_f"):
        caps.inverse_log_cap_fraction(np.array([0.1]), n)


def test_log_cap_fraction_with_exact_one_minus_t2():
    """``one_minus_t2`` given from a parametrisation keeps ``log F_n`` exact where ``t`` rounds
    near 1: t = s / sqrt(s^2 + m), 1 - t^2 = m / (s^2 + m), against 40-digit mpmath."""
    n, m = 5, 2.0
    s = np.array([0.5, 3.0, 37.5, 1e3, 1e5])
    t = s / np.sqrt(s * s + m)
    x = m / (s * s + m)
    got = caps.log_cap_fraction_array(t, n, one_minus_t2=x)
    with mp.workdps(40):
        ref = [float(mp.log(mp.betainc(mp.mpf(n + 1) / 2, 0.5, 0, mp.mpf(m) / (mp.mpf(si) ** 2 + m),
                                       regularized=True) / 2)) for si in s]
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    plain = caps.log_cap_fraction_array(t, n)
    assert abs(plain[-1] / ref[-1] - 1) > 1e-12  # without it, t's rounding shows at s = 1e5
