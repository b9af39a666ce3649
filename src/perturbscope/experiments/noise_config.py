"""Settings of the noise-training experiment (torch-free, so the command line reads its defaults).

The noise levels (matched cube / ball pairs), their mean L2 norms, the pair parser and
:class:`NoiseTrainingConfig`; :mod:`perturbscope.experiments.noise` re-exports all of them and
runs the experiment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from perturbscope.audit.config import PAPER_SATURATED, AuditConfig
from perturbscope.train_config import TrainConfig, matched_ball_radius

__all__ = ["NOISE_KINDS", "ARCHS", "NoiseLevel", "NoiseTrainingConfig", "mean_l2_cube", "mean_l2_ball",
           "noise_levels", "parse_pairs"]

NOISE_KINDS = ("cube", "ball")
ARCHS = ("cnn", "mlp")


def _check_dim(d: int) -> int:
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1:
        raise ValueError(f"d (input dimension) must be a positive integer, got {d!r}")
    return int(d)


def _check_size(name: str, v: float) -> float:
    v = float(v)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be positive and finite, got {v}")
    return v


def mean_l2_cube(rho: float, d: int) -> float:
    """Mean L2 norm of ``z ~ U([-rho, rho]^d)``, pixel units.

    ``||z||^2`` has mean ``m = d rho^2 / 3`` and variance ``v = 4 d rho^4 / 45``; the
    second-order expansion ``E sqrt(S) = sqrt(m) (1 - v / (8 m^2))`` gives
    ``rho sqrt(d/3) (1 - 1/(10 d))``, exact up to ``O(d^-2)`` relative terms.
    """
    rho, d = _check_size("rho", rho), _check_dim(d)
    return rho * math.sqrt(d / 3.0) * (1.0 - 1.0 / (10.0 * d))


def mean_l2_ball(radius: float, d: int) -> float:
    """Mean L2 norm of ``z`` uniform in the L2 ball of ``radius`` in ``R^d``: ``radius d / (d + 1)``."""
    radius, d = _check_size("radius", radius), _check_dim(d)
    return radius * d / (d + 1.0)


@dataclass(frozen=True)
class NoiseLevel:
    """One training-noise setting.

    Attributes:
        kind: ``"none"``, ``"cube"`` or ``"ball"``.
        level: 0 for ``"none"``, else 1..K in increasing size (the paper's Tables 13/15/17 for
            the cube, 14/16/18 for the ball).
        rho: cube half-width this level is matched to (0 for ``"none"``), pixel units.
        size: the sampler's parameter: ``rho`` for the cube, the radius ``R`` for the ball.
        mean_l2: expected L2 norm of one noise vector, pixel units.
    """

    kind: str
    level: int
    rho: float
    size: float
    mean_l2: float

    @property
    def name(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}-{self.level}"

    def describe(self) -> str:
        if self.kind == "none":
            return "no noise"
        sym = "rho" if self.kind == "cube" else "R"
        return f"{self.name}: {sym}={self.size:.4g} (mean L2 {self.mean_l2:.3g})"


def noise_levels(rhos: Sequence[float], d: int, kinds: Sequence[str] = NOISE_KINDS,
                 include_clean: bool = True) -> list[NoiseLevel]:
    """The noise settings of the experiment for inputs of dimension ``d``.

    Args:
        rhos: cube half-widths, pixel units, strictly increasing (level k uses ``rhos[k-1]``).
        d: input dimension ``C * H * W``.
        kinds: subset of ``("cube", "ball")``.
        include_clean: put the noise-free baseline (level 0) first.

    Returns:
        ``[none?] + [cube-1..K] + [ball-1..K]`` (in the order of ``kinds``); the ball of level k
        has radius ``matched_ball_radius(rhos[k-1], d)``.
    """
    d = _check_dim(d)
    rhos = [_check_size("every rho", r) for r in rhos]
    if not rhos and not include_clean:
        raise ValueError("no noise level: give at least one rho or include the clean baseline")
    if any(b <= a for a, b in zip(rhos, rhos[1:], strict=False)):
        raise ValueError(f"rhos must be strictly increasing, got {rhos}")
    bad = [k for k in kinds if k not in NOISE_KINDS]
    if bad or len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds must be distinct values among {NOISE_KINDS}, got {list(kinds)}")
    out = [NoiseLevel("none", 0, 0.0, 0.0, 0.0)] if include_clean else []
    for kind in kinds:
        for k, rho in enumerate(rhos, start=1):
            if kind == "cube":
                out.append(NoiseLevel("cube", k, rho, rho, mean_l2_cube(rho, d)))
            else:
                radius = matched_ball_radius(rho, d)
                out.append(NoiseLevel("ball", k, rho, radius, mean_l2_ball(radius, d)))
    return out


def parse_pairs(spec: str | Sequence[str] | Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Pairs from ``"7-8"``, ``["0-1", "7-8"]``, ``[(7, 8)]`` or ``"all"`` (the nine ``i-(i+1)``)."""
    if isinstance(spec, str):
        spec = [spec]
    out: list[tuple[int, int]] = []
    for item in spec:
        if isinstance(item, str) and item.strip().lower() == "all":
            out.extend((i, i + 1) for i in range(9))
            continue
        try:
            if isinstance(item, str):
                a, b = item.split("-")
                pair = (int(a), int(b))
            else:
                a, b = item
                pair = (int(a), int(b))
        except (ValueError, TypeError):
            raise ValueError(f"a pair must look like 'I-J' (e.g. '7-8') or be 'all', got {item!r}") from None
        if pair[0] == pair[1] or min(pair) < 0:
            raise ValueError(f"a pair needs two different non-negative classes, got {item!r}")
        out.append(pair)
    if not out:
        raise ValueError("no class pair given")
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate class pairs in {out}")
    return tuple(out)


@dataclass(frozen=True)
class NoiseTrainingConfig:
    """Settings of the noise-training experiment.

    Defaults are scaled down for a CPU (paper: CIFAR-10, all images, width 1, 100 epochs,
    2000 draws). ``train_limit`` / ``audit_limit`` are images per split (class balanced;
    ``None`` = all); the audited training images are drawn from the images trained on.
    ``arch="mlp"`` (hidden sizes ``hidden``) replaces the paper's CNN for quick checks.
    ``restarts``: a CNN whose training collapses to one constant answer is retrained from
    another seed up to this many times (:func:`perturbscope.train.train_pair_model`); the seed
    kept is in the result's meta.
    """

    source: str = "fashion-mnist-subset"
    pairs: tuple[tuple[int, int], ...] = ((7, 8),)
    rhos: tuple[float, ...] = (0.05, 0.1, 0.2)
    kinds: tuple[str, ...] = NOISE_KINDS
    include_clean: bool = True
    train_limit: int | None = None
    audit_limit: int | None = 200
    data_path: str | None = None
    data_seed: int = 0
    arch: str = "cnn"
    width: float = 0.25
    deep: bool = False
    hidden: tuple[int, ...] = (64,)
    restarts: int = 2
    training: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20))
    audit: AuditConfig = field(default_factory=lambda: AuditConfig(draws=500, saturated=PAPER_SATURATED))

    def validate(self) -> None:
        from perturbscope.data.tasks import SOURCES

        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        parse_pairs(list(self.pairs))
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        for name in ("train_limit", "audit_limit"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or int(v) < 2):
                raise ValueError(f"{name} must be >= 2 images or None, got {v!r}")
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if isinstance(self.restarts, bool) or int(self.restarts) < 0:
            raise ValueError(f"restarts must be >= 0, got {self.restarts!r}")
        if self.training.noise is not None:
            raise ValueError("training.noise must be None: the experiment sets the noise per level")
        self.training.validate()
        noise_levels(self.rhos, 1, self.kinds, self.include_clean)  # checks rhos and kinds

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pairs"] = [f"{i}-{j}" for i, j in self.pairs]
        d["training"] = asdict(self.training)
        d["audit"] = self.audit.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseTrainingConfig:
        """Inverse of :meth:`to_dict` (unknown keys such as ``experiment`` are ignored)."""
        names = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in names}
        kw["pairs"] = parse_pairs(list(d.get("pairs", [])))
        for k in ("rhos", "kinds", "hidden"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if "training" in kw:
            kw["training"] = TrainConfig(**kw["training"])
        if "audit" in kw:
            a = dict(kw["audit"])
            kw["audit"] = AuditConfig(**{"saturated": PAPER_SATURATED, **a,
                                         "alphas": tuple(a.get("alphas", ())),
                                         "bounds": tuple(a.get("bounds", (0.0, 1.0)))})
        return cls(**kw)
