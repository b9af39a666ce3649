import pytest
import torch
from torch import nn

from perturbscope.attacks.deepfool import DeepFool
from perturbscope.attacks.line_search import LineSearch
from perturbscope.attacks.min_norm import MinNorm
from perturbscope.models import MLP, LinearBinary
from perturbscope.models.classifier import Classifier


def linear_case(d=30, n=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = 0.25 + 0.5 * torch.rand(n, d, generator=g, dtype=torch.float64)
    model = LinearBinary(w, bias=-float((x @ w).mean()))
    y = (model.logit(x) >= 0).long()
    return model, x, y


def multiclass_linear(d=20, k=4, n=20, seed=1):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, k)).double()
    x = torch.rand(n, d, dtype=torch.float64)
    with torch.no_grad():
        s = net(x)
    y = s.argmax(1)
    w = net[1].weight.detach()
    # distance to the complement of the class-y polytope: nearest of the planes s_y = s_k
    dist = torch.stack([
        torch.stack([(s[i, y[i]] - s[i, j]) / (w[y[i]] - w[j]).norm() for j in range(k) if j != y[i]]).min()
        for i in range(n)])
    return net, x, y, dist


def test_all_attacks_find_the_exact_distance_on_a_linear_model():
    model, x, y = linear_case()
    dist = model.distance(x)
    mn = MinNorm()(model, x, y)
    assert mn.success.all()
    assert torch.allclose(mn.eps_l2, dist, rtol=1e-3)
    assert (mn.eps_l2 >= dist * (1 - 1e-9)).all()  # an upper bound, never below the truth
    ls = LineSearch(s_max=4.0, refine_tol=1e-7)(model, x, y)
    assert ls.success.all() and torch.allclose(ls.eps_l2, dist, atol=1e-6)
    df = DeepFool(overshoot=0.0)(model, x, y, output="sigmoid")
    assert df.success.all() and torch.allclose(df.l2, dist, atol=2e-4)
    # the returned perturbations really flip the model's label
    assert (Classifier(model, "sigmoid", bounds=None).predict(x + mn.perturbation) != y).all()


def test_min_norm_exact_on_a_multiclass_linear_model():
    net, x, y, dist = multiclass_linear()
    res = MinNorm()(net, x, y, output="logits")
    assert res.success.all()
    assert torch.allclose(res.eps_l2, dist, rtol=2e-3)
    with torch.no_grad():
        assert (net(x + res.perturbation).argmax(1) != y).all()


@pytest.mark.parametrize("output", ["sigmoid", "logit"])
def test_binary_models_without_logit_method(output):
    model, x, y = linear_case(d=10, n=12, seed=3)
    layers = [nn.Flatten(), nn.Linear(10, 1)] + ([nn.Sigmoid()] if output == "sigmoid" else [])
    seq = nn.Sequential(*layers).double()
    with torch.no_grad():
        seq[1].weight.copy_(model.weight.view(1, -1))
        seq[1].bias.fill_(float(model.bias))
    res = MinNorm()(seq, x, y, output=output)
    assert res.success.all() and torch.allclose(res.eps_l2, model.distance(x), rtol=1e-3)


def test_relu_net_beats_line_search_and_norms_are_consistent():
    torch.manual_seed(0)
    net = MLP(12, (32, 32)).double()
    x = torch.rand(30, 12, dtype=torch.float64)
    y = (net.logit(x) >= 0).long()
    mn = MinNorm()(net, x, y)
    ls = LineSearch(s_max=10.0, refine_tol=1e-6)(net, x, y)
    assert mn.success.all()
    assert (Classifier(net, "sigmoid", bounds=None).predict(x + mn.perturbation) != y).all()
    flat = mn.perturbation.reshape(30, -1)
    assert torch.allclose(mn.eps_l2, flat.norm(dim=1))
    assert torch.allclose(mn.eps_linf, flat.abs().amax(1))
    both = ls.success
    # a minimal-norm attack should not lose to a single gradient direction
    assert (mn.eps_l2[both] <= ls.eps_l2[both] * (1 + 1e-3)).float().mean() >= 0.9
    assert mn.eps_l2[both].median() < ls.eps_l2[both].median()


def test_misclassified_inputs_and_clipping():
    model, x, y = linear_case(d=8, n=10, seed=2)
    y2 = y.clone()
    y2[0] = 1 - y2[0]  # already "adversarial" w.r.t. this label
    res = MinNorm(clip=True)(model, x, y2)
    assert res.success[0] and res.eps_l2[0] == 0
    assert ((x + res.perturbation) >= -1e-12).all() and ((x + res.perturbation) <= 1 + 1e-12).all()


def test_bad_inputs():
    model, x, y = linear_case(d=5, n=4)
    with pytest.raises(ValueError, match="steps"):
        MinNorm(steps=0)(model, x, y)
    with pytest.raises(ValueError, match="gamma"):
        MinNorm(gamma=1.5)(model, x, y)
    with pytest.raises(ValueError, match="shape"):
        MinNorm()(model, x, y[:2])
    with pytest.raises(TypeError):
        MinNorm()(model, x.numpy(), y)
    with pytest.raises(ValueError, match="clip"):
        MinNorm(clip=True)(Classifier(model, "sigmoid", bounds=None), x, y)
    with pytest.raises(ValueError, match="output"):
        MinNorm()(nn.Sequential(nn.Linear(5, 1)).double(), x, y)
