"""``perturbscope reproduce``: SIGKILL + rerun gives exactly the records of an uninterrupted run;
a changed config is a new run; the side-by-side tables on known inputs; the paper's data."""

import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from perturbscope.audit import AuditConfig
from perturbscope.cli.main import main
from perturbscope.experiments.reproduce import ReproduceConfig, parse_pairs, run_reproduction
from perturbscope.experiments.store import ResultsStore
from perturbscope.experiments.tables import (
    format_table20,
    format_table21,
    paper_tables,
    protocol_note,
    table20_long,
    table21_long,
)
from perturbscope.train import TrainConfig

PAIRS = ((7, 8), (0, 1))
N_IMAGES = 12  # audited per split; the subset has >= 200 train / 200 test images per pair
CLI = ["reproduce", "fashion-mnist", "--data", "fashion-mnist-subset", "--pairs", "7-8", "0-1",
       "--train-images", "64", "--images", str(N_IMAGES), "--epochs", "3", "--width", "0.125",
       "--batch-size", "16", "--draws", "20", "--steps", "32", "--threads", "1", "--no-progress"]


KILLED_SCRIPT = """
import torch
torch.set_num_threads(1)
from perturbscope.audit import AuditConfig
from perturbscope.experiments.reproduce import ReproduceConfig, run_reproduction
from perturbscope.experiments.store import ResultsStore
from perturbscope.train import TrainConfig
cfg = ReproduceConfig.scaled_down(source="fashion-mnist-subset", pairs=((7, 8), (0, 1)), train_images=64,
                                  audit_images=12, width=0.125, train=TrainConfig(epochs=3, batch_size=16),
                                  audit=AuditConfig(draws=20, steps=32, saturated="fail"))
run_reproduction(cfg, ResultsStore({db!r}), progress=False, threads=1)
"""


def tiny_config(**changes) -> ReproduceConfig:
    """The library twin of ``CLI`` (same hash, so the same run)."""
    base = ReproduceConfig.scaled_down(
        source="fashion-mnist-subset", pairs=PAIRS, train_images=64, audit_images=N_IMAGES, width=0.125,
        train=TrainConfig(epochs=3, batch_size=16), audit=AuditConfig(draws=20, steps=32, saturated="fail"))
    return ReproduceConfig.scaled_down(**{**base.__dict__, **changes})


def _done(db) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM units WHERE status='done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigkill_midway_then_rerun_gives_exactly_the_expected_records(tmp_path, capsys):
    db = tmp_path / "results.sqlite"
    # the first run: the library call that the CLI makes (a lighter import than the whole CLI);
    # the rerun below is the CLI command itself, and must land in the same run
    cmd = [sys.executable, "-c", KILLED_SCRIPT.format(db=str(db))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while _done(db) < 1:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = _done(db)
    assert 1 <= n_before < 4, "the sweep had to be killed in the middle"
    with ResultsStore(db) as st:
        (rid,) = st.runs()["run_id"]
        before = st.units(rid).set_index("unit_key")
        finished_before = before[before.status == "done"]["finished"].to_dict()
        recs_before = st.records(rid)

    assert main([*CLI, "--store", str(db), "--out", str(tmp_path / "tables")]) == 0  # the same command again
    printed = capsys.readouterr().out
    assert f"resumed; {4 - n_before} units run, {n_before} already done" in printed
    assert "SCALED-DOWN protocol" in printed and "Table 20" in printed and "Table 21" in printed
    assert "attack: unclipped (paper); random probe: unclipped (paper)" in printed
    assert "WARNING: Random perturbations leave [0, 1]" in printed  # Fashion-MNIST's black background
    t20, t21 = (pd.read_csv(tmp_path / "tables" / f) for f in ("table20.csv", "table21.csv"))
    assert {"k", "n", "lo", "hi", "paper_outside"} <= set(t20.columns)
    assert {"n", "ours_mean_lo", "ours_mean_hi", "paper_outside"} <= set(t21.columns)
    acc = t20[(t20["metric"] == "accuracy")]
    assert np.allclose(acc["ours"], 100 * acc["k"] / acc["n"]) and (acc["lo"] <= acc["ours"]).all()
    summ = pd.read_csv(tmp_path / "tables" / "summaries.csv")
    assert {"accuracy_k", "accuracy_n", "random_a10_k", "random_a10_n", "eps_l2_mean_lo"} <= set(summ.columns)

    with ResultsStore(db) as st:
        assert len(st.runs()) == 1
        units = st.units(rid).set_index("unit_key")
        assert (units["status"] == "done").all() and len(units) == 4
        for k, t in finished_before.items():  # nothing finished was redone
            assert units.loc[k, "finished"] == t
        recs = st.records(rid)
        n_rows = st._q("SELECT COUNT(*) FROM records WHERE run_id=?", (rid,))[0][0]
    expected = {(f"{i}-{j}", s, k) for i, j in PAIRS for s in ("train", "test") for k in range(N_IMAGES)}
    got = list(zip(recs["pair"], recs["split"], recs["index"], strict=True))
    assert len(got) == len(set(got)) == n_rows == len(expected)  # none duplicated
    assert set(got) == expected  # none missing, none extra
    pd.testing.assert_frame_equal(recs.iloc[:len(recs_before)].reset_index(drop=True), recs_before)

    # and the resumed run equals an uninterrupted one, record for record
    with ResultsStore(tmp_path / "ref.sqlite") as ref:
        out = run_reproduction(tiny_config(), ref, progress=False, threads=1)
        assert out.run_id == rid  # the CLI and the library describe the same run
        pd.testing.assert_frame_equal(ref.records(rid), recs)
        assert recs["adv_success"].any()  # the sweep measured something


def test_changed_config_starts_a_new_run_and_rerun_does_nothing(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    cfg = tiny_config(pairs=((7, 8),), audit_images=4, train_images=40, train=TrainConfig(epochs=1))
    with ResultsStore(db) as st:
        a = run_reproduction(cfg, st, progress=False, threads=1)
        assert a.created and len(a.units_run) == 2 and a.models_trained == ["7-8"]
        again = run_reproduction(cfg, st, progress=False, threads=1)
        assert (again.run_id, again.created, again.units_run, again.units_skipped) == (a.run_id, False, [], 2)
        b = run_reproduction(tiny_config(**{**cfg.__dict__, "audit": AuditConfig(draws=21, steps=32)}), st,
                             progress=False, threads=1)
        assert b.created and b.run_id != a.run_id
        runs = st.runs()
        assert runs["name"].tolist() == ["fashion-mnist", "fashion-mnist-2"]
        assert runs["units_done"].tolist() == [2, 2]
        assert len(st.records(a.run_id)) == len(st.records(b.run_id)) == 8
        assert st.run_config("fashion-mnist-2")["audit"]["draws"] == 21


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main([*CLI, "--store", str(tmp_path / "x.sqlite"), "--pairs", "7-7"]) == 2
    assert "pair" in capsys.readouterr().err
    assert main([*CLI, "--store", str(tmp_path / "x.sqlite"), "--device", "tpu"]) == 2
    with pytest.raises(ValueError, match="pair"):
        parse_pairs(["a-b"])
    assert parse_pairs(["7", "0-1"]) == ((7, 8), (0, 1))
    with pytest.raises(ValueError, match="train_images"):
        ReproduceConfig(train_images=1).validated()


def _summ(rows):
    return pd.DataFrame(rows)


def test_table20_side_by_side_on_known_inputs():
    s = _summ([
        {"pair": "7-8", "split": "train", "accuracy": 99.0, "adversarial_susceptibility": 50.0,
         "random_a1": 0.0, "random_a10": 80.0},
        {"pair": "7-8", "split": "test", "accuracy": 98.5, "adversarial_susceptibility": 55.0,
         "random_a1": math.nan, "random_a10": 90.0},
        {"pair": "2-4", "split": "test", "accuracy": 90.0, "adversarial_susceptibility": 10.0,
         "random_a1": 1.0, "random_a10": 2.0}])
    t = table20_long(s, alphas=(1, 10)).set_index(["metric", "pair", "split"])
    # the paper: 7 vs 8 accuracy 99.84 / 99.70, adversarial 53.58 / 53.01, alpha=10 84.33 / 84.58
    r = t.loc[("accuracy", "7-8", "train")]
    assert (r["ours"], r["paper"]) == (99.0, 99.84) and math.isclose(r["diff"], -0.84)
    r = t.loc[("adversarial_susceptibility", "7-8", "test")]
    assert r["paper"] == 53.01 and math.isclose(r["diff"], 1.99)
    r = t.loc[("random_a10", "7-8", "test")]
    assert r["paper"] == 84.58 and math.isclose(r["diff"], 5.42)
    r = t.loc[("random_a1", "7-8", "test")]
    assert r["paper"] == 0.0 and math.isnan(r["ours"]) and math.isnan(r["diff"])
    assert math.isnan(t.loc[("accuracy", "2-4", "test"), "paper"])  # not a pair of the paper
    assert math.isnan(t.loc[("accuracy", "2-4", "train"), "ours"])  # split not run
    text = format_table20(table20_long(s, alphas=(1, 10)))
    assert "7 vs 8" in text and "2 vs 4" in text
    lines = text.splitlines()
    assert "99.84, 99.70" in text and "-0.84, -1.20" in text and "*" not in text  # no interval: no mark
    assert "99.00" in next(ln for ln in lines if "ours train" in ln)
    assert "n/a" in text and sum(" ours train " in ln for ln in lines) == 4
    assert sum(" ours test " in ln for ln in lines) == 4 and sum(" k/n " in ln for ln in lines) == 4


def test_table20_shows_counts_intervals_and_marks_the_papers_value_outside():
    """Summaries of real records (summarize_groups): each cell our percentage with its 95%
    Clopper-Pearson interval, k/n, and * on the diff where the paper lies outside it."""
    from perturbscope.audit.summary import summarize_groups

    n = 200  # test: 180 of 200 correct -> 90.0 [84.98, 93.78] (beta quantiles); the paper's 99.70 is outside
    rec = pd.DataFrame({"pair": "7-8", "split": ["train"] * n + ["test"] * n,
                        "correct": [True] * (n + 180) + [False] * 20,
                        "adv_success": ([True] * 107 + [False] * 93) * 2,
                        "eps_l2": 2.0, "eps_l1": 50.0, "eps_linf": 0.3})
    for k in ("a1", "a10"):
        rec[f"flips_{k}"] = ([1] * 90 + [0] * 110) * 2 if k == "a10" else 0
    t = table20_long(summarize_groups(rec), alphas=(1, 10)).set_index(["metric", "pair", "split"])
    r = t.loc[("accuracy", "7-8", "test")]
    assert (r["k"], r["n"]) == (180, 200) and r["lo"] == pytest.approx(84.98, abs=0.01)
    assert r["hi"] == pytest.approx(93.78, abs=0.01) and r["paper_outside"]
    r = t.loc[("adversarial_susceptibility", "7-8", "train")]  # 107/200 = 53.5, paper 53.58: inside
    assert (r["k"], r["n"]) == (107, 200) and not r["paper_outside"]
    text = format_table20(table20_long(summarize_groups(rec), alphas=(1, 10)))
    assert "90.0 [85.0, 93.8]" in text and "200/200, 180/200" in text and "-9.70*" in text
    assert "-0.08," in text and "-0.08*" not in text
    assert "Clopper-Pearson" in text


def test_table21_side_by_side_on_known_inputs():
    s = _summ([{"pair": "0-1", "split": sp, "eps_l1_mean": 60.0, "eps_l1_sd": 30.0, "eps_l2_mean": 2.5,
                "eps_l2_sd": 1.0, "eps_linf_mean": 0.5, "eps_linf_sd": 0.2} for sp in ("train", "test")])
    t = table21_long(s).set_index(["norm", "pair", "split"])
    r = t.loc[("L2", "0-1", "test")]  # paper: 2.75 (1.15)
    assert (r["paper_mean"], r["paper_sd"]) == (2.75, 1.15)
    assert math.isclose(r["diff_mean"], -0.25) and math.isclose(r["diff_sd"], -0.15)
    r = t.loc[("L1", "0-1", "train")]  # paper: 68.18 (30.79)
    assert math.isclose(r["diff_mean"], -8.18) and math.isclose(r["diff_sd"], -0.79)
    text = format_table21(table21_long(s))
    assert "60.00 (30.00)" in text and "68.18 (30.79)" in text and "-8.18 (-0.79)" in text
    assert "Linf test" in text and "*" not in text
    s2 = s.assign(eps_l2_n=25, eps_l2_mean_lo=2.09, eps_l2_mean_hi=2.91)
    t = table21_long(s2).set_index(["norm", "pair", "split"])
    r = t.loc[("L2", "0-1", "test")]  # paper 2.75 inside [2.09, 2.91]
    assert r["n"] == 25 and not r["paper_outside"]
    text = format_table21(table21_long(s2.assign(eps_l2_mean_hi=2.6)))  # 2.75 now outside
    assert "2.50 (1.00) [2.09, 2.60]" in text and "-0.25 (-0.15)*" in text
    assert "95% interval of the mean" in text


def test_paper_tables_agree_with_the_papers_table1_medians():
    """Table 1 of the paper lists, for Fashion-MNIST, the medians over the nine pairs of Table 20."""
    t = paper_tables()["fashion-mnist"]["table20"]

    def med(node, split):
        return statistics.median(v[split] for v in node.values())

    assert len(t["accuracy"]) == 9
    assert (med(t["accuracy"], "train"), med(t["accuracy"], "test")) == (99.51, 99.4)
    adv = t["adversarial_susceptibility"]
    assert (med(adv, "train"), med(adv, "test")) == (53.58, 53.01)
    rs = t["random_susceptibility"]
    assert [(med(rs[a], "train"), med(rs[a], "test")) for a in ("2", "5", "10")] == [
        (0.07, 0.09), (10.71, 13.35), (56.84, 57.43)]
    t21 = paper_tables()["fashion-mnist"]["table21"]
    for p in t21["eps_l2"]:  # L1 >= L2 >= Linf for every mean (the row order is forced by it)
        for sp in ("train", "test"):
            l1, l2, linf = (t21[k][p][sp]["mean"] for k in ("eps_l1", "eps_l2", "eps_linf"))
            assert l1 > l2 > linf
    noise = paper_tables()["cifar10-noise"]
    assert sorted(noise) == ["13", "14", "15", "16", "17", "18"]
    assert [noise[k]["noise"] for k in sorted(noise)] == ["cube", "ball"] * 3
    assert noise["13"]["accuracy"]["0-1"] == {"train": 99.85, "test": 96.40}
    assert noise["18"]["eps_l2"]["8-9"]["test"] == {"mean": 1.43, "sd": 1.76}
    mean_test_acc = np.mean([noise["17"]["accuracy"][p]["test"] for p in noise["17"]["accuracy"]])
    assert mean_test_acc < np.mean([noise["13"]["accuracy"][p]["test"] for p in noise["13"]["accuracy"]])


def test_protocol_note_states_scaling_plainly():
    note = protocol_note(ReproduceConfig.scaled_down().to_dict())
    assert note.startswith("SCALED-DOWN") and "epochs 8 (paper: 100)" in note
    assert "draws per image and alpha 200 (paper: 2000)" in note
    full = protocol_note(ReproduceConfig.paper().to_dict())
    assert full.startswith("Paper's full protocol") and "(paper:" not in full


def test_a_failing_job_marks_its_units_failed_and_a_rerun_retries_them(tmp_path):
    cfg = tiny_config(source="fashion-mnist", pairs=((7, 8),), audit_images=4, train_images=40,
                      train=TrainConfig(epochs=1))
    with ResultsStore(tmp_path / "r.sqlite") as st:
        out = run_reproduction(cfg, st, progress=False, data_path=str(tmp_path / "no-such-dir"))
        assert out.units_run == [] and sorted(out.units_failed) == sorted(cfg.unit_keys())
        units = st.units(out.run_id)
        assert (units["status"] == "failed").all()
        assert all("training failed" in m["error"] and "no-such-dir" in m["error"] for m in units["meta"])
        assert st.pending_units(out.run_id) == cfg.unit_keys()  # retried by the next run
        assert len(st.records(out.run_id)) == 0
