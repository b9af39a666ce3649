"""Binary pair tasks, the digits source and the one-call loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perturbscope.data import (
    FASHION_MNIST_CLASSES,
    PairTask,
    digits_split,
    load_digits_data,
    load_pair_task,
    pair_task,
)


def toy(n_per_class=(5, 7, 3), h=4, w=5, dtype=np.uint8):
    labels = np.concatenate([np.full(k, c) for c, k in enumerate(n_per_class)]).astype(np.int64)
    rng = np.random.default_rng(0)
    labels = rng.permutation(labels)
    images = rng.integers(0, 256, (labels.size, h, w)).astype(dtype)
    return images, labels


def test_labels_channels_range_uint8():
    images, labels = toy()
    task = pair_task(images, labels, 2, 0)
    assert isinstance(task, PairTask)
    assert task.x.dtype == torch.float32 and task.x.shape == (8, 3, 4, 5)
    assert task.y.dtype == torch.int64
    keep = np.flatnonzero((labels == 2) | (labels == 0))
    np.testing.assert_array_equal(task.indices.numpy(), keep)
    # label 0 for class i=2, label 1 for class j=0, in the original order
    np.testing.assert_array_equal(task.y.numpy(), (labels[keep] == 0).astype(np.int64))
    # grey duplicated to 3 identical channels, uint8 / 255
    np.testing.assert_allclose(task.x[:, 0].numpy(), images[keep] / 255.0, rtol=0, atol=1e-7)
    assert torch.equal(task.x[:, 0], task.x[:, 1]) and torch.equal(task.x[:, 0], task.x[:, 2])
    assert 0.0 <= float(task.x.min()) and float(task.x.max()) <= 1.0
    assert task.classes == (2, 0) and task.class_names == ("2", "0")
    assert task.dim == 3 * 4 * 5 and len(task) == 8 and task.class_counts() == (3, 5)


def test_channels_and_float_input():
    images, labels = toy(dtype=np.uint8)
    f = images.astype(np.float64) / 255.0
    a = pair_task(f, labels, 0, 1, channels=1)
    b = pair_task(torch.from_numpy(f)[:, None], torch.from_numpy(labels), 0, 1, channels=1)
    assert a.x.shape == (12, 1, 4, 5) and a.x.dtype == torch.float32
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    rgb = np.stack([f, f * 0.5, f * 0.25], axis=1)
    c = pair_task(rgb, labels, 0, 1)
    assert torch.allclose(c.x[:, 1], c.x[:, 0] * 0.5)


def test_float_out_of_range_names_the_range():
    images, labels = toy()
    images[labels == 0] = 255
    with pytest.raises(ValueError, match=r"found values in \[\d+, 255\]"):
        pair_task(images.astype(np.float32), labels, 0, 1)
    with pytest.raises(ValueError, match=r"found values in \[-0\.5"):
        pair_task(np.full((labels.size, 2, 2), -0.5), labels, 0, 1)


def test_errors():
    images, labels = toy()
    with pytest.raises(ValueError, match="different classes"):
        pair_task(images, labels, 1, 1)
    with pytest.raises(ValueError, match=r"class\(es\) \[7\] have no images; classes present: \[0, 1, 2\]"):
        pair_task(images, labels, 0, 7)
    nan = images.astype(np.float32) / 255
    nan[3, 1, 1] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        pair_task(nan, labels, 0, 1)
    with pytest.raises(ValueError, match="differ in length"):
        pair_task(images[:-1], labels, 0, 1)
    with pytest.raises(ValueError, match="channels"):
        pair_task(np.zeros((labels.size, 2, 4, 4), np.uint8), labels, 0, 1)
    with pytest.raises(ValueError, match="uint8"):
        pair_task(images.astype(np.int64), labels, 0, 1)
    with pytest.raises(ValueError, match="limit"):
        pair_task(images, labels, 0, 1, limit=1)
    with pytest.raises(ValueError, match="class_names"):
        pair_task(images, labels, 0, 2, class_names=["a", "b"])
    with pytest.raises(TypeError, match="images"):
        pair_task([[0]], labels, 0, 1)


def test_limit_balanced_seeded_deterministic():
    images, labels = toy(n_per_class=(40, 40, 3))
    a = pair_task(images, labels, 0, 1, limit=10, seed=3)
    b = pair_task(images, labels, 0, 1, limit=10, seed=3)
    c = pair_task(images, labels, 0, 1, limit=10, seed=4)
    assert len(a) == 10 and a.class_counts() == (5, 5)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x)
    assert not torch.equal(a.indices, c.indices)
    assert torch.all(a.indices[1:] > a.indices[:-1])  # original order kept
    # a rare class gives its share to the other one
    d = pair_task(images, labels, 2, 0, limit=10, seed=0)
    assert len(d) == 10 and d.class_counts() == (3, 7)
    # limit larger than the data keeps everything
    assert len(pair_task(images, labels, 2, 0, limit=1000)) == 43


def test_digits_loads_without_network():
    x, y = load_digits_data()
    assert x.shape == (1797, 8, 8) and x.dtype == np.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    # 16 grey levels: values are multiples of 1/16
    np.testing.assert_allclose(x * 16, np.round(x * 16), atol=1e-5)


def test_digits_split_deterministic_disjoint_stratified():
    xtr, ytr = digits_split("train")
    xte, yte = digits_split("test")
    assert len(ytr) + len(yte) == 1797 and len(ytr) == 1352
    counts = np.bincount(ytr, minlength=10) / (np.bincount(ytr, minlength=10)
                                                + np.bincount(yte, minlength=10))
    assert np.all(np.abs(counts - 0.75) < 0.01)
    xtr2, _ = digits_split("train")
    np.testing.assert_array_equal(xtr, xtr2)
    # the 1797 images are all distinct, so disjoint splits share no image and cover them all
    full, _ = load_digits_data()
    assert len({a.tobytes() for a in full}) == 1797
    assert not {a.tobytes() for a in xtr} & {a.tobytes() for a in xte}
    assert {a.tobytes() for a in full} == {a.tobytes() for a in xtr} | {a.tobytes() for a in xte}


@pytest.mark.parametrize(
    ("source", "i", "j", "hw", "names"),
    [
        ("fashion-mnist-subset", 7, 9, 28, ("Sneaker", "Ankle boot")),
        ("digits", 3, 8, 8, ("3", "8")),
    ],
)
def test_load_pair_task(source, i, j, hw, names):
    task = load_pair_task(source, "test", i, j, limit=50, seed=1)
    assert task.source == source and task.split == "test"
    assert task.class_names == names and task.classes == (i, j)
    assert task.x.shape == (50, 3, hw, hw) and task.class_counts() == (25, 25)
    assert set(task.y.tolist()) == {0, 1}
    assert source in task.describe()


def test_load_pair_task_full_subset_counts():
    task = load_pair_task("fashion-mnist-subset", "train", 0, 6)
    assert len(task) == 600 and task.class_names == (FASHION_MNIST_CLASSES[0],
                                                      FASHION_MNIST_CLASSES[6])


def test_load_pair_task_errors(tmp_path):
    with pytest.raises(ValueError, match="source must be one of"):
        load_pair_task("cifar", "test", 0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        load_pair_task("digits", "val", 0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path applies only"):
        load_pair_task("digits", "test", 0, 1, path=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pair_task("fashion-mnist", "test", 0, 1, path=tmp_path / "nowhere")
