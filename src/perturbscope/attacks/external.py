"""Perturbations computed elsewhere (foolbox, torchattacks, ART, your own code), as an attack.

``Given(perturbation=delta)`` or ``Given(adversarial=x_adv)`` wraps another library's output in
the shared attack interface: calling it on the model and the same inputs re-checks that each
row flips the prediction (``label(x + delta) != y``), records its L1, L2 and Linf norms, and
reports the rows that do not flip as failures (NaN norms). It can be one candidate of
:class:`~perturbscope.attacks.best.BestOf` and is what the audit's ``perturbations=`` uses.

Recipes (``x``: ``(N, C, H, W)`` in [0, 1], ``y``: labels, ``model``: a ``(N, K)`` logits
module or ``Classifier(model, output)``, whose ``forward`` gives logits)::

    # foolbox 3
    fmodel = foolbox.PyTorchModel(clf.eval(), bounds=(0, 1))
    _, x_adv, _ = foolbox.attacks.L2DeepFoolAttack()(fmodel, x, y, epsilons=None)
    # torchattacks
    x_adv = torchattacks.DeepFool(clf.eval(), steps=50)(x, y)
    # adversarial-robustness-toolbox
    est = art.estimators.classification.PyTorchClassifier(clf.eval(), loss=torch.nn.CrossEntropyLoss(),
                                                          input_shape=x.shape[1:], nb_classes=2,
                                                          clip_values=(0, 1))
    x_adv = torch.from_numpy(art.attacks.evasion.DeepFool(est).generate(x.numpy()))

    result = Given(adversarial=x_adv)(clf, x, y)     # then: audit(..., perturbations=x_adv - x)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from perturbscope.attacks.base import Attack, RunOutput, register_attack
from perturbscope.models.classifier import Classifier

__all__ = ["Given"]


@register_attack
@dataclass(frozen=True, eq=False)
class Given(Attack):
    """Precomputed perturbations ``(N, *shape)`` or adversarial inputs ``(N, *shape)``, re-checked.

    Attributes:
        perturbation: ``x_adv - x`` per input, pixel units (give this or ``adversarial``).
        adversarial: the adversarial inputs themselves.
        source: a name for the records (e.g. ``"foolbox-deepfool"``).

    Rows of NaN (a library's mark for "no adversarial found") count as failures.
    """

    name = "given"
    perturbation: torch.Tensor | None = None
    adversarial: torch.Tensor | None = None
    source: str = "given"

    @property
    def _what(self) -> str:
        return "perturbation" if self.perturbation is not None else "adversarial"

    @property
    def _tensor(self) -> torch.Tensor:
        return self.perturbation if self.perturbation is not None else self.adversarial

    def validate(self) -> None:
        if (self.perturbation is None) == (self.adversarial is None):
            raise ValueError("Given needs exactly one of perturbation= or adversarial=")
        t = self._tensor
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim < 2:
            raise ValueError(f"the given {self._what} must be a floating-point tensor (N, ...), "
                             f"got {getattr(t, 'shape', t)!r}")

    def check_inputs(self, x: torch.Tensor) -> None:
        if tuple(self._tensor.shape) != tuple(x.shape):
            raise ValueError(f"the given {self._what} has shape {tuple(self._tensor.shape)}, the inputs "
                             f"{tuple(x.shape)}; they must match row for row")

    def restrict(self, rows: torch.Tensor) -> Given:
        rows = rows.cpu()
        if self.perturbation is not None:
            return replace(self, perturbation=self.perturbation[rows])
        return replace(self, adversarial=self.adversarial[rows])

    def delta_for(self, x: torch.Tensor) -> torch.Tensor:
        """The perturbations for inputs ``x`` (shape-checked), NaN rows kept."""
        self.check_inputs(x)
        t = self._tensor.to(device=x.device, dtype=x.dtype)
        return t if self.perturbation is not None else t - x

    def _run(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> RunOutput:
        delta = self.delta_for(x)
        finite = torch.isfinite(delta.reshape(delta.shape[0], -1)).all(1)
        nonzero = delta.reshape(delta.shape[0], -1).abs().amax(1) > 0
        delta = torch.where(finite.view(-1, *([1] * (x.ndim - 1))), delta, torch.zeros_like(delta))
        return RunOutput(delta, finite & nonzero, 0, extras={"source": self.source})
