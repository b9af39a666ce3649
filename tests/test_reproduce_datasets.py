"""``perturbscope reproduce cifar10 | gtsrb | imagenet`` end to end on tiny copies in the official
formats: resumable runs in the results store, our tables printed beside the paper's, the report."""

from __future__ import annotations

import io
import pickle
import tarfile
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from perturbscope.audit import AuditConfig, audit
from perturbscope.audit.schema import column_names
from perturbscope.audit.stream import typed_records
from perturbscope.cli.main import main
from perturbscope.data.imagenet import IMAGENET_WNIDS, ImageNetDataset
from perturbscope.experiments.reproduce_config import ImageNetReproduceConfig, ReproduceConfig
from perturbscope.experiments.store import ResultsStore, config_hash
from perturbscope.models.classifier import Classifier
from perturbscope.models.factory import build_model, load_weights
from test_data_sources import write_gtsrb

TINY = ["--train-images", "16", "--images", "6", "--epochs", "1", "--width", "0.125", "--batch-size", "8",
        "--draws", "10", "--steps", "16", "--threads", "1", "--no-progress", "--no-verify"]


def write_cifar_archive(root, n_train: int = 60, n_test: int = 20, seed: int = 0):
    """``cifar-10-python.tar.gz`` as published: five training batches and a test batch (pickled
    dicts of uint8 ``(n, 3072)`` rows and labels), labels cycling over 0..3."""
    rng = np.random.default_rng(seed)
    sizes = [n_train // 5] * 5 + [n_test]
    names = [f"data_batch_{k + 1}" for k in range(5)] + ["test_batch"]
    archive = root / "cifar-10-python.tar.gz"
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name, n in zip(names, sizes, strict=True):
            x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            y = [k % 4 for k in range(n)]
            x[np.asarray(y) % 2 == 1, :1024] //= 4  # odd classes: a dark red channel, learnable
            data = pickle.dumps({"batch_label": "tiny", "labels": y, "data": x}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_fashion_mnist_runs_keep_their_configuration_and_hash():
    """New data sets must not rename the Fashion-MNIST runs already in users' stores."""
    doc = ReproduceConfig.scaled_down().to_dict()
    assert set(doc) == {"experiment", "source", "pairs", "splits", "train_images", "audit_images",
                        "data_seed", "model", "train", "restarts", "audit", "device"}
    assert doc["experiment"] == "fashion-mnist-pairs" and doc["model"]["deep"] is False
    same = ReproduceConfig.for_dataset("fashion-mnist").to_dict()
    assert config_hash(same) == config_hash(doc)
    cifar = ReproduceConfig.for_dataset("cifar10")
    assert len(cifar.pairs) == 45 and cifar.deep and cifar.to_dict()["paper"] == "cifar10"
    gtsrb = ReproduceConfig.for_dataset("gtsrb", full=True)
    assert gtsrb.pairs == ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5)) and not gtsrb.deep
    assert gtsrb.to_dict()["image_size"] == 32 and gtsrb.audit.draws == 2000
    with pytest.raises(ValueError, match="labels 0..6"):
        ReproduceConfig.for_dataset("gtsrb", pairs=((6, 7),))


def test_reproduce_cifar10_on_the_official_archive_format(tmp_path, capsys):
    write_cifar_archive(tmp_path / "cifar")
    db = tmp_path / "r.sqlite"
    argv = ["reproduce", "cifar10", "--data-path", str(tmp_path / "cifar"), "--pairs", "0-1", "2-3", *TINY,
            "--store", str(db), "--out", str(tmp_path / "tables")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "SCALED-DOWN protocol" in printed and "training images per pair 16 (paper: all (10000 per pair))" \
        in printed
    assert "Tables 4, 5, 9-12 (CIFAR-10, class i vs j)" in printed and "Tables 6-8 (CIFAR-10" in printed
    assert "99.88, 96.45" in printed  # the paper's accuracy of 0 vs 1 (Table 4), beside ours
    assert "1.25 (0.92)" in printed  # the paper's L2 mean (sd) of 0 vs 1, train (Table 6)
    with ResultsStore(db) as st:
        (rid,) = st.runs()["run_id"]
        cfg = st.run_config(rid)
        assert cfg["experiment"] == "cifar10-pairs" and cfg["model"]["deep"] is True
        assert sorted(st.artifact_keys(rid)) == ["model/pair=0-1", "model/pair=2-3"]
        recs = st.records(rid)
        assert len(recs) == 2 * 2 * 6 and set(recs["pair"]) == {"0-1", "2-3"}
    assert (tmp_path / "tables" / "tables.txt").read_text().count("CIFAR-10") >= 2
    assert main(argv) == 0  # the same command again: nothing redone
    assert "resumed; 0 units run, 4 already done, 0 models trained" in capsys.readouterr().out
    html = tmp_path / "report.html"
    assert main(["report", rid, "--store", str(db), "--out", str(html), "--no-panels"]) == 0
    text = html.read_text()
    assert "96.45" in text and "cifar10" in text  # the paper's CIFAR-10 values are in the report


def test_reproduce_gtsrb_on_the_official_zips(tmp_path, capsys):
    write_gtsrb(tmp_path / "gtsrb", train_classes=(0, 42, 38), n_per_class=8, n_test=12)
    db = tmp_path / "g.sqlite"
    assert main(["reproduce", "gtsrb", "--data-path", str(tmp_path / "gtsrb"), "--pairs", "0-1", "1-2", *TINY,
                 "--image-size", "16", "--store", str(db)]) == 0
    printed = capsys.readouterr().out
    assert "Table 23 (GTSRB, the paper's classes i vs i+1)" in printed and "Table 24 (GTSRB" in printed
    assert "96.84, 98.51" in printed and "98.04, 97.63" in printed  # the paper's accuracies of 0-1, 1-2
    with ResultsStore(db) as st:
        (rid,) = st.runs()["run_id"]
        assert st.run_config(rid)["image_size"] == 16 and st.run_config(rid)["model"]["deep"] is False
        summ = st.summaries(rid)
        assert len(summ) == 4 and (summ["n_images"] > 0).all()
    assert main(["reproduce", "gtsrb", "--pairs", "5-7", "--data-path", str(tmp_path),
                 "--store", str(db)]) == 2
    assert "0..6" in capsys.readouterr().err


IMAGENET_NET = '''
import torch
from torch import nn


def tiny_resnet50(hidden: int = 8):
    """Not a ResNet50: a tiny conv net on 3 x 8 x 8 images with 1000 logits."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 1000))
'''


def test_reproduce_imagenet_streams_a_pretrained_model_and_equals_the_in_memory_audit(tmp_path, capsys):
    net = tmp_path / "imagenet_nets.py"
    net.write_text(textwrap.dedent(IMAGENET_NET))
    spec = f"{net}:tiny_resnet50"
    model = build_model(spec)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    clf = Classifier(load_weights(build_model(spec), weights).eval(), "logits")
    # ImageFolder layout: val/<WNID>/*.png, filed mostly under the class the model predicts
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (14, 8, 8, 3), dtype=np.uint8)
    pred = clf.predict(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255).numpy()
    pred[::4] = (pred[::4] + 1) % 1000
    for k, (img, c) in enumerate(zip(imgs, pred, strict=True)):
        d = tmp_path / "imagenet" / "val" / IMAGENET_WNIDS[c]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"ILSVRC2012_val_{k + 1:08d}.png")

    db = tmp_path / "i.sqlite"
    argv = ["reproduce", "imagenet", "--model", spec, "--weights", str(weights), "--data-path",
            str(tmp_path / "imagenet"), "--image-size", "8", "--resize", "none", "--images", "all",
            "--draws", "12", "--steps", "16", "--s-max", "4", "--forward-batch", "4", "--group-size", "8",
            "--threads", "1", "--no-progress", "--store", str(db), "--out", str(tmp_path / "tables")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "SCALED-DOWN protocol" in printed and "one vs all" in printed
    assert "Linf of the attack < 0.1 for" in printed and "(paper: 93.3% ResNet50" in printed
    assert "Table 25 (ImageNet, ResNet50, one vs all)" in printed  # --paper-model auto: from the name
    assert "n/a, 70.80" in printed and "n/a, 2.50" in printed  # the paper's ResNet50 column (test only)
    with ResultsStore(db) as st:
        (rid,) = st.runs()["run_id"]
        cfg = st.run_config(rid)
        assert cfg["paper"] == "imagenet-resnet50" and cfg["audit"]["alphas"] == [10.0]
        assert len(cfg["model"]["weights_sha256"]) == 64
        units = st.units(rid)
        assert list(units["unit_key"]) == [f"pair=all/split=test/group={k:05d}" for k in (0, 1)]
        assert (units["status"] == "done").all()
        recs = st.records(rid)
        summ = st.summaries(rid)
    assert len(summ) == 1 and summ.iloc[0]["n_images"] == 14  # the groups are one table column again
    # exactly the records of the in-memory audit of the same images
    ds = ImageNetDataset(tmp_path / "imagenet", resize=None, crop=8)
    x, y = ds.batch(np.arange(len(ds)))
    ref = audit(clf, x, y, config=AuditConfig(alphas=(10.0,), draws=12, steps=16, s_max=4, batch_size=4),
                split="test", progress=False).records
    got = typed_records(recs[column_names((10.0,))].reset_index(drop=True))
    pd.testing.assert_frame_equal(got, typed_records(ref))
    assert ref["correct"].any() and not ref["correct"].all()

    # an interrupted run resumes at its first unfinished group
    with ResultsStore(db) as st:
        st._q("SELECT 1")  # the store is readable
        with st._tx() as con:
            con.execute("DELETE FROM records WHERE unit_key LIKE '%group=00001'")
            con.execute("UPDATE units SET status='pending' WHERE unit_key LIKE '%group=00001'")
    assert main(argv) == 0
    assert "resumed; 1 groups audited, 1 already done" in capsys.readouterr().out
    with ResultsStore(db) as st:
        pd.testing.assert_frame_equal(st.records(rid), recs)
    assert main(["report", rid, "--store", str(db), "--out", str(tmp_path / "r.html")]) == 0
    assert "70.80" in (tmp_path / "r.html").read_text()
    # flags of the pair sweeps are refused
    assert main([*argv, "--epochs", "3"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert ImageNetReproduceConfig.scaled_down(model="m:f").images == 1000
