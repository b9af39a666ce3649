"""One attack interface: a frozen settings dataclass called on a classifier, inputs and labels.

Every attack is a subclass of :class:`Attack` (a frozen dataclass of its settings) that
implements :meth:`Attack._run`; calling it runs the work all attacks share, once::

    result = LineSearch(s_max=10)(model, x, y)      # model: nn.Module or Classifier
    result = DeepFool(overshoot=0.02)(clf, x)       # y omitted: the clean predictions

1. the model is wrapped as a :class:`~perturbscope.models.classifier.Classifier` (its output
   kind and bounds), ``x`` is checked against the bounds, ``y`` against the model's classes;
2. the model runs in eval mode (every submodule's own flag restored afterwards);
3. inputs already predicted differently from ``y`` get a zero perturbation and count as
   successes after 0 iterations; only the others reach :meth:`Attack._run`;
4. success is re-checked by one predicate, ``label(x + delta) != y`` (``x + delta`` clipped to
   the bounds first when ``clip=True``), so "success" means the same for every attack;
5. the norms of failed rows are NaN; forwards and input gradients are counted.

``bounds`` has one meaning everywhere: the declared input domain, carried by the Classifier and
always checked. Whether ``x + delta`` is kept inside it is the attack's own ``clip`` switch
(default ``False``: unconstrained, as the paper's line search).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from perturbscope.models.classifier import Classifier, as_classifier, with_autograd
from perturbscope.validation import check_images, check_int

__all__ = ["Attack", "AttackResult", "RunOutput", "norms", "ATTACKS", "register_attack", "make_attack",
           "attack_names"]


def norms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L1, L2 and Linf norms ``(N,)`` of perturbations ``(N, ...)``, computed in float64."""
    flat = delta.reshape(delta.shape[0], -1).double()
    return flat.abs().sum(1), flat.norm(dim=1), flat.abs().amax(1)


@dataclass
class AttackResult:
    """Per-image outcome of an attack on ``N`` inputs.

    Attributes:
        perturbation: ``(N, *input_shape)``; zero where the attack failed. ``x + perturbation``
            (clipped to the bounds when the attack's ``clip`` is set) is the adversarial input.
        eps_l2, eps_l1, eps_linf: ``(N,)`` float64 norms of ``perturbation`` in input units
            (pixel units); NaN where the attack failed.
        success: ``(N,)`` bool, ``label(x + perturbation) != labels`` (re-checked).
        labels: ``(N,)`` reference labels the attack moved away from.
        adv_labels: ``(N,)`` predicted labels at ``x + perturbation``.
        forwards: single-input forward passes spent (a batch of ``B`` counts ``B``).
        gradients: single-input gradient (backward) passes spent.
        iterations: ``(N,)`` int64 iterations per input where the attack iterates, else ``None``.
        attack: name of the attack (``attack_won`` per image for a best-of result).
    """

    perturbation: torch.Tensor
    eps_l2: torch.Tensor
    eps_l1: torch.Tensor
    eps_linf: torch.Tensor
    success: torch.Tensor
    labels: torch.Tensor
    adv_labels: torch.Tensor
    forwards: int
    gradients: int = 0
    iterations: torch.Tensor | None = None
    attack: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def l1(self) -> torch.Tensor:
        return self.eps_l1

    @property
    def l2(self) -> torch.Tensor:
        return self.eps_l2

    @property
    def linf(self) -> torch.Tensor:
        return self.eps_linf

    def norm(self, p: str | float) -> torch.Tensor:
        """The ``(N,)`` norms for ``p`` in ``{1, 2, inf}`` (or ``"l1"``, ``"l2"``, ``"linf"``)."""
        key = {1: "l1", 2: "l2", float("inf"): "linf", "1": "l1", "2": "l2", "inf": "linf",
               "l1": "l1", "l2": "l2", "linf": "linf"}.get(p)
        if key is None:
            raise ValueError(f"p must be 1, 2, inf, 'l1', 'l2' or 'linf', got {p!r}")
        return getattr(self, f"eps_{key}")

    @classmethod
    def build(cls, delta: torch.Tensor, success: torch.Tensor, labels: torch.Tensor,
              adv_labels: torch.Tensor, forwards: int, gradients: int = 0,
              iterations: torch.Tensor | None = None, attack: str = "",
              extras: dict[str, Any] | None = None) -> AttackResult:
        """A result from raw pieces: failed rows get a zero perturbation and NaN norms."""
        delta = torch.where(success.view(-1, *([1] * (delta.ndim - 1))), delta, torch.zeros_like(delta))
        l1, l2, linf = norms(delta)
        nan = torch.full_like(l2, float("nan"))
        return cls(delta, torch.where(success, l2, nan), torch.where(success, l1, nan),
                   torch.where(success, linf, nan), success.clone(), labels, adv_labels,
                   int(forwards), int(gradients), iterations, attack, dict(extras or {}))


@dataclass
class RunOutput:
    """What :meth:`Attack._run` returns for the ``M`` inputs it was given (all correctly classified).

    ``success`` is the attack's own claim; the base call re-checks it.
    """

    perturbation: torch.Tensor
    success: torch.Tensor
    forwards: int
    gradients: int = 0
    iterations: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Attack:
    """Base of every attack: settings as frozen dataclass fields, one call signature.

    Subclasses set ``name`` and implement :meth:`_run`. Shared settings:

    Attributes:
        batch_size: inputs per forward pass (results do not depend on it).
        clip: keep ``x + delta`` inside the classifier's bounds (default ``False``).
        progress: show a progress bar (stderr) of the inputs done, for attacks that report it.
    """

    name: ClassVar[str] = ""
    #: the attack reports iterations per input (``result.iterations`` is then never ``None``)
    iterates: ClassVar[bool] = False
    batch_size: int = 256
    clip: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, minimum=1)
        if not isinstance(self.clip, bool):
            raise TypeError(f"clip must be True or False, got {self.clip!r}")
        self.validate()

    def validate(self) -> None:
        """Check the attack's own settings (subclasses); raise ``ValueError`` naming the field."""

    def options(self) -> dict[str, Any]:
        """The settings as plain data (for records and configuration dumps)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "progress"}

    def progress_bar(self, total: int):
        """A context giving ``advance(k)``: a bar of ``total`` inputs (silent unless ``progress``)."""
        from perturbscope.progress import progress_bar

        return progress_bar(self.name or type(self).__name__, total, self.progress)

    def apply(self, clf: Classifier, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The adversarial input ``x + delta`` (clipped to the bounds when ``clip``)."""
        xa = x + delta
        if self.clip and clf.bounds is not None:
            xa = xa.clamp(*clf.bounds)
        return xa

    def check_inputs(self, x: torch.Tensor) -> None:
        """Checks of the inputs that depend on the attack's own data (default: none)."""

    def restrict(self, rows: torch.Tensor) -> Attack:
        """The attack for the inputs ``rows`` of the call (the same attack unless it holds
        per-input data, as :class:`~perturbscope.attacks.external.Given` does)."""
        return self

    def _run(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> RunOutput:
        """Attack ``x`` ``(M, ...)`` (all correctly classified, on the model's device) away from ``y``."""
        raise NotImplementedError

    @with_autograd
    def __call__(self, model: nn.Module | Classifier, x: torch.Tensor, y: torch.Tensor | None = None, *,
                 output: str | None = None) -> AttackResult:
        """Attack ``x`` ``(N, ...)`` (pixel units, inside the model's bounds) away from ``y`` ``(N,)``.

        Args:
            model: an ``nn.Module`` (wrapped with ``output`` or its ``output_kind``) or a Classifier.
            x: float inputs; moved to the model's device.
            y: reference labels (usually the true labels); default: the clean predictions.
        Returns:
            :class:`AttackResult` on the model's device.

        Works inside a caller's ``torch.inference_mode()`` or ``no_grad()``: the attack runs with
        autograd available (gradient attacks need it) on a normal copy of inference-mode inputs.
        """
        clf = as_classifier(model, output)
        if self.clip and clf.bounds is None:
            raise ValueError(f"{type(self).__name__}(clip=True) needs a classifier with bounds")
        check_images(x, clf.bounds)
        self.check_inputs(x)
        device = clf.device
        x = x.to(device)
        n = x.shape[0]
        with clf.evaluating():
            clean = clf.predict(x, self.batch_size)
            ref = clean if y is None else clf.check_labels(torch.as_tensor(y), n).to(device)
            todo = (clean == ref).nonzero()[:, 0]
            delta = torch.zeros_like(x)
            claimed = torch.ones(n, dtype=torch.bool, device=device)
            iterations = torch.zeros(n, dtype=torch.long, device=device) if self.iterates else None
            forwards, gradients, extras = n, 0, {}
            if todo.numel():
                out = self.restrict(todo)._run(clf, x[todo], ref[todo])
                delta[todo] = out.perturbation.to(delta.dtype)
                claimed[todo] = out.success.to(device)
                forwards += out.forwards
                gradients += out.gradients
                extras = {k: _scatter_rows(v, todo, n) for k, v in out.extras.items()}
                if out.iterations is not None:
                    if iterations is None:
                        iterations = torch.zeros(n, dtype=torch.long, device=device)
                    iterations[todo] = out.iterations.to(device)
            adv_labels = clf.predict(self.apply(clf, x, delta), self.batch_size)
            forwards += n
        success = claimed & (adv_labels != ref)
        if self.clip and clf.bounds is not None:
            delta = self.apply(clf, x, delta) - x
        return AttackResult.build(delta, success, ref, adv_labels, forwards, gradients, iterations,
                                  self.name, extras)


def _scatter_rows(value: Any, rows: torch.Tensor, n: int) -> Any:
    """A per-row tensor of the attacked subset, spread to all ``n`` inputs (zeros elsewhere)."""
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == rows.numel():
        full = torch.zeros((n, *value.shape[1:]), dtype=value.dtype, device=value.device)
        full[rows.to(value.device)] = value
        return full
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.shape[0] == rows.numel():
        out = np.full(n, "" if value.dtype == object else 0, dtype=value.dtype)
        out[rows.cpu().numpy()] = value
        return out
    return value


#: every registered attack by name (CLI names): ``make_attack(name, **options)`` builds one.
ATTACKS: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: add an :class:`Attack` subclass to :data:`ATTACKS` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in ATTACKS and ATTACKS[cls.name] is not cls:
        raise ValueError(f"an attack named {cls.name!r} is already registered")
    ATTACKS[cls.name] = cls
    return cls


def attack_names() -> tuple[str, ...]:
    """Names of the registered attacks (the built-in ones register when ``perturbscope.attacks``
    is imported, which importing this module always does first)."""
    return tuple(ATTACKS)


def make_attack(name: str, **options: Any) -> Attack:
    """The registered attack ``name`` with ``options`` (its dataclass fields)."""
    names = attack_names()
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {names}")
    cls = ATTACKS[name]
    known = {f.name for f in fields(cls)}
    bad = sorted(set(options) - known)
    if bad:
        raise ValueError(f"attack {name!r} has no option(s) {bad}; its options are {sorted(known)}")
    return cls(**options)
