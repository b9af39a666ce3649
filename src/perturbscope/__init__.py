"""perturbscope: the geometry of a classifier's perturbations.

Adversarial, random, universal and harmless perturbations measured side by side
on one model, with the theory that explains them.

Conventions (see docs/conventions.md):

* inputs are float tensors in pixel units, usually in [0, 1], shaped (N, C, H, W);
* a perturbation's size is its L2 norm on the flattened input unless stated;
* every random function takes a seed or a :class:`torch.Generator`.
"""

__version__ = "0.1.0"
