"""Universal perturbations: projection, shared vs per-input directions, seeding, transfer,
random baseline and the boundary-normal spectrum."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from perturbscope.analyses.boundary_normals import (
    boundary_normals,
    energy_rank,
    plot_singular_values,
    subspace_fooling_rate,
)
from perturbscope.analyses.transfer import transfer_matrix
from perturbscope.attacks.deepfool import DeepFool
from perturbscope.attacks.universal import (
    fooling_rate,
    project_lp_ball,
    random_fooling,
    universal_perturbation,
)
from perturbscope.models.classifier import Classifier
from perturbscope.models.pair_cnn import LinearBinary
from perturbscope.theory.caps import cap_fraction

D = 100


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _free(model):
    """A binary sigmoid model without declared bounds (these inputs are not pixels in [0, 1])."""
    return Classifier(model, "sigmoid", bounds=None)


def _shared(n=120, lo=0.05, hi=0.3, seed=0):
    """Linear binary model; every input on the positive side within ``hi`` of the plane."""
    g = _gen(seed)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    u = w / w.norm()
    base = torch.randn(n, D, generator=g, dtype=torch.float64)
    base = base - (base @ u)[:, None] * u
    dist = lo + (hi - lo) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return _free(LinearBinary(w)), base + dist * u, dist[:, 0]


class LocalDirections(nn.Module):
    """Binary: input c_i has its own boundary at distance ``margin`` along orthonormal u_i."""

    def __init__(self, centres, dirs, margin):
        super().__init__()
        self.c, self.u, self.m = centres, dirs, margin

    def logit(self, x):
        x = x.reshape(x.shape[0], -1)
        gate = torch.softmax(-torch.cdist(x, self.c) ** 2 / 2, 1)
        local = self.m - ((x[:, None, :] - self.c[None]) * self.u[None]).sum(2)
        return (gate * local).sum(1)

    def forward(self, x):
        return torch.sigmoid(self.logit(x))


def _local(n=60, margin=0.3, seed=1):
    g = _gen(seed)
    c = 5 * torch.randn(n, D, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(D, n, generator=g, dtype=torch.float64))
    return _free(LocalDirections(c, q.T.contiguous(), margin)), c.clone()


# ---------------------------------------------------------------- projection
@pytest.mark.parametrize("p", [2, math.inf])
@pytest.mark.parametrize("xi", [0.01, 0.3, 5.0])
def test_projection_stays_in_ball_idempotent_identity_inside(p, xi):
    v = torch.randn(500, 3, 4, generator=_gen(2), dtype=torch.float64)
    for scale in (1e-3, 1.0, 100.0):
        w = project_lp_ball(scale * v, xi, p)
        norm = w.norm() if p == 2 else w.abs().max()
        assert norm <= xi * (1 + 1e-12)
        torch.testing.assert_close(project_lp_ball(w, xi, p), w)  # idempotent
        inside = (scale * v).norm() <= xi if p == 2 else (scale * v).abs().max() <= xi
        if inside:
            torch.testing.assert_close(w, scale * v)
    # outside: L2 scales radially onto the sphere; Linf clips only the large entries
    w = project_lp_ball(100 * v, xi, p)
    if p == 2:
        torch.testing.assert_close(w.norm(), torch.tensor(xi, dtype=torch.float64))
        torch.testing.assert_close(w / w.norm(), v / v.norm())
    else:
        small = (100 * v).abs() <= xi
        torch.testing.assert_close(w[small], (100 * v)[small])
        assert (w[~small].abs() == xi).all()


def test_projection_bad_arguments():
    with pytest.raises(ValueError, match="p must be"):
        project_lp_ball(torch.zeros(3), 1.0, 1)
    with pytest.raises(ValueError, match="xi"):
        project_lp_ball(torch.zeros(3), -1.0, 2)


# ---------------------------------------------------------------- universal algorithm
@pytest.mark.parametrize("mode", ["sequential", "batched"])
@pytest.mark.parametrize("p", [2, math.inf])
def test_shared_weak_direction_gives_universal_far_above_random(mode, p):
    model, x, _ = _shared()
    # Linf: xi * sign(w) moves xi * ||w||_1 / ||w||_2 (about 0.8 * xi * sqrt(D) = 0.8 for
    # xi = 0.1) along the normal, past every input (distances <= 0.3)
    xi = 0.5 if p == 2 else 0.1
    res = universal_perturbation(model, x[:60], xi=xi, p=p, output="sigmoid", x_eval=x[60:],
                                 mode=mode, chunk=8, max_passes=5)
    norm = res.perturbation.norm() if p == 2 else res.perturbation.abs().max()
    assert norm <= xi + 1e-9
    assert res.converged and res.fooling_rate >= 0.8
    assert res.heldout_fooling_rate >= 0.9
    assert res.heldout_ci[0] <= res.heldout_fooling_rate <= res.heldout_ci[1]
    rnd = random_fooling(model, x[60:], radius=xi, p=p, draws=40, output="sigmoid")
    assert rnd.rate < 0.3
    assert res.heldout_fooling_rate > rnd.rate + 0.6


def test_per_input_directions_give_no_universal_perturbation():
    model, c = _local()
    res = universal_perturbation(model, c[:30], xi=0.5, p=2, output="sigmoid", x_eval=c[30:],
                                 mode="sequential", max_passes=3)
    # every input sits at 0.3 < 0.5 from its own boundary ...
    df = DeepFool()(model, c, output="sigmoid")
    assert df.success.all() and (df.l2 < 0.35).all()
    # ... but orthogonal boundary directions admit no shared perturbation
    assert not res.converged and res.passes == 3
    assert res.heldout_fooling_rate <= 0.1
    rnd = random_fooling(model, c[30:], radius=0.5, p=2, draws=20, output="sigmoid")
    assert res.heldout_fooling_rate - rnd.rate < 0.1


def test_random_baseline_matches_exact_cap_probability():
    # random unit direction of norm r flips an input at distance t iff its normal component
    # exceeds t: P = cap_fraction-like law of one coordinate of a uniform point on the sphere
    g = _gen(5)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    model = _free(LinearBinary(w))
    u = w / w.norm()
    x = (0.05 * u).view(1, D)  # one input at distance 0.05 from the plane
    r = 0.3
    rnd = random_fooling(model, x, radius=r, p=2, draws=4000, output="sigmoid", seed=1)
    # uniform on the sphere S^{d-1}: P(u_1 >= t) equals the ball cap fraction in dimension d-2
    # (Archimedes' projection); compare with a sphere-sampled Monte Carlo of the same law
    t = 0.05 / r
    mc = torch.randn(200_000, D, generator=_gen(9), dtype=torch.float64)
    expected = float(((mc[:, 0] / mc.norm(dim=1)) >= t).double().mean())
    assert abs(rnd.rate - expected) < 4 * math.sqrt(expected * (1 - expected) / 4000) + 1e-3
    assert abs(expected - cap_fraction(t, D - 2)) < 0.01


def test_two_sided_binary_keeps_best_pass_and_respects_half_ceiling():
    # inputs on both sides of one plane, alternating classes: a single v can push only one side
    # across (<v, u> > t_i for class 0 and < -t_j for class 1 cannot both hold), so no v fools
    # more than the 50% on one side; the passes tug v back and forth, and the best one is kept
    g = _gen(0)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    u = w / w.norm()
    base = torch.randn(80, D, generator=g, dtype=torch.float64)
    base = base - (base @ u)[:, None] * u
    side = torch.where(torch.arange(80) % 2 == 0, 1.0, -1.0).double()
    x = base + (side * (0.05 + 0.25 * torch.rand(80, generator=g, dtype=torch.float64)))[:, None] * u
    model = _free(LinearBinary(w))
    res = universal_perturbation(model, x, xi=0.5, p=2, output="sigmoid", max_passes=4, seed=0)
    assert res.fooling_rate == max(res.history) and res.fooling_rate <= 0.5
    assert res.fooling_rate >= 0.4
    assert fooling_rate(model, x, res.perturbation, output="sigmoid") == pytest.approx(res.fooling_rate)
    assert res.history[res.best_pass - 1] == res.fooling_rate
    assert res.history[-1] < res.fooling_rate  # the last pass was worse: returning it would lose


def test_seeded_reproducible_and_seed_matters():
    model, x, _ = _shared(n=40, lo=0.2, hi=0.6)
    a = universal_perturbation(model, x, xi=0.3, p=2, output="sigmoid", seed=3, max_passes=2)
    b = universal_perturbation(model, x, xi=0.3, p=2, output="sigmoid", seed=3, max_passes=2)
    torch.testing.assert_close(a.perturbation, b.perturbation, rtol=0, atol=0)
    assert a.history == b.history
    # with per-input directions the order of the updates matters: another seed, another v
    local, c = _local()
    c3 = universal_perturbation(local, c[:20], xi=0.5, p=2, output="sigmoid", seed=3, max_passes=1)
    c4 = universal_perturbation(local, c[:20], xi=0.5, p=2, output="sigmoid", seed=4, max_passes=1)
    assert (c3.perturbation - c4.perturbation).norm() > 1e-3


def test_universal_restores_mode_and_validates():
    clf, x, _ = _shared(n=10)
    model = clf.module
    model.train()
    universal_perturbation(clf, x, xi=0.5, p=2, output="sigmoid", max_passes=1)
    assert model.training
    with pytest.raises(ValueError, match="xi"):
        universal_perturbation(clf, x, xi=0.0, output="sigmoid")
    with pytest.raises(ValueError, match="mode"):
        universal_perturbation(clf, x, xi=0.1, output="sigmoid", mode="fast")
    with pytest.raises(ValueError, match="x_eval"):
        universal_perturbation(clf, x, xi=0.1, output="sigmoid", x_eval=torch.zeros(2, 3))


# ---------------------------------------------------------------- transfer
def test_transfer_matrix_diagonal_and_orthogonal_models():
    m1, x, _ = _shared(seed=0)
    u1 = m1.module.weight / m1.module.weight.norm()
    w2 = torch.zeros(D, dtype=torch.float64)
    w2[0] = 1.0
    w2 = w2 - (w2 @ u1) * u1
    w2 = w2 / w2.norm()  # orthogonal to m1's normal
    m2 = _free(LinearBinary(w2))
    x2 = x + 8.0 * w2  # same distances to m1's plane, far on the positive side of m2's
    v1 = universal_perturbation(m1, x2[:60], xi=0.5, p=2, output="sigmoid").perturbation
    v2 = -0.5 * w2
    table = transfer_matrix({"m1": v1, "m2": v2}, {"m1": (m1, "sigmoid"), "m2": m2}, x2[60:])
    assert list(table.index) == ["m1", "m2"] and list(table.columns) == ["m1", "m2"]
    assert table.loc["m1", "m1"] == pytest.approx(fooling_rate(m1, x2[60:], v1, output="sigmoid"))
    assert table.loc["m2", "m2"] == 0.0  # 0.5 is far short of 5.0
    assert table.loc["m1", "m1"] > 0.9


# ---------------------------------------------------------------- boundary normals
def test_normals_of_shared_model_concentrate_random_ones_do_not(tmp_path):
    model, x, _ = _shared()
    res = boundary_normals(model, x, output="sigmoid")
    assert res.k_normals == 1  # all normals are the plane's normal
    assert res.k_random > 40
    s = res.singular_values
    assert s[0] ** 2 / (s ** 2).sum() > 0.999
    local_model, c = _local()
    res2 = boundary_normals(local_model, c, output="sigmoid")
    assert res2.k_normals >= 0.8 * res2.k_random  # orthogonal normals: no shared subspace
    path = plot_singular_values(res, tmp_path / "sv.png")
    assert path.stat().st_size > 1000
    rates = subspace_fooling_rate(model, x, res.basis, 1, 0.5, output="sigmoid", draws=4)
    assert ((rates == 1.0) | (rates == 0.0)).all()  # +-normal: all or none
    assert energy_rank(torch.tensor([1.0, 1.0, 0.0]), 0.5) == 1
    assert energy_rank(torch.tensor([1.0, 1.0, 0.0]), 0.9) == 2


# ---------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two small MLP pair models (Sneaker vs Bag) trained for a few epochs, and one saved
    without its task."""
    from perturbscope.data import load_pair_task
    from perturbscope.models.checkpoint import save_checkpoint
    from perturbscope.models.pair_cnn import MLP
    from perturbscope.train import TrainConfig, train_binary

    task = load_pair_task("fashion-mnist-subset", "train", 7, 8, limit=120, seed=0)
    folder = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = MLP(task.x[0].numel(), hidden=(16,))
        train_binary(model, task.x, task.y, TrainConfig(epochs=4, lr=0.05, seed=seed), progress=False)
        paths.append(save_checkpoint(model, folder / f"mlp{seed}.pt", {"classes": [7, 8]}))
    paths.append(save_checkpoint(model, folder / "no_task.pt"))
    return paths


def _universal_cli(ckpt, out, *extra):
    from perturbscope.cli.main import main

    return main(["universal", "--checkpoint", str(ckpt), "--data", "fashion-mnist-subset",
                 "--limit", "40", "--max-passes", "2", "--random-draws", "3", "--no-progress",
                 "--out", str(out), *extra])


def test_cli_universal_end_to_end(checkpoints, tmp_path, capsys):
    import json

    import matplotlib.image as mpimg
    import numpy as np

    out = tmp_path / "u"
    rc = _universal_cli(checkpoints[0], out, "--xi", "0.2", "--norm", "inf", "--normals", "12",
                        "--transfer", str(checkpoints[1]))
    assert rc == 0
    v = np.load(out / "perturbation.npy")
    assert v.shape == (3, 28, 28) and v.dtype == np.float32
    assert np.abs(v).max() <= 0.2 + 1e-6
    png = mpimg.imread(out / "perturbation.png")
    assert png.ndim == 3 and png.shape[0] > 100  # enlarged figure, not a 28x28 thumbnail
    doc = json.loads((out / "universal.json").read_text())
    u = doc["universal"]
    assert u["xi"] == 0.2 and u["p"] == "inf" and u["heldout_n"] == 40
    assert 0.0 <= u["heldout_fooling_rate"] <= 1.0
    assert u["heldout_ci"][0] <= u["heldout_fooling_rate"] <= u["heldout_ci"][1]
    assert u["norms"]["linf"] == pytest.approx(float(np.abs(v).max()), rel=1e-5)
    base = doc["random_baseline"]
    assert base["same_p_norm"]["kind"] == "corners" and base["same_p_norm"]["draws"] == 3
    assert base["same_l2_norm"]["radius"] == pytest.approx(float(np.linalg.norm(v)), rel=1e-5)
    normals = doc["boundary_normals"]
    assert 1 <= normals["k_normals"] <= normals["n_normals"] <= 12
    assert len(normals["singular_values"]) == normals["n_normals"]
    assert (out / "singular_values.png").stat().st_size > 1000
    assert (out / "fooling_history.png").stat().st_size > 1000
    # transfer: the "this -> this" entry is the held-out fooling rate of v measured above
    import pandas as pd

    table = pd.read_csv(out / "transfer.csv", index_col=0)
    assert list(table.index) == ["this", "mlp1"] and list(table.columns) == ["this", "mlp1"]
    assert table.loc["this", "this"] == pytest.approx(u["heldout_fooling_rate"])
    assert "held-out fooling" in capsys.readouterr().out
    # L2 ball, no normals, sequential mode
    rc = _universal_cli(checkpoints[0], tmp_path / "u2", "--xi", "1.5", "--norm", "2", "--normals", "0",
                        "--mode", "sequential")
    assert rc == 0
    v2 = np.load(tmp_path / "u2" / "perturbation.npy")
    assert np.linalg.norm(v2) <= 1.5 * (1 + 1e-6)
    assert not (tmp_path / "u2" / "singular_values.png").exists()


@pytest.mark.parametrize("extra, match", [
    (["--xi", "-1"], "--xi"),
    (["--xi", "0.1", "--normals", "1"], "--normals"),
    (["--xi", "0.1", "--max-passes", "0"], "--max-passes"),
    (["--xi", "0.1", "--delta", "1.5"], "--delta"),
])
def test_cli_universal_bad_arguments(checkpoints, tmp_path, capsys, extra, match):
    assert _universal_cli(checkpoints[0], tmp_path / "bad", *extra) == 2
    assert match in capsys.readouterr().err


def test_cli_universal_bad_files(checkpoints, tmp_path, capsys):
    assert _universal_cli(tmp_path / "missing.pt", tmp_path / "o", "--xi", "0.1") == 2
    assert "does not exist" in capsys.readouterr().err
    assert _universal_cli(checkpoints[2], tmp_path / "o", "--xi", "0.1") == 2  # task unknown
    assert "--classes" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert _universal_cli(junk, tmp_path / "o", "--xi", "0.1") == 2


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_universal_inside_callers_inference_mode(mode: str) -> None:
    """Inside a caller's inference_mode / no_grad the universal algorithm (DeepFool inside) gives
    exactly its result outside, instead of an autograd error."""
    torch.manual_seed(0)
    clf = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), "logits", bounds=(0.0, 1.0))
    x = torch.rand(6, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    outside = universal_perturbation(clf, x, xi=2.0, max_passes=2)
    with getattr(torch, mode)():
        inside = universal_perturbation(clf, x.clone(), xi=2.0, max_passes=2)
    assert torch.equal(inside.perturbation, outside.perturbation)
    assert inside.history == outside.history
