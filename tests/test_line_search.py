import pytest
import torch
from torch import nn

from perturbscope.attacks import LineSearch
from perturbscope.models import LinearBinary


def linear_problem(d=64, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    b = -float((x @ w).median())
    model = LinearBinary(w, bias=b)
    y = (model.logit(x) >= 0).long()
    return model, x, y


def test_linear_eps_on_grid_equals_exact_distance():
    model, x, y = linear_problem()
    s_max, steps = 5.0, 256
    res = LineSearch(s_max=s_max, steps=steps)(model, x, y, output="sigmoid")
    dist = model.distance(x)
    step = s_max / steps
    assert res.success.all()
    # the smallest grid point at or beyond the plane: dist <= eps < dist + step
    assert (res.eps_l2 >= dist - 1e-9).all()
    assert (res.eps_l2 < dist + step + 1e-9).all()
    expected = torch.ceil(dist / step - 1e-9).clamp(min=1) * step  # the grid starts at s_max / steps
    assert torch.allclose(res.eps_l2, expected, atol=1e-9)
    assert res.forwards <= x.shape[0] * (steps + 1)


def test_bisection_reaches_tolerance_and_still_flips():
    model, x, y = linear_problem(seed=1)
    res = LineSearch(s_max=5.0, refine_tol=1e-6)(model, x, y, output="sigmoid")
    dist = model.distance(x)
    assert ((res.eps_l2 - dist) >= -1e-9).all()
    assert ((res.eps_l2 - dist) <= 2e-6).all()
    flipped = (model.logit(x + res.perturbation) >= 0).long()
    assert (flipped != y).all()
    # the L1 and Linf norms describe the same perturbation
    assert torch.allclose(res.eps_l1, res.perturbation.abs().sum(1))
    assert torch.allclose(res.eps_linf, res.perturbation.abs().amax(1))


def test_multiclass_linear_and_failure_beyond_s_max():
    torch.manual_seed(0)
    lin = nn.Linear(10, 3).double()
    x = torch.rand(30, 10, dtype=torch.float64)
    y = lin(x).argmax(1)
    res = LineSearch(s_max=50.0, steps=256)(lin, x, y, output="logits")
    flipped = lin(x + res.perturbation).argmax(1)
    assert ((flipped != y) | ~res.success).all()
    # a tiny s_max cannot reach the boundary: reported as failure with NaN norms
    far = LineSearch(s_max=1e-6, steps=4)(lin, x, y, output="logits")
    assert not far.success.all()
    assert torch.isnan(far.eps_l2[~far.success]).all()
    assert (far.perturbation[~far.success] == 0).all()


def test_zero_gradient_is_not_susceptible():
    class Saturated(nn.Module):
        output_kind = "sigmoid"

        def forward(self, x):
            return torch.ones(x.shape[0], dtype=x.dtype) + 0 * x.sum(1)

    x = torch.rand(4, 5)
    res = LineSearch()(Saturated(), x, torch.ones(4, dtype=torch.long))
    assert not res.success.any()


def test_mode_restored_and_inputs_checked():
    model, x, y = linear_problem()
    net = nn.Sequential(nn.Linear(64, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 1)).double()
    net.train()
    LineSearch(s_max=5.0)(net, x, y, output="logit")
    assert net.training and net[1].training
    with pytest.raises(ValueError, match="NaN"):
        LineSearch()(model, x.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match="bounds"):
        LineSearch()(model, x + 2, y)
    with pytest.raises(ValueError, match="shape"):
        LineSearch()(model, x, y[:3])
    with pytest.raises(ValueError, match="output"):
        LineSearch()(net, x, y, output="softmax")


class _Island(nn.Module):
    """A binary model whose logit along e1 is ``b - a exp(-((t - c) / w)^2) - 1e-3 t``: a flip
    island of half-width ``w sqrt(ln(a / b))`` around ``t = c``, nothing else in (0, 10]."""

    output_kind = "logit"

    def __init__(self, b: float, a: float, c: float, w: float) -> None:
        super().__init__()
        self.b, self.a, self.c, self.w = b, a, c, w

    def forward(self, x):
        t = x[:, 0]
        return self.b - self.a * torch.exp(-((t - self.c) / self.w) ** 2) - 1e-3 * t


def _grid_and_coarse(model):
    from perturbscope.models import Classifier

    clf = Classifier(model, bounds=None)
    x = torch.zeros(1, 2, dtype=torch.float64)
    y = torch.ones(1, dtype=torch.long)
    grid = LineSearch(s_max=10.0, steps=256, search="grid")(clf, x, y)
    coarse = LineSearch(s_max=10.0, steps=256, search="coarse")(clf, x, y)
    return grid, coarse


def test_coarse_search_scans_an_island_where_the_margin_comes_close_to_zero():
    # coarse points at 3.125 and 3.75 both keep the label (margins 0.10 and 0.25), but the margin
    # bends strongly there: the interval is scanned on the grid and the island is found
    grid, coarse = _grid_and_coarse(_Island(b=0.25, a=0.6, c=3.3, w=0.15))
    assert bool(grid.success[0]) and 3.1 < float(grid.eps_l2[0]) < 3.3
    assert bool(coarse.success[0]) and float(coarse.eps_l2[0]) == float(grid.eps_l2[0])
    assert bool(coarse.extras["rescanned"][0])
    assert coarse.forwards < grid.forwards


def test_coarse_search_misses_a_narrow_island_between_large_margins():
    """The documented limit: an island inside one coarse interval whose ends have large margins."""
    grid, coarse = _grid_and_coarse(_Island(b=1.0, a=2.0, c=3.3, w=0.1))
    assert bool(grid.success[0])
    assert not bool(coarse.success[0]) and not bool(coarse.extras["rescanned"][0])


def test_coarse_search_with_fewer_steps_than_the_stride():
    model, x, y = linear_problem()
    for steps in (1, 3, 16, 17):
        grid = LineSearch(s_max=5.0, steps=steps)(model, x, y, output="sigmoid")
        coarse = LineSearch(s_max=5.0, steps=steps, search="coarse")(model, x, y, output="sigmoid")
        assert torch.equal(grid.success, coarse.success)
        assert torch.allclose(grid.eps_l2[grid.success], coarse.eps_l2[coarse.success])


class _Curved(nn.Module):
    """A binary model whose logit along e1 is ``b - a t - q t^2 + s sin(w t)``, with ``(b, a, q, s, w)``
    read from the other coordinates of each input (detached, so the gradient points along e1)."""

    output_kind = "logit"

    def forward(self, x):
        t = x[:, 0]
        b, a, q, s, w = x[:, 1:].detach().unbind(1)
        return b - a * t - q * t**2 + s * torch.sin(w * t)


def test_coarse_search_equals_the_grid_on_curved_margins():
    """Secant guesses and the bisection find the grid's first flipping point on margins that are
    far from linear inside the flipping interval, and the coarse search costs far fewer forwards."""
    g = torch.Generator().manual_seed(3)
    n = 200
    b = 0.5 + 2 * torch.rand(n, generator=g, dtype=torch.float64)
    a = 0.05 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)
    q = 0.1 * torch.rand(n, generator=g, dtype=torch.float64)
    w = 0.5 + 3 * torch.rand(n, generator=g, dtype=torch.float64)
    s = 0.9 * a / w * torch.rand(n, generator=g, dtype=torch.float64)  # d logit / dt < 0 at t = 0
    x = torch.stack([torch.zeros(n, dtype=torch.float64), b, a, q, s, w], 1)
    from perturbscope.models import Classifier

    clf = Classifier(_Curved(), bounds=None)
    y = torch.ones(n, dtype=torch.long)
    grid = LineSearch(s_max=10.0, steps=256, search="grid")(clf, x, y)
    coarse = LineSearch(s_max=10.0, steps=256, search="coarse")(clf, x, y)
    assert int(grid.success.sum()) > n // 2 and int((~grid.success).sum()) > 0  # both cases present
    assert torch.equal(grid.success, coarse.success)
    assert torch.equal(grid.eps_l2[grid.success], coarse.eps_l2[coarse.success])
    assert coarse.forwards * 4 < grid.forwards
