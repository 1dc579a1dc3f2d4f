"""Layer specs, activations and shape inference used by the Network builder.

A spec (`Dense`, `Conv`, `Deconv`, `MaxPool`, `Dropout`) is a frozen dataclass that says what a
layer is; `build(spec, input_shape)` turns it into a module for inputs of that per-sample shape
and returns the output shape. Every built layer is an `nn.Sequential` of

    [optional Reshape / Flatten, affine layer or max-pool, activation, optional loopnets.Dropout]

(a dropout spec builds just [loopnets.Dropout]), the form COMBINE decomposes (see loopnets.core.modes.combine).
Shapes are per sample: (n,) for vectors, (C, L) for 1-D and (C, H, W) for 2-D feature maps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Union

import torch
from torch import nn

from loopnets.builder.conv import Conv1d as UnfoldConv1d
from loopnets.core.dropout import Dropout as SharedDropout


class Reshape(nn.Module):
    """Reshape (batch, *any) -> (batch, *shape); used for automatic dense <-> conv conversions."""

    structural = True  # a per-sample reshape: COMBINE runs it at the combined values (core.modes.combine)

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "softmax")


def activation(name: str) -> nn.Module:
    """The activation module for `name` (one of ACTIVATIONS); softmax acts on the last dimension."""
    modules = {
        "linear": nn.Identity,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leaky_relu": nn.LeakyReLU,
        "softmax": lambda: nn.Softmax(dim=-1),
    }
    if name not in modules:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return modules[name]()


Shape = tuple[int, ...]
IntOrTuple = Union[int, tuple[int, ...]]


# ----------------------------------------------------------------------------- spec validation


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_size(kind: str, name: str, value, minimum: int, allow_tuple: bool = True):
    """Validate an int (or tuple of ints) >= minimum; lists become tuples (JSON round trips)."""
    if allow_tuple and isinstance(value, (list, tuple)):
        value = tuple(value)
        if len(value) not in (1, 2) or not all(_is_int(v) and v >= minimum for v in value):
            raise ValueError(
                f"{kind}: {name} must be an int >= {minimum} or a tuple of 1 or 2 such ints; "
                f"got {value!r}"
            )
        return value
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{kind}: {name} must be an int >= {minimum}; got {value!r}")
    return value


def _check_activation(kind: str, name) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"{kind}: unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


def _check_probability(kind: str, name: str, p) -> None:
    if p is None:
        return
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{kind}: {name} must be a probability in [0, 1) or None; got {p!r}")


def _check_bias(kind: str, bias) -> None:
    if not isinstance(bias, bool):
        raise ValueError(f"{kind}: bias must be True or False; got {bias!r}")


def _check_dims(kind: str, dims, kernel) -> None:
    if dims is not None and dims not in (1, 2):
        raise ValueError(f"{kind}: dims must be 1, 2 or None (inferred); got {dims!r}")
    if dims is not None and isinstance(kernel, tuple) and len(kernel) != dims:
        raise ValueError(f"{kind}: kernel {kernel} has {len(kernel)} dimensions but dims={dims}")


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class _Spec:
    kind: ClassVar[str] = ""

    def config(self) -> dict:
        """JSON-able dict {"kind": ..., **fields}; inverse of `spec_from_config`."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)


@dataclass(frozen=True)
class Dense(_Spec):
    """A fully connected layer; a multi-dimensional input is flattened first."""

    kind: ClassVar[str] = "dense"
    units: int
    activation: str = "linear"
    bias: bool = True
    dropout: float | None = None

    def __post_init__(self):
        _check_size("dense", "units", self.units, 1, allow_tuple=False)
        _check_activation("dense", self.activation)
        _check_bias("dense", self.bias)
        _check_probability("dense", "dropout", self.dropout)


@dataclass(frozen=True)
class Conv(_Spec):
    """A 1-D or 2-D convolution (nn.Conv1d / nn.Conv2d); see `conv_dims` for which."""

    kind: ClassVar[str] = "conv"
    filters: int
    kernel: IntOrTuple
    stride: IntOrTuple = 1
    padding: IntOrTuple = 0
    dilation: IntOrTuple = 1
    activation: str = "linear"
    bias: bool = True
    dropout: float | None = None
    dims: int | None = None

    def __post_init__(self):
        _check_size("conv", "filters", self.filters, 1, allow_tuple=False)
        self._set("kernel", _check_size("conv", "kernel", self.kernel, 1))
        self._set("stride", _check_size("conv", "stride", self.stride, 1))
        self._set("padding", _check_size("conv", "padding", self.padding, 0))
        self._set("dilation", _check_size("conv", "dilation", self.dilation, 1))
        _check_activation("conv", self.activation)
        _check_bias("conv", self.bias)
        _check_probability("conv", "dropout", self.dropout)
        _check_dims("conv", self.dims, self.kernel)


@dataclass(frozen=True)
class Deconv(_Spec):
    """A 1-D or 2-D transposed convolution (nn.ConvTranspose1d / 2d)."""

    kind: ClassVar[str] = "deconv"
    filters: int
    kernel: IntOrTuple
    stride: IntOrTuple = 1
    padding: IntOrTuple = 0
    output_padding: IntOrTuple = 0
    dilation: IntOrTuple = 1
    activation: str = "linear"
    bias: bool = True
    dropout: float | None = None
    dims: int | None = None

    def __post_init__(self):
        _check_size("deconv", "filters", self.filters, 1, allow_tuple=False)
        self._set("kernel", _check_size("deconv", "kernel", self.kernel, 1))
        self._set("stride", _check_size("deconv", "stride", self.stride, 1))
        self._set("padding", _check_size("deconv", "padding", self.padding, 0))
        self._set("output_padding", _check_size("deconv", "output_padding", self.output_padding, 0))
        self._set("dilation", _check_size("deconv", "dilation", self.dilation, 1))
        _check_activation("deconv", self.activation)
        _check_bias("deconv", self.bias)
        _check_probability("deconv", "dropout", self.dropout)
        _check_dims("deconv", self.dims, self.kernel)


@dataclass(frozen=True)
class MaxPool(_Spec):
    """Max-pooling over the spatial dimensions; stride defaults to the kernel size."""

    kind: ClassVar[str] = "maxpool"
    kernel: IntOrTuple
    stride: IntOrTuple | None = None

    def __post_init__(self):
        self._set("kernel", _check_size("maxpool", "kernel", self.kernel, 1))
        if self.stride is not None:
            self._set("stride", _check_size("maxpool", "stride", self.stride, 1))


@dataclass(frozen=True)
class Dropout(_Spec):
    """A dropout layer (loopnets.Dropout: one mask for every pass of a loop)."""

    kind: ClassVar[str] = "dropout"
    p: float

    def __post_init__(self):
        if self.p is None:
            raise ValueError("dropout: p must be a probability in [0, 1); got None")
        _check_probability("dropout", "p", self.p)


Spec = Union[Dense, Conv, Deconv, MaxPool, Dropout]
SPEC_TYPES = (Dense, Conv, Deconv, MaxPool, Dropout)
SPECS: dict[str, type] = {cls.kind: cls for cls in SPEC_TYPES}


def spec_from_config(cfg: dict) -> Spec:
    """Inverse of `spec.config()`; unknown kinds or keys are errors listing the valid ones."""
    if not isinstance(cfg, dict) or cfg.get("kind") not in SPECS:
        kind = cfg.get("kind") if isinstance(cfg, dict) else cfg
        raise ValueError(f"unknown layer kind {kind!r}; choose one of {', '.join(SPECS)}")
    cls = SPECS[cfg["kind"]]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(cfg) - set(valid) - {"kind"})
    if unknown:
        raise ValueError(f"{cls.kind}: unknown keys {unknown}; valid keys: kind, {', '.join(valid)}")
    return cls(**{k: v for k, v in cfg.items() if k != "kind"})


def describe(spec: Spec, kind: str | None = None) -> str:
    """Short text for tables, e.g. 'dense 25', 'conv2d 5, kernel 3x3', 'maxpool2d 2'.

    Args:
        kind: the layer kind to print (e.g. 'conv2d' from `layer_kind`); default the spec's kind.
    """
    kind = kind or spec.kind

    def size(value) -> str:
        return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)

    if isinstance(spec, Dense):
        return f"{kind} {spec.units}"
    if isinstance(spec, (Conv, Deconv)):
        return f"{kind} {spec.filters}, kernel {size(spec.kernel)}"
    if isinstance(spec, MaxPool):
        return f"{kind} {size(spec.kernel)}" + ("" if spec.stride is None else f", stride {size(spec.stride)}")
    return f"{kind} {spec.p}"


# ----------------------------------------------------------------------------- shape inference


def conv_dims(kernel: IntOrTuple, dims: int | None, input_shape: Shape) -> int:
    """Spatial rank of a conv / deconv / pool: `dims` if given, else len(kernel) for a tuple
    kernel, else the input's spatial rank (1 for (C, L), 2 for (C, H, W)), else 2 (a vector
    input becomes a square image, as in `neurons`)."""
    if dims is not None:
        return dims
    if isinstance(kernel, tuple):
        return len(kernel)
    spatial = len(input_shape) - 1
    return spatial if spatial in (1, 2) else 2


def _nearest_squares(n: int) -> tuple[int, int]:
    low = math.isqrt(n)
    return low, low + 1


def _to_conv_input(input_shape: Shape, dims: int, where: str) -> tuple[nn.Module | None, Shape]:
    """The Reshape (or None) turning `input_shape` into a (C, *spatial) shape with `dims` spatial
    dimensions, and that shape."""
    if len(input_shape) == dims + 1:
        return None, input_shape
    if len(input_shape) == 1:
        (n,) = input_shape
        if dims == 1:
            shape = (1, n)
        else:
            side = math.isqrt(n)
            if side * side != n:
                low, high = _nearest_squares(n)
                options = sorted([high, low] if low > 0 else [high], key=lambda s: abs(s * s - n))
                suggestion = " or ".join(f"{s * s} = 1x{s}x{s}" for s in options)
                raise ValueError(
                    f"{where} needs a 2-D input, but the previous output is a vector of {n}, which "
                    f"is not a square (1, s, s) image; use {suggestion} units in the layer before "
                    f"(or a 1-D conv with dims=1)"
                )
            shape = (1, side, side)
        return Reshape(shape), shape
    if len(input_shape) == 2 and dims == 2:
        shape = (input_shape[0], 1, input_shape[1])  # (C, L) -> a one-row image (C, 1, L)
        return Reshape(shape), shape
    raise ValueError(
        f"{where} is {dims}-D but its input has shape {input_shape}; a {dims}-D layer needs "
        f"(channels, {', '.join(['length'] if dims == 1 else ['height', 'width'])}): use dims=2, "
        f"or a dense layer to flatten first"
    )


def _per_dim(value: IntOrTuple, dims: int, name: str, where: str) -> tuple[int, ...]:
    if isinstance(value, tuple):
        if len(value) == dims:
            return value
        if len(value) == 1:
            return value * dims
        raise ValueError(f"{where}: {name} {value} has {len(value)} dimensions; the layer is {dims}-D")
    return (value,) * dims


def _check_output(
    where: str, in_shape: Shape, out: tuple[int, ...], detail: str, fix: str = "a smaller kernel, stride or dilation, or more padding"
) -> None:
    if any(o <= 0 for o in out):
        raise ValueError(
            f"{where}: {detail} does not fit the input {in_shape}: the output size would be "
            f"{tuple(out)}; use {fix}"
        )


def _finish(parts: list[nn.Module], act: str | None, dropout: float | None) -> nn.Sequential:
    if act is not None:
        parts.append(activation(act))
    if dropout:
        parts.append(SharedDropout(dropout))
    return nn.Sequential(*parts)


def build(spec: Spec, input_shape: Shape, where: str | None = None) -> tuple[nn.Sequential, Shape]:
    """Build the layer for per-sample `input_shape`; returns (module, output shape).

    Args:
        spec: a Dense, Conv, Deconv, MaxPool or Dropout spec.
        input_shape: per-sample input shape, e.g. (4,), (C, L) or (C, H, W).
        where: name of the layer in error messages (default: the spec's kind).
    """
    input_shape = tuple(int(s) for s in input_shape)
    where = where or spec.kind
    if isinstance(spec, Dense):
        parts: list[nn.Module] = []
        n = math.prod(input_shape)
        if len(input_shape) != 1:
            parts.append(nn.Flatten())  # (batch, C, ...) -> (batch, C * ...)
        parts.append(nn.Linear(n, spec.units, bias=spec.bias))
        return _finish(parts, spec.activation, spec.dropout), (spec.units,)
    if isinstance(spec, Dropout):
        return nn.Sequential(SharedDropout(spec.p)), input_shape
    if isinstance(spec, (Conv, Deconv)) and spec.activation == "softmax":
        raise ValueError(f"{where}: softmax is only supported on dense layers (it normalises the last dimension)")

    dims = conv_dims(spec.kernel, getattr(spec, "dims", None), input_shape)
    reshape, shape = _to_conv_input(input_shape, dims, f"{where} ({spec.kind}{dims}d)")
    parts = [reshape] if reshape is not None else []
    channels, spatial = shape[0], shape[1:]
    kernel = _per_dim(spec.kernel, dims, "kernel", where)

    if isinstance(spec, MaxPool):
        stride = kernel if spec.stride is None else _per_dim(spec.stride, dims, "stride", where)
        out = tuple((s - k) // st + 1 for s, k, st in zip(spatial, kernel, stride))
        _check_output(f"{where} (maxpool{dims}d)", shape, out, f"kernel {kernel} with stride {stride}", "a smaller kernel")
        parts.append((nn.MaxPool1d if dims == 1 else nn.MaxPool2d)(kernel, stride))
        return nn.Sequential(*parts), (channels, *out)

    stride = _per_dim(spec.stride, dims, "stride", where)
    padding = _per_dim(spec.padding, dims, "padding", where)
    dilation = _per_dim(spec.dilation, dims, "dilation", where)
    detail = f"kernel {kernel} with stride {stride}, padding {padding}, dilation {dilation}"
    if isinstance(spec, Conv):
        out = tuple(
            (s + 2 * p - d * (k - 1) - 1) // st + 1
            for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation)
        )
        _check_output(f"{where} (conv{dims}d)", shape, out, detail)
        cls = UnfoldConv1d if dims == 1 else nn.Conv2d  # an nn.Conv1d, faster for few channels (loopnets.builder.conv)
        parts.append(cls(channels, spec.filters, kernel, stride, padding, dilation, bias=spec.bias))
    else:
        output_padding = _per_dim(spec.output_padding, dims, "output_padding", where)
        for op, st, d in zip(output_padding, stride, dilation):
            if op >= max(st, d):
                raise ValueError(
                    f"{where} (deconv{dims}d): output_padding {output_padding} must be smaller than "
                    f"the stride {stride} or the dilation {dilation}"
                )
        out = tuple(
            (s - 1) * st - 2 * p + d * (k - 1) + op + 1
            for s, k, st, p, d, op in zip(spatial, kernel, stride, padding, dilation, output_padding)
        )
        _check_output(f"{where} (deconv{dims}d)", shape, out, f"{detail}, output_padding {output_padding}")
        cls = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        parts.append(
            cls(channels, spec.filters, kernel, stride, padding, output_padding, bias=spec.bias, dilation=dilation)
        )
    return _finish(parts, spec.activation, spec.dropout), (spec.filters, *out)


def layer_kind(spec: Spec, input_shape: Shape) -> str:
    """'dense', 'conv1d', 'conv2d', 'deconv1d', 'deconv2d', 'maxpool1d', 'maxpool2d' or 'dropout'."""
    if isinstance(spec, (Dense, Dropout)):
        return spec.kind
    return f"{spec.kind}{conv_dims(spec.kernel, getattr(spec, 'dims', None), tuple(input_shape))}d"
