"""The best of several attacks per image: an upper bound on the distance to the boundary.

``BestOf(attacks)`` runs every attack through its own call (each success re-checked by the
shared predicate) and keeps, per image, the successful perturbation of smallest L2 norm; the
winner of an image is the first listed attack with that norm. Any registered attack can take
part, including :class:`~perturbscope.attacks.external.Given` perturbations computed by another
library.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from perturbscope.attacks.base import Attack, RunOutput, register_attack
from perturbscope.attacks.deepfool import DeepFool
from perturbscope.attacks.line_search import LineSearch
from perturbscope.attacks.min_norm import MinNorm
from perturbscope.models.classifier import Classifier

__all__ = ["BestOf", "DEFAULT_BEST"]


def _default_attacks() -> tuple[Attack, ...]:
    return (LineSearch(), DeepFool(), MinNorm())


#: the attacks of ``BestOf()``: the paper's line search, DeepFool (L2, unclipped), min-norm
DEFAULT_BEST: tuple[str, ...] = ("line-search", "deepfool", "min-norm")


@register_attack
@dataclass(frozen=True)
class BestOf(Attack):
    """Per image, the smallest successful L2 perturbation of several attacks.

    Attributes:
        attacks: the attacks to run (at least one, distinct names).

    ``result.extras``: ``"winner"`` (object array of attack names, ``""`` where all failed),
    ``"per_attack"`` (each attack's own :class:`~perturbscope.attacks.base.AttackResult`, rows of
    the correctly classified inputs), ``"seconds"`` (wall-clock seconds per attack).
    """

    name = "best"
    attacks: tuple[Attack, ...] = field(default_factory=_default_attacks)

    def validate(self) -> None:
        attacks = tuple(self.attacks)
        if not attacks:
            raise ValueError("attacks must name at least one attack")
        bad = [a for a in attacks if not isinstance(a, Attack)]
        if bad:
            raise TypeError(f"attacks must be Attack instances, got {bad!r}")
        names = [a.name for a in attacks]
        if len(set(names)) != len(names):
            raise ValueError(f"attacks must not repeat, got {names}")
        object.__setattr__(self, "attacks", attacks)

    def check_inputs(self, x: torch.Tensor) -> None:
        for a in self.attacks:
            a.check_inputs(x)

    def restrict(self, rows: torch.Tensor) -> BestOf:
        return replace(self, attacks=tuple(a.restrict(rows) for a in self.attacks))

    def options(self) -> dict:
        return {"attacks": {a.name: a.options() for a in self.attacks}, "batch_size": self.batch_size,
                "clip": self.clip}

    def _run(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> RunOutput:
        per, secs = {}, {}
        for att in self.attacks:
            t0 = time.perf_counter()
            per[att.name] = att(clf, x, y)
            secs[att.name] = time.perf_counter() - t0
        names = [a.name for a in self.attacks]
        n = x.shape[0]
        inf = torch.full((n,), float("inf"), dtype=torch.float64, device=x.device)
        l2 = torch.stack([torch.where(per[a].success, per[a].eps_l2, inf) for a in names])  # (A, N)
        best_val, best_i = l2.min(0)  # first minimum on ties
        success = torch.isfinite(best_val)
        delta = torch.zeros_like(x)
        for j, a in enumerate(names):
            sel = (best_i == j) & success
            delta[sel] = per[a].perturbation[sel].to(x.dtype)
        pairs = zip(best_i.cpu().tolist(), success.cpu().tolist(), strict=True)
        winner = np.array([names[i] if ok else "" for i, ok in pairs], dtype=object)
        return RunOutput(delta, success, sum(r.forwards for r in per.values()),
                         sum(r.gradients for r in per.values()),
                         extras={"winner": winner, "per_attack": per, "seconds": secs})
