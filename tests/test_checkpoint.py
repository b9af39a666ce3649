import os
import pickle

import pytest
import torch

from perturbscope.models import (
    MLP,
    CheckpointError,
    Classifier,
    PairCNN,
    load_checkpoint,
    save_checkpoint,
)


def test_round_trip_keeps_weights_and_meta(tmp_path):
    torch.manual_seed(0)
    model = PairCNN(width=0.125)
    path = save_checkpoint(model, tmp_path / "sub" / "m.pt", meta={"classes": [7, 8], "acc": 99.5})
    loaded, meta = load_checkpoint(path)
    assert meta["classes"] == [7, 8] and meta["acc"] == 99.5
    assert not loaded.training
    x = torch.rand(3, 3, 28, 28)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["m.pt"]  # no temp file left


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "perturbscope-checkpoint", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


def test_not_a_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2)}, plain)
    with pytest.raises(CheckpointError, match="not a perturbscope checkpoint"):
        load_checkpoint(plain)
    # weights that do not fit the recorded architecture
    model = MLP(12, hidden=(4,))
    path = save_checkpoint(model, tmp_path / "mlp.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["hidden"] = [5]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_classifier_two_logits_match_sigmoid():
    torch.manual_seed(0)
    model = PairCNN(width=0.125).eval()
    x = torch.rand(5, 3, 28, 28)
    logits = Classifier(model, "sigmoid")(x)
    assert logits.shape == (5, 2)
    assert torch.allclose(torch.softmax(logits, 1)[:, 1], model(x), atol=1e-6)
    assert torch.equal(logits.argmax(1), (model(x) >= 0.5).long())
    with pytest.raises(ValueError, match="output='logits'"):  # a binary model is not (N, K)
        Classifier(model, output="logits")(x)
