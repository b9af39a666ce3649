"""The train, audit and demo commands end to end on tiny settings, and their usage errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from perturbscope.cli.main import main
from perturbscope.models.checkpoint import load_checkpoint

TINY_TRAIN = ["--data", "digits", "--classes", "3", "8", "--width", "0.25", "--epochs", "30",
              "--lr", "0.1", "--batch-size", "32", "--dropout", "0", "--no-progress"]
TINY_AUDIT = ["--draws", "64", "--steps", "32", "--s-max", "6", "--limit", "40", "--no-progress"]


def _reject(name: str):
    raise AssertionError(f"summary.json is not strict JSON: {name}")


def test_train_then_audit_writes_consistent_outputs(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    assert main(["train", *TINY_TRAIN, "--out", str(ckpt)]) == 0
    model, meta = load_checkpoint(ckpt)
    assert meta["classes"] == [3, 8] and meta["init"] == "glorot"
    assert 0.0 <= meta["accuracy"]["test"] <= 100.0
    out = tmp_path / "audit"
    assert main(["audit", "--checkpoint", str(ckpt), "--data", "digits", *TINY_AUDIT, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "adversarial susceptibility" in printed and "random susceptibility a=10" in printed
    records = pd.read_csv(out / "records.csv")
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_reject)["summary"]
    assert set(records["split"]) == {"train", "test"}
    # the summary is recomputed from the saved records, not a separate code path
    test = records[records["split"] == "test"]
    assert summary["test"]["accuracy"] == pytest.approx(100.0 * test["correct"].mean())
    assert (out / "eps_vs_flip_rate.png").stat().st_size > 1000
    # the checkpoint's classes are used when --classes is not given, and they are the digits 3 and 8
    assert records["label"].isin([0, 1]).all()
    assert isinstance(model, torch.nn.Module)
    assert meta["accuracy"]["test"] > 80.0  # digits 3 vs 8 are easy: a collapsed model would sit at 50


def test_demo_runs_on_bundled_data(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--epochs", "2", "--width", "0.125", "--limit", "20",
               "--draws", "32", "--steps", "32", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "(paper eqs 6-8)" in printed
    for name in ("model.pt", "records.csv", "summary.json", "eps_vs_flip_rate.png"):
        assert (out / name).is_file(), name


@pytest.mark.parametrize("argv, words", [
    (["audit", "--checkpoint", "missing.pt", "--out", "o"], "missing.pt"),
    (["train", "--classes", "3", "3", "--data", "digits", "--out", "x.pt"], "3"),
    (["train", "--classes", "3", "12", "--data", "digits", "--out", "x.pt"], "12"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and words in err
    assert not (tmp_path / "x.pt").exists()


def test_not_a_checkpoint_is_refused(tmp_path, capsys):
    bad = tmp_path / "notes.pt"
    bad.write_text("these are not weights")
    assert main(["audit", "--checkpoint", str(bad), "--classes", "3", "8", "--data", "digits",
                 "--out", str(tmp_path / "o")]) == 2
    assert "notes.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_python_dash_m_maps_usage_errors_to_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "perturbscope", "audit", "--checkpoint",
                           str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "none.pt" in proc.stderr
