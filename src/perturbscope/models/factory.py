"""The user's own model: build it from ``"module:callable"``, load its weights safely, wrap it.

* :func:`build_model` imports a factory (``"pkg.module:make_net"``, ``"path/to/file.py:Net"`` or a
  built-in name of :data:`BUILTIN_MODELS`) and calls it with ``kwargs``; the result must be an
  ``nn.Module``.
* :func:`load_weights` reads a state dict file (``torch.save(model.state_dict(), f)``, a
  perturbscope checkpoint, a training checkpoint holding ``"state_dict"`` / ``"model_state_dict"``,
  or ``.safetensors`` if the ``safetensors`` package is installed) with
  ``torch.load(weights_only=True)``, so a file that would run code while unpickling is refused;
  missing and unexpected keys and shape mismatches are all named before anything is loaded.
* :func:`classifier_from_spec` does both and returns a
  :class:`~perturbscope.models.classifier.Classifier` (output kind, normalisation, device).

Importing a module runs its code: that is how Python models are defined, so only name modules
you trust. Weight files, in contrast, never run code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pickle
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from perturbscope.models.checkpoint import FORMAT as CHECKPOINT_FORMAT
from perturbscope.models.checkpoint import CheckpointError, check_torch_file, load_checkpoint
from perturbscope.models.classifier import Classifier

__all__ = ["ModelSpecError", "BUILTIN_MODELS", "resolve_factory", "build_model", "read_state_dict",
           "load_weights", "classifier_from_spec"]

#: Short names for the paper's networks (and the package's other architectures).
BUILTIN_MODELS: dict[str, str] = {
    "paper-cifar10": "perturbscope.models.pair_cnn:paper_cifar10",
    "paper-gtsrb": "perturbscope.models.pair_cnn:paper_gtsrb",
    "paper-fashion-mnist": "perturbscope.models.pair_cnn:paper_fashion_mnist",
    "pair-cnn": "perturbscope.models.pair_cnn:PairCNN",
    "mlp": "perturbscope.models.pair_cnn:MLP",
}

_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
_SHOW = 8


class ModelSpecError(ValueError):
    """A model spec cannot be imported, is not callable, or does not build an ``nn.Module``."""


def _import_file(file: Path) -> Any:
    """Import ``file`` as a module of its own (its folder on ``sys.path`` while it runs)."""
    file = file.resolve()
    name = "perturbscope_user_model_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"cannot import {file}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(file.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelSpecError(f"importing {file} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        try:
            sys.path.remove(str(file.parent))
        except ValueError:  # pragma: no cover - the module removed it itself
            pass
    return module


def resolve_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``spec``: ``"module:attr"``, ``"file.py:attr"`` or a :data:`BUILTIN_MODELS` key.

    ``attr`` may be dotted (``"pkg.mod:Class.from_config"``).

    Raises:
        ModelSpecError: bad format, module or file not found, import error, missing attribute,
            or an attribute that is not callable (the message lists what the module offers).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec must be a non-empty string, got {spec!r}")
    spec = BUILTIN_MODELS.get(spec.strip(), spec.strip())
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ModelSpecError(
            f"model spec {spec!r} must be 'module:callable' or 'path/to/file.py:callable' "
            f"(or one of {', '.join(BUILTIN_MODELS)})")
    if where.endswith(".py") or "/" in where or os.sep in where:
        file = Path(where).expanduser()
        if not file.is_file():
            raise ModelSpecError(f"model file {file} does not exist (spec {spec!r})")
        module = _import_file(file)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name):
                raise ModelSpecError(f"no module named {where!r} (spec {spec!r}); is it installed or on "
                                     "PYTHONPATH? A file path must end in .py") from exc
            raise ModelSpecError(f"importing {where!r} failed: it needs the missing module "
                                 f"{exc.name!r}") from exc
        except Exception as exc:
            raise ModelSpecError(f"importing {where!r} failed: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            offered = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ModelSpecError(f"{where!r} has no attribute {attr!r}; callables it defines: "
                                 f"{', '.join(offered[:20]) or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(f"{spec!r} is a {type(obj).__name__}, not a callable that builds a model")
    return obj


def build_model(spec: str | Callable[..., nn.Module], kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a model: ``resolve_factory(spec)(**kwargs)``, checked to be an ``nn.Module``.

    Args:
        spec: ``"module:callable"``, ``"path/to/file.py:callable"``, a :data:`BUILTIN_MODELS` name
            (e.g. ``"paper-cifar10"``), or the callable itself.
        kwargs: keyword arguments of the factory (plain data, e.g. from a JSON config).

    Raises:
        ModelSpecError: the spec cannot be resolved, or the call fails (bad kwargs included).
        TypeError: the factory returned something other than an ``nn.Module``.
    """
    factory = spec if callable(spec) else resolve_factory(spec)
    name = spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))
    kw = dict(kwargs or {})
    try:
        model = factory(**kw)
    except TypeError as exc:
        raise ModelSpecError(f"calling {name} with {kw} failed: {exc}") from exc
    except Exception as exc:
        raise ModelSpecError(f"calling {name} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} returned a {type(model).__name__}, expected a torch.nn.Module")
    return model


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n < path.stat().st_size and head[8:9] == b"{"


def _is_tensor_map(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unpickling_detail(exc: BaseException) -> str:
    """The line of torch's refusal that names the blocked global (not its advice to disable the check)."""
    for line in str(exc).splitlines():
        if "GLOBAL" in line or "global" in line.split(" ", 1)[0].lower():
            return f". Detail: {line.strip()}"
    return ""


def read_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, torch.Tensor]:
    """The state dict stored in ``path``, read without running any code.

    Accepts ``torch.save(model.state_dict())``, a perturbscope checkpoint, a dict holding the
    weights under ``state_dict`` / ``model_state_dict`` / ``model`` / ``net`` / ``weights``, and
    ``.safetensors`` (needs the ``safetensors`` package).

    Raises:
        CheckpointError: missing file, a file holding pickled code or objects (refused by
            ``weights_only=True``), an unreadable or truncated file, or one that holds no
            ``{name: tensor}`` mapping (the message says what it holds instead).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file {path} is empty")
    if _is_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise CheckpointError(f"{path} is a safetensors file: install the 'safetensors' package "
                                  "(pip install safetensors) or save it with torch.save") from exc
        try:
            return dict(load_file(str(path), device=str(map_location)))
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    check_torch_file(path, "weights file", "save the weights with torch.save(model.state_dict(), path)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing {path}: it holds pickled objects or code, not only weights (loaded with "
            "weights_only=True, nothing was run). Save model.state_dict() instead of the model"
            f"{_unpickling_detail(exc)}") from exc
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable torch weights file, or is truncated: "
                              f"{type(exc).__name__}: {exc}") from exc
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj.get("state_dict")
    elif isinstance(obj, Mapping) and not _is_tensor_map(obj):
        for key in _STATE_KEYS:
            if _is_tensor_map(obj.get(key)):
                obj = obj[key]
                break
    if not _is_tensor_map(obj):
        if isinstance(obj, Mapping):
            kinds = {k: type(v).__name__ for k, v in list(obj.items())[:_SHOW]}
            what = f"a dict without tensors under {'/'.join(_STATE_KEYS)}: {kinds}"
        else:
            what = f"a {type(obj).__name__}"
        raise CheckpointError(f"{path} holds {what}, not a state dict {{name: tensor}} "
                              "(save it with torch.save(model.state_dict(), path))")
    return dict(obj)


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOW else "")


def load_weights(module: nn.Module, path: str | os.PathLike, *, strict: bool = True,
                 map_location: str | torch.device = "cpu") -> nn.Module:
    """Load the state dict in ``path`` into ``module`` (in place) and return ``module``.

    A ``module.`` prefix on every key (``DataParallel``) is removed when the module's own keys
    have none. With ``strict`` (default) missing and unexpected keys are errors; shape
    mismatches always are.

    Raises:
        CheckpointError: see :func:`read_state_dict`; missing / unexpected keys and shape
            mismatches, each listed with names and shapes (nothing is loaded then).
    """
    state = read_state_dict(path, map_location)
    own = module.state_dict()
    if all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
        state = {k[len("module."):]: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if shapes:
        problems.append(f"shape mismatch for {len(shapes)} tensor(s): {_listing(shapes)}")
    if strict and missing:
        problems.append(f"missing {len(missing)} key(s) the model has: {_listing(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) the model lacks: {_listing(unexpected)}")
    if problems:
        raise CheckpointError(f"{path}: weights do not fit {type(module).__name__}: " + "; ".join(problems))
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path} holds NaN or infinite weights ({bad} of {t.numel()} values of "
                                  f"{name!r}); the model that wrote them diverged")
    module.load_state_dict(state, strict=strict)
    return module


def _is_checkpoint(path: str | os.PathLike) -> bool:
    try:
        obj = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def classifier_from_spec(model: str | nn.Module | Callable[..., nn.Module] | None = None,
                         weights: str | os.PathLike | None = None, *, output: str | None = None,
                         normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                         device: str | torch.device | None = None,
                         bounds: Sequence[float] | None = (0.0, 1.0),
                         kwargs: Mapping[str, Any] | None = None, strict: bool = True) -> Classifier:
    """A :class:`Classifier` from a model spec (or module) and an optional weights file.

    Args:
        model: ``"module:callable"`` / ``"file.py:callable"`` / built-in name (built with
            ``kwargs`` and put in eval mode), an ``nn.Module`` (used as is, its mode kept), or
            ``None`` when ``weights`` is a perturbscope checkpoint (which names its architecture).
        weights: a weights file for :func:`load_weights`.
        output: ``"sigmoid"``, ``"logit"`` or ``"logits"``; default: the model's ``output_kind``.
        normalize: per-channel ``(mean, std)`` applied inside the classifier, in pixel units of
            [0, 1] images (e.g. ImageNet's ``((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))``).
        device: move the model there. bounds: the valid input range (default ``(0, 1)``).
        strict: passed to :func:`load_weights`.

    Raises:
        ModelSpecError, TypeError: the model cannot be built.
        CheckpointError: the weights cannot be read or do not fit.
        ValueError: bad ``output`` / ``normalize`` / ``bounds``.
    """
    if model is None:
        if weights is None or not _is_checkpoint(weights):
            raise ModelSpecError("give model='module:callable' (or a module); only a perturbscope "
                                 "checkpoint names its own architecture")
        module, _ = load_checkpoint(weights)
    elif isinstance(model, nn.Module):
        module = model
        if kwargs:
            raise ValueError("kwargs apply only when the model is built from a spec")
    else:
        module = build_model(model, kwargs)
        module.eval()
    if weights is not None and model is not None:
        load_weights(module, weights, strict=strict)
    mean, std = (None, None)
    if normalize is not None:
        if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
            raise ValueError(f"normalize must be (mean, std), got {normalize!r}")
        mean, std = normalize
    return Classifier(module, output, bounds=bounds, mean=mean, std=std, device=device)
