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
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from perturbscope.models.classifier import ModelOutputError, as_classifier, eval_mode
from perturbscope.models.pair_cnn import PairCNN
from perturbscope.progress import progress_bar
from perturbscope.sampling import make_generator, uniform_ball, uniform_cube
from perturbscope.train_config import NOISE_KINDS, TrainConfig, matched_ball_radius  # noqa: F401
from perturbscope.validation import check_images, check_labels

__all__ = ["TrainingDivergedError", "TrainConfig", "TrainHistory", "train_binary", "train_pair_model",
           "matched_ball_radius", "is_collapsed"]


@dataclass
class TrainHistory:
    """Per-epoch mean training loss (MSE) and training accuracy (%, clean inputs seen in training)."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seed: int | None = None
    attempts: int = 1
    #: seeds of the runs abandoned because they collapsed, and the epoch each was abandoned at
    collapsed: list[tuple[int, int]] = field(default_factory=list)


def _add_noise(xb: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    if cfg.noise == "cube":
        return xb + uniform_cube(xb.shape[0], xb.shape[1:], cfg.noise_size, seed=gen, dtype=xb.dtype)
    if cfg.noise == "ball":
        return xb + uniform_ball(xb.shape[0], xb.shape[1:], cfg.noise_size, seed=gen, dtype=xb.dtype)
    return xb


class TrainingDivergedError(FloatingPointError, ValueError):
    """The loss or the weights became NaN or infinite during training."""


def _finite_weights(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                epoch: int, hist: TrainHistory, cfg: TrainConfig) -> None:
    """Everything needed to continue training after ``epoch`` epochs (plain data and tensors only)."""
    from perturbscope.fileio import atomic_write

    state = {"format": "perturbscope-train-state", "config": asdict(cfg), "epochs_done": epoch,
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(), "generator": gen.get_state(),
             "history": {"loss": hist.loss, "accuracy": hist.accuracy, "lr": hist.lr}}
    atomic_write(path, lambda t: torch.save(state, t))


def _load_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                hist: TrainHistory, cfg: TrainConfig) -> int:
    """Restore a state written by :func:`_save_state`; returns the epochs already done (0 if none)."""
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != "perturbscope-train-state":
        raise ValueError(f"resume file {path} is not a perturbscope training state")
    if state["config"] != asdict(cfg):
        raise ValueError(f"resume file {path} was written with other training settings "
                         f"({state['config']}); delete it or use another path")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    hist.loss, hist.accuracy, hist.lr = (list(state["history"][k]) for k in ("loss", "accuracy", "lr"))
    return int(state["epochs_done"])


def train_binary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig | None = None,
                 *, progress: bool = True, device: str | torch.device = "cpu",
                 resume: str | os.PathLike | None = None,
                 on_epoch: Callable[[int, TrainHistory, nn.Module], None] | None = None) -> TrainHistory:
    """Train a binary sigmoid ``model`` in place on ``x`` ``(N, C, H, W)`` in [0, 1], ``y`` ``(N,)`` 0/1.

    Seeded: the same seed, data and device give the same weights. Leaves the model in eval mode.

    Args:
        resume: optional file of resumable state, rewritten atomically after every epoch (model,
            optimiser, batching generator, history). If it exists, training continues from it, so
            an interrupted run started again with the same settings ends with the same weights
            as an uninterrupted one.
        on_epoch: called after every epoch with ``(epochs_done, history, model)`` (the model is
            in train mode; a callback that evaluates it must restore that).
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
    state_path = Path(resume) if resume is not None else None
    done = _load_state(state_path, model, opt, gen, hist, cfg) if state_path is not None else 0
    clf = as_classifier(model, "sigmoid")
    model.train()
    with progress_bar("training", cfg.epochs * steps_per_epoch, progress) as advance:
        advance(done * steps_per_epoch)
        for epoch in range(done, cfg.epochs):
            lr = cfg.lr * 0.5 ** (epoch // cfg.lr_halve_every)
            for group in opt.param_groups:
                group["lr"] = lr
            perm = torch.randperm(n, generator=gen)
            total_loss, total_correct = 0.0, 0
            for start in range(0, n, cfg.batch_size):
                idx = perm[start:start + cfg.batch_size]
                xb = _add_noise(x[idx], cfg, gen).to(device)
                yb = y[idx].to(device)
                try:
                    prob = clf.raw(xb)  # the module's own probability (N,), checked
                except ModelOutputError as exc:  # the inputs are checked: the weights blew up
                    raise TrainingDivergedError(
                        f"training diverged at epoch {epoch + 1} ({exc}): lower the learning rate "
                        f"(lr={cfg.lr:g}); nothing was saved") from exc
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
            if not math.isfinite(hist.loss[-1]) or not _finite_weights(model):
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch + 1} (mean loss {hist.loss[-1]}, weights "
                    f"{'finite' if _finite_weights(model) else 'NaN or infinite'}): lower the learning "
                    f"rate (lr={cfg.lr}); nothing was saved")
            if state_path is not None:
                _save_state(state_path, model, opt, gen, epoch + 1, hist, cfg)
            if on_epoch is not None:
                on_epoch(epoch + 1, hist, model)
    model.eval()
    return hist


def is_collapsed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> bool:
    """True when ``model`` (eval mode) does no better on ``(x, y)`` than always answering one class.

    MSE on a sigmoid can stall with the output saturated at one class (the gradient vanishes);
    this is the test for that failure: training accuracy <= majority-class rate + 1 point.
    """
    try:
        pred = as_classifier(model, "sigmoid").predict(x, batch)
    except ModelOutputError as exc:  # finite weights whose outputs overflow
        raise TrainingDivergedError(f"training diverged: the trained model's outputs are not finite ({exc}); "
                                    f"lower the learning rate; nothing was saved") from exc
    acc = float((pred.cpu() == y.cpu()).double().mean())
    majority = max(float(y.double().mean()), 1.0 - float(y.double().mean()))
    return acc <= majority + 0.01


class _Collapsed(Exception):
    """Raised from the epoch callback to abandon a run that collapsed (internal)."""


#: a run is checked for a saturated collapse after each of its first epochs (see train_pair_model)
COLLAPSE_CHECK_EPOCHS = 3
#: mean training MSE above which a constant answer is a saturated collapse (0.25: p = 1/2 for all;
#: 0.5: every image of one class saturated on the wrong side), so the run cannot recover
SATURATED_LOSS = 0.375


def train_pair_model(x: torch.Tensor, y: torch.Tensor, *, width: float = 1.0, deep: bool = False,
                     dropout: float = 0.4, init: str = "glorot", config: TrainConfig | None = None,
                     progress: bool = True, device: str | torch.device = "cpu",
                     restarts: int = 0) -> tuple[PairCNN, TrainHistory]:
    """Build the paper's :class:`PairCNN` (seeded init) and train it with :func:`train_binary`.

    The paper's protocol (MSE on a sigmoid, lr 0.1 with Nesterov momentum 0.9) sometimes
    collapses early: one large step sends every logit to one side, momentum carries it deep
    into the sigmoid's saturation, and the MSE gradient there is too small to ever come back
    (docs/fidelity.md measures how often). With ``restarts > 0`` such a run is detected after each
    of its first :data:`COLLAPSE_CHECK_EPOCHS` epochs (constant answer, :func:`is_collapsed`, and
    a mean training loss above :data:`SATURATED_LOSS`) or at the end (constant answer), abandoned
    at once and retried from a new seed (``seed + 7919 * k``), at most ``restarts`` times. The
    history records the seed kept, the number of attempts and each abandoned ``(seed, epoch)``.
    The last attempt is returned either way.
    """
    cfg = config or TrainConfig()
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    collapsed: list[tuple[int, int]] = []
    for attempt in range(restarts + 1):
        seed = cfg.seed + 7919 * attempt
        run_cfg = replace(cfg, seed=seed)
        torch.manual_seed(seed)
        model = PairCNN(in_channels=x.shape[1], width=width, deep=deep, dropout=dropout, init=init)
        last = attempt == restarts

        def check(epoch: int, hist: TrainHistory, m: nn.Module, last: bool = last) -> None:
            if last or epoch > COLLAPSE_CHECK_EPOCHS or hist.loss[-1] <= SATURATED_LOSS:
                return
            with eval_mode(m):
                bad = is_collapsed(m, x.to(device), y)
            if bad:
                raise _Collapsed(epoch)

        try:
            hist = train_binary(model, x, y, run_cfg, progress=progress, device=device, on_epoch=check)
        except _Collapsed as stop:
            collapsed.append((seed, int(stop.args[0])))
            continue
        hist.seed, hist.attempts = seed, attempt + 1
        if last or not is_collapsed(model, x.to(device), y):
            break
        collapsed.append((seed, run_cfg.epochs))
    hist.collapsed = collapsed
    return model, hist
