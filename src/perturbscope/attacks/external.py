"""Perturbations computed elsewhere (foolbox, torchattacks, ART, your own code), as an attack.

``Given(perturbation=delta)`` or ``Given(adversarial=x_adv)`` wraps another library's output in
the shared attack interface: calling it on the model and the same inputs re-checks that each
row flips the prediction (``label(x + delta) != y``), records its L1, L2 and Linf norms, and
reports the rows that do not flip as failures (NaN norms). It can be one candidate of
:class:`~perturbscope.attacks.best.BestOf` and is what the audit's ``perturbations=`` uses.

Recipes (``x``: ``(N, C, H, W)`` in [0, 1], ``y``: labels, ``clf``: ``Classifier(model, output)``,
whose ``forward`` gives ``(N, K)`` logits; checked against foolbox 3.3.4, torchattacks 3.5.1 and
adversarial-robustness-toolbox 1.20.1, docs/attacks.md)::

    # foolbox 3
    fmodel = foolbox.PyTorchModel(clf.eval(), bounds=(0, 1))
    _, x_adv, _ = foolbox.attacks.L2DeepFoolAttack(steps=50, candidates=2)(fmodel, x, y, epsilons=None)
    # torchattacks
    x_adv = torchattacks.DeepFool(clf.eval(), steps=50, overshoot=0.02)(x, y)
    # adversarial-robustness-toolbox
    est = art.estimators.classification.PyTorchClassifier(model=clf.eval(), loss=torch.nn.CrossEntropyLoss(),
                                                          input_shape=tuple(x.shape[1:]), nb_classes=2,
                                                          clip_values=(0, 1))
    x_adv = torch.from_numpy(art.attacks.evasion.DeepFool(est, max_iter=50, nb_grads=2).generate(x.numpy()))

    result = Given(adversarial=x_adv)(clf, x, y)     # then: audit(..., perturbations=x_adv - x)

On the command line: ``perturbscope audit ... --adversarial x_adv.npy`` (or ``--perturbations``),
read by :func:`load_given`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbscope.attacks.base import Attack, RunOutput, register_attack
from perturbscope.models.classifier import Classifier

__all__ = ["Given", "load_given"]


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


def load_given(path: str | os.PathLike) -> Any:
    """Perturbations or adversarial inputs ``(N, *shape)`` saved by another tool, read safely.

    ``.npy``: ``numpy.load(allow_pickle=False, mmap_mode="r")`` (memory-mapped: rows are read
    when used); ``.npz``: its only array (or the one named ``perturbations``, ``delta``,
    ``adversarial`` or ``x_adv``); ``.pt`` / ``.pth``: ``torch.load(weights_only=True)`` of a
    tensor (or a dict holding one tensor). Nothing in the file can run code.

    Returns:
        A float ``np.ndarray`` (possibly a memmap) or ``torch.Tensor``, rows aligned with the
        audited images (row ``k`` is the record with ``index`` ``k``); NaN rows mean "none found".

    Raises:
        FileNotFoundError: no such file. ValueError: another suffix, pickled objects, a file
        holding no single array, a non-float array, or fewer than 2 dimensions.
    """
    import pickle

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"perturbations file {p} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr: Any = np.load(p, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{p}: not a plain numeric .npy array ({exc}); pickled objects are "
                             "refused") from exc
    elif suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.files)
                pick = next((k for k in ("perturbations", "delta", "adversarial", "x_adv") if k in keys),
                            keys[0] if len(keys) == 1 else None)
                if pick is None:
                    raise ValueError(f"{p} holds several arrays {keys}; name the one to use "
                                     "'perturbations' or 'adversarial'")
                arr = z[pick]
        except (OSError, pickle.UnpicklingError) as exc:
            raise ValueError(f"{p}: not a readable .npz ({exc})") from exc
    elif suffix in (".pt", ".pth"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(f"refusing {p}: it holds pickled objects, not only a tensor (loaded with "
                             "weights_only=True, nothing was run); save the tensor itself") from exc
        except Exception as exc:
            raise ValueError(f"{p} is not a readable torch file: {type(exc).__name__}: {exc}") from exc
        if isinstance(obj, dict):
            tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
            obj = tensors[0] if len(tensors) == 1 else obj
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{p} holds a {type(obj).__name__}, not a tensor of perturbations")
        arr = obj
    else:
        raise ValueError(f"{p}: perturbations must be a .npy, .npz or .pt file, got {p.suffix!r}")
    dtype_ok = (arr.is_floating_point() if isinstance(arr, torch.Tensor)
                else np.issubdtype(arr.dtype, np.floating))
    if not dtype_ok:
        raise ValueError(f"{p}: perturbations must be floating point (pixel units), got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"{p}: expected an array (N, *input_shape), got shape {tuple(arr.shape)}")
    return arr
