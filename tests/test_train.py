import pytest
import torch

from perturbscope.models import PairCNN
from perturbscope.train import TrainConfig, matched_ball_radius, train_binary, train_pair_model


def toy_task(n=128):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = 0.2 * torch.rand(n, 3, 8, 8, generator=g)
    x[y == 1, :, :4] += 0.7  # class 1: bright top half
    return x, y


def test_training_learns_and_is_seeded():
    x, y = toy_task()
    cfg = TrainConfig(epochs=8, seed=3, batch_size=32)
    m1, h1 = train_pair_model(x, y, width=0.25, dropout=0.0, config=cfg, progress=False)
    m2, _ = train_pair_model(x, y, width=0.25, dropout=0.0, config=cfg, progress=False)
    assert h1.loss[-1] < h1.loss[0]
    assert h1.accuracy[-1] > 90
    assert not m1.training
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert h1.lr[0] == 0.1


def test_lr_schedule_halves_every_20_epochs():
    x, y = toy_task(16)
    model = PairCNN(width=0.125)
    h = train_binary(model, x, y, TrainConfig(epochs=3, lr_halve_every=1, batch_size=16), progress=False)
    assert h.lr == [0.1, 0.05, 0.025]


@pytest.mark.parametrize("noise", ["cube", "ball"])
def test_noise_training_runs_and_changes_result(noise):
    x, y = toy_task(32)
    base = train_pair_model(x, y, width=0.125, config=TrainConfig(epochs=1, batch_size=16), progress=False)[0]
    noisy = train_pair_model(x, y, width=0.125, progress=False,
                             config=TrainConfig(epochs=1, batch_size=16, noise=noise, noise_size=0.3))[0]
    assert not torch.equal(base.head[0].weight, noisy.head[0].weight)


def test_matched_ball_radius_matches_mean_norms():
    d, rho = 3072, 0.05
    from perturbscope.sampling import uniform_ball, uniform_cube

    r = matched_ball_radius(rho, d)
    assert r == pytest.approx(32 * rho)
    cube = uniform_cube(500, d, rho, seed=0).norm(dim=1).mean()
    ball = uniform_ball(500, d, r, seed=0).norm(dim=1).mean()
    assert float(ball) == pytest.approx(float(cube), rel=0.01)


def test_bad_training_input():
    x, y = toy_task(8)
    with pytest.raises(ValueError, match="labels >= 2"):
        train_binary(PairCNN(width=0.125), x, y + 1, TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="noise_size"):
        train_binary(PairCNN(width=0.125), x, y, TrainConfig(epochs=1, noise="ball"), progress=False)
    with pytest.raises(ValueError, match="bounds"):
        train_binary(PairCNN(width=0.125), x * 3, y, TrainConfig(epochs=1), progress=False)


def test_a_saturated_collapse_is_abandoned_after_its_first_epoch():
    """A far too large learning rate saturates the sigmoid at once: each attempt is stopped after
    epoch 1 (not run to the end), recorded with its seed, and the last attempt is returned."""
    from perturbscope.data import load_pair_task

    t = load_pair_task("fashion-mnist-subset", "train", 7, 8, limit=200)
    cfg = TrainConfig(epochs=6, lr=20.0, batch_size=32)
    model, hist = train_pair_model(t.x, t.y, width=0.125, config=cfg, restarts=2, progress=False)
    assert hist.attempts == 3 and hist.collapsed == [(0, 1), (7919, 1)]
    assert len(hist.loss) == 6 and hist.loss[-1] > 0.375  # the last attempt ran in full
