"""Attacks: one interface (:mod:`perturbscope.attacks.base`), every attack a frozen settings class.

=================  =================================================================
``LineSearch``     the paper's gradient line search (``"line-search"``)
``DeepFool``       DeepFool, L2 or Linf (``"deepfool"``)
``MinNorm``        FMN/DDN-style minimal-norm L2 attack (``"min-norm"``)
``PGD``            projected gradient descent, fixed L2 / Linf budget (``"pgd"``)
``BestOf``         the smallest successful perturbation of several attacks (``"best"``)
``Given``          perturbations computed by another library, re-checked (``"given"``)
=================  =================================================================

``make_attack(name, **options)`` builds a registered attack by name; universal perturbations
(:mod:`perturbscope.attacks.universal`) build one perturbation for many inputs.
"""

from perturbscope.attacks.base import ATTACKS, Attack, AttackResult, attack_names, make_attack, norms
from perturbscope.attacks.best import BestOf
from perturbscope.attacks.deepfool import DeepFool
from perturbscope.attacks.external import Given
from perturbscope.attacks.line_search import LineSearch
from perturbscope.attacks.min_norm import MinNorm
from perturbscope.attacks.pgd import PGD

__all__ = ["ATTACKS", "Attack", "AttackResult", "attack_names", "make_attack", "norms", "BestOf", "DeepFool",
           "Given", "LineSearch", "MinNorm", "PGD"]
