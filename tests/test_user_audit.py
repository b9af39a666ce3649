"""Your own model and your own data from the command line, streamed, equal to the in-memory API;
perturbations computed elsewhere, re-checked; the streamed audit equals the in-memory one."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from perturbscope.audit import AuditConfig, audit
from perturbscope.audit.stream import GroupFiles, audit_stream, typed_records
from perturbscope.cli.main import main
from perturbscope.data.sources import SOURCE_NAMES, open_source, task_view
from perturbscope.models.classifier import Classifier
from perturbscope.models.factory import build_model, load_weights

NET = '''
import torch
from torch import nn


def make_net(classes: int = 3, hidden: int = 12):
    """A tiny conv net on 3 x 8 x 8 images, (N, classes) logits."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class Plane(nn.Module):
    """sigmoid(<w, x> + b) on flattened 3 x 4 x 4 inputs: the exact distance to the boundary is known."""

    output_kind = "sigmoid"

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = nn.Parameter(torch.randn(48, generator=g, dtype=torch.float64).float())
        self.b = nn.Parameter(torch.zeros(()))

    def logit(self, x):
        return x.reshape(x.shape[0], -1) @ self.w + self.b - 0.5 * self.w.sum()

    def forward(self, x):
        return torch.sigmoid(self.logit(x))
'''

AUDIT = ["--draws", "40", "--steps", "32", "--s-max", "3", "--forward-batch", "4", "--no-progress"]


@pytest.fixture()
def netfile(tmp_path):
    f = tmp_path / "usernets" / "nets.py"
    f.parent.mkdir()
    f.write_text(textwrap.dedent(NET))
    return f


@pytest.fixture()
def weights(netfile, tmp_path):
    """Weights of make_net(classes=3) in a file (a plain state dict)."""
    model = build_model(f"{netfile}:make_net", {"classes": 3})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return path


def _user_model(netfile, weights) -> Classifier:
    module = load_weights(build_model(f"{netfile}:make_net", {"classes": 3}), weights).eval()
    return Classifier(module, "logits")


def _image_folder(root, model: Classifier, n: int = 22, seed: int = 0):
    """PNG images in one sub-folder per class, labelled mostly as the model predicts them."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    with torch.no_grad():
        pred = model.predict(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255).numpy()
    labels = pred.copy()
    labels[::4] = (labels[::4] + 1) % 3  # some misclassified images
    for k, (img, c) in enumerate(zip(imgs, labels, strict=True)):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"img{k:03d}.png")
    return root


def test_source_names_of_the_cli_agree_with_the_registry():
    from perturbscope.cli.options import OUTPUT_CHOICES, SOURCE_CHOICES
    from perturbscope.models.classifier import OUTPUT_KINDS

    assert set(SOURCE_CHOICES) == set(SOURCE_NAMES)
    assert set(OUTPUT_CHOICES) == set(OUTPUT_KINDS)


@pytest.mark.parametrize("attack", ["line-search", "best"])
def test_cli_audits_a_model_from_a_file_on_a_streamed_folder_as_the_api_does(netfile, weights, tmp_path,
                                                                               capsys, attack):
    clf = _user_model(netfile, weights)
    folder = _image_folder(tmp_path / "images", clf)
    out = tmp_path / "out"
    argv = ["audit", "--model", f"{netfile}:make_net", "--model-kwargs", '{"classes": 3}', "--weights",
            str(weights), "--output", "logits", "--data", "folder", "--data-path", str(folder), "--stream",
            "--group-size", "8", "--attack", attack, *AUDIT, "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "streamed all in groups of 8 images" in printed and "labels source" in printed
    got = typed_records(pd.read_csv(out / "records.csv"))

    # the same images and seed through the in-memory API
    ds = open_source("folder", None, path=folder)
    x, y = ds.batch(np.arange(len(ds)))
    ref = audit(clf, x, y, config=AuditConfig(draws=40, steps=32, s_max=3, batch_size=4, attack=attack),
                split="all", progress=False).records
    pd.testing.assert_frame_equal(got, typed_records(ref))
    assert got["correct"].sum() < len(got) and got["adv_success"].any()  # both kinds of image audited
    assert sorted((out / "stream" / "all").glob("group-*.jsonl"))[-1].name == "group-00002.jsonl"
    meta = json.loads((out / "audit_meta.json").read_text())
    assert meta["streamed"] == ["all"] and meta["data"]["labels"] == "source"
    assert len(meta["fingerprint"]["weights_sha256"]) == 64

    # an interrupted run (one group's file lost) resumes and gives the same records
    (out / "stream" / "all" / "group-00001.jsonl").unlink()
    assert main(argv) == 0
    pd.testing.assert_frame_equal(typed_records(pd.read_csv(out / "records.csv")), got)
    # another setting in the same folder is refused instead of mixing two audits
    assert main([*argv[:-2], "--probe-seed", "5", "--out", str(out)]) == 2
    assert "another audit" in capsys.readouterr().err


def test_cli_pair_of_a_multiclass_model_keeps_or_relabels_its_classes(netfile, weights, tmp_path, capsys):
    clf = _user_model(netfile, weights)
    folder = _image_folder(tmp_path / "images", clf)
    base = ["audit", "--model", f"{netfile}:make_net", "--weights", str(weights), "--data", "folder",
            "--data-path", str(folder), "--classes", "class0", "class2", *AUDIT]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "give --output logits" in capsys.readouterr().err
    base += ["--output", "logits"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0  # auto: 3 logits = 3 classes: source labels
    rec = pd.read_csv(tmp_path / "a" / "records.csv")
    assert set(rec["label"]) <= {0, 2} and 2 in set(rec["label"])
    assert main([*base, "--labels", "task", "--out", str(tmp_path / "b")]) == 0
    assert set(pd.read_csv(tmp_path / "b" / "records.csv")["label"]) <= {0, 1}
    # normalisation inside the classifier: the same numbers as the API's Classifier(mean, std)
    assert main([*base, "--normalize", "0.5,0.4,0.3", "0.25,0.2,0.3", "--out", str(tmp_path / "n")]) == 0
    meta = json.loads((tmp_path / "n" / "audit_meta.json").read_text())
    assert meta["fingerprint"]["normalization"] == [[0.5, 0.4, 0.3], [0.25, 0.2, 0.3]]
    normed = Classifier(clf.module, "logits", mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))
    view = task_view(open_source("folder", None, path=folder), ("class0", "class2"), labels="source")
    x, y = view.batch(np.arange(len(view)))
    ref = audit(normed, x, y, config=AuditConfig(draws=40, steps=32, s_max=3, batch_size=4), split="all",
                progress=False).records
    got = typed_records(pd.read_csv(tmp_path / "n" / "records.csv"))
    pd.testing.assert_frame_equal(got, typed_records(ref))
    capsys.readouterr()
    # a binary model needs a pair; an option the source does not take is named
    assert main(["audit", "--model", "paper-gtsrb", "--data", "folder", "--data-path", str(folder), *AUDIT,
                 "--out", str(tmp_path / "c")]) == 2
    assert "--classes I J" in capsys.readouterr().err
    assert main([*base, "--layout", "NHWC", "--out", str(tmp_path / "d")]) == 2
    assert "--layout applies to" in capsys.readouterr().err
    # weights holding pickled code are refused before anything runs
    bad = tmp_path / "bad.pt"
    torch.save({"model": build_model(f"{netfile}:make_net")}, bad)
    assert main(["audit", "--model", f"{netfile}:make_net", "--weights", str(bad), "--data", "folder",
                 "--data-path", str(folder), *AUDIT, "--out", str(tmp_path / "e")]) == 2
    assert "refusing" in capsys.readouterr().err


def _plane_inputs(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, 4, 4), generator=g)


def test_external_perturbations_are_rechecked_and_their_norms_recorded(netfile, tmp_path):
    plane = build_model(f"{netfile}:Plane").eval()
    x = _plane_inputs()
    with torch.no_grad():
        z = plane.logit(x)
    y = (z >= 0).long()
    w = plane.w.detach()
    dist = z.abs() / w.norm()  # exact distance to the plane
    direction = -torch.sign(z)[:, None] * (w / w.norm())[None, :]
    delta = (direction * (1.01 * dist)[:, None]).reshape(x.shape)  # crosses the plane
    short = (direction * (0.5 * dist)[:, None]).reshape(x.shape)  # stops before it
    given = delta.clone()
    given[1::3] = short[1::3]  # these do not flip: failures
    given[2::3] = float("nan")  # none found: failures
    np.save(tmp_path / "delta.npy", given.numpy())
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=y.numpy())

    out = tmp_path / "out"
    data = ["--model", f"{netfile}:Plane", "--data", "npz", "--data-path", str(tmp_path / "data.npz"),
            "--value-range", "0", "1", "--layout", "NCHW", "--classes", "0", "1", *AUDIT]
    assert main(["audit", *data, "--perturbations", str(tmp_path / "delta.npy"), "--out", str(out)]) == 0
    rec = pd.read_csv(out / "records.csv")
    flip = np.zeros(len(x), dtype=bool)
    flip[0::3] = True
    np.testing.assert_array_equal(rec["adv_success"].to_numpy(), flip)
    assert rec.loc[~flip, ["eps_l2", "eps_l1", "eps_linf"]].isna().all().all()
    d = given[flip].reshape(int(flip.sum()), -1).double()
    np.testing.assert_allclose(rec.loc[flip, "eps_l2"], d.norm(dim=1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(rec.loc[flip, "eps_l1"], d.abs().sum(1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(rec.loc[flip, "eps_linf"], d.abs().amax(1).numpy(), rtol=1e-12)
    assert set(rec["eps_source"]) == {"given"}
    assert (rec.loc[flip, "attack_won"] == "given").all()
    # the probe is scaled by the re-checked perturbations: only flipped images are probed
    assert rec.loc[~flip, "flips_a10"].eq(0).all()

    # as one more candidate of best-of: never worse than the given one, the others fill the failures
    out2 = tmp_path / "best"
    assert main(["audit", *data, "--adversarial", str(tmp_path / "xadv.npy"), "--out", str(out2)]) == 2
    np.save(tmp_path / "xadv.npy", (x + given).numpy())
    assert main(["audit", *data, "--adversarial", str(tmp_path / "xadv.npy"), "--attack", "best",
                 "--out", str(out2)]) == 0
    best = pd.read_csv(out2 / "records.csv")
    assert best["adv_success"].all()
    assert (best.loc[flip, "eps_l2"] <= rec.loc[flip, "eps_l2"] * (1 + 1e-6)).all()
    assert set(best["attack_won"]) <= {"line-search", "deepfool", "min-norm", "given"}
    assert (best["eps_l2"] >= dist.numpy() * (1 - 1e-5)).all()  # nothing beats the exact distance
    assert set(best["eps_source"]) == {"best"}


def test_streamed_audit_equals_in_memory_for_every_group_size_and_given_perturbations(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 4)).eval()
    x = torch.rand(37, 3, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::5] = (y[::5] + 1) % 4
    delta = torch.randn_like(x) * 0.3
    np.save(tmp_path / "d.npy", delta.numpy())
    cfg = AuditConfig(draws=30, steps=32, s_max=4, batch_size=8, attack="best")
    ref = audit(model, x, y, output="logits", config=cfg, perturbations=delta, split="test", progress=False)
    mm = np.load(tmp_path / "d.npy", mmap_mode="r")  # rows read group by group
    for gs in (8, 16, 40):
        got = audit_stream(model, (x, y), output="logits", config=cfg, perturbations=mm, split="test",
                           group_size=gs, progress=False)
        pd.testing.assert_frame_equal(got.records, ref.records)
        assert got.summary["test"]["accuracy"] == ref.summary["test"]["accuracy"]
    # a DataLoader over a Dataset, and resuming from per-group files
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    first = audit_stream(model, loader, output="logits", config=cfg, perturbations=delta, split="test",
                         group_size=16, out=tmp_path / "s", progress=False)
    pd.testing.assert_frame_equal(first.records, ref.records)
    again = audit_stream(model, loader, output="logits", config=cfg, perturbations=delta, split="test",
                         group_size=16, out=tmp_path / "s", progress=False)
    assert again.meta["groups_resumed"] == 3 and again.meta["forwards"] == 0
    pd.testing.assert_frame_equal(again.records, ref.records)
    assert pd.read_csv(tmp_path / "s" / "records.csv").shape[0] == 37
    with pytest.raises(ValueError, match="multiple of config.batch_size"):
        audit_stream(model, (x, y), output="logits", config=cfg, group_size=12, progress=False)
    with pytest.raises(ValueError, match="aligned"):
        audit_stream(model, (x, y), output="logits", config=cfg, perturbations=delta[:20], group_size=8,
                     progress=False)
    with pytest.raises(ValueError, match="another audit"):
        GroupFiles(tmp_path / "s" / "stream", {"experiment": "something else"})


def test_task_view_is_the_task_of_load_source_without_decoding(tmp_path):
    from perturbscope.data.sources import load_source

    ds = open_source("digits", "test")
    for classes, labels in (((3, 8), "task"), ((3, 8), "source"), (None, "task"), ((1, 4, 7), "task")):
        view = task_view(ds, classes, limit=30, seed=2, labels=labels)
        task = load_source("digits", "test", classes=classes, limit=30, seed=2)
        x, y = view.batch(np.arange(len(view)))
        assert torch.equal(x, task.x) and np.array_equal(view.indices, task.indices.numpy())
        if labels == "task":
            assert torch.equal(y, task.y)
        else:
            assert set(y.tolist()) == {3, 8}


def test_perturbation_files_are_read_without_running_code(tmp_path):
    from perturbscope.attacks.external import load_given

    d = torch.randn(4, 3, 2, 2)
    torch.save(d, tmp_path / "d.pt")
    torch.save({"delta": d}, tmp_path / "dict.pt")
    np.savez(tmp_path / "d.npz", adversarial=d.numpy(), other=np.zeros(3))
    for name in ("d.pt", "dict.pt", "d.npz"):
        assert torch.equal(torch.as_tensor(np.asarray(load_given(tmp_path / name))), d), name
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "code.pt")  # a pickled module: refused
    with pytest.raises(ValueError, match="refusing"):
        load_given(tmp_path / "code.pt")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled objects are refused"):
        load_given(tmp_path / "obj.npy")
    np.save(tmp_path / "int.npy", np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="floating point"):
        load_given(tmp_path / "int.npy")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"\.npy, \.npz or \.pt"):
        load_given(tmp_path / "d.txt")
    with pytest.raises(FileNotFoundError):
        load_given(tmp_path / "missing.npy")
