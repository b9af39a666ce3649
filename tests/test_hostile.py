"""Hostile input: every class of mistake is refused before any work, on one line, naming the problem.

Each case goes through the command line (``main([...])``: exit code 2, one ``error:`` line on
stderr, no traceback, nothing written) or the Python API (one ValueError / TypeError naming the
argument and the value). Resource failures (full or read-only disk, out of memory) and a genuine
bug are covered at the end: the first are one line too, the bug keeps its traceback.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from perturbscope.audit import AuditConfig, audit
from perturbscope.cli.main import main, user_error_message
from perturbscope.models.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    check_checkpoint_task,
    load_checkpoint,
    save_checkpoint,
)
from perturbscope.models.pair_cnn import LinearBinary, PairCNN

META = {"data": "digits", "classes": [3, 8], "class_names": ["3", "8"], "input_shape": [3, 8, 8]}
FAST = ["--limit", "8", "--draws", "4", "--steps", "4", "--s-max", "4", "--no-progress"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A digits 3-vs-8 checkpoint (untrained weights: only the plumbing matters here)."""
    torch.manual_seed(0)
    return save_checkpoint(PairCNN(width=0.125, dropout=0.0), tmp_path_factory.mktemp("ck") / "m.pt", META)


def _payload(path):
    return torch.load(path, weights_only=True)


def _cli(argv, capsys):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _refused(argv, capsys, *words, out=None):
    """``argv`` exits 2 with one error line holding every word, and writes nothing at ``out``."""
    rc, _, err = _cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and "error:" in lines[0], err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    if out is not None:
        assert not os.path.exists(out), f"{out} was written"
    return lines[0]


def _audit(ckpt, out, *extra):
    return ["audit", "--checkpoint", ckpt, "--data", "digits", *FAST, *extra, "--out", out]


# --------------------------------------------------------------------------------------------
# numbers: finite and in range, checked while parsing
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, words", [
    ("--draws", "-5", ["--draws", "-5"]), ("--draws", "0", ["--draws", "got 0"]),
    ("--draws", str(10**12), ["--draws", "100000000"]),
    ("--alphas", "0", ["--alphas", "got 0"]), ("--alphas", "-1", ["--alphas", "-1"]),
    ("--alphas", "nan", ["--alphas", "finite", "nan"]), ("--alphas", "inf", ["--alphas", "inf"]),
    ("--alphas", "1e300", ["--alphas", "10000"]),
    ("--s-max", "nan", ["--s-max", "nan"]), ("--s-max", "1e308", ["--s-max", "1000000"]),
    ("--steps", str(10**12), ["--steps", "1000000"]), ("--refine-tol", "-1", ["--refine-tol", "-1"]),
    ("--forward-batch", "0", ["--forward-batch", "0"]),
    ("--forward-batch", str(10**12), ["--forward-batch", "1048576"]),
    ("--threads", "-1", ["--threads", "-1"]), ("--threads", "100000", ["--threads", "1024"]),
    ("--limit", "0", ["--limit", "0"]), ("--probe-seed", "-3", ["--probe-seed", "-3"]),
    ("--saturated", "maybe", ["--saturated", "maybe"]), ("--draws", "3.5", ["--draws", "3.5"]),
])
def test_audit_numbers_are_checked_before_any_work(ckpt, tmp_path, capsys, flag, value, words):
    out = tmp_path / "o"
    _refused(_audit(ckpt, out, flag, value), capsys, *words, out=out)


@pytest.mark.parametrize("argv, words", [
    (["--lr", "nan"], ["--lr", "nan"]), (["--lr", "inf"], ["--lr", "inf"]), (["--lr", "0"], ["--lr"]),
    (["--width", "1000"], ["--width", "16"]), (["--epochs", "0"], ["--epochs"]),
    (["--batch-size", "-1"], ["--batch-size"]), (["--dropout", "1.5"], ["--dropout"]),
])
def test_train_numbers_are_checked(tmp_path, capsys, argv, words):
    out = tmp_path / "m.pt"
    _refused(["train", "--data", "digits", "--classes", "3", "8", *argv, "--out", out], capsys, *words,
             out=out)


@pytest.mark.parametrize("argv, words", [
    (["--draws", "-5"], ["--draws"]), (["--alphas", "nan"], ["--alphas", "nan"]),
    (["--steps", "0"], ["--steps"]), (["--lr", "nan"], ["--lr"]), (["--saturated", "x"], ["--saturated"]),
])
def test_reproduce_numbers_are_checked(tmp_path, capsys, argv, words):
    store = tmp_path / "s.sqlite"
    _refused(["reproduce", "fashion-mnist", "--data", "fashion-mnist-subset", *argv, "--store", store],
             capsys, *words, out=store)


def test_api_numbers(tmp_path):
    m = LinearBinary(torch.ones(16))
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    for cfg, words in [(AuditConfig(batch_size=-1), "batch_size"), (AuditConfig(batch_size=0), "batch_size"),
                       (AuditConfig(alphas=(float("nan"),)), "alphas"),
                       (AuditConfig(s_max=float("nan")), "s_max"),
                       (AuditConfig(draws=0), "draws"), (AuditConfig(draws=2.0), "draws"),
                       (AuditConfig(steps=10**9), "steps"), (AuditConfig(bounds=(0, float("inf"))), "bounds"),
                       (AuditConfig(saturated="maybe"), "saturated")]:
        with pytest.raises((ValueError, TypeError), match=words):
            audit(m, x, y, config=cfg, progress=False)
    with pytest.raises(ValueError, match="eps must be a finite"):
        audit(m, x, y, eps=torch.tensor([1.0, float("inf"), 1.0, 1.0]), progress=False)
    with pytest.raises(ValueError, match="perturbations has 1 rows"):
        p = torch.zeros_like(x)
        p[2, 0, 0, 0] = float("inf")
        audit(m, x, y, perturbations=p, progress=False)


# --------------------------------------------------------------------------------------------
# checkpoints: what the file is, its config before building, its weights, its task
# --------------------------------------------------------------------------------------------

def _broken(tmp_path, ckpt, kind):
    path = tmp_path / f"{kind}.pt"
    p = _payload(ckpt)
    if kind in ("nan", "inf"):
        p["state_dict"]["head.2.bias"] = torch.tensor([float(kind)])
    elif kind == "huge":
        p["config"]["width"] = 4000.0
    elif kind == "channels":
        p["config"]["in_channels"] = -3
    elif kind == "extra":
        p["config"]["evil"] = 1
    elif kind == "text":
        p["config"]["width"] = "wide"
    elif kind == "shape":
        p["state_dict"]["head.2.bias"] = torch.zeros(5)
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = ckpt.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "directory":
        path.mkdir()
    elif kind == "foreign":
        torch.save({"weight": torch.ones(2)}, path)
    elif kind == "code":
        torch.save({"format": "perturbscope-checkpoint", "x": Evil()}, path)
    else:
        torch.save(p, path)
    return path


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("kind, words", [
    ("nan", ["NaN or infinite weights", "head.2.bias"]), ("inf", ["NaN or infinite weights"]),
    ("huge", ["width", "4000"]), ("channels", ["in_channels", "-3"]), ("extra", ["evil"]),
    ("text", ["width", "wide"]), ("shape", ["do not fit", "head.2.bias"]),
    ("random", ["not a readable torch checkpoint", "zip archive"]), ("empty", ["empty"]),
    ("truncated", ["damaged"]),
    ("directory", ["directory"]), ("foreign", ["not a perturbscope checkpoint"]),
    ("code", ["pickled objects or code"]),
])
def test_bad_checkpoints_are_named_for_what_they_are(tmp_path, ckpt, capsys, kind, words):
    path = _broken(tmp_path, ckpt, kind)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    for w in words:
        assert w in str(info.value)
    out = tmp_path / "o"
    _refused(_audit(path, out), capsys, *words[:1], out=out)


def test_a_huge_config_is_refused_before_anything_is_built(tmp_path, ckpt, monkeypatch):
    built = []
    real = PairCNN.__init__

    def spy(self, *a, **kw):
        built.append(kw)
        real(self, *a, **kw)

    monkeypatch.setattr(PairCNN, "__init__", spy)
    with pytest.raises(CheckpointError, match="width"):
        load_checkpoint(_broken(tmp_path, ckpt, "huge"))
    assert built == []
    model, _ = load_checkpoint(ckpt)  # a good one is built on the meta device first, then filled
    assert not any(t.is_meta for t in model.state_dict().values())


def test_universal_refuses_a_nan_checkpoint(tmp_path, ckpt, capsys):
    out = tmp_path / "u"
    _refused(["universal", "--checkpoint", _broken(tmp_path, ckpt, "nan"), "--data", "digits", "--xi", "0.1",
              "--limit", "8", "--normals", "0", "--no-progress", "--out", out], capsys, "NaN", out=out)


@pytest.mark.parametrize("extra, words", [
    (["--data", "fashion-mnist-subset"], ["trained on digits", "fashion-mnist-subset", "3x8x8", "--force"]),
    (["--classes", "0", "1"], ["trained on classes 3 8", "0 1"]),
    (["--classes", "8", "3"], ["swap"]),
])
def test_a_checkpoint_on_other_data_is_refused(tmp_path, ckpt, capsys, extra, words):
    out = tmp_path / "o"
    argv = ["audit", "--checkpoint", ckpt, *FAST, *(["--data", "digits"] if "--data" not in extra else []),
            *extra, "--out", out]
    _refused(argv, capsys, *words, out=out)


def test_forced_mismatch_is_printed_and_recorded(tmp_path, ckpt, capsys):
    out = tmp_path / "o"
    rc, printed, err = _cli(_audit(ckpt, out, "--classes", "8", "3", "--force"), capsys)
    assert rc == 0, err
    assert "WARNING" in err and "swap" in err
    assert "WARNING: The checkpoint was used on data it was not trained on" in printed
    doc = json.loads((out / "summary.json").read_text())
    assert any("swap" in m for m in doc["meta"]["forced_mismatch"])
    assert any("not trained on" in w for w in doc["warnings"])


def test_checkpoint_task_api():
    assert check_checkpoint_task(META, data="digits", classes=[3, 8], input_shape=(3, 8, 8)) == []
    with pytest.raises(CheckpointMismatchError, match="fashion-mnist"):
        check_checkpoint_task(META, data="fashion-mnist")
    found = check_checkpoint_task({"data": "fashion-mnist-subset", "classes": [7, 8]}, data="fashion-mnist",
                                  classes=[8, 7], input_shape=(3, 8, 8), force=True)
    assert len(found) == 2 and any("swap" in f for f in found) and any("3x28x28" in f for f in found)


# --------------------------------------------------------------------------------------------
# models, inputs and labels (API): shape, dtype, batch size, range, finiteness, classes
# --------------------------------------------------------------------------------------------

class Fn(nn.Module):
    def __init__(self, fn, kind="logit"):
        super().__init__()
        self.fn, self.output_kind, self.w = fn, kind, nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.fn(x) * self.w


class Conv(nn.Module):
    output_kind = "logit"

    def __init__(self):
        super().__init__()
        self.c, self.l = nn.Conv2d(1, 2, 3), nn.Linear(2, 1)

    def forward(self, x):
        return self.l(self.c(x).amax((2, 3)))[:, 0]


X, Y = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0, 1, 0, 1])
CFG = AuditConfig(draws=4, steps=8)


@pytest.mark.parametrize("model, x, y, words", [
    (Fn(lambda x: x.flatten(1)[:1, 0]), X, Y, "1 rows for a batch of 6"),  # wrong batch size
    (Fn(lambda x: x.flatten(1)[:, 0].sum().expand(1)), X, Y, "rows for a batch"),
    (Fn(lambda x: x.flatten(1)[:, 0] * float("nan")), X, Y, "NaN or infinite"),
    (Fn(lambda x: (x.flatten(1)[:, 0] - 0.5) * 10, "sigmoid"), X, Y, "outside [0, 1]"),  # logits as sigmoid
    (Fn(lambda x: x.flatten(1)[:, :1], "logits"), X, Y, "K >= 2"),
    (Fn(lambda x: torch.zeros(x.shape[0])), X, Y, "does not depend on its input"),  # constant
    (LinearBinary(torch.ones(16)), X, torch.tensor([0, 1, 5, 1, 0, 1]), "labels >= 2"),
    (LinearBinary(torch.ones(16)), X, torch.tensor([0, 1, -1, 1, 0, 1]), "negative"),
    (LinearBinary(torch.ones(16)), X, Y.float(), "integer class labels"),
    (LinearBinary(torch.ones(16)), X, Y[:3], "shape (6,)"),
    (LinearBinary(torch.ones(16)), X.numpy(), Y, "torch.Tensor"),
    (LinearBinary(torch.ones(16)), (X * 255).to(torch.uint8), Y, "floating-point"),
    (LinearBinary(torch.ones(16)), X * 255, Y, "outside the declared bounds"),
    (LinearBinary(torch.ones(16)), X.masked_fill(X > 0.9, float("nan")), Y, "NaN or infinite"),
    (LinearBinary(torch.ones(16)), X[:0], Y[:0], "empty"),
    (Conv(), X[:, 0], Y, "unsqueeze(1)"),  # (N, H, W) for a conv model
    (Conv(), X[0], Y[:1], "unsqueeze(0)"),  # one (C, H, W) image
    (Conv(), X.repeat(1, 3, 1, 1), Y, "channels"),
    (LinearBinary(torch.ones(16)).to("meta"), X, Y, "meta device"),
    (nn.Sequential(nn.Flatten(), nn.Linear(16, 1)), X, Y, "output_kind"),
])
def test_models_inputs_and_labels_are_checked(model, x, y, words):
    with pytest.raises((ValueError, TypeError), match=words.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        audit(model, x, y, config=CFG, progress=False)


def test_a_batch_that_cannot_fit_is_refused_before_work(monkeypatch):
    import perturbscope.validation as v

    monkeypatch.setattr(v, "available_memory", lambda device: 10**4)
    with pytest.raises(ValueError, match="lower batch_size"):
        audit(LinearBinary(torch.ones(16)), X, Y, config=AuditConfig(batch_size=4096), progress=False)


# --------------------------------------------------------------------------------------------
# the paper's zero gradient: a warning, not silence
# --------------------------------------------------------------------------------------------

def test_saturated_gradients_are_counted_and_warned():
    model = LinearBinary(torch.ones(16), bias=-8.0, scale=50.0)  # |z| ~ 200: sigmoid is exactly 0 or 1
    x = 0.1 * torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x[:4] += 0.2  # sum ~ 4: z ~ -200 (class 0), distance 1 to the plane
    x[4:] += 0.7  # sum ~ 12: z ~ +200 (class 1)
    y = (model(x) >= 0.5).long()
    assert y.tolist() == [0] * 4 + [1] * 4
    assert AuditConfig().saturated == "logit"
    res = audit(model, x, y, config=AuditConfig(draws=4, steps=64, s_max=40), progress=False)
    s = res.summary["all"]
    assert res.records["gradient_fallback"].all() and not res.records["zero_gradient"].any()
    assert s["n_gradient_fallback"] == 8 and s["n_zero_gradient"] == 0
    assert s["adversarial_susceptibility"] == 100
    assert any("underflowed to zero" in w for w in res.warnings())
    literal = audit(model, x, y, config=AuditConfig(draws=4, steps=64, s_max=40, saturated="fail"),
                    progress=False)
    ls = literal.summary["all"]
    assert ls["n_zero_gradient"] == 8 and ls["adversarial_susceptibility"] == 0 and ls["n_attack_failed"] == 8
    text = literal.table()
    assert "No usable gradient" in text and "--saturated logit" in text
    assert "unflipped" in text or "flipped at most" in text


def test_an_attack_that_misses_a_quarter_is_warned():
    model = LinearBinary(torch.ones(16), bias=-8.0)  # distance to the plane = |sum(x) - 8| / 4
    dist = torch.tensor([0.5, -0.5, 0.5, -0.5, 0.5, 1.5, -1.5, 1.5])
    x = (0.5 + dist / 4).view(-1, 1, 1, 1).expand(8, 1, 4, 4).contiguous()
    y = (model(x) >= 0.5).long()
    res = audit(model, x, y, config=AuditConfig(draws=4, steps=32, s_max=1.0), progress=False)
    assert res.summary["all"]["n_attack_failed"] == 3
    (w,) = [w for w in res.warnings() if "did not flip" in w]
    assert "more than 25%" in w and "3 of 8" in w and "s_max = 1" in w


def test_reproduce_keeps_the_papers_rule():
    from perturbscope.experiments.reproduce_config import ReproduceConfig

    assert ReproduceConfig.paper().audit.saturated == "fail"
    assert ReproduceConfig.scaled_down().audit.saturated == "fail"


# --------------------------------------------------------------------------------------------
# output paths, stores, network
# --------------------------------------------------------------------------------------------

def test_output_paths_are_checked_before_any_work(tmp_path, ckpt, capsys):
    afile = tmp_path / "a.txt"
    afile.write_text("keep")
    _refused(_audit(ckpt, afile), capsys, "existing file")
    assert afile.read_text() == "keep"
    _refused(_audit(ckpt, ""), capsys, "empty")
    _refused(_audit(ckpt, afile / "sub"), capsys, "is a file")
    _refused(["train", "--data", "digits", "--classes", "3", "8", "--out", tmp_path], capsys, "folder")
    _refused(["report", "x", "--store", tmp_path / "s.sqlite", "--out", tmp_path / "r.txt"], capsys, ".html")
    _refused(["report", "x", "--store", "", "--out", tmp_path / "r.html"], capsys, "--store is empty")
    _refused(["report", "", "--store", afile, "--out", tmp_path / "r.html"], capsys, "results store")
    for export, words in (("x.xlsx", [".xlsx", ".csv"]), ("", ["empty"]), (str(tmp_path), ["folder"])):
        _refused(["reproduce", "fashion-mnist", "--store", tmp_path / "s.sqlite", "--export", export], capsys,
                 *words, out=tmp_path / "s.sqlite")


def _store_with_a_run(path):
    from perturbscope.experiments.store import ResultsStore

    recs = pd.DataFrame({"index": np.arange(50), "correct": True, "adv_success": True, "flips_a1": 1,
                         "eps_l2": 0.5})
    with ResultsStore(path) as st:
        rid, _ = st.open_run("r", {"audit": {"alphas": [1.0]}})
        st.plan_units(rid, ["pair=0-1/split=test"])
        st.commit_unit(rid, "pair=0-1/split=test", recs)
    return rid


def test_stores_foreign_damaged_or_edited_are_refused(tmp_path, capsys):
    from perturbscope.experiments.store import ResultsStore, StoreError

    foreign = tmp_path / "f.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE mine (x)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    _refused(["reproduce", "fashion-mnist", "--data", "fashion-mnist-subset", "--store", foreign], capsys,
             "not a perturbscope results store")
    _refused(["report", "x", "--store", foreign, "--out", tmp_path / "r.html"], capsys, "not a perturbscope",
             out=tmp_path / "r.html")
    assert foreign.read_bytes() == before
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(np.random.default_rng(1).bytes(8192))
    _refused(["report", "x", "--store", junk, "--out", tmp_path / "r.html"], capsys, "not a perturbscope")
    # records deleted by hand: the unit no longer counts as done, reading it says so
    edited = tmp_path / "e.sqlite"
    _store_with_a_run(edited)
    con = sqlite3.connect(edited)
    con.execute("DELETE FROM records WHERE image_index < 5")
    con.commit()
    con.close()
    with ResultsStore(edited, read_only=True) as st, pytest.raises(StoreError, match="do not match"):
        st.records("r")
    # a damaged page
    broken = tmp_path / "b.sqlite"
    _store_with_a_run(broken)
    data = bytearray(broken.read_bytes())
    data[4096:] = np.random.default_rng(2).bytes(len(data) - 4096)  # every page but the schema's
    broken.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged|not a perturbscope"):
        with ResultsStore(broken, read_only=True) as st:
            st.records("r")


def test_export_suffix_decides_the_format(tmp_path):
    from perturbscope.experiments.store import ResultsStore

    path = tmp_path / "s.sqlite"
    _store_with_a_run(path)
    with ResultsStore(path, read_only=True) as st:
        pq = st.export("r", tmp_path / "UP.PARQUET")
        assert pq.read_bytes()[:4] == b"PAR1"
        with pytest.raises(ValueError, match="xlsx"):
            st.export("r", tmp_path / "x.xlsx")
        with pytest.raises(ValueError, match="directory|cannot tell"):
            st.export("r", tmp_path)
    assert not (tmp_path / "x.xlsx").exists()


def test_an_unreachable_ray_cluster_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    line = _refused(["reproduce", "fashion-mnist", "--data", "fashion-mnist-subset", "--store",
                     tmp_path / "s.sqlite", "--executor", "ray", "--ray-address", "127.0.0.1:1"], capsys,
                    "ray", out=tmp_path / "s.sqlite")
    assert "127.0.0.1:1" in line


# --------------------------------------------------------------------------------------------
# resources: full or read-only disk, permissions, memory; training that diverges
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("exc, words", [
    (OSError(errno.ENOSPC, "No space left on device"), ["No space left", "nothing half-written"]),
    (OSError(errno.EROFS, "Read-only file system"), ["Read-only"]),
    (PermissionError(errno.EACCES, "Permission denied"), ["Permission denied"]),
])
def test_a_failing_disk_leaves_nothing_half_written(tmp_path, ckpt, capsys, monkeypatch, exc, words):
    import perturbscope.fileio as fio

    def refuse(src, dst):
        raise exc

    monkeypatch.setattr(fio.os, "replace", refuse)
    out = tmp_path / "o"
    _refused(_audit(ckpt, out), capsys, *words)
    assert not out.exists() or not [p for p in out.iterdir()], list(out.iterdir())


def test_out_of_memory_is_one_line(tmp_path, ckpt, capsys, monkeypatch):
    import perturbscope.audit.run as run

    def boom(*a, **kw):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(run, "audit_attack", boom)
    out = tmp_path / "o"
    _refused(_audit(ckpt, out), capsys, "out of memory", "--forward-batch", out=out)


def test_diverging_training_saves_nothing(tmp_path, capsys):
    out = tmp_path / "m.pt"
    _refused(["train", "--data", "digits", "--classes", "3", "8", "--width", "0.125", "--epochs", "2",
              "--lr", "1e30", "--no-progress", "--out", out], capsys, "diverged", "learning rate", out=out)


def test_a_genuine_bug_keeps_its_traceback():
    try:
        np.ones(2).reshape(3)
    except ValueError as exc:
        assert user_error_message(exc) is None
    from perturbscope.validation import check_int

    try:
        check_int("n", -1, minimum=0)
    except ValueError as exc:
        assert user_error_message(exc) == "n must be an int >= 0, got -1"
    assert user_error_message(OSError(errno.ENOSPC, "No space left on device", "x.csv")).startswith(
        "No space left on device: x.csv")
    assert user_error_message(KeyError("k")) is None


def test_checksum_hint_names_the_command_line_flag():
    from perturbscope.data import fashion_mnist

    assert "--no-verify" in fashion_mnist.SKIP_VERIFY_HINT


def test_normalisation_with_the_wrong_number_of_channels_is_named() -> None:
    """--normalize with 2 values for 3-channel inputs: one message naming the normalisation, not a
    broadcasting error from inside torch; a single value for every channel stays allowed."""
    from perturbscope.models import Classifier

    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.rand(4, 3, 2, 2)
    clf = Classifier(net, "logits", mean=(0.5, 0.5), std=(0.2, 0.2))
    with pytest.raises(ValueError, match="normalisation has 2 values per channel.*3 channels"):
        clf.predict(x)
    assert Classifier(net, "logits", mean=(0.5,), std=(0.2,)).predict(x).shape == (4,)
