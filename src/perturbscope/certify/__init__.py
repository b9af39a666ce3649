"""Certified (sound) lower bounds on the L2 distance to the decision boundary.

See :mod:`perturbscope.certify.bounds` for the methods (global Lipschitz; CROWN-style forward
linear relaxation with bisection on the radius) and :mod:`perturbscope.certify.ops` for the
supported architectures. auto_LiRPA was tried first: every release on PyPI pins
``torch < 1.13``, so it cannot be installed next to torch 2.x without replacing torch.
"""

from perturbscope.certify.bounds import (
    METHODS,
    CertifiedResult,
    certified_radius,
    lipschitz_radius,
    margin_lower_bound,
)
from perturbscope.certify.ops import margin_ops, model_ops

__all__ = ["METHODS", "CertifiedResult", "certified_radius", "lipschitz_radius", "margin_lower_bound",
           "margin_ops", "model_ops"]
