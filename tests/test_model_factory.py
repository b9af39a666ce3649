"""The user's own model: build from "module:callable" or "file.py:callable", load weights safely."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch

from perturbscope.models.checkpoint import CheckpointError, save_checkpoint
from perturbscope.models.classifier import Classifier
from perturbscope.models.factory import (
    BUILTIN_MODELS,
    ModelSpecError,
    build_model,
    classifier_from_spec,
    load_weights,
    read_state_dict,
)
from perturbscope.models.pair_cnn import PairCNN, paper_cifar10, paper_fashion_mnist, paper_gtsrb

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        output_kind = "logits"

        def __init__(self, classes=3, hidden=5):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, hidden), nn.ReLU())
            self.head = nn.Linear(hidden, classes)

        def forward(self, x):
            return self.head(self.body(x))

    def make(classes=3, hidden=5):
        return Net(classes, hidden)

    def not_a_model():
        return 42

    VALUE = 7
''')


@pytest.fixture
def netfile(tmp_path):
    f = tmp_path / "user_net.py"
    f.write_text(NET)
    return f


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_build_from_file_and_module(netfile, monkeypatch):
    m = build_model(f"{netfile}:make", {"classes": 4})
    assert isinstance(m, torch.nn.Module) and m.head.out_features == 4
    m2 = build_model(f"{netfile}:Net")
    assert m2.head.out_features == 3
    monkeypatch.syspath_prepend(str(netfile.parent))
    m3 = build_model("user_net:make", {"hidden": 2})
    assert m3.head.in_features == 2


def test_spec_errors_name_the_problem(netfile):
    with pytest.raises(ModelSpecError, match="must be 'module:callable'"):
        build_model("just_a_name")
    with pytest.raises(ModelSpecError, match="does not exist"):
        build_model(f"{netfile.parent / 'nope.py'}:make")
    with pytest.raises(ModelSpecError, match="no module named 'no_such_module_xyz'"):
        build_model("no_such_module_xyz:make")
    with pytest.raises(ModelSpecError, match="has no attribute 'mke'.*make"):
        build_model(f"{netfile}:mke")
    with pytest.raises(ModelSpecError, match="not a callable"):
        build_model(f"{netfile}:VALUE")
    with pytest.raises(ModelSpecError, match="failed.*unexpected keyword"):
        build_model(f"{netfile}:make", {"width": 2})
    with pytest.raises(TypeError, match="returned a int"):
        build_model(f"{netfile}:not_a_model")
    broken = netfile.parent / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('boom at import')\n")
    with pytest.raises(ModelSpecError, match="importing .*broken.py failed: RuntimeError: boom at import"):
        build_model(f"{broken}:make")


def test_weights_file_round_trip_and_classifier(netfile, tmp_path):
    torch.manual_seed(0)
    ref = build_model(f"{netfile}:make", {"classes": 4})
    w = tmp_path / "w.pt"
    torch.save(ref.state_dict(), w)
    clf = classifier_from_spec(f"{netfile}:make", w, kwargs={"classes": 4},
                               normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert isinstance(clf, Classifier) and clf.output == "logits" and not clf.module.training
    x = torch.rand(5, 3, 2, 2)
    with torch.no_grad():
        assert torch.allclose(clf(x), ref((x - 0.5) / 0.25))
    # training-checkpoint layouts and DataParallel prefixes are accepted
    torch.save({"epoch": 3, "model_state_dict": ref.state_dict()}, tmp_path / "ckpt.pt")
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "dp.pt")
    for f in ("ckpt.pt", "dp.pt"):
        m = load_weights(build_model(f"{netfile}:make", {"classes": 4}), tmp_path / f)
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values(),
                                                      strict=True))


def test_weights_that_do_not_fit_are_named(netfile, tmp_path):
    ref = build_model(f"{netfile}:make", {"classes": 4})
    sd = ref.state_dict()
    w = tmp_path / "w.pt"
    torch.save(sd, w)
    shape = r"shape mismatch.*head\.weight: file \(4, 5\) vs model \(3, 5\)"
    with pytest.raises(CheckpointError, match=shape):
        load_weights(build_model(f"{netfile}:make"), w)
    partial = {k: v for k, v in sd.items() if not k.startswith("head.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"missing 2 key\(s\).*head\.weight, head\.bias"):
        load_weights(build_model(f"{netfile}:make", {"classes": 4}), tmp_path / "partial.pt")
    load_weights(build_model(f"{netfile}:make", {"classes": 4}), tmp_path / "partial.pt", strict=False)
    torch.save({**sd, "extra.weight": torch.zeros(2)}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\).*extra\.weight"):
        load_weights(build_model(f"{netfile}:make", {"classes": 4}), tmp_path / "extra.pt")


def test_files_that_are_not_weights(netfile, tmp_path):
    model = build_model(f"{netfile}:make")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(model, tmp_path / "missing.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_weights(model, tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello, not weights")
    with pytest.raises(CheckpointError, match="not a readable torch weights file"):
        load_weights(model, tmp_path / "text.pt")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    raw = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_weights(model, tmp_path / "cut.pt")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_weights(model, tmp_path / "meta.pt")


def test_pickled_code_in_a_weights_file_is_refused_and_not_run(netfile, tmp_path):
    marker = tmp_path / "MARKER_created_by_weights"
    evil = tmp_path / "evil.pt"
    torch.save({"head.weight": _System(f"touch {marker}")}, evil)
    with pytest.raises(CheckpointError, match="refusing .*evil.pt.*pickled objects or code.*nothing was run"):
        load_weights(build_model(f"{netfile}:make"), evil)
    with pytest.raises(CheckpointError):
        classifier_from_spec(f"{netfile}:make", evil)
    assert not marker.exists()
    whole = tmp_path / "whole_model.pt"
    torch.save(build_model(f"{netfile}:make"), whole)  # a pickled module, not a state dict
    with pytest.raises(CheckpointError, match="state_dict"):
        read_state_dict(whole)


def test_paper_networks_are_built_in(tmp_path):
    counts = {name: sum(p.numel() for p in build_model(name).parameters())
              for name in ("paper-cifar10", "paper-gtsrb", "paper-fashion-mnist")}
    # Table 2: 1,792 + 36,928 + 73,856 + 147,584 + 295,168 + 590,080 + 131,584 + 513
    assert counts["paper-cifar10"] == 1_277_505
    # without Conv-5/6 the first Dense layer has 128 * 512 + 512 = 66,048 parameters
    no_conv56 = 1_277_505 - 295_168 - 590_080 - 131_584 + 66_048
    assert counts["paper-gtsrb"] == counts["paper-fashion-mnist"] == no_conv56
    assert build_model("perturbscope.models.pair_cnn:paper_cifar10").config["deep"] is True
    assert paper_gtsrb().config["deep"] is False and paper_fashion_mnist(width=0.25).config["width"] == 0.25
    assert set(BUILTIN_MODELS) >= {"paper-cifar10", "paper-gtsrb", "paper-fashion-mnist"}
    small = paper_cifar10(width=0.125)
    ck = save_checkpoint(small, tmp_path / "c.pt")
    clf = classifier_from_spec(weights=ck)  # a perturbscope checkpoint names its architecture
    assert isinstance(clf.module, PairCNN) and clf.output == "sigmoid"
    clf2 = classifier_from_spec("paper-cifar10", ck, kwargs={"width": 0.125})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(clf(x), clf2(x))
    with pytest.raises(ModelSpecError, match="only a perturbscope checkpoint"):
        classifier_from_spec(weights=tmp_path / "c_missing.pt")
