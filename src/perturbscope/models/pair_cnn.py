"""The paper's truncated-VGG binary classifier (Table 2 of the stability-paradox paper).

Conv-1/2 (64 ch) -> maxpool 2 -> Conv-3/4 (128 ch) -> maxpool 2 -> [Conv-5/6 (256 ch)]
-> global max pool -> Dense 512 -> Dense 1 -> sigmoid. 3x3 kernels, 'same' padding,
ReLU, dropout 0.4 after every conv (active in train mode only). The Fashion-MNIST and
GTSRB variant drops Conv-5/6 (``deep=False``). ``width`` multiplies every channel count
(``width=1`` is the paper's network; ``width=0.25`` trains in minutes on a CPU).

Weights start as in the paper's Keras code: Glorot-uniform kernels and zero biases
(``init="glorot"``). PyTorch's default (``init="torch"``, Kaiming-uniform with a 1/sqrt(5)
gain) is kept as an option; with MSE + sigmoid it stalls more often on narrow networks.
"""

from __future__ import annotations

import torch
from torch import nn

from perturbscope.train_config import MAX_WIDTH, MIN_WIDTH

__all__ = ["PairCNN", "MLP", "LinearBinary", "glorot_init", "paper_cifar10", "paper_gtsrb",
           "paper_fashion_mnist"]

INITS = ("glorot", "torch")


def glorot_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv and linear layer (Keras' default)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _ch(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class PairCNN(nn.Module):
    """Binary CNN; ``forward`` returns the sigmoid probability of class 1, shape ``(N,)``.

    Args:
        in_channels: input channels (3: the paper copies grey images to RGB).
        width: channel multiplier (1.0 = the paper's network).
        deep: keep Conv-5/6 (the CIFAR-10 network); ``False`` for Fashion-MNIST.
        dropout: dropout probability after each conv layer (paper: 0.4).
        init: ``"glorot"`` (the paper's Keras default) or ``"torch"`` (PyTorch's default).
    """

    output_kind = "sigmoid"

    def __init__(self, in_channels: int = 3, width: float = 1.0, deep: bool = False,
                 dropout: float = 0.4, init: str = "glorot") -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        numeric = isinstance(width, int | float) and not isinstance(width, bool)
        if not numeric or not MIN_WIDTH <= width <= MAX_WIDTH:
            raise ValueError(f"width must be a number in [{MIN_WIDTH:g}, {MAX_WIDTH:g}] (1 = the paper's "
                             f"network), got {width!r}")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or not 1 <= in_channels <= 64:
            raise ValueError(f"in_channels must be an int in [1, 64], got {in_channels!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.config = {"in_channels": in_channels, "width": float(width), "deep": bool(deep),
                       "dropout": float(dropout), "init": init}
        c64, c128, c256, c512 = (_ch(c, width) for c in (64, 128, 256, 512))
        layers: list[nn.Module] = []

        def conv(cin: int, cout: int) -> None:
            layers.extend([nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                           nn.Dropout(dropout)])

        conv(in_channels, c64)
        conv(c64, c64)
        layers.append(nn.MaxPool2d(2))
        conv(c64, c128)
        conv(c128, c128)
        layers.append(nn.MaxPool2d(2))
        last = c128
        if deep:
            conv(c128, c256)
            conv(c256, c256)
            last = c256
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(last, c512), nn.ReLU(inplace=True), nn.Linear(c512, 1))
        if init == "glorot":
            glorot_init(self)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid score ``(N,)`` for inputs ``(N, C, H, W)`` in [0, 1]."""
        h = self.features(x)
        h = torch.amax(h, dim=(2, 3))  # global max pool
        return self.head(h)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


def paper_cifar10(**kwargs: object) -> PairCNN:
    """The paper's CIFAR-10 network: Table 2 with Conv-5/6 (``PairCNN(deep=True)``).

    At ``width=1`` it has the 1,277,505 trained parameters of Table 2. ``kwargs`` go to
    :class:`PairCNN` (``width``, ``dropout``, ``init``, ``in_channels``). Name for
    :func:`~perturbscope.models.factory.build_model`: ``perturbscope.models.pair_cnn:paper_cifar10``.
    """
    return PairCNN(deep=True, **kwargs)  # type: ignore[arg-type]


def paper_gtsrb(**kwargs: object) -> PairCNN:
    """The paper's GTSRB network: Table 2 without Conv-5/6 (``PairCNN(deep=False)``), as Fashion-MNIST."""
    return PairCNN(deep=False, **kwargs)  # type: ignore[arg-type]


def paper_fashion_mnist(**kwargs: object) -> PairCNN:
    """The paper's Fashion-MNIST network: Table 2 without Conv-5/6 (``PairCNN(deep=False)``)."""
    return PairCNN(deep=False, **kwargs)  # type: ignore[arg-type]


class MLP(nn.Module):
    """Fully connected binary classifier on flattened inputs; returns a sigmoid probability ``(N,)``."""

    output_kind = "sigmoid"

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (128,), dropout: float = 0.0):
        super().__init__()
        self.config = {"in_features": in_features, "hidden": list(hidden), "dropout": dropout}
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


class LinearBinary(nn.Module):
    """``sigmoid(<w, x> + b)`` on flattened inputs: the plane ``<w, x> + b = 0`` is the boundary.

    The exact L2 distance of ``x`` to the boundary is ``|<w, x> + b| / ||w||``.
    """

    output_kind = "sigmoid"

    def __init__(self, weight: torch.Tensor, bias: float = 0.0, scale: float = 1.0):
        super().__init__()
        w = weight.detach().reshape(-1).clone()
        self.register_buffer("weight", w)
        self.register_buffer("bias", torch.tensor(float(bias), dtype=w.dtype))
        self.scale = float(scale)
        self.config = {"in_features": w.numel(), "scale": self.scale}

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x.reshape(x.shape[0], -1).to(self.weight.dtype) @ self.weight + self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """Exact L2 distance ``(N,)`` from each input to the decision plane."""
        z = x.reshape(x.shape[0], -1).to(self.weight.dtype) @ self.weight + self.bias
        return z.abs() / self.weight.norm()
