"""``perturbscope harmless``: reports, files and exit codes."""

from __future__ import annotations

import json

from perturbscope.cli.main import main
from perturbscope.models import MLP, save_checkpoint


def test_cli_reports_injective_paircnn(tmp_path, capsys):
    rc = main(["harmless", "--arch", "paircnn", "--width", "0.125", "--out", str(tmp_path), "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "INJECTIVE" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["space"]["injective"] is True
    assert summary["space"]["harmless_dim"] == 0 and summary["space"]["rank"] == 2352


def test_cli_checkpoint_with_data_writes_pngs_and_numbers(tmp_path, capsys):
    model = MLP(3 * 28 * 28, hidden=(16,))
    ckpt = save_checkpoint(model, tmp_path / "mlp.pt", meta={"classes": [7, 9]})
    out_dir = tmp_path / "out"
    args = (
        f"harmless --checkpoint {ckpt} --limit 20 --images 3 --sizes 1 1e4 --attack-images 3 "
        f"--privacy-norm 50 --out {out_dir} --threads 1 --all-layers --fingerprint"
    )
    rc = main(args.split())  # no --classes: the checkpoint's meta gives 7 vs 9
    assert rc == 0
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["space"]["harmless_dim"] == 2352 - 16
    assert all(c["all_harmless"] for c in summary["verification"])
    assert all(c["min_random_score_change"] > c["max_score_tolerance"] for c in summary["verification"])
    assert summary["adversarial_split"]["max_harmless_part_score_change"] < 1e-4
    assert summary["privacy"]["agreement_harmless"] == 1.0
    assert summary["privacy"]["accuracy_clean"] is not None  # labels came from the checkpoint's task
    assert [r["harmless_dim"] for r in summary["layers"]] == [2352 - 16, 15]  # Linear(16->1) reads 16
    fp = summary["fingerprint"]["suspects"]
    assert fp["exact copy"]["match"] is True and fp["exact copy"]["max_score"] < 1e-10
    assert fp["copy, first-layer weights + 1e-3 sd noise"]["match"] is False
    for name in ("harmless_samples.png", "privacy_panel.png"):
        data = (out_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert "harmless dim exactly 2336" in capsys.readouterr().out


def test_cli_bad_input_exit_code_2(tmp_path, capsys):
    assert main(["harmless", "--out", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["harmless", "--arch", "mlp", "--sizes", "-1", "--out", str(tmp_path)]) == 2
    assert main(["harmless", "--arch", "mlp", "--method", "nope", "--out", str(tmp_path)]) == 2
    assert main(["harmless", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
