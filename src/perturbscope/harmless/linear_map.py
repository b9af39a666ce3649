"""The linear map of the layer that first reads a network's input, as an operator and as a sparse matrix.

A :class:`LinearMap` is ``y = A x (+ b)`` for ``x`` of shape ``in_shape`` (flattened in PyTorch's
C-order, column ``(c, y, x) -> c*H*W + y*W + x``) and ``y`` flattened row ``(d, i, j) -> d*H'*W' +
i*W' + j`` (spec section 1.3). Weights are kept in float64. It covers

* ``nn.Linear`` (after an optional ``nn.Flatten``),
* ``nn.Conv2d`` with any stride, zero padding, dilation and groups,
* ``nn.AvgPool2d`` / ``nn.AdaptiveAvgPool2d`` (a depthwise conv with weights ``1/k^2``),
* an eval-mode ``nn.BatchNorm2d`` / ``nn.BatchNorm1d`` after the layer, folded into its weights,
* an input normalisation ``(x - mean) / std`` (a
  :class:`~perturbscope.models.classifier.Classifier`'s ``mean``/``std``), folded into the
  weights as a per-input-channel scale ``1/std`` (the mean only moves the bias).

``A`` is applied with ``conv2d`` / ``linear`` and its adjoint with ``conv_transpose2d`` / the
transposed matrix, so no dense matrix is ever needed; :meth:`LinearMap.to_sparse` builds the
``(m, n)`` matrix in CSR form one output-channel block at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from perturbscope.sampling import make_generator

__all__ = [
    "LinearMap",
    "layer_map",
    "fold_batchnorm",
    "fold_input_normalization",
    "first_layer_map",
    "linear_as_matrix",
    "conv2d_as_matrix",
]


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    v = tuple(int(t) for t in v)
    if len(v) != 2 or any(t < 0 for t in v):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {v!r}")
    return v  # type: ignore[return-value]


def _check_shape(in_shape, name: str = "in_shape") -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in in_shape)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be a sequence of ints (without the batch dimension), got {in_shape!r}"
        ) from exc
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{name} must be non-empty positive sizes (no batch dimension), got {in_shape!r}")
    return shape


@dataclass(frozen=True)
class LinearMap:
    """``y = A x + b``: the linear part of a layer, on inputs of shape ``in_shape`` (no batch dim).

    Attributes:
        kind: ``"linear"`` (``weight`` is ``(m, n)``) or ``"conv"`` (``weight`` is
            ``(D, C / groups, kh, kw)`` and ``in_shape`` is ``(C, H, W)``).
        weight: float64 weights, with batch norm and input normalisation already folded in.
        in_shape: shape of one input, e.g. ``(3, 28, 28)``; a linear layer after ``Flatten``
            keeps the image shape (the flatten order is PyTorch's).
        bias: float64 ``(m,)`` effective bias for ``"linear"`` (used by the ReLU expansion);
            ``None`` for convs (it plays no role in the harmless space).
        stride, padding, dilation, groups: conv geometry (zero padding only).
        description: what the map was built from (for reports).
    """

    kind: Literal["linear", "conv"]
    weight: torch.Tensor
    in_shape: tuple[int, ...]
    bias: torch.Tensor | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_shape", _check_shape(self.in_shape))
        object.__setattr__(self, "weight", self.weight.detach().to(torch.float64).cpu())
        if self.bias is not None:
            object.__setattr__(self, "bias", self.bias.detach().to(torch.float64).cpu())
        if self.kind == "linear":
            if self.weight.ndim != 2 or self.weight.shape[1] != self.n:
                raise ValueError(
                    f"linear weight must be (m, {self.n}) for in_shape {self.in_shape}, "
                    f"got {tuple(self.weight.shape)}"
                )
        elif self.kind == "conv":
            if len(self.in_shape) != 3:
                raise ValueError(f"a conv map needs in_shape (C, H, W), got {self.in_shape}")
            c = self.in_shape[0]
            if (
                self.weight.ndim != 4
                or c % self.groups
                or self.weight.shape[1] * self.groups != c
                or self.weight.shape[0] % self.groups
            ):
                raise ValueError(
                    f"conv weight {tuple(self.weight.shape)} with groups={self.groups} does not "
                    f"fit {c} input channels"
                )
            h_out, w_out = self.out_shape[1:]
            if h_out < 1 or w_out < 1:
                raise ValueError(f"the conv produces an empty output for input {self.in_shape}")
        else:
            raise ValueError(f"kind must be 'linear' or 'conv', got {self.kind!r}")

    # ----------------------------------------------------------------- geometry
    @property
    def n(self) -> int:
        """Input dimension (number of columns of ``A``)."""
        return math.prod(self.in_shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Output shape without the batch dimension: ``(m,)`` or ``(D, H', W')``."""
        if self.kind == "linear":
            return (int(self.weight.shape[0]),)
        _, h, w = self.in_shape
        kh, kw = self.weight.shape[2:]
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return (int(self.weight.shape[0]), ho, wo)

    @property
    def m(self) -> int:
        """Output dimension (number of rows of ``A``)."""
        return math.prod(self.out_shape)

    @property
    def non_overlapping(self) -> bool:
        """True for a conv whose patches do not overlap (stride >= kernel, no padding or dilation)."""
        if self.kind != "conv":
            return False
        kh, kw = self.weight.shape[2:]
        return (
            self.padding == (0, 0)
            and self.dilation == (1, 1)
            and self.stride[0] >= kh
            and self.stride[1] >= kw
        )

    # ----------------------------------------------------------------- operators
    def _as_input(self, d: torch.Tensor) -> torch.Tensor:
        if tuple(d.shape[1:]) != self.in_shape and (d.ndim != 2 or d.shape[1] != self.n):
            raise ValueError(f"expected inputs (N, *{self.in_shape}) or (N, {self.n}), got {tuple(d.shape)}")
        return d.reshape(d.shape[0], *self.in_shape)

    def apply(self, d: torch.Tensor) -> torch.Tensor:
        """``A d`` (no bias) for ``d`` ``(N, *in_shape)``; returns ``(N, m)`` in ``d``'s dtype."""
        d = self._as_input(d)
        w = self.weight.to(device=d.device, dtype=d.dtype)
        if self.kind == "linear":
            return F.linear(d.reshape(d.shape[0], -1), w)
        y = F.conv2d(
            d, w, stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups
        )
        return y.reshape(d.shape[0], -1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` for ``y`` ``(N, m)``; returns ``(N, *in_shape)`` (conv: ``conv_transpose2d``)."""
        if y.ndim != 2 or y.shape[1] != self.m:
            raise ValueError(f"expected (N, {self.m}), got {tuple(y.shape)}")
        w = self.weight.to(device=y.device, dtype=y.dtype)
        if self.kind == "linear":
            return (y @ w).reshape(y.shape[0], *self.in_shape)
        d, ho, wo = self.out_shape
        _, h, wi = self.in_shape
        kh, kw = self.weight.shape[2:]
        full_h = (ho - 1) * self.stride[0] - 2 * self.padding[0] + self.dilation[0] * (kh - 1) + 1
        full_w = (wo - 1) * self.stride[1] - 2 * self.padding[1] + self.dilation[1] * (kw - 1) + 1
        pad_h, pad_w = h - full_h, wi - full_w
        if max(pad_h, pad_w) >= max(max(self.stride), max(self.dilation)):  # pragma: no cover - geometry
            return torch.nn.grad.conv2d_input(
                (y.shape[0], *self.in_shape),
                w,
                y.reshape(-1, d, ho, wo),
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )
        return F.conv_transpose2d(
            y.reshape(-1, d, ho, wo),
            w,
            stride=self.stride,
            padding=self.padding,
            output_padding=(pad_h, pad_w),
            groups=self.groups,
            dilation=self.dilation,
        )

    def op_norm(self, iters: int = 100, seed: int = 0) -> float:
        """Spectral norm ``||A||_2`` (power iteration on ``A^T A``, float64; a slight under-estimate)."""
        gen = make_generator(seed)
        v = torch.randn(1, self.n, generator=gen, dtype=torch.float64)
        v /= v.norm()
        s = 0.0
        for _ in range(iters):
            w = self.adjoint(self.apply(v)).reshape(1, -1)
            s_new = float(w.norm())
            if s_new == 0:
                return 0.0
            v = w / s_new
            if abs(s_new - s) <= 1e-10 * s_new:
                s = s_new
                break
            s = s_new
        return math.sqrt(s)

    # ----------------------------------------------------------------- matrices
    def to_sparse(self) -> sp.csr_array:
        """``A`` as a float64 CSR matrix ``(m, n)`` (row/column order of spec section 1.3).

        Built one output channel at a time; memory is ``O(nnz)``, never ``O(m n)``.
        """
        if self.kind == "linear":
            return sp.csr_array(self.weight.numpy())
        return conv2d_as_matrix(
            self.weight, self.in_shape, self.stride, self.padding, self.dilation, self.groups
        )

    def sub_group(self, g: int) -> LinearMap:
        """The conv map of group ``g`` alone (input channels ``g*C/groups ...``), with ``groups=1``."""
        if self.kind != "conv" or not 0 <= g < self.groups:
            raise ValueError(f"group {g} does not exist in this map (groups={self.groups})")
        c, h, w = self.in_shape
        dg = self.weight.shape[0] // self.groups
        return replace(
            self,
            weight=self.weight[g * dg : (g + 1) * dg],
            in_shape=(c // self.groups, h, w),
            groups=1,
            bias=None,
            description=f"{self.description} [group {g}]",
        )


def conv2d_as_matrix(
    weight: torch.Tensor,
    in_shape,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> sp.csr_array:
    """The ``(D*H'*W', C*H*W)`` float64 CSR matrix of a zero-padded ``conv2d`` (no bias).

    ``A[(d,i,j), (c,y,x)] = w[d, c - g*C/groups, (y - i*S + P)/dil, (x - j*S + P)/dil]`` where the
    kernel index is an integer in range; padded positions are constants and have no column.
    """
    weight = weight.detach().to(torch.float64).cpu()
    c, h, w = _check_shape(in_shape)
    stride, padding, dilation = (
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    dout, cg, kh, kw = weight.shape
    if cg * groups != c or dout % groups:
        raise ValueError(f"weight {tuple(weight.shape)} with groups={groups} does not fit {c} input channels")
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"conv output is empty for input {in_shape}")
    dg = dout // groups
    i = np.arange(ho).reshape(ho, 1, 1, 1, 1)
    j = np.arange(wo).reshape(1, wo, 1, 1, 1)
    ky = np.arange(kh).reshape(1, 1, 1, kh, 1)
    kx = np.arange(kw).reshape(1, 1, 1, 1, kw)
    cl = np.arange(cg).reshape(1, 1, cg, 1, 1)
    yy = i * stride[0] - padding[0] + ky * dilation[0]
    xx = j * stride[1] - padding[1] + kx * dilation[1]
    shape = (ho, wo, cg, kh, kw)
    valid = np.broadcast_to((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w), shape)
    rows_local = np.broadcast_to(i * wo + j, shape)[valid]
    col_local = np.broadcast_to(cl * h * w + yy * w + xx, shape)[valid]
    kidx = np.broadcast_to((cl * kh + ky) * kw + kx, shape)[valid]
    wnp = weight.numpy().reshape(dout, cg * kh * kw)
    rows, cols, vals = [], [], []
    for d in range(dout):
        g = d // dg
        rows.append(rows_local + d * ho * wo)
        cols.append(col_local + g * cg * h * w)
        vals.append(wnp[d, kidx])
    a = sp.coo_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(dout * ho * wo, c * h * w),
    )
    return a.tocsr()


def linear_as_matrix(weight: torch.Tensor) -> np.ndarray:
    """``nn.Linear`` weights as a float64 ``(m, n)`` array (the bias plays no role)."""
    return weight.detach().to(torch.float64).cpu().numpy()


def _conv_padding(layer: nn.Conv2d) -> tuple[int, int]:
    if layer.padding_mode != "zeros":
        raise ValueError(f"only zero padding is supported, got padding_mode={layer.padding_mode!r}")
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            return (0, 0)
        pads = []
        for k, dil in zip(layer.kernel_size, layer.dilation, strict=True):
            total = dil * (k - 1)
            if total % 2:
                raise ValueError(
                    "padding='same' with an even effective kernel pads asymmetrically; not supported"
                )
            pads.append(total // 2)
        return tuple(pads)  # type: ignore[return-value]
    return _pair(layer.padding, "padding")


def layer_map(layer: nn.Module, in_shape) -> LinearMap:
    """The :class:`LinearMap` of ``layer`` for inputs of shape ``in_shape`` (no batch dimension).

    Supported: ``nn.Linear`` (``in_shape`` may be an image shape; it is flattened), ``nn.Conv2d``
    (zero padding), ``nn.AvgPool2d`` (``ceil_mode=False``; with padding only if
    ``count_include_pad=True``) and ``nn.AdaptiveAvgPool2d`` when the output size divides the input.
    """
    shape = _check_shape(in_shape)
    name = type(layer).__name__
    if isinstance(layer, nn.Linear):
        if layer.in_features != math.prod(shape):
            raise ValueError(
                f"{name} reads {layer.in_features} features but in_shape {shape} has {math.prod(shape)}"
            )
        b = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
        return LinearMap(
            "linear",
            layer.weight,
            shape,
            bias=b,
            description=f"Linear({layer.in_features}->{layer.out_features})",
        )
    if isinstance(layer, nn.Conv2d):
        if len(shape) != 3 or shape[0] != layer.in_channels:
            raise ValueError(
                f"{name} with {layer.in_channels} input channels needs in_shape "
                f"({layer.in_channels}, H, W), got {shape}"
            )
        pad = _conv_padding(layer)
        desc = (
            f"Conv2d({layer.in_channels}->{layer.out_channels}, k={tuple(layer.kernel_size)}, "
            f"s={tuple(layer.stride)}, p={pad}, dil={tuple(layer.dilation)}, groups={layer.groups})"
        )
        return LinearMap(
            "conv",
            layer.weight,
            shape,
            stride=_pair(layer.stride, "stride"),
            padding=pad,
            dilation=_pair(layer.dilation, "dilation"),
            groups=layer.groups,
            description=desc,
        )
    if isinstance(layer, nn.AvgPool2d | nn.AdaptiveAvgPool2d):
        if len(shape) != 3:
            raise ValueError(f"{name} needs in_shape (C, H, W), got {shape}")
        c, h, w = shape
        if isinstance(layer, nn.AdaptiveAvgPool2d):
            out = layer.output_size if isinstance(layer.output_size, tuple) else (layer.output_size,) * 2
            out = tuple(h if o is None else o for o in out)
            if h % out[0] or w % out[1]:
                raise ValueError(f"{name}({out}) on {h}x{w} has uneven windows; not a fixed conv")
            k, s, p, div = (h // out[0], w // out[1]), (h // out[0], w // out[1]), (0, 0), None
        else:
            k = _pair(layer.kernel_size, "kernel_size")
            s = _pair(layer.stride if layer.stride is not None else layer.kernel_size, "stride")
            p = _pair(layer.padding, "padding")
            if layer.ceil_mode:
                raise ValueError(f"{name} with ceil_mode=True is not supported")
            if p != (0, 0) and not layer.count_include_pad:
                raise ValueError(
                    f"{name} with padding and count_include_pad=False has position-dependent "
                    "weights; not supported"
                )
            div = layer.divisor_override
        wgt = torch.full((c, 1, *k), 1.0 / (div or k[0] * k[1]), dtype=torch.float64)
        return LinearMap(
            "conv", wgt, shape, stride=s, padding=p, groups=c, description=f"{name}(k={k}, s={s}, p={p})"
        )
    raise TypeError(
        f"no linear map for {name}: supported layers are nn.Linear, nn.Conv2d, nn.AvgPool2d, "
        "nn.AdaptiveAvgPool2d"
    )


def fold_batchnorm(lmap: LinearMap, bn: nn.Module) -> LinearMap:
    """Fold an eval-mode batch norm that reads ``lmap``'s output into the map's weights.

    Output channel ``o`` is scaled by ``gamma_o / sqrt(var_o + eps)``; a channel with ``gamma = 0``
    becomes a zero row (its inputs become harmless). Train-mode batch norm depends on the batch and
    is refused.
    """
    if not isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d):
        raise TypeError(f"expected nn.BatchNorm1d/2d, got {type(bn).__name__}")
    if bn.training or bn.running_var is None:
        raise ValueError(
            "batch norm must be in eval mode with running statistics to be folded "
            "(train-mode batch norm depends on the batch)"
        )
    d = lmap.out_shape[0]
    if bn.num_features != d:
        raise ValueError(f"batch norm has {bn.num_features} features, the layer outputs {d} channels")
    var = bn.running_var.detach().double().cpu()
    mean = bn.running_mean.detach().double().cpu()
    gamma = bn.weight.detach().double().cpu() if bn.weight is not None else torch.ones(d, dtype=torch.float64)
    beta = bn.bias.detach().double().cpu() if bn.bias is not None else torch.zeros(d, dtype=torch.float64)
    scale = gamma / torch.sqrt(var + bn.eps)
    w = lmap.weight * scale.view(-1, *([1] * (lmap.weight.ndim - 1)))
    bias = None
    if lmap.bias is not None:
        bias = (lmap.bias - mean) * scale + beta
    return replace(lmap, weight=w, bias=bias, description=lmap.description + f" + {type(bn).__name__}(eval)")


def fold_input_normalization(lmap: LinearMap, mean, std) -> LinearMap:
    """The map of ``x -> A((x - mean) / std)``: column scale ``1/std`` per input channel.

    ``mean``/``std`` are per-channel (length ``C`` or 1). The harmless space of the composite is
    ``{d : A (d / std) = 0}``, which is *not* the space of ``A`` itself unless all ``std`` are equal.
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
    if (std_t <= 0).any():
        raise ValueError(f"std must be positive, got {std_t.tolist()}")
    c = lmap.in_shape[0] if len(lmap.in_shape) == 3 else None
    if c is None:
        if std_t.numel() != 1:
            raise ValueError("per-channel normalisation needs an image-shaped in_shape (C, H, W)")
        c = 1
    if std_t.numel() == 1:
        std_t, mean_t = std_t.expand(c), mean_t.expand(c)
    if std_t.numel() != c or mean_t.numel() != c:
        raise ValueError(f"mean/std must have 1 or {c} entries, got {mean_t.numel()} and {std_t.numel()}")
    inv = 1.0 / std_t
    bias = lmap.bias
    if lmap.kind == "linear":
        col = inv.repeat_interleave(lmap.n // c)
        w = lmap.weight * col
        if bias is not None:
            bias = bias - w @ mean_t.repeat_interleave(lmap.n // c)
    else:
        cg = lmap.weight.shape[1]
        dg = lmap.weight.shape[0] // lmap.groups
        per_out = torch.stack([inv[(o // dg) * cg : (o // dg + 1) * cg] for o in range(lmap.weight.shape[0])])
        w = lmap.weight * per_out.view(*per_out.shape, 1, 1)
    return replace(
        lmap, weight=w, bias=bias, description=f"normalize(std={std_t.tolist()}) -> " + lmap.description
    )


_PASS_THROUGH = (
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)
_LINEAR_LAYERS = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def first_layer_map(model: nn.Module, in_shape, fold_bn: bool = True) -> LinearMap:
    """The :class:`LinearMap` of the first layer that reads the (normalised) input of ``model``.

    ``model`` is an ``nn.Module`` or a :class:`~perturbscope.models.classifier.Classifier`; a
    Classifier is unwrapped to its module and its normalisation ``(x - mean) / std`` folded in
    (``1/std`` per input channel). Then one forward pass runs with hooks on every leaf module (eval mode,
    the model's own flags restored) and takes the first one called. ``Flatten``, ``Identity`` and
    dropout (identity in eval mode) are looked through; a following eval-mode batch norm that reads
    the layer's output is folded in. The first module's input is checked to be the input itself, so
    arithmetic done outside modules is detected; a tensor also read by a second branch (a skip
    connection) is not, which is why every harmless perturbation should be verified on the model.

    Raises:
        ValueError: the first module is not linear (e.g. a ReLU or max-pool reads the input) or
            its input is not the model's input.
    """
    from perturbscope.models.classifier import Classifier, eval_mode, model_device

    shape = _check_shape(in_shape)
    inner = model
    mean = torch.zeros(1, dtype=torch.float64)
    std = torch.ones(1, dtype=torch.float64)
    normalized = False
    if isinstance(model, Classifier):  # a Classifier never wraps another one
        inner = model.module
        if model.normalization is not None:  # the constants the Classifier applies (its buffers)
            mean, std = (model.get_buffer(n).detach().double().cpu().flatten() for n in ("_mean", "_std"))
            normalized = True
    calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def hook(mod, inp, out):
        if inp and isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor):
            calls.append((mod, inp[0].detach().clone(), out.detach().clone()))

    leaves = [m for m in inner.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    device = model_device(inner)
    gen = make_generator(0)
    x = torch.rand(2, *shape, generator=gen).to(device)
    dtype = next((p.dtype for p in inner.parameters()), torch.float32)
    x = x.to(dtype)
    z = x - mean.view(1, -1, *([1] * (len(shape) - 1))).to(x) if len(shape) == 3 else x - mean.to(x)
    z = z / (std.view(1, -1, 1, 1).to(x) if len(shape) == 3 else std.to(x))
    with eval_mode(inner):
        try:
            with torch.no_grad():
                inner(z)
        finally:
            for h in handles:
                h.remove()
        return _map_from_calls(calls, z, shape, mean, std, normalized, fold_bn)


def _map_from_calls(calls, z, shape, mean, std, normalized: bool, fold_bn: bool) -> LinearMap:
    expected = z
    for k, (mod, inp, out) in enumerate(calls):
        same = inp.numel() == expected.numel() and torch.allclose(inp.reshape(-1), expected.reshape(-1))
        if not same:
            raise ValueError(
                f"the first module called ({type(mod).__name__}) does not read the model's input "
                "unchanged; compute the map with layer_map() on the layer you mean"
            )
        if isinstance(mod, _PASS_THROUGH):
            expected = out
            continue
        if not isinstance(mod, _LINEAR_LAYERS):
            raise ValueError(
                f"the first layer reading the input is {type(mod).__name__}, not a linear layer "
                "(Linear, Conv2d, AvgPool2d): no sample-independent harmless space to compute"
            )
        lmap = layer_map(mod, tuple(inp.shape[1:]))
        if lmap.in_shape != shape:
            lmap = replace(lmap, in_shape=shape) if lmap.kind == "linear" else lmap
        if fold_bn and k + 1 < len(calls):
            nxt, nin, _ = calls[k + 1]
            if (
                isinstance(nxt, nn.BatchNorm1d | nn.BatchNorm2d)
                and nin.shape == out.shape
                and torch.allclose(nin, out)
            ):
                lmap = fold_batchnorm(lmap, nxt)
        if normalized:
            lmap = fold_input_normalization(lmap, mean, std)
        return lmap
    raise ValueError("no module was called in the forward pass: cannot find the first layer")
