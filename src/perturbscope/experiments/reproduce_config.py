"""Settings of the paper's reproductions (torch-free, so the command line reads its defaults).

* :class:`ReproduceConfig`: the pair sweeps (train the paper's network on each pair, audit it)
  on Fashion-MNIST (Tables 20-21), CIFAR-10 (all 45 pairs, Tables 4-12) and GTSRB (pairs
  0-1 .. 4-5 of the paper's classes, Tables 23-24); presets :meth:`~ReproduceConfig.paper`,
  :meth:`~ReproduceConfig.scaled_down` and :meth:`~ReproduceConfig.for_dataset`;
* :class:`ImageNetReproduceConfig`: the audit of a pre-trained 1000-class model on 20,480
  sampled validation images, one-vs-all, alpha = 10 (Table 25);
* the pair parser and the data sources.

:mod:`perturbscope.experiments.reproduce` re-exports them and runs the sweeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from perturbscope.audit.config import PAPER_SATURATED, AuditConfig
from perturbscope.train_config import TrainConfig

__all__ = ["ReproduceConfig", "ImageNetReproduceConfig", "PAIRS_I_IPLUS1", "ALL_PAIRS_10", "GTSRB_PAIRS",
           "DATASETS", "PAIR_SOURCES", "EXPERIMENTS", "DEFAULT_PAIRS", "NUM_CLASSES", "SPLITS", "parse_pairs",
           "PAPER_KEYS", "IMAGENET_PAPER_MODELS"]

#: The paper's Fashion-MNIST tasks: class i vs class i+1, i = 0..8.
PAIRS_I_IPLUS1: tuple[tuple[int, int], ...] = tuple((i, i + 1) for i in range(9))
#: The paper's CIFAR-10 tasks: all 45 pairs i < j (Tables 4-12).
ALL_PAIRS_10: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(10) for j in range(i + 1, 10))
#: The paper's GTSRB tasks (Tables 23-24): i vs i+1 of its classes 0..5 (labels of Table 22).
GTSRB_PAIRS: tuple[tuple[int, int], ...] = tuple((i, i + 1) for i in range(5))
#: Fashion-MNIST sources ``reproduce fashion-mnist --data`` accepts (the subset ships with the package).
DATASETS = ("fashion-mnist", "fashion-mnist-subset")
#: Sources of the pair sweeps.
PAIR_SOURCES = (*DATASETS, "cifar10", "gtsrb")
#: ``perturbscope reproduce EXPERIMENT``.
EXPERIMENTS = ("fashion-mnist", "cifar10", "gtsrb", "imagenet")
#: Each pair experiment's pairs.
DEFAULT_PAIRS: dict[str, tuple[tuple[int, int], ...]] = {
    "fashion-mnist": PAIRS_I_IPLUS1, "fashion-mnist-subset": PAIRS_I_IPLUS1, "cifar10": ALL_PAIRS_10,
    "gtsrb": GTSRB_PAIRS}
#: Labels of each source (GTSRB: the paper's 7 classes, Table 22).
NUM_CLASSES: dict[str, int] = {"fashion-mnist": 10, "fashion-mnist-subset": 10, "cifar10": 10, "gtsrb": 7}
#: The key of each source's tables in ``reference/paper_tables.json``.
PAPER_KEYS: dict[str, str] = {"fashion-mnist": "fashion-mnist", "fashion-mnist-subset": "fashion-mnist",
                              "cifar10": "cifar10", "gtsrb": "gtsrb"}
#: The paper's pre-trained ImageNet models (Table 25) and their tables' keys.
IMAGENET_PAPER_MODELS: dict[str, str] = {"resnet50": "imagenet-resnet50", "vgg19": "imagenet-vgg19"}
SPLITS = ("train", "test")
#: the paper's training set per pair, where it differs from Fashion-MNIST's (protocol notes)
_PAPER_TRAIN_IMAGES = {"cifar10": "all (10000 per pair)", "gtsrb": "all (the pair's training images)"}


def parse_pairs(items: Sequence[str], num_classes: int = 10) -> tuple[tuple[int, int], ...]:
    """``["7-8", "0"]`` -> ``((7, 8), (0, 1))``: ``"I-J"`` or ``"I"`` meaning ``I vs I+1``;
    labels in ``0 .. num_classes - 1``."""
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
        if not all(0 <= c < num_classes for c in pair) or pair[0] == pair[1]:
            raise ValueError(f"pair {it!r}: classes must be two different labels in 0..{num_classes - 1}")
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
        source: ``"fashion-mnist"`` (full data set), ``"fashion-mnist-subset"``, ``"cifar10"`` or
            ``"gtsrb"`` (the paper's classes, labels 0..6 of Table 22).
        pairs: class pairs ``(i, j)``; label 0 is ``i``.
        splits: splits audited (``"train"``, ``"test"``).
        train_images: training images per pair (seeded, class-balanced choice); None = all
            (paper: all 12,000).
        audit_images: images audited per split; None = all (paper). Training-split images are
            drawn from the images the model was trained on.
        data_seed: seed of those choices.
        width: channel multiplier of PairCNN (paper: 1.0). dropout: paper 0.4.
        deep: keep Conv-5/6 (the paper's CIFAR-10 network; Fashion-MNIST and GTSRB drop them).
        image_size: GTSRB: side of the resized region-of-interest crops (the paper does not say;
            ``None``: the loader's 32).
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
    #: the paper's literal zero-gradient rule unless --saturated says otherwise (AuditConfig: "logit")
    audit: AuditConfig = field(default_factory=lambda: AuditConfig(saturated=PAPER_SATURATED))
    device: str = "cpu"
    deep: bool = False
    image_size: int | None = None

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
                   train=TrainConfig(epochs=8, batch_size=64),
                   audit=AuditConfig(draws=200, saturated=PAPER_SATURATED))
        return replace(base, **changes).validated()

    @classmethod
    def for_dataset(cls, source: str, full: bool = False, **changes: Any) -> ReproduceConfig:
        """The preset of one pair experiment: :meth:`paper` (``full``) or :meth:`scaled_down`, with
        the source's pairs (Fashion-MNIST and GTSRB i vs i+1, CIFAR-10 all 45) and network
        (CIFAR-10 keeps Conv-5/6), then ``changes``."""
        if source not in PAIR_SOURCES:
            raise ValueError(f"source must be one of {PAIR_SOURCES}, got {source!r}")
        preset = cls.paper if full else cls.scaled_down
        base = {"source": source, "pairs": DEFAULT_PAIRS[source], "deep": source == "cifar10"}
        return preset(**{**base, **changes})

    @property
    def paper_key(self) -> str:
        """Key of the paper's tables for this source (``reference/paper_tables.json``)."""
        return PAPER_KEYS[self.source]

    def validated(self) -> ReproduceConfig:
        """``self`` after checking every field; raises ValueError naming the bad one."""
        if self.source not in PAIR_SOURCES:
            raise ValueError(f"source must be one of {PAIR_SOURCES}, got {self.source!r}")
        if not self.pairs:
            raise ValueError("pairs is empty")
        pairs = tuple((int(a), int(b)) for a, b in self.pairs)
        if len(set(pairs)) != len(pairs) or any(a == b for a, b in pairs):
            raise ValueError(f"pairs must be distinct pairs of different classes, got {pairs}")
        k = NUM_CLASSES[self.source]
        if any(not (0 <= c < k) for p in pairs for c in p):
            raise ValueError(f"pairs of {self.source} must use labels 0..{k - 1}, got {pairs}")
        if not isinstance(self.deep, bool):
            raise ValueError(f"deep must be True or False, got {self.deep!r}")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 4):
            raise ValueError(f"image_size must be an int >= 4 or None, got {self.image_size!r}")
        if self.image_size is not None and self.source != "gtsrb":
            raise ValueError(f"image_size applies to gtsrb only (its crops are resized), not {self.source}")
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
        self.audit.validate()
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        return replace(self, pairs=pairs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what the store hashes and keeps). Fashion-MNIST runs keep the keys they
        always had (so their stores resume); the other sources add ``paper`` (the key of the
        paper's tables), ``paper_protocol`` and, for GTSRB, ``image_size``."""
        fmnist = self.source in DATASETS
        doc: dict[str, Any] = {
            "experiment": "fashion-mnist-pairs" if fmnist else f"{self.source}-pairs", "source": self.source,
            "pairs": [list(p) for p in self.pairs], "splits": list(self.splits),
            "train_images": self.train_images, "audit_images": self.audit_images,
            "data_seed": self.data_seed, "model": {"arch": "PairCNN", "width": self.width,
                                                    "deep": bool(self.deep), "dropout": self.dropout,
                                                    "init": self.init},
            "train": asdict(self.train), "restarts": self.restarts, "audit": self.audit.to_dict(),
            "device": self.device}
        if not fmnist:
            doc["paper"] = self.paper_key
            doc["paper_protocol"] = {"train_images": _PAPER_TRAIN_IMAGES[self.source]}
        if self.source == "gtsrb":
            doc["image_size"] = self.image_size if self.image_size is not None else 32
        return doc

    def unit_keys(self) -> list[str]:
        """``pair=i-j/split=s`` for every pair and split, pair-major."""
        from perturbscope.experiments.store import unit_key

        return [unit_key(p, s) for p in self.pairs for s in self.splits]


@dataclass(frozen=True)
class ImageNetReproduceConfig:
    """Every setting of the ImageNet reproduction (Section 7.1.5, Table 25) that changes its numbers.

    A pre-trained 1000-class model is audited on ``images`` validation images sampled with every
    class present (:func:`perturbscope.data.tasks.sample_covering`), with its own class indices:
    one-vs-all, any change of the top-1 label is a flip; the paper reports alpha = 10 only.

    Attributes:
        model: the model spec (``"module:callable"``, ``"file.py:callable"``); model_kwargs: its
            keyword arguments; weights_sha256: SHA-256 of the weights file (names the run);
            normalize: per-channel ``(mean, std)`` inside the classifier (torchvision's
            ImageNet values for torchvision models).
        paper_model: ``"resnet50"`` or ``"vgg19"``: whose column of Table 25 to print beside
            ours (``None``: no paper values).
        images: validation images audited (paper: 20,480; ``None``: all; fewer than the classes
            present: a uniform seeded sample, not every class represented). data_seed: its seed.
        resize, crop: preprocessing (shorter side ``resize``, centre crop ``crop``; the paper's
            Keras models take 224 x 224).
        group_size: images per streamed group, one results-store unit each (a multiple of
            ``audit.batch_size``).
        audit: audit settings (paper: 2000 draws, alpha 10, 256 line-search steps).
        labels_sha256: SHA-256 of the validation set's labels (set by the run: names its data).
        device: where the model runs.
    """

    model: str = ""
    model_kwargs: dict[str, Any] | None = None
    weights_sha256: str | None = None
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    paper_model: str | None = None
    images: int | None = 20480
    data_seed: int = 0
    resize: int | None = 256
    crop: int = 224
    group_size: int = 1024
    audit: AuditConfig = field(default_factory=lambda: AuditConfig(alphas=(10.0,), saturated=PAPER_SATURATED))
    labels_sha256: str | None = None
    device: str = "cpu"

    @classmethod
    def paper(cls, **changes: Any) -> ImageNetReproduceConfig:
        """The paper's protocol: 20,480 images, 2000 draws, alpha 10."""
        return replace(cls(), **changes).validated()

    @classmethod
    def scaled_down(cls, **changes: Any) -> ImageNetReproduceConfig:
        """The CPU default: 1000 images (one per class when all 1000 are present), 100 draws,
        alpha 10, groups of 256 images; everything else as in the paper."""
        base = cls(images=1000, group_size=256, audit=AuditConfig(alphas=(10.0,), draws=100,
                                                                    saturated=PAPER_SATURATED))
        return replace(base, **changes).validated()

    @property
    def paper_key(self) -> str | None:
        """Key of the paper's Table 25 column (``imagenet-resnet50`` / ``imagenet-vgg19``) or None."""
        return IMAGENET_PAPER_MODELS.get(self.paper_model or "")

    @property
    def unit_prefix(self) -> str:
        """The unit key of the audited images; each group is ``<prefix>/group=NNNNN``."""
        return "pair=all/split=test"

    def validated(self) -> ImageNetReproduceConfig:
        """``self`` after checking every field; raises ValueError naming the bad one."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model must name the pre-trained model, e.g. 'mymodels.py:resnet50'")
        if self.paper_model is not None and self.paper_model not in IMAGENET_PAPER_MODELS:
            raise ValueError(f"paper_model must be one of {tuple(IMAGENET_PAPER_MODELS)} or None, "
                             f"got {self.paper_model!r}")
        if self.images is not None and (not isinstance(self.images, int) or self.images < 1):
            raise ValueError(f"images must be an int >= 1 or None (all), got {self.images!r}")
        if not isinstance(self.crop, int) or self.crop < 1:
            raise ValueError(f"crop must be an int >= 1, got {self.crop!r}")
        if self.resize is not None and (not isinstance(self.resize, int) or self.resize < self.crop):
            raise ValueError(f"resize must be None or an int >= crop ({self.crop}), got {self.resize!r}")
        if not isinstance(self.audit, AuditConfig):
            raise TypeError("audit must be an AuditConfig")
        self.audit.validate()
        gs = self.group_size
        if not isinstance(gs, int) or gs < 1 or gs % self.audit.batch_size:
            raise ValueError(f"group_size must be a positive multiple of the audit's batch size "
                             f"({self.audit.batch_size}), got {self.group_size!r}")
        if self.device not in ("cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu', 'cuda[:N]' or 'mps', got {self.device!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what the store hashes and keeps)."""
        norm = None if self.normalize is None else [list(map(float, v)) for v in self.normalize]
        return {"experiment": "imagenet", "source": "imagenet", "paper": self.paper_key,
                "model": {"arch": self.model, "kwargs": self.model_kwargs,
                          "weights_sha256": self.weights_sha256, "normalize": norm, "output": "logits"},
                "train_images": "pretrained", "audit_images": self.images, "data_seed": self.data_seed,
                "splits": ["test"], "preprocess": {"resize": self.resize, "crop": self.crop},
                "group_size": self.group_size, "audit": self.audit.to_dict(),
                "data": {"labels_sha256": self.labels_sha256}, "device": self.device,
                "paper_protocol": {"train_images": "pretrained", "audit_images": 20480,
                                   "width": None, "epochs": None, "batch_size": None, "lr": None,
                                   "dropout": None, "restarts": None, "alphas": [10.0]}}
