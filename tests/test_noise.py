"""Noise-augmented training (perturbscope.experiments.noise, paper Section 7.1.4)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from perturbscope.audit import AuditConfig
from perturbscope.cli.main import main
from perturbscope.experiments.noise import (
    NoiseTrainingConfig,
    mean_l2_ball,
    mean_l2_cube,
    noise_levels,
    noise_tables,
    parse_pairs,
    run_noise_training,
    summarize_noise_records,
)
from perturbscope.sampling import uniform_ball, uniform_cube
from perturbscope.train import TrainConfig, matched_ball_radius

torch.set_num_threads(1)


@pytest.mark.parametrize("d", [192, 784, 2352])
def test_cube_and_matched_ball_have_the_same_mean_l2(d):
    """Monte Carlo: each sampler's mean L2 equals its formula within 4 standard errors, and the
    cube and its matched ball agree within MC error plus the known O(1/d) gap (< 1/d relative)."""
    rho, n = 0.1, 3000
    lv = {x.name: x for x in noise_levels([rho], d)}
    cube = uniform_cube(n, d, rho, seed=1, dtype=torch.float64).norm(dim=1).numpy()
    ball = uniform_ball(n, d, lv["ball-1"].size, seed=2, dtype=torch.float64).norm(dim=1).numpy()
    se_c, se_b = cube.std(ddof=1) / math.sqrt(n), ball.std(ddof=1) / math.sqrt(n)
    assert abs(cube.mean() - mean_l2_cube(rho, d)) < 4 * se_c
    assert abs(ball.mean() - mean_l2_ball(lv["ball-1"].size, d)) < 4 * se_b + 1e-12
    gap = abs(mean_l2_cube(rho, d) - mean_l2_ball(lv["ball-1"].size, d)) / mean_l2_cube(rho, d)
    assert gap < 1.0 / d
    assert abs(cube.mean() - ball.mean()) < 4 * math.hypot(se_c, se_b) + gap * cube.mean()
    # the paper's pairing for CIFAR-10 (d = 3072): R = 32 rho
    assert matched_ball_radius(0.25, 3072) == pytest.approx(8.0)


def test_noise_levels_and_bad_input():
    lv = noise_levels([0.05, 0.2], 2352)
    assert [x.name for x in lv] == ["none", "cube-1", "cube-2", "ball-1", "ball-2"]
    assert lv[3].size == pytest.approx(0.05 * 28.0) and lv[4].rho == 0.2  # sqrt(2352 / 3) = 28
    assert lv[1].mean_l2 == pytest.approx(0.05 * 28 * (1 - 1 / 23520))
    assert mean_l2_ball(2.0, 1) == pytest.approx(1.0)  # E|U(-2, 2)| = 1
    assert [x.name for x in noise_levels([0.1], 10, kinds=("ball",), include_clean=False)] == ["ball-1"]
    for bad in ([0.2, 0.1], [0.1, 0.1], [-0.1], [float("nan")]):
        with pytest.raises(ValueError, match="rho"):
            noise_levels(bad, 100)
    with pytest.raises(ValueError, match="kinds"):
        noise_levels([0.1], 100, kinds=("sphere",))
    with pytest.raises(ValueError, match="dimension"):
        noise_levels([0.1], 0)
    assert parse_pairs("all") == tuple((i, i + 1) for i in range(9))
    assert parse_pairs(["0-1", "7-8"]) == ((0, 1), (7, 8))
    for bad in ("7", "7-7", ["1-2", "1-2"], "a-b"):
        with pytest.raises(ValueError):
            parse_pairs(bad)
    with pytest.raises(ValueError, match="training.noise"):
        NoiseTrainingConfig(training=TrainConfig(noise="cube", noise_size=0.1)).validate()
    with pytest.raises(ValueError, match="arch"):
        NoiseTrainingConfig(arch="resnet").validate()
    with pytest.raises(ValueError, match="source"):
        NoiseTrainingConfig(source="cifar").validate()


def _tiny(**kw) -> NoiseTrainingConfig:
    base = dict(source="digits", pairs=((1, 7),), rhos=(0.1, 1.0), arch="mlp", hidden=(16,),
                train_limit=120, audit_limit=20, training=TrainConfig(epochs=6, batch_size=32),
                audit=AuditConfig(draws=40, steps=32, alphas=(1.0, 10.0)))
    base.update(kw)
    return NoiseTrainingConfig(**base)


@pytest.fixture(scope="module")
def tiny_run():
    seen = []
    res = run_noise_training(_tiny(), progress=False, on_unit=lambda p, lv, r: seen.append((p, lv.name)))
    return res, seen


def test_noise_experiment_runs_on_tiny_settings(tiny_run):
    res, seen = tiny_run
    assert seen == [("1-7", n) for n in ("none", "cube-1", "cube-2", "ball-1", "ball-2")]
    rec = res.records
    assert len(rec) == 5 * 2 * 20
    assert set(rec["noise_kind"]) == {"none", "cube", "ball"}
    d = res.meta["input_dim"]
    assert d == 3 * 8 * 8
    ball2 = rec[rec["noise"] == "ball-2"]
    assert ball2["noise_size"].iloc[0] == pytest.approx(1.0 * math.sqrt(d / 3))
    # the summary is the records' own numbers
    s = res.summary.set_index(["noise", "split"])
    for (noise, split), g in rec.groupby(["noise", "split"]):
        assert s.loc[(noise, split), "accuracy"] == pytest.approx(100 * g["correct"].mean())
        c = g["correct"].astype(bool)
        a = g["adv_success"].astype(bool) & c
        if c.any():
            adv_pct = s.loc[(noise, split), "adversarial_susceptibility"]
            assert adv_pct == pytest.approx(100 * a.sum() / c.sum())
    # the noise is really applied: huge noise (rho = 1, Linf = pixel range) makes training harder
    loss = {u["noise"]: u["final_train_loss"] for u in res.meta["units"]}
    assert loss["cube-2"] > 2 * loss["none"] and loss["ball-2"] > 2 * loss["none"]
    assert len({round(v, 12) for v in loss.values()}) == 5
    tables = noise_tables(res.summary)
    assert list(tables) == ["none", "cube-1", "cube-2", "ball-1", "ball-2"]
    assert tables["none"].shape == (2 * 7, 1)  # (acc, adv, 2 alphas, 3 norms) x 2 splits; one pair
    with pytest.raises(ValueError, match="noise"):
        summarize_noise_records(rec.drop(columns="noise_size"))
    with pytest.raises(ValueError):
        noise_tables(res.summary.iloc[:0])


def test_interrupted_noise_experiment_resumes_from_the_store(tiny_run, tmp_path):
    from perturbscope.experiments.store import ResultsStore
    from perturbscope.report.html import build_run_report

    class Stop(Exception):
        pass

    def stop_after_two(pair, lv, rec):
        if lv.name == "cube-1":
            raise Stop

    with ResultsStore(tmp_path / "n.sqlite") as st:
        with pytest.raises(Stop):
            run_noise_training(_tiny(), progress=False, store=st, on_unit=stop_after_two)
        rid = st.runs()["run_id"].iloc[0]
        assert len(st.done_units(rid)) == 4 and len(st.pending_units(rid)) == 6
        seen = []
        res = run_noise_training(_tiny(), progress=False, store=st,
                                 on_unit=lambda p, lv, r: seen.append(lv.name))
        assert seen == ["cube-2", "ball-1", "ball-2"]  # finished levels are read back, not retrained
        assert len(res.meta["resumed_units"]) == 4 and res.meta["run_id"] == rid
        assert len(st.records(rid)) == 200 and not st.pending_units(rid)  # none lost, none duplicated
        assert len(st.runs()) == 1
        run_noise_training(_tiny(rhos=(0.1,), kinds=("cube",)), progress=False, store=st)
        assert len(st.runs()) == 2  # a changed configuration is a new run
        report = build_run_report(st, rid, tmp_path / "noise.html")  # the store's noise run
    fresh = tiny_run[0].records
    pd.testing.assert_frame_equal(res.records, fresh, check_dtype=False)
    html = report.read_text()
    # noise levels, the paper's CIFAR trend, training runs, 5 noise levels, config, versions; Figs 15, 16
    assert html.count('data-kind="table"') == 10 and html.count('data-kind="figure"') == 2
    assert "Noise ball-2" in html and "Figure 16" in html


def test_noise_training_cli(tmp_path):
    out = tmp_path / "out"
    args = ["noise-training", "--data", "digits", "--pairs", "0-1", "--rhos", "0.2", "--kinds", "cube",
            "--arch", "mlp", "--hidden", "8", "--train-limit", "60", "--audit-limit", "10", "--epochs", "2",
            "--draws", "10", "--steps", "16", "--alphas", "2", "--no-progress", "--out", str(out),
            "--store", str(tmp_path / "s.sqlite")]
    assert main(args) == 0
    rc = main(["report", "noise", "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "r.html")])
    assert rc == 0
    assert (tmp_path / "r.html").read_text().count('data-kind="figure"') == 1
    for f in ("records.csv", "summary.csv", "config.json", "tables.txt", "noise_cube.png", "report.html"):
        assert (out / f).is_file(), f
    assert not (out / "noise_ball.png").exists()
    html = (out / "report.html").read_text()
    assert html.count('data-kind="figure"') == 1
    # levels, the paper's CIFAR trend, training runs, none + cube-1, config, versions
    assert html.count('data-kind="table"') == 1 + 1 + 1 + 2 + 2
    assert "Figure 15" in html and "cube-1" in html
    summary = np.genfromtxt(out / "summary.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert len(summary) == 4  # (none, cube-1) x (train, test)
    # every percentage with its counts and interval; every mean norm with the interval of the mean
    for c in ("accuracy_k", "accuracy_n", "accuracy_lo", "accuracy_hi", "random_a2_k", "random_a2_n",
              "eps_l2_n", "eps_l2_mean_lo", "eps_l2_mean_hi"):
        assert c in summary.dtype.names, c
    assert np.allclose(summary["accuracy"], 100 * summary["accuracy_k"] / summary["accuracy_n"])
    assert "[" in (out / "tables.txt").read_text()  # table cells carry their intervals
    assert main([*args[:4], "7"] + args[5:]) == 2  # bad pair
    assert main([a if a != "0.2" else "-1" for a in args]) == 2  # bad rho
    assert main([a if a != "60" else "1" for a in args]) == 2  # bad limit
