"""The four robustness categories on hand-made models of each kind (binary and multi-class)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from perturbscope.analyses.categories import (
    CategoryThresholds,
    RateEstimate,
    categorize,
    categorize_sweep,
    decide_category,
)
from perturbscope.models.classifier import Classifier
from perturbscope.models.pair_cnn import LinearBinary

D = 64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _free(model, output="sigmoid"):
    """The model without declared bounds (these inputs are not pixels in [0, 1])."""
    return Classifier(model, output, bounds=None)


def _plane_data(n, dist_lo, dist_hi, seed=0):
    """Linear binary model and inputs on its positive side at distances in [lo, hi]."""
    g = _gen(seed)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    u = w / w.norm()
    base = torch.randn(n, D, generator=g, dtype=torch.float64)
    base = base - (base @ u)[:, None] * u
    dist = dist_lo + (dist_hi - dist_lo) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return _free(LinearBinary(w)), base + dist * u


class LocalDirections(nn.Module):
    """Binary: the input near centre c_i has its own boundary at distance ``margin`` along u_i.

    The directions u_i are orthonormal, so no single small vector is close to all boundaries.
    """

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


class Bubbles(nn.Module):
    """Binary: class 1 only inside tiny balls of radius r0 around the inputs: all moves fool."""

    def __init__(self, centres, r0):
        super().__init__()
        self.c, self.r0 = centres, r0

    def logit(self, x):
        d2 = torch.cdist(x.reshape(x.shape[0], -1), self.c).amin(1) ** 2
        return self.r0 ** 2 - d2

    def forward(self, x):
        return torch.sigmoid(self.logit(x))


def _local(n=40, margin=0.3, seed=1):
    g = _gen(seed)
    c = 5 * torch.randn(n, D, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(D, n, generator=g, dtype=torch.float64))
    return _free(LocalDirections(c, q.T.contiguous(), margin)), c.clone()


KW = {"p": 2, "draws": 30, "k_restarts": 2, "max_passes": 4, "seed": 0}


def test_category_1_robust_far_from_plane():
    few_model, few_x = _plane_data(60, 5.0, 8.0)  # 0/30 flips cannot prove "at most 5%"
    assert categorize(few_model, few_x, 0.5, output="sigmoid", **KW).category is None
    model, x = _plane_data(200, 5.0, 8.0)  # 100 evaluation inputs: 0/100 -> upper < 5%
    res = categorize(model, x, 0.5, output="sigmoid", **KW)
    assert res.category == 1, res.reason
    assert res.attack.rate == 0.0
    assert "no small perturbation" in res.reason


def test_category_2_each_input_its_own_direction():
    model, x = _local()
    res = categorize(model, x, 0.5, output="sigmoid", **KW)
    assert res.category == 2, res.reason
    assert res.attack.rate == 1.0
    assert res.universal.rate < 0.3
    assert "no single direction serves most inputs" in res.reason
    assert "two-class model" in res.reason  # the binary ceiling is named


def test_category_3_shared_weak_direction():
    model, x = _plane_data(60, 0.05, 0.3)
    res = categorize(model, x, 0.5, output="sigmoid", **KW)
    assert res.category == 3, res.reason
    assert res.universal.rate == 1.0
    assert res.random.rate < 0.3
    assert "common weak direction" in res.reason


def test_category_4_every_perturbation_fools():
    g = _gen(3)
    x = 5 * torch.randn(40, D, generator=g, dtype=torch.float64)
    res = categorize(_free(Bubbles(x.clone(), 0.1)), x, 0.5, output="sigmoid", **KW)
    assert res.category == 4, res.reason
    assert res.random_all.rate == 1.0


@pytest.mark.parametrize("p", [2, math.inf])
def test_multiclass_shared_direction_is_universal_and_ordering_holds(p):
    # 3-class linear model, inputs of class 0 close to the class-1 face along one direction
    g = _gen(4)
    w = torch.zeros(3, D, dtype=torch.float64)
    w[1, 0] = 1.0
    w[2, 1] = 1.0
    model = nn.Linear(D, 3).double()
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.zero_()
    x = torch.randn(60, D, generator=g, dtype=torch.float64)
    x[:, 0] = -torch.rand(60, generator=g, dtype=torch.float64) * 0.2 - 0.02  # f1 - f0 < 0
    x[:, 1] = -3.0  # far from class 2
    labels = torch.zeros(60, dtype=torch.long)
    eps = 0.3
    res = categorize(_free(model, "logits"), x, eps, output="logits", labels=labels,
                     **{**KW, "p": p})
    assert res.category == 3, res.reason
    assert res.random.rate <= res.universal.rate <= res.attack.rate
    r = res.records
    assert len(r) == res.n_eval and bool(r["attacked"].all())


def test_sweep_staircase_and_threshold_parameters():
    model, x = _plane_data(200, 0.2, 0.4)
    small, big = categorize_sweep(model, x, [0.05, 1.0], output="sigmoid", **KW)
    assert small.category == 1
    assert big.category == 3
    # strict thresholds turn the same evidence into "indeterminate"/lower categories
    strict = categorize(model, x, 1.0, output="sigmoid",
                        thresholds=CategoryThresholds(delta_u=0.0, delta_a=0.0), **KW)
    assert strict.category != 3


def test_decide_indeterminate_between_1_and_2():
    half = RateEstimate.of(15, 30, 0.95)
    zero = RateEstimate.of(0, 30, 0.95)
    cat, label, reason = decide_category(half, zero, zero, CategoryThresholds(), eps=0.1)
    assert cat is None and "1 or 2" in label and "sits between the two" in reason
    # 1 flip in 30: the interval straddles tau_1 = 5%, so more inputs could still prove "robust"
    one = RateEstimate.of(1, 30, 0.95)
    assert one.low < 0.05 < one.high
    cat, label, reason = decide_category(one, zero, zero, CategoryThresholds(), eps=0.1)
    assert cat is None and "neither holds" in reason and "More inputs" in reason
    # the same single flip in 30 with a looser tau_1 = 0.2 is category 1
    cat, _, _ = decide_category(one, zero, zero, CategoryThresholds(tau_1=0.2), eps=0.1)
    assert cat == 1


def test_bad_arguments():
    model, x = _plane_data(10, 0.1, 0.2)
    with pytest.raises(ValueError, match="eps"):
        categorize(model, x, -1.0, output="sigmoid")
    with pytest.raises(ValueError, match="delta_u"):
        CategoryThresholds(delta_u=1.5)
    with pytest.raises(ValueError, match="build_fraction"):
        categorize(model, x, 0.1, output="sigmoid", build_fraction=1.0)
    with pytest.raises(ValueError, match="p must be"):
        categorize(model, x, 0.1, output="sigmoid", p=1)


# ---------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small MLP pair model (Sneaker vs Bag) trained for a few epochs."""
    from perturbscope.data import load_pair_task
    from perturbscope.models.checkpoint import save_checkpoint
    from perturbscope.models.pair_cnn import MLP
    from perturbscope.train import TrainConfig, train_binary

    task = load_pair_task("fashion-mnist-subset", "train", 7, 8, limit=120, seed=0)
    torch.manual_seed(0)
    model = MLP(task.x[0].numel(), hidden=(16,))
    train_binary(model, task.x, task.y, TrainConfig(epochs=4, lr=0.05), progress=False)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "mlp.pt", {"classes": [7, 8]})


def _categorize_cli(ckpt, out, *extra):
    from perturbscope.cli.main import main

    return main(["categorize", "--checkpoint", str(ckpt), "--data", "fashion-mnist-subset",
                 "--limit", "60", "--draws", "4", "--restarts", "1", "--max-passes", "2",
                 "--no-progress", "--out", str(out), *extra])


def test_cli_categorize_end_to_end(checkpoint, tmp_path, capsys):
    import json

    import numpy as np
    import pandas as pd

    out = tmp_path / "c"
    assert _categorize_cli(checkpoint, out, "--eps", "3", "0.05", "--normals", "10") == 0
    doc = json.loads((out / "categories.json").read_text())
    results = doc["results"]
    assert [r["eps"] for r in results] == [0.05, 3.0]  # sorted
    for r in results:
        assert r["category"] in (None, 1, 2, 3, 4) and len(r["reason"]) > 40
        a, u, rr = (r[k]["rate"] for k in ("A_attack", "U_universal", "R_random"))
        assert rr <= u <= a
        for k in ("A_attack", "U_universal", "R_random"):
            assert r[k]["low"] <= r[k]["rate"] <= r[k]["high"]
        v = np.load(out / f"universal_eps{r['eps']:g}.npy")
        assert np.linalg.norm(v) <= r["eps"] * (1 + 1e-5)
        assert (out / f"universal_eps{r['eps']:g}.png").stat().st_size > 1000
    # A grows with eps (same DeepFool norms, larger ball)
    assert results[0]["A_attack"]["rate"] <= results[1]["A_attack"]["rate"]
    records = pd.read_csv(out / "records.csv")
    assert len(records) == sum(r["n_eval"] for r in results)
    n_small = results[0]["n_eval"]
    assert records["attacked"].iloc[:n_small].mean() == pytest.approx(results[0]["A_attack"]["rate"])
    assert doc["boundary_normals"]["n_normals"] <= 10
    assert (out / "categories.png").stat().st_size > 1000
    assert (out / "singular_values.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "eps = 0.05 (L2)" in text and "eps = 3 (L2)" in text


@pytest.mark.parametrize("extra, match", [
    (["--eps", "0"], "--eps"),
    (["--eps", "0.1", "--delta-u", "1.5"], "delta_u"),
    (["--eps", "0.1", "--build-fraction", "1"], "--build-fraction"),
    (["--eps", "0.1", "--level", "1"], "--level"),
    (["--eps", "0.1", "--draws", "0"], "--draws"),
])
def test_cli_categorize_bad_arguments(checkpoint, tmp_path, capsys, extra, match):
    assert _categorize_cli(checkpoint, tmp_path / "bad", *extra) == 2
    assert match in capsys.readouterr().err
