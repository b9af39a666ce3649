"""Settings of the Fashion-MNIST reproduction (torch-free, so the command line reads its defaults).

:class:`ReproduceConfig` (its presets :meth:`~ReproduceConfig.paper` and
:meth:`~ReproduceConfig.scaled_down`), the pair parser and the data sources;
:mod:`perturbscope.experiments.reproduce` re-exports them and runs the sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from perturbscope.audit.config import AuditConfig
from perturbscope.train_config import TrainConfig

__all__ = ["ReproduceConfig", "PAIRS_I_IPLUS1", "DATASETS", "SPLITS", "parse_pairs"]

#: The paper's Fashion-MNIST tasks: class i vs class i+1, i = 0..8.
PAIRS_I_IPLUS1: tuple[tuple[int, int], ...] = tuple((i, i + 1) for i in range(9))
#: Data sources ``reproduce`` accepts (the subset ships with the package: 300 train / 100 test per class).
DATASETS = ("fashion-mnist", "fashion-mnist-subset")
SPLITS = ("train", "test")


def parse_pairs(items: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``["7-8", "0"]`` -> ``((7, 8), (0, 1))``: ``"I-J"`` or ``"I"`` meaning ``I vs I+1``."""
    out: list[tuple[int, int]] = []
    for it in items:
        s = str(it).strip()
        try:
            if "-" in s:
                a, b = s.split("-", 1)
                pair = (int(a), int(b))
            else:
                pair = (int(s), int(s) + 1)
        except ValueError:
            raise ValueError(f"pair {it!r} is not 'I-J' or 'I' (meaning I vs I+1)") from None
        if not all(0 <= c <= 9 for c in pair) or pair[0] == pair[1]:
            raise ValueError(f"pair {it!r}: classes must be two different labels in 0..9")
        if pair in out:
            raise ValueError(f"pair {it!r} is given twice")
        out.append(pair)
    if not out:
        raise ValueError("no pairs given")
    return tuple(out)


@dataclass(frozen=True)
class ReproduceConfig:
    """Every setting of the reproduction that changes its numbers.

    Attributes:
        source: ``"fashion-mnist"`` (full data set) or ``"fashion-mnist-subset"``.
        pairs: class pairs ``(i, j)``; label 0 is ``i``.
        splits: splits audited (``"train"``, ``"test"``).
        train_images: training images per pair (seeded, class-balanced choice); None = all
            (paper: all 12,000).
        audit_images: images audited per split; None = all (paper). Training-split images are
            drawn from the images the model was trained on.
        data_seed: seed of those choices.
        width: channel multiplier of PairCNN (paper: 1.0). dropout: paper 0.4.
        init: initial weights, ``"glorot"`` (the paper's Keras default) or ``"torch"``.
        restarts: retrain a pair from a new seed when training collapses to one class, at
            most this many times (:func:`perturbscope.train.train_pair_model`; paper: 0).
        train: training protocol (paper: 100 epochs, lr 0.1 halved every 20, batch 128, SGD
            Nesterov 0.9, MSE on the sigmoid).
        audit: audit settings (paper: 2000 draws, alphas 1 2 5 10, 256 line-search steps).
        device: ``"cpu"`` or ``"cuda"`` (numbers can differ between devices).
    """

    source: str = "fashion-mnist"
    pairs: tuple[tuple[int, int], ...] = PAIRS_I_IPLUS1
    splits: tuple[str, ...] = SPLITS
    train_images: int | None = None
    audit_images: int | None = None
    data_seed: int = 0
    width: float = 1.0
    dropout: float = 0.4
    init: str = "glorot"
    restarts: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    device: str = "cpu"

    @classmethod
    def paper(cls, **changes: Any) -> ReproduceConfig:
        """The paper's full protocol (all images, width 1, 100 epochs, 2000 draws)."""
        return replace(cls(), **changes).validated()

    @classmethod
    def scaled_down(cls, **changes: Any) -> ReproduceConfig:
        """The CPU default: 2000 training images, 100 audited images per split, 8 epochs,
        batch 64 (more SGD steps in the short schedule), width 0.25, 200 random draws, up to 2
        restarts of a collapsed training; everything else as in the paper."""
        base = cls(train_images=2000, audit_images=100, width=0.25, restarts=2,
                   train=TrainConfig(epochs=8, batch_size=64), audit=AuditConfig(draws=200))
        return replace(base, **changes).validated()

    def validated(self) -> ReproduceConfig:
        """``self`` after checking every field; raises ValueError naming the bad one."""
        if self.source not in DATASETS:
            raise ValueError(f"source must be one of {DATASETS}, got {self.source!r}")
        if not self.pairs:
            raise ValueError("pairs is empty")
        pairs = tuple((int(a), int(b)) for a, b in self.pairs)
        if len(set(pairs)) != len(pairs) or any(a == b for a, b in pairs):
            raise ValueError(f"pairs must be distinct pairs of different classes, got {pairs}")
        if not self.splits or any(s not in SPLITS for s in self.splits) or len(set(self.splits)) != len(
                self.splits):
            raise ValueError(f"splits must be distinct names from {SPLITS}, got {self.splits}")
        for name in ("train_images", "audit_images"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 2):
                raise ValueError(f"{name} must be an int >= 2 or None (all), got {v!r}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.init not in ("glorot", "torch"):
            raise ValueError(f"init must be 'glorot' or 'torch', got {self.init!r}")
        if not isinstance(self.restarts, int) or self.restarts < 0:
            raise ValueError(f"restarts must be an int >= 0, got {self.restarts!r}")
        if not isinstance(self.train, TrainConfig) or not isinstance(self.audit, AuditConfig):
            raise TypeError("train must be a TrainConfig and audit an AuditConfig")
        self.train.validate()
        if self.audit.draws < 1 or self.audit.steps < 1 or not self.audit.s_max > 0:
            raise ValueError(f"invalid audit settings: {self.audit}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        return replace(self, pairs=pairs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what the store hashes and keeps)."""
        return {"experiment": "fashion-mnist-pairs", "source": self.source,
                "pairs": [list(p) for p in self.pairs], "splits": list(self.splits),
                "train_images": self.train_images, "audit_images": self.audit_images,
                "data_seed": self.data_seed, "model": {"arch": "PairCNN", "width": self.width,
                                                        "deep": False, "dropout": self.dropout,
                                                        "init": self.init},
                "train": asdict(self.train), "restarts": self.restarts, "audit": self.audit.to_dict(),
                "device": self.device}

    def unit_keys(self) -> list[str]:
        """``pair=i-j/split=s`` for every pair and split, pair-major."""
        from perturbscope.experiments.store import unit_key

        return [unit_key(p, s) for p in self.pairs for s in self.splits]
