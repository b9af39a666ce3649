"""Which adversarial size the audit scales its probe by, and the certified lower bound beside it.

``cfg.attack`` (:data:`~perturbscope.audit.config.AUDIT_ATTACKS`):

``"line-search"``  the paper's gradient line search with the audit's ``s_max``, ``steps``,
                   ``refine_tol``;
``"min-norm"``     the FMN/DDN-style minimal-norm attack;
``"best"``         per image the smallest flipping perturbation of the line search, DeepFool and
                   min-norm (an upper bound on the distance to the boundary).

Perturbations computed by another library (``given``) replace the attack, or join the best-of.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from perturbscope.attacks import AttackResult, BestOf, DeepFool, Given, LineSearch, MinNorm
from perturbscope.attacks.base import Attack
from perturbscope.audit.config import AuditConfig
from perturbscope.models.classifier import Classifier

__all__ = ["audit_attack", "attack_from_config", "lower_bound_for_audit"]


def attack_from_config(cfg: AuditConfig, given: torch.Tensor | None = None, progress: bool = False) -> Attack:
    """The :class:`~perturbscope.attacks.base.Attack` an audit with ``cfg`` runs."""
    ls = LineSearch(s_max=cfg.s_max, steps=cfg.steps, refine_tol=cfg.refine_tol, batch_size=cfg.batch_size,
                    search=cfg.search, saturated=cfg.saturated, progress=progress, clip=cfg.clip_attack)
    clip = cfg.clip_attack  # every attack keeps x + delta in the bounds when asked (box-aware variant)
    ext = None if given is None else Given(perturbation=given, batch_size=cfg.batch_size, clip=clip)
    if cfg.attack == "best":
        b = cfg.batch_size
        attacks: tuple[Attack, ...] = (ls, DeepFool(batch_size=b, clip=clip),
                                       MinNorm(batch_size=b, clip=clip))
        return BestOf(attacks=attacks + ((ext,) if ext is not None else ()), batch_size=cfg.batch_size,
                      clip=clip)
    if ext is not None:
        return ext
    if cfg.attack == "min-norm":
        return MinNorm(batch_size=cfg.batch_size, clip=clip)
    return ls


def audit_attack(clf: Classifier, x: torch.Tensor, y: torch.Tensor, cfg: AuditConfig,
                 given: torch.Tensor | None = None, progress: bool = False, label: str = ""
                 ) -> tuple[AttackResult, np.ndarray]:
    """Run the audit's attack on ``x`` ``(M, ...)`` / ``y`` ``(M,)``; returns the result and the
    ``(M,)`` object array of winning attack names (``""`` where none flipped)."""
    att = attack_from_config(cfg, given, progress)
    res = att(clf, x, y)
    if isinstance(att, BestOf):
        won = np.asarray(res.extras["winner"], dtype=object)
    else:
        name = "given" if isinstance(att, Given) else att.name
        won = np.where(res.success.cpu().numpy(), name, "").astype(object)
    return res, won


def lower_bound_for_audit(clf: Classifier, x: torch.Tensor, y: torch.Tensor, upper: np.ndarray,
                          cfg: AuditConfig, progress: bool = False) -> np.ndarray:
    """Certified L2 radii ``(M,)`` (linear relaxation, bracket top ``upper``) for the audit."""
    from perturbscope.certify import certified_radius

    res = certified_radius(clf, x, y, method="linear", upper=torch.from_numpy(upper), rtol=0.01,
                           progress=progress)
    return res.radius.numpy()


def with_attack(cfg: AuditConfig, name: str) -> AuditConfig:
    """``cfg`` with another probe scaling attack (for side-by-side tables)."""
    return replace(cfg, attack=name)
