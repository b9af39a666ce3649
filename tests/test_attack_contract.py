"""The contract every registered attack keeps (``perturbscope.attacks.ATTACKS``).

One parametrised test per promise of :mod:`perturbscope.attacks.base`: exact on an affine
model, every output kind with default settings, the model's mode restored, success re-checked
by the shared predicate, NaN norms on failure, inputs checked against the bounds, ``clip``
honoured, forwards counted. A newly registered attack must be added to ``EXACT`` below.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from perturbscope.attacks import (
    ATTACKS,
    PGD,
    BestOf,
    DeepFool,
    Given,
    LineSearch,
    MinNorm,
    attack_names,
)
from perturbscope.attacks.base import RunOutput
from perturbscope.attacks.deepfool import STEP_REL
from perturbscope.models import MLP, LinearBinary
from perturbscope.models.classifier import Classifier

NAMES = sorted(attack_names())
D = 12


def _linear(n: int = 16, seed: int = 0) -> tuple[LinearBinary, torch.Tensor, torch.Tensor]:
    """Affine binary model and inputs in [0.3, 0.7] with the plane passing through them."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(n, D, generator=g, dtype=torch.float64)
    model = LinearBinary(w, bias=-float((x @ w).mean()))
    return model, x, (model.logit(x) >= 0).long()


def _nearest(model: LinearBinary, x: torch.Tensor) -> torch.Tensor:
    """The exact minimal L2 perturbation onto the plane, ``-z w / ||w||^2`` per row."""
    w = model.weight
    return -(model.logit(x) / (w @ w))[:, None] * w[None]


def _given_for(x: torch.Tensor) -> Given:
    return Given(perturbation=0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1),
                                                 dtype=x.dtype))


def _default(name: str, x: torch.Tensor):
    """The attack with default settings (``Given`` needs its perturbations)."""
    return _given_for(x) if name == "given" else ATTACKS[name]()


# ---------------------------------------------------------------- exact on an affine model
def _exact_line_search(model, x, y, dist):
    res = LineSearch(s_max=4.0, refine_tol=1e-7)(model, x, y)
    assert res.success.all()
    assert (res.eps_l2 >= dist * (1 - 1e-9)).all() and (res.eps_l2 <= dist + 1e-6).all()


def _exact_deepfool(model, x, y, dist):
    res = DeepFool(overshoot=0.0)(model, x, y)
    assert res.success.all() and (res.iterations == 1).all()
    torch.testing.assert_close(res.eps_l2, dist * (1 + STEP_REL), rtol=0, atol=1e-9)  # relative margin


def _exact_min_norm(model, x, y, dist):
    res = MinNorm()(model, x, y)
    assert res.success.all()
    assert (res.eps_l2 >= dist * (1 - 1e-9)).all() and (res.eps_l2 <= dist * (1 + 1e-3)).all()


def _exact_best(model, x, y, dist):
    res = BestOf()(model, x, y)
    assert res.success.all()
    assert (res.eps_l2 >= dist * (1 - 1e-9)).all() and (res.eps_l2 <= dist * (1 + 1e-3)).all()
    per = res.extras["per_attack"]
    assert set(per) == {"line-search", "deepfool", "min-norm"}
    best = torch.stack([torch.where(r.success, r.eps_l2, torch.inf) for r in per.values()]).min(0).values
    torch.testing.assert_close(res.eps_l2, best, rtol=0, atol=0)


def _exact_given(model, x, y, dist):
    res = Given(perturbation=_nearest(model, x) * (1 + 1e-6))(model, x, y)
    assert res.success.all()
    torch.testing.assert_close(res.eps_l2, dist * (1 + 1e-6), rtol=1e-12, atol=0)


def _exact_pgd(model, x, y, dist):
    # a fixed budget: succeeds exactly where the plane is within eps (L2 and Linf), and then
    # returns the corner / sphere point of norm eps; no random start, so no slack
    w = model.weight
    for norm, d in (("l2", dist), ("linf", model.logit(x).abs() / w.abs().sum())):
        eps = float(d.median())
        res = PGD(eps=eps, norm=norm, random_start=0.0)(model, x, y)
        clear = (d - eps).abs() > 1e-6 * eps
        assert clear.sum() >= x.shape[0] - 2
        assert torch.equal(res.success[clear], (d < eps)[clear]), norm
        got = res.eps_l2 if norm == "l2" else res.eps_linf
        torch.testing.assert_close(got[res.success], torch.full_like(got[res.success], eps),
                                   rtol=1e-9, atol=0)


EXACT = {"line-search": _exact_line_search, "deepfool": _exact_deepfool, "min-norm": _exact_min_norm,
         "best": _exact_best, "given": _exact_given, "pgd": _exact_pgd}


def test_every_registered_attack_is_covered():
    assert set(EXACT) == set(ATTACKS), "add the new attack's exactness check to EXACT"


@pytest.mark.parametrize("name", NAMES)
def test_exact_on_an_affine_model(name):
    model, x, y = _linear()
    EXACT[name](model, x, y, model.distance(x))


# ---------------------------------------------------------------- every output kind, defaults
def _models(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(3)
    x = torch.rand(10, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    if kind == "sigmoid":
        model = MLP(D, (16,)).double()
    else:
        k = 1 if kind == "logit" else 3
        model = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, k)).double()
    with torch.no_grad():  # boundaries through the data (no input exactly on one)
        last = model.net[-1] if kind == "sigmoid" else model[-1]
        scores = model.logit(x) if kind == "sigmoid" else model(x)
        last.bias -= (scores.median(0).values if kind == "logits" else scores.median()) + 1e-3
    return model.eval(), x


@pytest.mark.parametrize("kind", ["sigmoid", "logit", "logits"])
@pytest.mark.parametrize("name", [n for n in NAMES if n != "given"])
def test_default_settings_work_on_every_output_kind(name, kind):
    model, x = _models(kind)
    clf = Classifier(model, kind)
    with torch.no_grad():
        y = clf.predict(x)
    res = ATTACKS[name]()(model, x, y, output=kind)
    n = x.shape[0]
    assert res.perturbation.shape == x.shape and res.success.shape == (n,)
    assert res.success.dtype == torch.bool and res.attack == name
    assert res.forwards > 0
    with torch.no_grad():
        flipped = clf.predict(x + res.perturbation) != y
    assert torch.equal(res.success, flipped)
    assert torch.equal(res.adv_labels[res.success], clf.predict(x + res.perturbation)[res.success])
    if name != "pgd":  # minimal-norm attacks reach the boundary of these small nets
        assert res.success.all(), name
    assert res.success.any(), name
    torch.testing.assert_close(res.eps_l2[res.success], res.perturbation[res.success].norm(dim=1))


# ---------------------------------------------------------------- mode, bounds, clip
@pytest.mark.parametrize("name", NAMES)
def test_train_mode_with_dropout_is_restored_and_eval_mode_is_used(name):
    torch.manual_seed(5)
    model = MLP(D, (32,), dropout=0.5).double().train()
    x = torch.rand(8, D, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    attack = _default(name, x)
    res = attack(model, x)
    assert all(m.training for m in model.modules()), "the attack must restore every module's mode"
    ref = attack(copy.deepcopy(model).eval(), x)  # dropout off: the same numbers
    torch.testing.assert_close(res.perturbation, ref.perturbation, rtol=0, atol=0)
    assert torch.equal(res.success, ref.success)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_outside_the_bounds_are_refused(name):
    model, x, y = _linear(n=4)
    with pytest.raises(ValueError, match="bounds"):
        _default(name, x)(model, x + 2.0, y)
    free = _default(name, x)(Classifier(model, "sigmoid", bounds=None), x + 2.0, y)  # no bounds
    assert free.success.shape == (4,)


@pytest.mark.parametrize("name", NAMES)
def test_clip_keeps_adversarial_inputs_in_the_bounds(name):
    model, x, y = _linear(n=8)
    x = x.clone()
    x[:, :3] = 1.0  # saturated pixels
    attack = _default(name, x)
    res = dataclasses.replace(attack, clip=True)(model, x, y)
    xa = x + res.perturbation
    assert (xa >= 0).all() and (xa <= 1).all()
    with torch.no_grad():
        assert torch.equal(res.success, (model.logit(xa) >= 0).long() != y)


# ---------------------------------------------------------------- re-check and failures
@pytest.mark.parametrize("name", NAMES)
def test_success_is_rechecked_by_the_shared_predicate(name, monkeypatch):
    model, x, y = _linear(n=6)
    delta = _nearest(model, x) * 1.01  # flips every row
    calls = []

    def fake_run(self, clf, xs, ys):
        calls.append(xs.shape[0])
        lie = torch.zeros(xs.shape[0], dtype=torch.bool)
        lie[:2] = True  # rows 0-1: claim success with a delta that does not flip
        d = torch.where(lie[:, None], 1e-9 * torch.ones_like(xs), delta)
        claim = torch.ones(xs.shape[0], dtype=torch.bool)
        claim[4:] = False  # rows 4-5: a flipping delta the attack does not claim
        return RunOutput(d, claim, forwards=3)

    monkeypatch.setattr(ATTACKS[name], "_run", fake_run)
    res = _default(name, x)(model, x, y)
    assert calls == [6]
    assert res.success.tolist() == [False, False, True, True, False, False]
    failed = ~res.success
    assert res.eps_l2[failed].isnan().all() and res.eps_l1[failed].isnan().all()
    assert res.eps_linf[failed].isnan().all()
    assert (res.perturbation[failed] == 0).all()
    torch.testing.assert_close(res.eps_l2[2:4], delta[2:4].norm(dim=1))
    assert res.forwards == 3 + 2 * 6  # the attack's own + clean prediction and re-check


class _Flat(nn.Module):
    """A binary score with exactly zero gradient: no attack can move the label."""

    output_kind = "logit"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 + 0.0 * x.reshape(x.shape[0], -1).sum(1)


@pytest.mark.parametrize("name", NAMES)
def test_natural_failure_gives_nan_norms_and_a_zero_perturbation(name):
    x = torch.rand(5, D, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    res = _default(name, x)(_Flat(), x)
    assert not res.success.any()
    for t in (res.eps_l1, res.eps_l2, res.eps_linf):
        assert t.isnan().all()
    assert (res.perturbation == 0).all()
    assert torch.equal(res.adv_labels, res.labels)
    assert res.forwards >= 2 * 5


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_attack_inside_callers_inference_mode(name: str, mode: str) -> None:
    """Called inside ``torch.inference_mode()`` or ``no_grad()`` (as a user's evaluation loop
    often is), every attack gives exactly its result outside, instead of an autograd error."""
    model, x, y = _linear()
    attack = _default(name, x)
    outside = attack(model, x, y)
    with getattr(torch, mode)():
        xi, yi = x.clone(), y.clone()  # inference tensors under inference_mode
        inside = attack(model, xi, yi)
    assert torch.equal(inside.success, outside.success)
    assert torch.equal(inside.perturbation, outside.perturbation)
    assert inside.forwards == outside.forwards
