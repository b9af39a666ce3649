"""The paper's training protocol (Section 7.1 / spec 4.3), optionally with additive input noise.

MSE loss between the sigmoid output and the 0/1 label; SGD with Nesterov momentum 0.9,
batch 128, learning rate ``lr * 0.5 ** (epoch // 20)``; dropout lives in the model (0.4
after every conv layer in :class:`~perturbscope.models.pair_cnn.PairCNN`). With ``noise``
set, every training image gets fresh noise each time it is seen (paper Section 7.1.4):
uniform in the cube ``[-size, size]^d`` (``"cube"``) or in the L2 ball of radius ``size``
(``"ball"``); the noise is inactive at test time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from perturbscope.models.outputs import binary_scores
from perturbscope.models.pair_cnn import PairCNN
from perturbscope.progress import progress_bar
from perturbscope.sampling import make_generator, uniform_ball, uniform_cube
from perturbscope.validation import check_images, check_labels

__all__ = ["TrainConfig", "TrainHistory", "train_binary", "train_pair_model", "matched_ball_radius",
           "is_collapsed"]

NOISE_KINDS = (None, "cube", "ball")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the paper's (except ``epochs``: paper 100)."""

    epochs: int = 100
    lr: float = 0.1
    lr_halve_every: int = 20
    batch_size: int = 128
    momentum: float = 0.9
    seed: int = 0
    noise: str | None = None
    noise_size: float = 0.0

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.lr_halve_every < 1:
            raise ValueError(f"invalid training settings: {self}")
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {self.noise!r}")
        if self.noise is not None and not self.noise_size > 0:
            raise ValueError(f"noise_size must be > 0 with noise={self.noise!r}")


@dataclass
class TrainHistory:
    """Per-epoch mean training loss (MSE) and training accuracy (%, clean inputs seen in training)."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seed: int | None = None
    attempts: int = 1


def matched_ball_radius(rho: float, d: int) -> float:
    """Ball radius whose uniform noise has about the mean L2 norm of cube noise ``U([-rho, rho]^d)``.

    The cube noise has ``E||z||^2 = d rho^2 / 3``; in high ``d`` both norms concentrate, so
    ``R = rho * sqrt(d / 3)`` (paper Section 7.1.4).
    """
    return rho * math.sqrt(d / 3.0)


def _add_noise(xb: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    if cfg.noise == "cube":
        return xb + uniform_cube(xb.shape[0], xb.shape[1:], cfg.noise_size, seed=gen, dtype=xb.dtype)
    if cfg.noise == "ball":
        return xb + uniform_ball(xb.shape[0], xb.shape[1:], cfg.noise_size, seed=gen, dtype=xb.dtype)
    return xb


def train_binary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig | None = None,
                 *, progress: bool = True, device: str | torch.device = "cpu") -> TrainHistory:
    """Train a binary sigmoid ``model`` in place on ``x`` ``(N, C, H, W)`` in [0, 1], ``y`` ``(N,)`` 0/1.

    Seeded: the same seed, data and device give the same weights. Leaves the model in eval mode.
    """
    cfg = config or TrainConfig()
    cfg.validate()
    check_images(x, (0.0, 1.0))
    y = check_labels(y, x.shape[0], num_classes=2)
    gen = make_generator(cfg.seed)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    hist = TrainHistory()
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    model.train()
    with progress_bar("training", cfg.epochs * steps_per_epoch, progress) as advance:
        for epoch in range(cfg.epochs):
            lr = cfg.lr * 0.5 ** (epoch // cfg.lr_halve_every)
            for group in opt.param_groups:
                group["lr"] = lr
            perm = torch.randperm(n, generator=gen)
            total_loss, total_correct = 0.0, 0
            for start in range(0, n, cfg.batch_size):
                idx = perm[start:start + cfg.batch_size]
                xb = _add_noise(x[idx], cfg, gen).to(device)
                yb = y[idx].to(device)
                prob = binary_scores(model(xb), "sigmoid")
                loss = ((prob - yb.to(prob.dtype)) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += float(loss.detach()) * len(idx)
                total_correct += int(((prob >= 0.5).long() == yb).sum())
                advance(1)
            hist.loss.append(total_loss / n)
            hist.accuracy.append(100.0 * total_correct / n)
            hist.lr.append(lr)
            if not math.isfinite(hist.loss[-1]):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {hist.loss[-1]})")
    model.eval()
    return hist


def is_collapsed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> bool:
    """True when ``model`` (eval mode) does no better on ``(x, y)`` than always answering one class.

    MSE on a sigmoid can stall with the output saturated at one class (the gradient vanishes);
    this is the test for that failure: training accuracy <= majority-class rate + 1 point.
    """
    from perturbscope.models.runtime import predict

    pred = torch.cat([predict(model, x[i:i + batch], "sigmoid") for i in range(0, x.shape[0], batch)])
    acc = float((pred.cpu() == y.cpu()).double().mean())
    majority = max(float(y.double().mean()), 1.0 - float(y.double().mean()))
    return acc <= majority + 0.01


def train_pair_model(x: torch.Tensor, y: torch.Tensor, *, width: float = 1.0, deep: bool = False,
                     dropout: float = 0.4, init: str = "glorot", config: TrainConfig | None = None,
                     progress: bool = True, device: str | torch.device = "cpu",
                     restarts: int = 0) -> tuple[PairCNN, TrainHistory]:
    """Build the paper's :class:`PairCNN` (seeded init) and train it with :func:`train_binary`.

    With ``restarts > 0``, a run that collapses to a constant answer (:func:`is_collapsed`) is
    retried from a new seed (``seed + 7919 * k``), at most ``restarts`` times; the history records
    the seed that was kept and the number of attempts. The last attempt is returned either way.
    """
    cfg = config or TrainConfig()
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    for attempt in range(restarts + 1):
        seed = cfg.seed + 7919 * attempt
        run_cfg = replace(cfg, seed=seed)
        torch.manual_seed(seed)
        model = PairCNN(in_channels=x.shape[1], width=width, deep=deep, dropout=dropout, init=init)
        hist = train_binary(model, x, y, run_cfg, progress=progress, device=device)
        hist.seed, hist.attempts = seed, attempt + 1
        if attempt == restarts or not is_collapsed(model, x.to(device), y):
            break
    return model, hist
