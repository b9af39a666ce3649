"""Adaptive line sampling (``method="lines"``; its two-balls test is in test_rare_event.py):
exact linear truths, a nonlinear toy checked by plain sampling, the plain-sampling finish at
large p, the secant crossing search, and the single-crossing assumption's failure mode (an
interval flip set is over-counted, as documented)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from perturbscope.models.classifier import Classifier
from perturbscope.probes.rare_event import estimate_flip_probability, flip_probability_table
from perturbscope.probes.rare_event.lines import S_CAP, secant_crossings, start_coordinate
from perturbscope.theory.caps import log_cap_fraction
from test_rare_event import (
    LOG10_PS,
    _coverage,
    _linear,
    _plain_reference,
    _radius_for,
    _toy_mlp,
)


def test_secant_finds_roots_no_crossing_and_whole_line():
    """Margins ``a - b s`` (roots known), ``+1`` (no flip: inf) and ``-1`` (all flip: -inf); a
    cubic with one root (non-linear, converges to tol)."""
    a = torch.tensor([2.0, -1.0, 9.0, 0.5, 1.0, -1.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.4, 1.0, 3.0, 0.02, 0.0, 0.0, 0.0], dtype=torch.float64)
    cubic = torch.tensor([False] * 6 + [True])

    def margin(idx, s):
        m = a[idx] - b[idx] * s
        c = cubic[idx]
        return torch.where(c, 4.0 - s - 0.05 * s ** 3, m)
    root, slope, fw, conv = secant_crossings(margin, torch.full((7,), 4.0))
    assert torch.allclose(root[:4], a[:4] / b[:4], atol=1e-6)
    assert root[4] == math.inf and root[5] == -math.inf
    cub = 4.0 - root[6] - 0.05 * root[6] ** 3
    assert abs(float(cub)) < 0.02 and bool(conv.all())
    assert int(fw.max()) <= 14 and int(fw[:4].max()) <= 4  # linear: 2 evaluations + 1 check
    far = secant_crossings(lambda idx, s: 0.5 - 0.01 * s, torch.tensor([4.0]))[0]
    assert far[0] == math.inf  # root 50 lies beyond S_CAP: no flip on the searched line
    assert S_CAP < 50


def test_start_coordinate_matches_typical_line():
    d = 2352
    s = start_coordinate(np.array([1.0, np.inf]), np.array([4.0, 4.0]), d)
    # r s / sqrt(s^2 + d - 1) = t at s = s*
    assert math.isclose(4.0 * s[0] / math.sqrt(s[0] ** 2 + d - 1), 1.0, rel_tol=1e-12)
    assert s[1] > s[0]


def test_linear_model_interval_covers_exact_p_d100_and_2352():
    """Linear model, p = 1e-2 ... 1e-12 (exact cap fractions), two seeds per p at d = 100 and
    d = 2352, budget 400: >= 9 of 10 intervals cover per d and the estimate is within 10%."""
    for d in (100, 2352):
        model, x0, _, _ = _linear(d, 0.5, seed=1)
        radii = torch.tensor([_radius_for(lp, d, 0.5) for lp in LOG10_PS]).repeat_interleave(2)
        res = estimate_flip_probability(Classifier(model, bounds=None), x0.repeat(len(radii), 1), None, radii,
                                        method="lines", budget=400, seed=2)
        truth = np.repeat(np.array(LOG10_PS), 2)
        assert _coverage(res, truth).sum() >= 9, (d, res.log10_p_hat, truth)
        assert np.all(np.abs(res.log10_p_hat - truth) < math.log10(1.1))
        assert np.all(res.forwards <= 400 + 200) and np.all(res.gradients > 0)
        assert res.method == "lines" and np.all(res.hits > 0)


def test_lines_agree_with_plain_sampling_on_relu_mlp():
    """Random ReLU MLP, d = 200, r = 1.2 (p ~ 4e-3): plain sampling with 2e5 draws is the
    reference; three seeds at budget 1500 must be within 1.5x and their intervals overlap the
    plain 99.9% interval."""
    model, x = _toy_mlp()
    r = 1.2
    p_plain, half = _plain_reference(model, x, r, 200_000)
    res = estimate_flip_probability(Classifier(model, bounds=None), x.repeat(3, 1), None, r,
                                    method="lines", budget=1500, seed=0)
    assert np.all(res.ci_low <= p_plain + half) and np.all(res.ci_high >= p_plain - half), (
        res.p_hat, res.ci_low, res.ci_high, p_plain)
    assert np.all((res.p_hat / p_plain > 1 / 1.5) & (res.p_hat / p_plain < 1.5))


class _Slab(nn.Module):
    """Flips only in the slab ``a <= <x, e1> <= b``: not a single upper ray along e1."""

    output_kind = "sigmoid"

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = a, b

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        t = x.reshape(x.shape[0], -1)[:, 0]
        return -torch.minimum(t - self.a, self.b - t)  # < 0 inside the slab (class 0 -> flip 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


def test_interval_flip_set_is_over_counted_as_documented():
    """The documented failure mode: flips only in a slab ``[a, b]`` along the normal. The true p
    is ``F(a/r) - F(b/r)``; line sampling reports ~``F(a/r)`` (it assumes the flip set on each
    line continues past the crossing), while splitting, which assumes nothing, is right."""
    d, r, a, b = 100, 1.0, 0.3, 0.33
    model = _Slab(a, b).double()
    x = torch.zeros((1, d), dtype=torch.float64)
    fa, fb = math.exp(log_cap_fraction(a / r, d)), math.exp(log_cap_fraction(b / r, d))
    truth = fa - fb
    assert fb > 0.5 * fa * 0.2  # the slab is thin enough to matter
    lines = estimate_flip_probability(Classifier(model, bounds=None), x, None, r, method="lines",
                                      budget=600, seed=0,
                                      direction=torch.eye(d, dtype=torch.float64)[:1])
    assert lines.p_hat[0] > 1.3 * truth  # biased high, as documented
    assert abs(lines.p_hat[0] / fa - 1) < 0.25


def test_table_with_lines_method():
    model, x0, _, _ = _linear(100, 0.5, seed=3)
    tab = flip_probability_table(Classifier(model, bounds=None), x0.repeat(2, 1), None,
                                 torch.tensor([0.5, 0.6]), alphas=(1.0, 2.0, 4.0), method="lines",
                                 budget=300)
    assert len(tab) == 6 and (tab["method"] == "lines").all()
    ok = tab["alpha"] > 1
    truth = np.array([log_cap_fraction(0.5 / r, 100) for r in tab.loc[ok, "radius"]]) / math.log(10)
    assert np.all(np.abs(tab.loc[ok, "log10_p_hat"].to_numpy() - truth) < 0.1)
    assert (tab.loc[~ok, "p_hat"] < 1e-6).all()  # alpha = 1: the ball only touches the boundary


def test_large_p_is_finished_by_plain_sampling():
    """Where the pilot sees p >= 1e-2 and the budget left expects >= 25 flips, the rest of the
    budget is plain sampling (lines cross the boundary several times there). Toy MLP, r = 2.2
    (p ~ 0.043 by 1e5 plain draws): the intervals cover the reference and ``hits`` counts
    flipping draws (~p x 1900), not lines."""
    model, x = _toy_mlp()
    r = 2.2
    p_plain, _ = _plain_reference(model, x, r, 100_000)
    assert 0.02 < p_plain < 0.1
    res = estimate_flip_probability(Classifier(model, bounds=None), x.repeat(3, 1), None, r,
                                    method="lines", budget=3000, seed=0)
    assert np.all((res.ci_low <= p_plain) & (p_plain <= res.ci_high)), (res.p_hat, p_plain)
    assert np.all(res.hits < 0.1 * 3000) and np.all(res.hits > 10)


def test_cli_and_audit_with_lines(tmp_path):
    """``perturbscope rare-event --method lines`` (exact answer beside) and the audit's
    ``rare_event_method="lines"``: intervals cover the exact linear p."""
    import pandas as pd

    from perturbscope.audit import AuditConfig, audit
    from perturbscope.cli.main import main

    rc = main(["rare-event", "--linear", "500", "--distance", "0.4", "--alphas", "2", "4",
               "--method", "lines", "--budget", "300", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    tab = pd.read_csv(tmp_path / "flip_probability.csv")
    assert len(tab) == 2 and (tab["method"] == "lines").all()
    assert ((tab["log10_ci_low"] <= tab["log10_exact"])
            & (tab["log10_exact"] <= tab["log10_ci_high"])).all()
    d, dist = 100, 0.2
    model, x0, _, _ = _linear(d, dist, seed=2)
    cfg = AuditConfig(alphas=(2.0, 5.0), draws=100, rare_event=True, rare_event_budget=400,
                      rare_event_method="lines", s_max=1.0, steps=64)
    res = audit(model, x0.repeat(3, 1), torch.zeros(3, dtype=torch.long), config=cfg,
                progress=False)
    rec = res.records
    truth = np.array([math.exp(log_cap_fraction(dist / (2.0 * e), d)) for e in rec["eps_l2"]])
    assert ((rec["p_lo_a2"] <= truth) & (truth <= rec["p_hi_a2"])).all()
