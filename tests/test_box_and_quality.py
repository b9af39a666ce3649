"""The box-aware variants (clipped probe, clipped attack), how far the paper's probe leaves [0, 1],
the warnings printed beside the numbers, and the audit figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from perturbscope.audit import AuditConfig, audit
from perturbscope.audit.quality import outside_summary, quality_warnings
from perturbscope.audit.run import probe_outside
from perturbscope.audit.schema import column_names
from perturbscope.audit.table import format_table
from perturbscope.models import LinearBinary

torch.set_num_threads(1)


def _outside_box_model(n: int = 12):
    """Boundary x_1 = 1.05 (outside [0, 1]); images of class 0 with x_1 in [0.3, 0.95]."""
    d = 8
    w = torch.zeros(d, dtype=torch.float64)
    w[0] = 1.0
    model = LinearBinary(w, bias=-1.05)
    x = torch.full((n, d), 0.5, dtype=torch.float64)
    x[:, 0] = torch.linspace(0.3, 0.95, n, dtype=torch.float64)
    return model, x, torch.zeros(n, dtype=torch.long)


def test_clipped_attack_cannot_reach_a_boundary_outside_the_box():
    model, x, y = _outside_box_model()
    free = audit(model, x, y, config=AuditConfig(alphas=(2.0,), draws=50, s_max=2.0), progress=False)
    assert free.records["adv_success"].all()  # the paper's unclipped line search leaves the box
    assert np.allclose(free.records["eps_l2"], 1.05 - x[:, 0].numpy(), atol=2.0 / 256 + 1e-9)
    cfg = AuditConfig(alphas=(2.0,), draws=50, s_max=2.0, clip_attack=True)
    clipped = audit(model, x, y, config=cfg, progress=False)
    assert not clipped.records["adv_success"].any() and clipped.records["eps_l2"].isna().all()
    s = clipped.summary["all"]
    assert (s["attack_mode"], s["probe_mode"]) == ("clipped to [0, 1]", "unclipped (paper)")
    assert free.summary["all"]["attack_mode"] == "unclipped (paper)"
    assert "attack: clipped to [0, 1]; random probe: unclipped (paper)" in clipped.table()


def test_clipped_probe_and_the_share_outside_the_box():
    model, x, y = _outside_box_model()
    free = audit(model, x, y, config=AuditConfig(alphas=(1.0, 5.0), draws=200, s_max=2.0), progress=False)
    cfg = AuditConfig(alphas=(1.0, 5.0), draws=200, s_max=2.0, clip_probe=True)
    clipped = audit(model, x, y, config=cfg, progress=False)
    assert (free.records["flips_a5"] > 0).all() and (clipped.records["flips_a5"] == 0).all()
    assert clipped.summary["all"]["random_susceptibility"][5.0] == 0.0
    assert "random probe: clipped to [0, 1]" in clipped.table()
    # the new column, in the schema's order, the same for both (it does not depend on the clip)
    assert list(free.records.columns) == column_names((1.0, 5.0))
    out = free.records["probe_outside_a5"].to_numpy()
    assert np.array_equal(out, clipped.records["probe_outside_a5"].to_numpy())
    assert ((out >= 0) & (out <= 1)).all() and (out > free.records["probe_outside_a1"].to_numpy()).all()
    assert cfg.to_dict()["clip_probe"] is True and "clip_probe" not in AuditConfig().to_dict()
    with pytest.raises(TypeError, match="clip_probe"):
        AuditConfig(clip_probe="yes").validate()


def test_probe_outside_on_known_images():
    """x = 0 (a black image): each draw's coordinates are symmetric, so the part outside [0, 1] is
    the negative half: ||d_-|| / ||d|| ~ sqrt(1/2). x = 0.5 with a tiny radius: nothing outside."""
    d = 4000
    x = torch.cat([torch.zeros(1, d), torch.full((1, d), 0.5), torch.zeros(1, d)])
    eps = np.array([1.0, 0.01, np.nan])
    out = probe_outside(x, eps, (1.0, 2.0), seed=0, bounds=(0.0, 1.0))
    assert out.shape == (3, 2)
    assert out[0] == pytest.approx([math.sqrt(0.5)] * 2, abs=0.02)
    assert (out[1] == 0.0).all() and np.isnan(out[2]).all()


def _records(split: str, n: int, n_correct: int, n_adv: int, outside: float | None = None,
             pair: str = "7-8") -> pd.DataFrame:
    df = pd.DataFrame({"pair": pair, "split": split,
                       "correct": [True] * n_correct + [False] * (n - n_correct),
                       "adv_success": [True] * n_adv + [False] * (n - n_adv), "eps_l2": 1.0,
                       "flips_a1": 0, "flips_a10": 1})
    if outside is not None:
        df["probe_outside_a1"], df["probe_outside_a10"] = outside / 2, outside
    return df


def test_quality_warnings_name_each_problem_and_only_then():
    good = pd.concat([_records("train", 100, 99, 60), _records("test", 100, 99, 55)])
    paper = pd.DataFrame([("accuracy", "train", "7-8", 99.84, math.nan),
                          ("accuracy", "test", "7-8", 99.7, math.nan)],
                         columns=["metric", "split", "pair", "value", "sd"])
    assert quality_warnings(good, paper=paper, histories={"7-8": {"attempts": 1}}) == []
    weak = pd.concat([_records("train", 100, 85, 60), _records("test", 100, 99, 55)])
    (msg,) = quality_warnings(weak, paper=paper)
    assert msg.startswith("Weak model") and "pair 7-8 train 85.0%" in msg and "99.84" in msg
    assert "test" not in msg.split("Its")[0].replace("pair 7-8 train", "")  # only the weak group
    assert quality_warnings(_records("test", 100, 55, 40))[0].startswith("Weak model")  # near chance
    (msg,) = quality_warnings(good, histories={"7-8": {"attempts": 2, "seed": 7926}})
    assert "retried for pair 7-8 (trained 2 times, kept seed 7926)" in msg
    (msg,) = quality_warnings(pd.concat([_records("train", 100, 99, 30)]), config={"audit": {"s_max": 4.0}})
    assert msg.startswith("The attack flipped at most half") and "30/99" in msg and "s_max = 4.0" in msg
    box = _records("test", 50, 50, 40, outside=0.4)
    (msg,) = quality_warnings(box)
    assert "leave [0, 1]" in msg and "pair 7-8 test 40%" in msg and "unclipped" in msg
    (msg,) = quality_warnings(box, config={"clip_probe": True})
    assert "clipped them to [0, 1]" in msg
    assert quality_warnings(_records("test", 50, 50, 40, outside=0.01)) == []
    s = outside_summary(box)
    assert list(s["alpha"]) == [1.0, 10.0] and s["outside_median"].tolist() == [0.2, 0.4]


def test_audit_table_prints_modes_and_warnings():
    summary = {"test": {"n_images": 4, "intervals": None, "attack_mode": "unclipped (paper)",
                        "probe_mode": "clipped to [0, 1]"}}
    text = format_table(summary, (1.0,), notes=["something is off"])
    assert "attack: unclipped (paper); random probe: clipped to [0, 1]" in text
    assert text.splitlines()[-1] == "WARNING: something is off"


def test_cli_clip_flags_reach_the_audit_config():
    import argparse

    from perturbscope.cli.audit_cmd import add_audit_args, audit_config

    p = argparse.ArgumentParser()
    add_audit_args(p)
    base = audit_config(p.parse_args([]))
    assert (base.clip_probe, base.clip_attack) == (False, False)
    cfg = audit_config(p.parse_args(["--clip-probe", "--clip-attack"]))
    assert (cfg.clip_probe, cfg.clip_attack) == (True, True)
    assert cfg.probe_mode == cfg.attack_mode == "clipped to [0, 1]"


def test_eps_vs_flip_rate_figure_separates_splits_alphas_and_no_flip_rows(tmp_path, monkeypatch):
    """One scatter panel per split (never pooled), the pairs pooled and said so, the floor line
    labelled with the number of draws, each alpha's no-flip images in their own row, the attack's
    misses counted, and the contrast panel's bars at the eqs 6-8 percentages."""
    import perturbscope.report.audit_plot as ap

    figs = []
    monkeypatch.setattr(ap, "save_figure", lambda fig, path, dpi=110: figs.append(fig) or path)
    rec = pd.concat([_records("train", 20, 18, 10, pair="7-8"), _records("test", 20, 20, 12, pair="0-1"),
                     _records("test", 10, 10, 0, pair="7-8")], ignore_index=True)
    rec["flips_a10"] = np.where(rec.index % 2 == 0, 4, 0)
    rec["rand_frac_a1"] = np.where(rec["adv_success"], 0.0, np.nan)
    rec["rand_frac_a10"] = np.where(rec["adv_success"], rec["flips_a10"] / 100, np.nan)
    ap.plot_eps_vs_flip_rate(rec, (1.0, 10.0), tmp_path / "f.png")
    (fig,) = figs
    axes = fig.get_axes()
    assert len(axes) == 4
    contrast, hist, train, test = axes
    assert train.get_title().startswith("train:") and "pooled" not in train.get_title()
    assert test.get_title().startswith("test:") and "2 pairs pooled" in test.get_title()
    labels = [t.get_text() for t in test.get_legend().get_texts()]
    assert any("1 flip in 100 draws" in t for t in labels)  # inferred from flips / rand_frac
    assert any("alpha$=1: 0 of 12 images flipped" in t for t in labels)
    rows = [c.get_offsets()[:, 1] for c in test.collections if len(c.get_offsets())]
    no_flip_rows = {float(np.unique(r)[0]) for r in rows if len(np.unique(r)) == 1 and r[0] < 0.01}
    assert len(no_flip_rows) == 2  # alpha 1 and alpha 10 apart
    hist_labels = [t.get_text() for t in hist.get_legend().get_texts()]
    assert any("train: 10 flipped, 8 correct but not flipped" in t for t in hist_labels)
    heights = sorted(round(p.get_height(), 6) for p in contrast.patches)
    assert round(100 * 10 / 18, 6) in heights and round(100 * 12 / 30, 6) in heights
