import math

import numpy as np
import pytest
import torch
from torch import nn

from perturbscope.attacks import BestOf, DeepFool, LineSearch, MinNorm, make_attack
from perturbscope.audit import AuditConfig, audit
from perturbscope.certify import certified_radius
from perturbscope.cli.main import main
from perturbscope.models import MLP, LinearBinary, PairCNN
from perturbscope.models.checkpoint import save_checkpoint
from perturbscope.models.classifier import Classifier


def linear_case(d=16, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = 0.25 + 0.5 * torch.rand(n, d, generator=g, dtype=torch.float64)
    model = LinearBinary(w, bias=-float((x @ w).mean()))
    y = (model.logit(x) >= 0).long()
    return model, x, y


def relu_net(d, hidden=(16, 16), seed=0):
    torch.manual_seed(seed)
    return MLP(d, hidden).double()


@pytest.mark.parametrize("method", ["lipschitz", "linear"])
def test_certified_radius_is_exact_on_a_linear_model(method):
    model, x, y = linear_case()
    res = certified_radius(model, x, y, method=method)
    assert torch.allclose(res.radius, model.distance(x), rtol=1e-6)
    assert (res.radius <= model.distance(x)).all()  # sound: never above the truth


def test_certified_radius_of_a_normalised_classifier_is_in_pixel_units():
    """A Classifier's normalisation (x - mean) / std is part of the certified network: for a
    linear model the linear relaxation gives the exact pixel-unit distance |z| / ||w / std||; the
    global Lipschitz radius (||w|| max 1/std) is below it."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2 * 3 * 3, generator=g, dtype=torch.float64)
    x = 0.25 + 0.5 * torch.rand(12, 2, 3, 3, generator=g, dtype=torch.float64)
    mean, std = (0.4, 0.6), (0.5, 2.0)
    clf = Classifier(LinearBinary(w, bias=0.0), mean=mean, std=std)
    with torch.no_grad():
        clf.module.bias -= clf.scores(x).mean()
        z = clf.scores(x)
    y = (z >= 0).long()
    w_pix = (w.view(2, 3, 3) / torch.tensor(std, dtype=torch.float64).view(2, 1, 1)).reshape(-1)
    dist = z.abs() / w_pix.norm()
    res = certified_radius(clf, x, y, method="linear")
    torch.testing.assert_close(res.radius, dist, rtol=1e-6, atol=0.0)
    assert (res.radius <= dist).all() and (res.lipschitz <= res.radius).all()
    torch.testing.assert_close(res.lipschitz, z.abs() / (2.0 * w.norm()), rtol=1e-6, atol=0.0)


def test_multiclass_linear_radius_and_best_attack_agree():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(10, 3)).double()
    x = torch.rand(15, 10, dtype=torch.float64)
    with torch.no_grad():
        s = net(x)
    y = s.argmax(1)
    w = net[1].weight.detach()
    dist = torch.stack([min((s[i, y[i]] - s[i, j]) / (w[y[i]] - w[j]).norm() for j in range(3) if j != y[i])
                        for i in range(15)])
    lo = certified_radius(net, x, y, output="logits", method="linear").radius
    assert torch.allclose(lo, dist, rtol=1e-6)
    best = BestOf(attacks=(LineSearch(refine_tol=1e-7), DeepFool(), MinNorm()))(net, x, y, output="logits")
    assert best.success.all()
    assert torch.allclose(best.eps_l2, dist, rtol=2e-3)


def test_best_attack_on_a_linear_model_records_the_winner():
    model, x, y = linear_case(n=12)
    best = BestOf(attacks=(LineSearch(s_max=4.0, refine_tol=1e-7), DeepFool(overshoot=0.0), MinNorm()))(
        model, x, y)
    per_attack, winner = best.extras["per_attack"], best.extras["winner"]
    dist = model.distance(x)
    for name, res in per_attack.items():
        assert res.success.all(), name
        assert torch.allclose(res.eps_l2, dist, rtol=2e-3, atol=2e-4), name
    l2 = torch.stack([per_attack[a].eps_l2 for a in ("line-search", "deepfool", "min-norm")])
    assert torch.equal(best.eps_l2, l2.min(0).values)
    names = np.array(["line-search", "deepfool", "min-norm"])
    assert (winner == names[l2.argmin(0).numpy()]).all()


def test_relu_net_lower_never_above_upper():
    net = relu_net(6)
    x = torch.rand(25, 6, dtype=torch.float64)
    y = (net.logit(x) >= 0).long()
    best = BestOf()(net, x, y)
    lin = certified_radius(net, x, y, upper=best.eps_l2)
    assert best.success.all()
    assert (lin.radius > 0).all()
    assert (lin.radius <= best.eps_l2).all()
    assert (lin.radius >= lin.lipschitz).all()
    assert (lin.radius > 1.5 * lin.lipschitz).float().mean() > 0.5  # the relaxation helps


def test_two_dimensional_toy_brute_force_distance_lies_in_the_interval():
    net = relu_net(2, hidden=(12, 12), seed=3)
    x = 0.3 + 0.4 * torch.rand(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # centre the scores so that the boundary passes near the inputs
        net.net[-1].bias -= net.logit(x).mean()
    y = (net.logit(x) >= 0).long()
    best = BestOf()(net, x, y)
    upper = best.eps_l2
    lower = certified_radius(net, x, y, upper=upper, rtol=1e-4).radius
    # brute force: the first flipping point along each of 720 rays, radial step upper / 800
    ang = torch.linspace(0, 2 * math.pi, 721, dtype=torch.float64)[:-1]
    dirs = torch.stack([ang.cos(), ang.sin()], 1)
    for i in range(len(x)):
        h = float(upper[i]) / 800
        radii = torch.arange(1, 841, dtype=torch.float64) * h
        with torch.no_grad():
            pts = x[i] + radii.view(-1, 1, 1) * dirs.view(1, -1, 2)  # (R, A, 2)
            clf = Classifier(net, "sigmoid", bounds=None)
            flip = clf.labels_of(clf.raw(pts.reshape(-1, 2))).view(len(radii), -1) != y[i]
        r_idx = flip.any(1).nonzero()
        assert len(r_idx), i
        d_bf = float(radii[r_idx[0, 0]])  # a flipping point at this norm: d_true <= d_bf
        # angular resolution 2*pi/720 and the radial step bound how far d_bf is above the truth
        slack = h + d_bf * (1 - math.cos(math.pi / 720)) + d_bf * math.pi / 720
        assert float(lower[i]) <= d_bf + 1e-12
        assert float(upper[i]) >= d_bf - slack
        assert float(upper[i]) <= 1.01 * d_bf + h  # the attacks find (nearly) the true distance
        # no sampled point strictly inside the certified radius flips
        assert not flip[radii < float(lower[i])].any()
    assert (lower <= upper).all() and (lower > 0).all()
    assert float((lower / upper).median()) > 0.9  # the interval is tight on this toy


def test_small_cnn_lower_bound_is_sound_by_sampling():
    torch.manual_seed(0)
    net = PairCNN(in_channels=1, width=0.0625, dropout=0.0).double().eval()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # centre the scores so that the boundary passes near the inputs
        net.head[-1].bias -= net.logit(x).mean()
    y = (net.logit(x) >= 0).long()
    best = BestOf(attacks=(DeepFool(), MinNorm()))(net, x, y)
    assert best.success.all()
    res = certified_radius(net, x, y, upper=best.eps_l2, rtol=0.02)
    assert (res.radius <= best.eps_l2).all() and (res.radius >= res.lipschitz).all()
    g = torch.Generator().manual_seed(2)
    for i in range(4):
        u = torch.randn(3000, 1, 8, 8, dtype=torch.float64, generator=g)
        u = u / u.reshape(3000, -1).norm(dim=1).view(-1, 1, 1, 1) * float(res.radius[i]) * 0.999
        with torch.no_grad():
            clf = Classifier(net, "sigmoid", bounds=None)
            assert (clf.labels_of(clf.raw(x[i] + u)) == y[i]).all()


def test_audit_with_best_attack_and_lower_bound():
    net = relu_net(6, seed=1)
    x = torch.rand(16, 6, dtype=torch.float64)
    y = (net.logit(x) >= 0).long()
    y[0] = 1 - y[0]
    cfg = AuditConfig(alphas=(1.0, 4.0), draws=100, attack="best", lower_bound=True)
    rec = audit(net, x, y, config=cfg, progress=False).records
    ok = rec["correct"].to_numpy()
    assert set(rec.loc[ok, "attack_won"]) <= {"line-search", "deepfool", "min-norm"}
    assert (rec.loc[ok, "eps_lower"] <= rec.loc[ok, "eps_l2"]).all()
    assert rec.loc[~ok, "eps_lower"].isna().all() and rec.loc[~ok, "attack_won"].eq("").all()
    ls = audit(net, x, y, config=AuditConfig(alphas=(1.0,), draws=50), progress=False).records
    assert (rec.loc[ok, "eps_l2"] <= ls.loc[ok, "eps_l2"].fillna(np.inf) + 1e-12).all()
    with pytest.raises(ValueError, match="attack"):
        audit(net, x, y, config=AuditConfig(attack="fmn"), progress=False)


def test_scaling_comparison_tables():
    from perturbscope.audit.compare import format_comparison, scaling_comparison

    net = relu_net(6, seed=2)
    x = torch.rand(20, 6, dtype=torch.float64)
    y = (net.logit(x) >= 0).long()
    ls, best = scaling_comparison(net, x, y, config=AuditConfig(alphas=(1.0, 3.0), draws=200))
    a, b = ls.records["eps_l2"].to_numpy(), best.records["eps_l2"].to_numpy()
    both = np.isfinite(a)
    assert (b[both] <= a[both] + 1e-12).all()
    table = format_comparison(ls, best)
    assert "line-search" in table and "best" in table and "random susceptibility a=3" in table


def test_bad_inputs():
    model, x, y = linear_case(n=4)
    with pytest.raises(ValueError, match="method"):
        certified_radius(model, x, y, method="crown")
    with pytest.raises(ValueError, match="upper"):
        certified_radius(model, x, y, upper=torch.ones(3))
    with pytest.raises(TypeError, match="Tanh"):
        certified_radius(nn.Sequential(nn.Linear(16, 4), nn.Tanh(), nn.Linear(4, 1)).double(), x, y,
                         output="logit")
    with pytest.raises(ValueError, match="unknown attack"):
        make_attack("best", attacks=(make_attack("fgsm"),))


def test_bounds_cli(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(PairCNN(width=0.0625).eval(), tmp_path / "m.pt", {"classes": [7, 8]})
    rc = main(["bounds", "--checkpoint", str(ckpt), "--max-images", "6", "--lower-bound", "lipschitz",
               "--draws", "20", "--min-norm-steps", "10", "--no-progress", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0 and "rel_width" in out and "random susceptibility a=10" in out
    assert (tmp_path / "o" / "intervals.csv").exists()
    assert main(["bounds", "--checkpoint", str(ckpt), "--max-images", "0"]) == 2
    rc = main(["audit", "--checkpoint", str(ckpt), "--limit", "4", "--draws", "10", "--splits", "test",
               "--attack", "min-norm", "--no-progress", "--out", str(tmp_path / "a")])
    assert rc == 0
    import pandas as pd

    rec = pd.read_csv(tmp_path / "a" / "records.csv")
    adv = rec["adv_success"].astype(bool)
    assert (rec.loc[adv, "attack_won"] == "min-norm").all() and rec["eps_source"].eq("min_norm").all()
