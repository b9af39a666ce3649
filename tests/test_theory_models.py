"""Exact values and bounds of the paper's models (Theorems 1, 4-8, 18-20)."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest

from perturbscope.theory import half_balls as hb
from perturbscope.theory import single_point as sp
from perturbscope.theory import two_balls as tb


def _F(t, n):
    """F_n(t) in mpmath (regularised incomplete beta)."""
    t = mp.mpf(t)
    if t >= 1:
        return mp.mpf(0)
    if t <= -1:
        return mp.mpf(1)
    if t < 0:
        return 1 - _F(-t, n)
    return mp.betainc(mp.mpf(n + 1) / 2, mp.mpf(1) / 2, 0, 1 - t * t, regularized=True) / 2


def _f(s, n):
    c = mp.exp(mp.loggamma(mp.mpf(n) / 2 + 1) - mp.loggamma(mp.mpf(n + 1) / 2)) / mp.sqrt(mp.pi)
    return c * (1 - s * s) ** (mp.mpf(n - 1) / 2)


def _quad(g, lo, hi, kinks):
    pts = sorted({lo, hi, *[k for k in kinks if lo < k < hi]})
    return float(mp.quad(g, pts))


@pytest.mark.parametrize("n", [1, 2, 3, 10])
@pytest.mark.parametrize(("eps", "r"), [(0.1, 0.5), (0.3, 0.4), (0.05, 2.0)])
def test_exact_integrals_match_mpmath(n, eps, r):
    with mp.workdps(25):
        ref6 = _quad(lambda s: _f(s, n) * _F((eps - s) / r, n), -1, 1, (eps - r, eps + r))
        ref19 = _quad(lambda s: 2 * _f(s, n) * _F((eps + s) / r, n), 0, 1, (r - eps,))
        d = 2 * eps
        ref8 = _quad(lambda s: _f(s, n) * (1 - _F(d + s, n)), -1, 1, (-d - 1, 1 - d))
    assert tb.flip_exact(n, eps, r) == pytest.approx(ref6, rel=1e-13)
    assert hb.flip_exact(n, eps, r) == pytest.approx(ref19, rel=1e-13)
    assert tb.universality_exact(n, d) == pytest.approx(ref8, rel=1e-13)


def test_flip_integral_symmetric_form_at_high_dimension():
    """P(u_1 + r v_1 >= eps) two ways: integrate over u or over v (different integrands)."""
    from perturbscope.theory.caps import log_cap_fraction_array
    from perturbscope.theory.coordinate import log_coord_density
    from perturbscope.theory.integrals import log_integral_coord

    for n, eps, r in [(10**4, 0.1, 0.5), (10**6, 0.1, 2.0), (10**6, 0.05, 1.0)]:
        a = tb.log_flip_exact(n, eps, r)
        def log_g(v, n=n, eps=eps, r=r):
            return log_coord_density(v, n) + log_cap_fraction_array(eps - r * v, n)

        b = log_integral_coord(log_g, n)
        assert a == pytest.approx(b, rel=1e-13)
        assert a < -40  # far in the tail, where float64 quad on [-1, 1] would be useless


def test_single_point_closed_form_n3():
    for eps, r in [(0.1, 0.5), (0.2, 1.0), (0.05, 10.0)]:
        t = eps / r
        assert sp.flip_exact(3, eps, r) == pytest.approx((1 - t) ** 2 * (2 + t) / 4, rel=1e-13)
    assert sp.flip_exact(50, 1.0, 1.0) == 0.0 and sp.flip_bound(50, 1.0, 0.5) == 0.0


GRID_N = [1, 3, 20, 500, 10**5]
GRID_EPS = [0.05, 0.3, 0.9]
GRID_R = [0.1, 1.0, 5.0]


@pytest.mark.parametrize("n", GRID_N)
def test_bounds_hold_on_the_stated_side(n):
    tol = 1e-12
    for eps in GRID_EPS:
        for r in GRID_R:
            # Theorem 1 and 19: upper bounds
            assert sp.log_flip_exact(n, eps, r) <= sp.log_flip_bound(n, eps, r) + tol
            assert hb.log_flip_exact(n, eps, r) <= hb.log_flip_bound(n, eps, r) + tol
            for A, dens in ((1.0, "uniform"), (1.01, "shifted")):
                # Theorem 4 (lower bound on accuracy) as an upper bound on misclassification, in logs
                assert (tb.log_misclassification_exact(n, eps, A, dens)
                        <= tb.log_misclassification_bound(n, eps, A) + tol)
                assert tb.accuracy_exact(n, eps, A, dens) >= tb.accuracy_bound(n, eps, A) - tol
                # Theorem 6: upper bound (inf over tau <= closed form)
                lf = tb.log_flip_exact(n, eps, r, A, dens)
                assert lf <= tb.log_flip_bound(n, eps, r, A) + tol
                assert tb.log_flip_bound(n, eps, r, A) <= tb.log_flip_bound_closed(n, eps, r, A) + tol
                # Theorem 5: lower bound, delta in (eps, 1 + eps)
                delta = eps + 0.5 * min(r, 1.0)
                assert (tb.log_insusceptibility_exact(n, eps, delta, A, dens)
                        <= tb.log_insusceptibility_bound(n, eps, delta, A) + tol)
                # Theorem 8: lower bound, delta in (0, 2]
                d8 = min(2.0, 2 * r)
                assert tb.universality_exact(n, d8, A, dens) >= tb.universality_bound(n, d8, A) - tol
                assert (tb.log_universality_miss_exact(n, d8, A, dens)
                        <= tb.log_universality_miss_bound(n, d8, A) + tol)
            # Theorem 18: lower bound
            delta = eps + 0.5 * min(r, 1.0)
            assert hb.susceptibility_exact(n, eps, delta) >= hb.susceptibility_bound(n, eps, delta) - tol
            assert hb.log_insusceptibility_exact(n, eps, delta) <= hb.log_insusceptibility_bound(
                n, eps, delta) + tol


def test_a_wrong_bound_would_be_caught():
    """The grid test can fail: Lemma 23 is tight in the exponent, so (1 - t^2)^n (exponent doubled)
    is violated, and Theorem 6 stated with the distance eps instead of eps/(1+r) is violated too."""
    assert any(sp.log_flip_exact(n, 0.3, 1.0) > math.log(0.5) + n * math.log1p(-0.09) for n in (20, 500))
    assert any(tb.log_flip_exact(n, 0.3, 1.0) > n / 2 * math.log1p(-0.09) for n in (20, 500))


def test_log_probabilities_finite_and_monotone_in_n_where_float64_underflows():
    dims = [10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6]
    for fn in (lambda n: tb.log_flip_exact(n, 0.1, 0.5), lambda n: hb.log_flip_exact(n, 0.05, 0.5),
               lambda n: tb.log_misclassification_exact(n, 0.2),
               lambda n: tb.log_universality_miss_exact(n, 0.3)):
        vals = [fn(n) for n in dims]
        assert all(math.isfinite(v) for v in vals)
        assert all(b < a for a, b in zip(vals, vals[1:], strict=False))
        assert vals[-1] < math.log(1e-308)


def test_half_balls_no_margin_r1_is_exactly_one_quarter():
    for n in (1, 2, 7, 1000, 10**6):
        assert hb.flip_exact(n, 0.0, 1.0) == pytest.approx(0.25, abs=1e-14)


def test_theorem20_zero_margin_limit():
    # the spec's values of the liminf bound sup_a (1 - e^{-a^2/2})(1 - Phi(a/r))
    for r, val in [(0.5, 0.0191), (1.0, 0.0624), (2.0, 0.153), (5.0, 0.301)]:
        assert hb.no_margin_liminf_bound(r) == pytest.approx(val, abs=6e-4)
    for r in (0.5, 2.0):
        lim = math.atan(r) / math.pi
        # the Gaussian (n -> inf) form of the exact probability is the wedge probability
        assert hb.flip_gaussian(10**6, 0.0, r) == pytest.approx(lim, abs=1e-9)
        gaps = [abs(hb.flip_exact(n, 0.0, r) - lim) for n in (10, 100, 10**4, 10**6)]
        assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False))
        assert gaps[-1] < 1e-5
        # bounded away from zero, above Theorem 20's liminf bound, at every dimension tried
        assert min(hb.flip_exact(n, 0.0, r) for n in (1, 10, 10**3, 10**6)) > hb.no_margin_liminf_bound(r)


def test_gaussian_approximations_in_high_dimension():
    n = 10**6
    assert tb.flip_exact(n, 0.001, 1.0) == pytest.approx(tb.flip_gaussian(n, 0.001, 1.0), rel=1e-3)
    assert tb.universality_exact(n, 0.001) == pytest.approx(tb.universality_gaussian(n, 0.001), rel=1e-4)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: sp.flip_exact(0, 0.1, 1.0), "dimension"),
    (lambda: sp.flip_exact(3, 0.1, -1.0), "r"),
    (lambda: sp.flip_exact(3, float("nan"), 1.0), "eps"),
    (lambda: tb.flip_exact(3, 0.1, float("nan")), "r"),
    (lambda: tb.accuracy_bound(3, 1.5), "eps"),
    (lambda: tb.accuracy_exact(3, 0.1, A=0.5), "A"),
    (lambda: tb.susceptibility_bound(3, 0.1, 0.05), "delta"),
    (lambda: tb.universality_bound(3, 2.5), "delta"),
    (lambda: tb.flip_exact(3, 0.1, 1.0, density="radial"), "Monte Carlo"),
    (lambda: hb.flip_exact(3, -0.1, 1.0), "eps"),
    (lambda: hb.flip_exact(2.5, 0.1, 1.0), "dimension"),
    (lambda: hb.no_margin_liminf_bound(-1.0), "r"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises((ValueError, NotImplementedError), match=match):
        call()


def test_vectorised_cap_used_by_integrals_is_consistent():
    from perturbscope.theory.caps import cap_fraction, log_cap_fraction_array

    ts = np.linspace(-0.9, 0.9, 7)
    assert np.allclose(np.exp(log_cap_fraction_array(ts, 40)), [cap_fraction(t, 40) for t in ts],
                       rtol=1e-14, atol=0)


def test_integrands_narrower_than_the_scan_grid_are_not_lost():
    """r just above eps at n = 10^6: the integrand lives on a 1e-10-wide strip near s = 0.

    Scaling eps and r by c scales the probability by c (to ~1e-10 relative here), so the two
    values must differ by log(100); a scan-only integrator returns -inf for the narrow one.
    """
    n = 10**6
    narrow, wide = hb.log_flip_exact(n, 0.001, 0.0011), hb.log_flip_exact(n, 0.1, 0.11)
    assert math.isfinite(narrow) and math.isfinite(wide)
    assert narrow - wide == pytest.approx(math.log(0.01), abs=1e-6)
    assert narrow <= hb.log_flip_bound(n, 0.001, 0.0011)
