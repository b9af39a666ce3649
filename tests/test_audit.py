import json

import numpy as np
import pytest
import torch
from torch import nn

from perturbscope.audit import AuditConfig, audit, audit_splits
from perturbscope.models import LinearBinary
from perturbscope.theory.caps import cap_fraction


def linear_case(d=12, n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = 0.25 + 0.5 * torch.rand(n, d, generator=g, dtype=torch.float64)
    model = LinearBinary(w, bias=-float((x @ w).mean()))
    y = (model.logit(x) >= 0).long()
    y[:3] = 1 - y[:3]  # three misclassified images
    return model, x, y


def test_audit_records_and_summary_on_linear_model(tmp_path):
    model, x, y = linear_case()
    cfg = AuditConfig(alphas=(1.0, 3.0), draws=800, s_max=4.0, refine_tol=1e-7, seed=1)
    res = audit(model, x, y, config=cfg, split="test", progress=False)
    rec = res.records
    assert len(rec) == 30 and (rec["correct"] == np.r_[[False] * 3, [True] * 27]).all()
    s = res.summary["test"]
    assert s["accuracy"] == pytest.approx(90.0)
    assert s["adversarial_susceptibility"] == pytest.approx(100.0)
    # attack found the exact distance on the correct images
    dist = model.distance(x).numpy()
    ok = rec["correct"].to_numpy()
    assert np.allclose(rec["eps_l2"].to_numpy()[ok], dist[ok], atol=1e-6)
    assert rec["eps_l2"][~ok].isna().all()
    # random flip fractions agree with the exact cap fraction F_d(1/alpha) on average
    frac = rec.loc[ok, "rand_frac_a3"].to_numpy()
    assert abs(frac.mean() - cap_fraction(1 / 3, 12)) < 0.03
    assert (rec.loc[ok, "flips_a1"] == 0).all()
    paths = res.save(tmp_path, parquet=True)
    doc = json.loads(paths["summary"].read_text())
    assert doc["config"]["draws"] == 800
    assert paths["parquet"].exists()


def test_given_eps_replaces_the_attack():
    model, x, y = linear_case()
    eps = model.distance(x) * 1.0
    eps[5] = float("nan")
    res = audit(model, x, y, config=AuditConfig(alphas=(2.0,), draws=200), eps=eps, progress=False)
    assert not res.records.loc[5, "adv_success"]
    assert res.records["eps_source"].eq("given").all()
    assert res.summary["all"]["n_adversarial"] == 26


def test_multiclass_model_mode_and_device_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 16), nn.ReLU(), nn.Dropout(0.3),
                        nn.Linear(16, 4))
    net.train()
    x = torch.rand(20, 2, 4, 4)
    with torch.no_grad():
        net.eval()
        y = net(x).argmax(1)
        net.train()
    res = audit_splits(net, {"train": (x, y), "test": (x[:5], y[:5])}, output="logits",
                       config=AuditConfig(draws=50, s_max=20.0), progress=False)
    assert net.training and net[3].training
    assert next(net.parameters()).device.type == "cpu"
    assert set(res.summary) == {"train", "test"}
    assert res.summary["train"]["accuracy"] == pytest.approx(100.0)
    assert list(res.records["split"].unique()) == ["train", "test"]


def test_audit_input_errors():
    model, x, y = linear_case()
    with pytest.raises(ValueError, match="outside the declared bounds"):
        audit(model, x * 5, y, progress=False)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        audit(model, bad, y, progress=False)
    with pytest.raises(ValueError, match="shape"):
        audit(model, x, y[:-1], progress=False)
    with pytest.raises(ValueError, match="low < high"):
        audit(model, x, y, config=AuditConfig(bounds=(1.0, 0.0)), progress=False)
    with pytest.raises(ValueError, match="output"):
        audit(nn.Linear(12, 1), x, y, progress=False)


def test_auto_batch_size_follows_free_memory(monkeypatch):
    """batch_size=None: a power of two that fits a share of the free memory (capped on the CPU)."""
    import perturbscope.validation as v
    from perturbscope.audit.run import auto_batch_size
    from perturbscope.models import MLP, as_classifier

    clf = as_classifier(MLP(3 * 8 * 8, hidden=(16,)).eval())
    x1 = torch.rand(1, 3, 8, 8)
    assert auto_batch_size(clf, x1) == 256  # plenty of memory: the CPU cap
    monkeypatch.setattr(v, "available_memory", lambda device: 100_000)
    b = auto_batch_size(clf, x1)
    assert b & (b - 1) == 0 and 1 <= b < 256  # a power of two that fits a quarter of 100 kB
    per_input = 2 * x1.numel() * 4
    assert b * 1.25 * per_input <= 0.25 * 100_000
