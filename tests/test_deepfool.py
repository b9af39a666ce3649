"""DeepFool: exact on affine models, binary conventions, batching, mode restoring, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from perturbscope.attacks.deepfool import STEP_REL, DeepFool
from perturbscope.models.classifier import Classifier
from perturbscope.models.pair_cnn import LinearBinary, PairCNN


def _free(model: nn.Module, output: str = "logits") -> Classifier:
    """The model without declared bounds (these inputs are standard normal, not pixels)."""
    return Classifier(model, output, bounds=None)


def _linear(d: int, k: int, seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, d, generator=g, dtype=torch.float64)
    b = torch.randn(k, generator=g, dtype=torch.float64)
    model = nn.Linear(d, k).double()
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.copy_(b)
    return model, w, b


def _closest_face(w, b, x, norm):
    """Closed-form nearest face of the affine classifier's cell around argmax."""
    logits = x @ w.T + b
    k0 = logits.argmax(1)
    fd = logits - logits.gather(1, k0[:, None])
    wd = w[None] - w[k0][:, None]
    dual = wd.norm(dim=2) if norm == "l2" else wd.abs().sum(2)
    dist = fd.abs() / dual
    dist[torch.arange(x.shape[0]), k0] = float("inf")
    dmin, l = dist.min(1)
    wl = wd[torch.arange(x.shape[0]), l]
    direction = wl / wl.norm(dim=1, keepdim=True) if norm == "l2" else wl.sign()
    return dmin, l, direction


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("overshoot", [0.02, 0.1])
def test_linear_multiclass_one_step_to_closest_face(norm, overshoot):
    model, w, b = _linear(30, 6)
    x = torch.randn(80, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = DeepFool(norm=norm, overshoot=overshoot, batch_size=32)(_free(model), x)
    dmin, l, direction = _closest_face(w, b, x, norm)
    assert res.success.all()
    assert (res.iterations == 1).all()
    expected = (1 + overshoot) * (dmin * (1 + STEP_REL))[:, None] * direction
    torch.testing.assert_close(res.perturbation, expected, rtol=1e-10, atol=1e-12)
    # the landing point's label is the class of the closest face
    assert torch.equal(res.adv_labels, l)
    # the norm of the step is the exact distance (x (1 + overshoot)), in the chosen norm
    got = res.l2 if norm == "l2" else res.linf
    torch.testing.assert_close(got, (1 + overshoot) * dmin * (1 + STEP_REL), rtol=1e-10, atol=0)
    # norms are consistent with the perturbation
    torch.testing.assert_close(res.l1, res.perturbation.abs().sum(1))


def test_candidates_limit_changes_only_what_it_should():
    model, w, b = _linear(10, 12, seed=3)
    x = torch.randn(40, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    full = DeepFool(candidates=11)(_free(model), x)
    dmin, _, _ = _closest_face(w, b, x, "l2")
    torch.testing.assert_close(full.l2, 1.02 * dmin * (1 + STEP_REL))
    few = DeepFool(candidates=1)(_free(model), x)  # only the runner-up class: never closer
    assert few.success.all()
    assert (few.l2 >= full.l2 - 1e-9).all()


@pytest.mark.parametrize("output", ["sigmoid", "logit"])
def test_binary_linear_hits_exact_distance(output):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(50, generator=g, dtype=torch.float64)
    lin = LinearBinary(w, bias=0.3)

    class NoLogit(nn.Module):  # force the convention path (no .logit method)
        def forward(self, x):
            z = lin.logit(x)
            return torch.sigmoid(z) if output == "sigmoid" else z

    x = 0.2 * torch.randn(25, 50, generator=g, dtype=torch.float64)
    for model in (lin, NoLogit()):
        out = "sigmoid" if model is lin else output
        res = DeepFool()(_free(model, out), x)
        assert res.success.all()
        assert (res.iterations == 1).all()
        torch.testing.assert_close(res.l2, 1.02 * lin.distance(x) * (1 + STEP_REL), rtol=1e-6, atol=1e-9)
        # the perturbation is along the plane normal and crosses it
        cos = (res.perturbation @ w).abs() / (res.l2 * w.norm())
        torch.testing.assert_close(cos, torch.ones_like(cos))
        flipped = (lin.logit(x + res.perturbation) >= 0) != (lin.logit(x) >= 0)
        assert flipped.all()


def test_nonlinear_batched_equals_per_image_and_restores_mode():
    torch.manual_seed(0)
    model = PairCNN(in_channels=1, width=0.125, dropout=0.3)
    model.train()
    x = torch.rand(6, 1, 12, 12)
    res = DeepFool(batch_size=4, max_iter=30)(model, x, output="sigmoid")
    assert model.training, "deepfool must restore the model's train mode"
    one = DeepFool(max_iter=30)(model, x[2:3], output="sigmoid")
    torch.testing.assert_close(res.perturbation[2:3], one.perturbation, rtol=1e-4, atol=1e-6)
    model.eval()
    with torch.no_grad():
        before = model(x) >= 0.5
        after = model(x + res.perturbation) >= 0.5
    assert torch.equal(after != before, res.success)
    assert res.success.float().mean() > 0.5
    assert (res.iterations[res.success] >= 1).all()


def test_labels_argument_and_already_misclassified():
    model, w, b = _linear(8, 3)
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    pred = model(x).argmax(1)
    wrong = (pred + 1) % 3
    res = DeepFool()(_free(model), x, wrong)
    assert res.success.all()
    # no input reaches the attack: the shared call reports no iteration counts at all
    assert (res.iterations == 0).all()
    assert (res.l2 == 0).all()


def test_bounds_clip_iterates():
    model, _, _ = _linear(8, 3)
    x = torch.rand(10, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    res = DeepFool(clip=True)(model, x, output="logits")
    xa = x + res.perturbation
    assert (xa >= 0).all() and (xa <= 1).all()


def test_bounds_box_aware_step_is_exact_where_clipping_stalls():
    # z = 5 x1 + x2 - 0.3; x = (0, 0.5): z = 0.2 (class 1). The unconstrained step points mostly
    # along -x1, which the box [0, 1] forbids; the nearest boundary point inside the box is
    # (0, 0.3), at distance exactly 0.2 along -x2.
    lin = LinearBinary(torch.tensor([5.0, 1.0], dtype=torch.float64), bias=-0.3)
    x = torch.tensor([[0.0, 0.5], [0.0, 0.6]], dtype=torch.float64)
    res = DeepFool(clip=True, max_iter=3)(lin, x, output="sigmoid")
    assert res.success.all() and (res.iterations == 1).all()
    z = torch.tensor([0.2, 0.3], dtype=torch.float64)
    expected = torch.stack([torch.zeros(2, dtype=torch.float64), -1.02 * z * (1 + STEP_REL)], 1)
    torch.testing.assert_close(res.perturbation, expected, rtol=1e-9, atol=1e-12)
    # without the box the step is the free-space projection, leaving the box
    free = DeepFool(max_iter=3)(lin, x, output="sigmoid")
    assert (x + free.perturbation)[:, 0].lt(0).all()
    with pytest.raises(ValueError, match="bounds"):
        DeepFool(clip=True)(Classifier(lin, "sigmoid", bounds=(1.0, 0.0)), x)


class _ExpRidge(nn.Module):
    """Binary pre-sigmoid score z = exp(-u.x) - 1/2: convex along u, boundary at u.x = ln 2."""

    def __init__(self, u: torch.Tensor) -> None:
        super().__init__()
        self.u = u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(x @ self.u)) - 0.5


def _exp_ridge_recurrence(s0: float, backoff: float, overshoot: float = 0.02, max_iter: int = 50):
    """DeepFool on z(s) = exp(-s) - 1/2 by hand: scalar total step rho along u, iterations."""
    rho, iterations = 0.0, 0
    for _ in range(max_iter):
        s = s0 + (1 + overshoot) * rho
        z = math.exp(-s) - 0.5
        if z < 0:
            break
        if iterations == 1:
            rho *= backoff
        rho += z / math.exp(-s) * (1 + STEP_REL)  # |z| / |dz/ds| along the unit normal u
        iterations += 1
    return (1 + overshoot) * rho, iterations


@pytest.mark.parametrize("backoff", [1.0, 0.5])
def test_first_step_backoff_follows_the_rule_and_ends_past_the_boundary(backoff):
    u = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)
    model = _ExpRidge(u)
    s0 = torch.tensor([0.0, 0.2, 2.0], dtype=torch.float64)
    x = s0[:, None] * u + torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)  # offsets along e2 _|_ u
    labels = torch.ones(3, dtype=torch.long)  # row 2 (u.x = 2: z < 0) is already class 0
    res = DeepFool(first_step_backoff=backoff)(_free(model, "logit"), x, labels)
    for i in range(2):
        length, its = _exp_ridge_recurrence(float(s0[i]), backoff)
        assert its >= 2  # the first step does not flip: the rule is exercised
        assert int(res.iterations[i]) == its
        torch.testing.assert_close(res.perturbation[i], length * u, rtol=1e-9, atol=1e-12)
        # past the boundary u.x = ln 2, and by less than the overshoot of the remaining distance
        assert math.log(2) < float(s0[i]) + length < float(s0[i]) + 1.03 * (math.log(2) - float(s0[i]))
    assert res.success[:2].all() and res.success[2] and res.iterations[2] == 0
    assert (res.perturbation[2] == 0).all()
    if backoff == 1.0:
        other = DeepFool(first_step_backoff=0.5)(_free(model, "logit"), x[:2])
        assert not torch.allclose(other.perturbation, res.perturbation[:2])
    with pytest.raises(ValueError, match="first_step_backoff"):
        DeepFool(first_step_backoff=0.0)(_free(model, "logit"), x)


def test_iteration_cap_reports_failure():
    class Far(nn.Module):  # margin exp(s): Newton steps on it never reach zero
        def forward(self, x):
            z = torch.exp(x.sum(1))
            return torch.stack([z, -z], 1)

    x = torch.zeros(4, 3)
    res = DeepFool(max_iter=3)(Far(), x, output="logits")
    assert not res.success.any()
    assert (res.iterations == 3).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"norm": "l1"}, "norm"), ({"overshoot": -1.0}, "overshoot"), ({"max_iter": 0}, "max_iter"),
     ({"candidates": 0}, "candidates"), ({"y": torch.zeros(3, dtype=torch.long)}, "y must")],
)
def test_bad_arguments(kwargs, match):
    model, _, _ = _linear(4, 3)
    kwargs = dict(kwargs)
    y = kwargs.pop("y", None)
    with pytest.raises(ValueError, match=match):
        DeepFool(**kwargs)(model, torch.zeros(5, 4, dtype=torch.float64), y, output="logits")


def test_nan_input_rejected():
    model, _, _ = _linear(4, 3)
    x = torch.zeros(2, 4, dtype=torch.float64)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        DeepFool()(model, x, output="logits")


def test_small_distances_are_not_overstated():
    """The step margin is relative: a point 1e-6 from an affine boundary is reported at
    (1 + overshoot) * 1e-6 * (1 + 1e-4), not 1e-6 + 1e-4 (the absolute margin of the reference code)."""
    w = torch.tensor([3.0, -4.0], dtype=torch.float64)  # ||w|| = 5
    lin = LinearBinary(w, bias=0.0)
    x = torch.tensor([[0.5, 0.375 - 5e-6 / 4]], dtype=torch.float64)  # <w, x> = 5e-6: distance 1e-6
    assert float(lin.distance(x)) == pytest.approx(1e-6, rel=1e-9)
    res = DeepFool(overshoot=0.0)(lin, x, output="sigmoid")
    assert bool(res.success.all())
    assert float(res.eps_l2[0]) == pytest.approx(1e-6 * (1 + STEP_REL), rel=1e-6)
