"""``perturbscope theory point|two-balls|half-balls``: table, PNG, CSV and usage errors."""

from __future__ import annotations

import pandas as pd
import pytest

from perturbscope.cli.main import main
from perturbscope.theory import two_balls as tb

FAST = ["--dims", "2", "50", "--samples", "3000", "--curve-points", "4", "--no-progress"]


@pytest.mark.parametrize("model", ["point", "two-balls", "half-balls"])
def test_theory_command_prints_table_and_writes_png(model, tmp_path, capsys):
    png, csv = tmp_path / f"{model}.png", tmp_path / f"{model}.csv"
    rc = main(["theory", model, *FAST, "--out", str(png), "--csv", str(csv)])
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "bound" in out and "exact" in out and str(png) in out
    df = pd.read_csv(csv)
    assert set(df["n"]) == {2, 50} and (df["trials"] == 3000).all()
    assert ((df["ci_low"] <= df["mc"]) & (df["mc"] <= df["ci_high"])).all()


def test_two_balls_table_values_are_the_exact_ones(tmp_path):
    csv = tmp_path / "t.csv"
    assert main(["theory", "two-balls", *FAST, "--radii", "1", "--deltas", "0.3", "--engine", "both",
                 "--out", str(tmp_path / "t.png"), "--csv", str(csv)]) == 0
    df = pd.read_csv(csv)
    row = df[(df["theorem"] == "Thm 6") & (df["n"] == 50)].iloc[0]
    assert row["exact"] == pytest.approx(tb.flip_exact(50, 0.1, 1.0), rel=1e-12)
    assert set(df["engine"]) == {"full", "coord"}


def test_half_balls_prints_theorem20_limits(tmp_path, capsys):
    assert main(["theory", "half-balls", *FAST, "--eps", "0", "--radii", "1",
                 "--out", str(tmp_path / "h.png")]) == 0
    out = capsys.readouterr().out
    assert "arctan(r)/pi = 0.250000" in out


@pytest.mark.parametrize("argv", [
    ["theory", "point", "--dims", "0"],
    ["theory", "point", "--radii", "-1"],
    ["theory", "point", "--eps", "nan"],
    ["theory", "two-balls", "--eps", "1.5"],
    ["theory", "two-balls", "--A", "0.5"],
    ["theory", "half-balls", "--samples", "-5"],
    ["theory", "two-balls", "--engine", "full", "--dims", "1000000", "--samples", "100000"],
])
def test_bad_inputs_exit_with_code_2(argv, tmp_path, capsys):
    rc = main([*argv, "--curve-points", "3", "--no-progress", "--out", str(tmp_path / "x.png")])
    assert rc == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
