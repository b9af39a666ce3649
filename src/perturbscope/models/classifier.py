"""One classifier interface: a model with its output kind, value bounds, normalisation and device.

Every public function of perturbscope takes an ``nn.Module`` or a :class:`Classifier`; a bare
module is wrapped once by :func:`as_classifier`. The wrapper is the only place that knows how a
model's raw output becomes scores, labels and margins:

``"sigmoid"``
    binary model returning a probability ``p`` in [0, 1], shape ``(N,)`` or ``(N, 1)``;
    label ``1`` iff ``p >= 0.5`` (the paper's convention). If the module has a ``logit(x)``
    method returning the pre-sigmoid score ``z`` (every perturbscope model does), scores and
    gradients are taken from ``z`` (no saturation) and the label is ``sigmoid(z) >= 0.5``,
    which is bit-identical to thresholding ``forward``.
``"logit"``
    binary model returning one pre-sigmoid score ``z``, shape ``(N,)`` or ``(N, 1)``;
    label ``1`` iff ``z >= 0``.
``"logits"``
    multi-class model returning ``(N, K)`` scores, ``K >= 2``; label = argmax.

Binary models are presented as two logits ``(-z/2, z/2)`` (softmax = the model's
probabilities), so DeepFool, PGD and foreign libraries see one ``(N, K)`` classifier.

Normalisation (``mean``/``std``) is applied inside the wrapper, so inputs, bounds and every norm
stay in pixel units. The wrapper never changes the module's train/eval mode except inside
:meth:`Classifier.evaluating`, which restores every submodule's own flag afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["Classifier", "as_classifier", "OUTPUT_KINDS", "ModelOutputError", "eval_mode", "model_device",
           "input_gradient", "with_autograd"]

_F = TypeVar("_F", bound=Callable[..., Any])

OUTPUT_KINDS: tuple[str, ...] = ("sigmoid", "logit", "logits")


class ModelOutputError(ValueError):
    """The model's output does not fit its declared kind (shape, batch size, range, NaN)."""


def _normal(value: Any) -> Any:
    """A normal copy of an inference-mode tensor (autograd cannot save those); anything else as is."""
    return value.clone() if isinstance(value, torch.Tensor) and value.is_inference() else value


def with_autograd(fn: _F) -> _F:
    """Run ``fn`` with autograd available, whatever the caller's mode.

    Inside a caller's ``torch.inference_mode()`` or ``no_grad()`` (a user's evaluation loop), a
    function that takes input gradients would fail or find no gradient; wrapped, it runs in
    ``inference_mode(False)`` with gradients enabled, on normal copies of inference-mode tensor
    arguments, and gives exactly the result it gives outside.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*[_normal(a) for a in args], **{k: _normal(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def input_gradient(value: torch.Tensor, x: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
    """``d value / d x`` (``value`` a scalar computed from the model's output on ``x``).

    Raises :class:`ModelOutputError` when no gradient reaches ``x``: the model's output does not
    depend on its input (a constant, or a forward pass that detaches or replaces it), so no
    gradient attack can run on it.
    """
    if value.requires_grad:
        (g,) = torch.autograd.grad(value, x, retain_graph=retain_graph, allow_unused=True)
        if g is not None:
            return g
    raise ModelOutputError("the model's output does not depend on its input: no gradient reaches x (a "
                           "constant model, or a forward pass that detaches its input or computes without "
                           "gradients); a gradient attack cannot run on it. Check the model's forward")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in eval mode; restore each module's own flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _check_bounds(bounds: Sequence[float] | None) -> tuple[float, float] | None:
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bounds must be a pair (low, high) of numbers, got {bounds!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with low < high, got {bounds!r}")
    return lo, hi


class Classifier(nn.Module):
    """A classifier over inputs in pixel units: ``forward(x)`` gives ``(N, K)`` logits.

    Args:
        module: the model. Its output kind is ``output`` (or its ``output_kind`` attribute).
        output: ``"sigmoid"``, ``"logit"`` or ``"logits"`` (see the module docstring).
        bounds: the declared value range ``(lo, hi)`` of valid inputs, in pixel units (default
            ``(0, 1)``); inputs are checked against it, attacks clip to it only when asked.
            ``None``: no range.
        mean, std: optional per-channel normalisation applied inside, ``module((x - mean) / std)``.
        device: move the module there (default: leave it where it is).

    Attributes:
        module: the wrapped model (normalisation not included).
        output: the output kind.
        bounds: ``(lo, hi)`` or ``None``.
        binary: ``True`` for ``"sigmoid"`` / ``"logit"`` models.
    """

    def __init__(self, module: nn.Module, output: str | None = None, *,
                 bounds: Sequence[float] | None = (0.0, 1.0), mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, device: str | torch.device | None = None) -> None:
        super().__init__()
        if isinstance(module, Classifier):
            raise TypeError("module is already a Classifier; use as_classifier() to reuse it")
        if not isinstance(module, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or a Classifier, got {type(module).__name__}")
        if output is None:
            output = getattr(module, "output_kind", None)
            if output is None:
                raise ValueError(
                    "output is not given and the model has no 'output_kind' attribute: pass "
                    "output='sigmoid' (binary probability), 'logit' (binary score) or 'logits' (N, K)")
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        self.module = module
        self.output = output
        self.bounds = _check_bounds(bounds)
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std for the input normalisation, or neither")
        self.normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        if mean is not None:
            m = tuple(float(v) for v in mean)
            s = tuple(float(v) for v in std)  # type: ignore[union-attr]
            if len(m) != len(s) or not m:
                raise ValueError(f"mean and std must have the same (channel) length, got {m} and {s}")
            if not all(math.isfinite(v) for v in m + s) or min(s) <= 0:
                raise ValueError(f"mean must be finite and std positive and finite, got {m} and {s}")
            self.normalization = (m, s)
            self.register_buffer("_mean", torch.tensor(m, dtype=torch.float64).view(1, -1, 1, 1),
                                 persistent=False)
            self.register_buffer("_std", torch.tensor(s, dtype=torch.float64).view(1, -1, 1, 1),
                                 persistent=False)
        meta = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
        if meta:
            raise ValueError(f"the model's weights are on the meta device (not loaded), e.g. {meta[0]!r}; "
                             f"load its weights (load_state_dict(..., assign=True)) before auditing it")
        if device is not None:
            self.to(device)
        logit = getattr(module, "logit", None)
        self._logit = logit if output == "sigmoid" and callable(logit) else None
        self._num_classes: int | None = 2 if self.binary else None

    # ------------------------------------------------------------------ properties
    @property
    def binary(self) -> bool:
        return self.output != "logits"

    @property
    def device(self) -> torch.device:
        return model_device(self.module)

    @property
    def dtype(self) -> torch.dtype | None:
        """Floating dtype of the model's first floating parameter or buffer (``None`` if it has none)."""
        for t in (*self.module.parameters(), *self.module.buffers()):
            if t.is_floating_point():
                return t.dtype
        return None

    @property
    def num_classes(self) -> int | None:
        """2 for binary models; ``K`` for ``"logits"`` models once one forward pass has run."""
        return self._num_classes

    def describe(self) -> str:
        norm = "" if self.normalization is None else f", normalise mean={self.normalization[0]} " \
                                                     f"std={self.normalization[1]}"
        return (f"{type(self.module).__name__} (output={self.output}, bounds={self.bounds}, "
                f"device={self.device}{norm})")

    # ------------------------------------------------------------------ evaluation
    def evaluating(self) -> contextlib.AbstractContextManager:
        """Context: the module in eval mode, every submodule's own flag restored afterwards."""
        return eval_mode(self.module)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalization is None:
            return x
        c = self._mean.shape[1]
        if c > 1 and (x.ndim < 2 or x.shape[1] != c):
            raise ValueError(f"the normalisation has {c} values per channel (mean={self.normalization[0]}) "
                             f"but the inputs of shape {tuple(x.shape)} have "
                             f"{x.shape[1] if x.ndim >= 2 else 'no'} channels (dimension 1); give one mean "
                             "and std per input channel (--normalize on the command line)")
        return (x - self._mean.to(x)) / self._std.to(x)

    def _check_output(self, out: torch.Tensor, n: int, what: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise ModelOutputError(f"the model returned a {type(out).__name__}, not a tensor")
        if self.binary:
            if out.ndim == 2 and out.shape[1] == 1:
                out = out[:, 0]
            if out.ndim != 1:
                hint = " (use output='logits' for (N, K) scores)" if out.ndim == 2 else ""
                raise ModelOutputError(f"a model with output={self.output!r} must return shape (N,) or "
                                       f"(N, 1), got {tuple(out.shape)}{hint}")
        elif out.ndim != 2 or out.shape[1] < 2:
            raise ModelOutputError(f"a model with output='logits' must return (N, K) scores with K >= 2, "
                                   f"got shape {tuple(out.shape)}")
        if out.shape[0] != n:
            raise ModelOutputError(f"the model returned {out.shape[0]} rows for a batch of {n} inputs; "
                                   f"its output must have one row per input")
        if not out.is_floating_point():
            raise ModelOutputError(f"the model returned dtype {out.dtype}; scores must be floating point")
        bad = ~torch.isfinite(out)
        if bad.any():
            rows = int(bad.reshape(n, -1).any(1).sum())
            raise ModelOutputError(f"the model returned NaN or infinite {what} for {rows} of {n} inputs "
                                   f"(check its weights and inputs)")
        if self.output == "sigmoid" and self._logit is None and n:
            lo, hi = float(out.detach().min()), float(out.detach().max())
            if lo < 0.0 or hi > 1.0:
                raise ModelOutputError(
                    f"the model is declared output='sigmoid' but returned values in [{lo:.4g}, {hi:.4g}], "
                    f"outside [0, 1]; if it returns a pre-sigmoid score use output='logit'")
        if self._num_classes is None:
            self._num_classes = int(out.shape[1])
        elif not self.binary and out.shape[1] != self._num_classes:
            raise ModelOutputError(f"the model returned {out.shape[1]} classes, earlier {self._num_classes}")
        return out

    def _call(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn`` on the normalised ``x`` (cast to the model's dtype); torch's shape, dtype and device
        errors are re-raised naming the input's shape and what the model expects."""
        dt = self.dtype
        if dt is not None and x.is_floating_point() and x.dtype != dt:
            x = x.to(dt)
        try:
            return fn(self._normalize(x))
        except (RuntimeError, TypeError, IndexError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hints = ("shape", "size", "Expected", "expected", "dimension", "dtype", "device", "match",
                     "channels", "input")
            if not any(h in first for h in hints):
                raise
            hint = ""
            if x.ndim == 3:
                hint = (f" A 3-D input {tuple(x.shape)} is either grey images (N, H, W) without their "
                        f"channel axis (use x.unsqueeze(1)) or one image (C, H, W) without the batch axis "
                        f"(use x.unsqueeze(0)).")
            elif x.device != self.device:
                hint = f" Move the inputs to the model's device ({self.device})."
            raise ModelOutputError(
                f"the model could not run on inputs of shape {tuple(x.shape)} (dtype {x.dtype}, device "
                f"{x.device}; model on {self.device}): {first}. Inputs must be a batch (N, C, H, W) "
                f"(or (N, d)) of the shape the model was built for.{hint}") from exc

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The module's own output on ``x`` (normalised inside), checked: ``(N,)`` binary, ``(N, K)``."""
        return self._check_output(self._call(self.module, x), x.shape[0], "outputs")

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scores that do not saturate: the logit ``z`` ``(N,)`` for binary models, ``(N, K)`` logits."""
        if self._logit is not None:
            return self._check_output(self._call(self._logit, x), x.shape[0], "logits")
        return self._scores_of(self.raw(x))

    def scores_and_labels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`scores` and the ``(N,)`` int64 labels from one forward pass."""
        if self._logit is not None:
            z = self.scores(x)
            return z, (torch.sigmoid(z) >= 0.5).long()
        out = self.raw(x)
        return self._scores_of(out), self.labels_of(out)

    def _scores_of(self, out: torch.Tensor) -> torch.Tensor:
        """:meth:`scores` from a checked raw output: a probability's ``logit`` (clamped to stay finite)."""
        if self.output == "sigmoid":
            eps = torch.finfo(out.dtype).eps
            return torch.logit(out.clamp(eps, 1 - eps))
        return out

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class-1 probability ``(N,)`` of a binary model, softmax ``(N, K)`` of a multi-class one.

        These are the quantities the paper's MSE loss compares with the label (differentiable).
        """
        if self.output == "logits":
            return torch.softmax(self.raw(x), dim=1)
        if self.output == "logit":
            return torch.sigmoid(self.raw(x))
        return torch.sigmoid(self.scores(x)) if self._logit is not None else self.raw(x)

    def probabilities_and_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`probabilities` and :meth:`scores` from one forward pass (the probabilities computed
        exactly as :meth:`probabilities` computes them). Differentiable."""
        if self.output == "logits":
            s = self.raw(x)
            return torch.softmax(s, dim=1), s
        if self.output == "logit":
            s = self.raw(x)
            return torch.sigmoid(s), s
        if self._logit is not None:
            s = self.scores(x)
            return torch.sigmoid(s), s
        p = self.raw(x)
        return p, self._scores_of(p)

    def labels_of(self, out: torch.Tensor) -> torch.Tensor:
        """Labels ``(N,)`` int64 from a checked raw output (see :meth:`raw`)."""
        if self.output == "logits":
            return out.argmax(dim=1)
        return (out >= (0.5 if self.output == "sigmoid" else 0.0)).long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` logits; binary models as ``(-z/2, z/2)``. Differentiable."""
        s = self.scores(x)
        if self.binary:
            half = s / 2
            return torch.stack([-half, half], dim=1)
        return s

    logits = forward

    def margin_and_labels(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed margin ``(N,)`` (``> 0`` iff the prediction is ``labels``) and the labels, one pass.

        Binary: the logit ``z`` signed by the label (``+z`` for label 1); multi-class:
        ``score[label] - max_{k != label} score[k]``. A tie counts as a flip for label 0 of a
        binary model, as the labels do.
        """
        s, pred = self.scores_and_labels(x)
        return self.margin_of_scores(s, labels), pred

    def margin_of_scores(self, s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The signed margin ``(N,)`` of :meth:`scores` ``s`` against ``labels`` (as
        :meth:`margin_and_labels`, for a caller that needs the scores too). Differentiable."""
        labels = labels.to(s.device)
        if self.binary:
            return s * (labels.to(s.dtype) * 2 - 1)
        true = s.gather(1, labels.view(-1, 1))[:, 0]
        other = s.scatter(1, labels.view(-1, 1), float("-inf")).amax(dim=1)
        return true - other

    def margin(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Signed margin ``(N,)``; see :meth:`margin_and_labels`."""
        return self.margin_and_labels(x, labels)[0]

    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Labels ``(N,)`` int64 for inputs ``(N, ...)``, in batches, eval mode, no gradients.

        Batches are moved to the model's device; the labels are returned on ``x``'s device.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = self.device
        out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        with self.evaluating(), torch.inference_mode():
            for start in range(0, x.shape[0], batch_size):
                xb = x[start:start + batch_size].to(device)
                out[start:start + batch_size] = self.labels_of(self.raw(xb)).to(x.device)
        return out

    def check_labels(self, y: torch.Tensor, n: int, name: str = "y") -> torch.Tensor:
        """Integer labels ``(n,)`` inside the model's classes (int64, same device)."""
        from perturbscope.validation import check_labels

        k = self._num_classes
        return check_labels(y, n, num_classes=k, name=name)


def as_classifier(model: nn.Module | Classifier, output: str | None = None, *,
                  bounds: Sequence[float] | None | str = "model", mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> Classifier:
    """``model`` as a :class:`Classifier`: returned as is if it already is one, else wrapped.

    ``output`` / ``bounds`` given for an existing Classifier must agree with it. ``bounds="model"``
    means: the Classifier's own bounds, or ``(0, 1)`` for a bare module.
    """
    if isinstance(model, Classifier):
        if output is not None and output != model.output:
            raise ValueError(f"output={output!r} disagrees with the Classifier's output={model.output!r}")
        if not isinstance(bounds, str) and _check_bounds(bounds) != model.bounds:
            raise ValueError(f"bounds={bounds!r} disagree with the Classifier's bounds={model.bounds!r}")
        if mean is not None or std is not None:
            raise ValueError("the model is already a Classifier; give mean/std when creating it")
        return model
    return Classifier(model, output, bounds=(0.0, 1.0) if isinstance(bounds, str) else bounds,
                      mean=mean, std=std)
