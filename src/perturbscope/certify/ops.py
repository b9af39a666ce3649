"""A model as a flat list of the operations the certifiers understand, with the margin folded in.

Supported: :class:`~perturbscope.models.LinearBinary`, :class:`~perturbscope.models.MLP`,
:class:`~perturbscope.models.PairCNN`, and ``nn.Sequential`` stacks of ``Flatten``, ``Linear``,
``Conv2d``, ``ReLU``, ``Dropout``, ``Identity``, non-overlapping ``MaxPool2d`` (kernel = stride, no
padding) and a final ``Sigmoid`` (dropped: it is monotone), bare or inside a
:class:`~perturbscope.models.classifier.Classifier` (whose input normalisation becomes a first
``"scale"`` operation, so inputs and radii stay in pixel units). Anything else raises
``TypeError`` naming the layer.

For a reference label ``y`` the last affine layer is replaced by the **margin layer**: binary
models give one output ``sign(y) * z`` (``z`` = pre-sigmoid score); multi-class models give the
``K - 1`` outputs ``s_y - s_k``. The prediction stays ``y`` wherever every margin output is
positive (for binary label 1 the tie ``z = 0`` also keeps the label, so this is conservative).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from perturbscope.models.classifier import Classifier
from perturbscope.models.pair_cnn import MLP, LinearBinary, PairCNN

__all__ = ["Op", "model_ops", "margin_ops"]


@dataclass
class Op:
    """One operation. ``kind``: ``"linear"`` (weight ``(out, in)``, bias ``(out,)``), ``"conv"``
    (a ``Conv2d``'s weight, bias, stride, padding, dilation), ``"scale"`` (``h * weight + bias``
    elementwise, both broadcast per input channel: an input normalisation, ``weight > 0``),
    ``"relu"``, ``"maxpool"`` (non-overlapping, ``kernel``), ``"globalmax"`` (max over H, W per
    channel) or ``"flatten"``."""

    kind: str
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    kernel: int = 0


def _seq_ops(mods) -> list[Op]:
    ops: list[Op] = []
    for m in mods:
        if isinstance(m, nn.Sequential):
            ops += _seq_ops(m)
        elif isinstance(m, nn.Linear):
            ops.append(Op("linear", m.weight.detach(), None if m.bias is None else m.bias.detach()))
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1 or not isinstance(m.padding, tuple) or m.padding_mode != "zeros":
                raise TypeError(f"unsupported Conv2d for certification (groups/padding mode): {m}")
            ops.append(Op("conv", m.weight.detach(), None if m.bias is None else m.bias.detach(),
                          tuple(m.stride), tuple(m.padding), tuple(m.dilation)))
        elif isinstance(m, nn.ReLU):
            ops.append(Op("relu"))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise TypeError(f"only Flatten(1, -1) is supported for certification, got {m}")
            ops.append(Op("flatten"))
        elif isinstance(m, nn.Dropout | nn.Identity):
            continue
        elif isinstance(m, nn.MaxPool2d):
            k, s = m.kernel_size, m.stride
            k = k if isinstance(k, int) else (k[0] if k[0] == k[1] else -1)
            s = s if isinstance(s, int) else (s[0] if s[0] == s[1] else -2)
            if k != s or m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                raise TypeError(f"only non-overlapping MaxPool2d (kernel = stride, no padding) is "
                                f"supported for certification, got {m}")
            ops.append(Op("maxpool", kernel=int(k)))
        else:
            raise TypeError(f"layer {type(m).__name__} is not supported by the certifier "
                            f"(supported: Linear, Conv2d, ReLU, MaxPool2d, Flatten, Dropout)")
    return ops


def model_ops(model: nn.Module | Classifier) -> tuple[list[Op], str]:
    """Operations computing the model's raw score from pixel-unit inputs, and its kind:
    ``"binary"`` (one pre-sigmoid score ``z``) or ``"multi"`` (``K`` logits)."""
    if isinstance(model, Classifier):
        ops, kind = model_ops(model.module)
        if model.normalization is not None:  # (x - mean) / std = x * (1 / std) - mean / std
            # the constants the Classifier itself applies (its buffers), so that the certified
            # function is the one it computes
            mean, std = (model.get_buffer(n).detach().reshape(-1).double() for n in ("_mean", "_std"))
            shape = (-1, 1, 1) if mean.numel() > 1 else (1,)
            ops = [Op("scale", (1.0 / std).view(shape), (-mean / std).view(shape))] + ops
        return ops, kind
    if isinstance(model, LinearBinary):
        w = (model.weight * model.scale).view(1, -1)
        return [Op("flatten"), Op("linear", w, (model.bias * model.scale).view(1))], "binary"
    if isinstance(model, MLP):
        return _seq_ops(model.net), "binary"
    if isinstance(model, PairCNN):
        return _seq_ops(model.features) + [Op("globalmax")] + _seq_ops(model.head), "binary"
    if isinstance(model, nn.Sequential):
        mods = list(model)
        sigmoid = bool(mods) and isinstance(mods[-1], nn.Sigmoid)
        ops = _seq_ops(mods[:-1] if sigmoid else mods)
        if not ops or ops[-1].kind != "linear":
            raise TypeError("a Sequential model must end with a Linear layer (optionally + Sigmoid)")
        out = ops[-1].weight.shape[0]
        if sigmoid and out != 1:
            raise TypeError("a Sequential ending in Sigmoid must have one output")
        return ops, "binary" if out == 1 else "multi"
    raise TypeError(f"model {type(model).__name__} is not supported by the certifier: use LinearBinary, "
                    f"MLP, PairCNN or an nn.Sequential of Linear/Conv2d/ReLU/MaxPool2d/Flatten")


def margin_ops(ops: list[Op], kind: str, label: int, num_outputs: int | None = None) -> list[Op]:
    """``ops`` with the last linear layer replaced by the margin layer for reference ``label``."""
    if ops[-1].kind != "linear":
        raise TypeError("the model's last operation must be linear to fold in the margin")
    last = ops[-1]
    w = last.weight.double()
    b = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) if last.bias is None \
        else last.bias.double()
    if kind == "binary":
        if w.shape[0] != 1:
            raise TypeError(f"binary model must have one output, got {w.shape[0]}")
        sign = 1.0 if label == 1 else -1.0
        return ops[:-1] + [Op("linear", sign * w, sign * b)]
    k = w.shape[0]
    if not 0 <= label < k:
        raise ValueError(f"label {label} out of range for {k} classes")
    others = [j for j in range(k) if j != label]
    return ops[:-1] + [Op("linear", w[label:label + 1] - w[others], b[label] - b[others])]
