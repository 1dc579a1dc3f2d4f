"""Network: the seed framework's builder API (`neurons`, Lavik 2024 sec 3.2) on PyTorch.

    net = Network(input_shape=(4,))
    net.dense(25, activation="relu")                  # layer 0
    net.dense(25, activation="relu")                  # layer 1
    net.dense(25, activation="relu")                  # layer 2
    net.dense(3, activation="softmax")                # layer 3
    net.loopback(outof=2, into=1, unroll=2)           # COMBINE loop over layers 1..2
    net.connect(1, 3)                                 # bypassing skip (thesis Fig. 3.5)

Layers are numbered from 0 in the order they are added; shapes are inferred (see `layers.py`).
The network runs a list of units: a unit is one layer, or a `Loop` over a contiguous range of
layers (`loopback`) or over a new block (`feedback`, which counts as one layer, as in `neurons`).
A skip `connect(a, b)` accumulates the input of layer a (0: the network input) into the input of
layer b, as in `neurons`. Its config (`config`, `from_config`) and printed summary live in
`loopnets.builder.description`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from loopnets.builder import layers
from loopnets.builder.description import NetworkDescription
from loopnets.core.modes import Backprop, Combine, Couple
from loopnets.core.loop import Loop

Shape = tuple[int, ...]

ACCUMULATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": lambda target, source: target + source,
    "sub": lambda target, source: target - source,
    "mul": lambda target, source: target * source,
    "mean": lambda target, source: (target + source) / 2,
    "overwrite": lambda target, source: source,
}

OVERLAP_HELP = (
    "overlapping or nested loops are not supported (thesis sec 5.5.1, the overlapping-loop "
    "problem: the shared layers' values would be accumulated twice, an uneven weighting)"
)


@dataclass(frozen=True)
class Skip:
    """The input of layer `source` (0: the network input) accumulated into the input of `target`."""

    source: int
    target: int
    accumulation: str | None  # None: the network's skip_accumulation


@dataclass
class _Layer:
    kind: str  # "dense", "conv2d", "maxpool1d", "dropout", "feedback", ...
    label: str  # for the table: "dense 25", "feedback [dense 25, dense 25]"
    in_shape: Shape
    out_shape: Shape
    activation: str  # "linear" for pooling and dropout
    module: nn.Module  # the layer's nn.Sequential, or the feedback block's Loop


class Network(NetworkDescription, nn.Module):
    """A feedforward network with skips and feedback loops, built layer by layer.

    Args:
        input_shape: per-sample input shape: (n,), (C, L) or (C, H, W); an int n means (n,).
        skip_accumulation: default accumulation of skips: "add", "sub" (target - source), "mul",
            "mean" ((target + source) / 2) or "overwrite" (source replaces target).

    Attributes:
        skips_enabled: when False every skip contributes nothing (the thesis probe "skip off";
            `ln.severed(model, skips=True)` sets it).
    """

    def __init__(self, input_shape: int | Sequence[int], skip_accumulation: str = "add"):
        super().__init__()
        self.input_shape = _check_input_shape(input_shape)
        _check_accumulation(skip_accumulation, "skip_accumulation")
        self.skip_accumulation = skip_accumulation
        self.skips_enabled = True
        self.units = nn.ModuleList()
        self._spans: list[tuple[int, int]] = []  # (first, last) layer index of each unit
        self._layers: list[_Layer] = []
        self._skips: list[Skip] = []
        self._calls: list[tuple[str, dict]] = []  # builder calls, replayed by from_config

    # -- layers -----------------------------------------------------------------------------

    def dense(self, units: int, activation: str = "linear", bias: bool = True, dropout: float | None = None) -> int:
        """Add a fully connected layer (flattening a multi-dimensional input); returns its index."""
        return self._add(layers.Dense, units, activation, bias, dropout)

    def conv(
        self,
        filters: int,
        kernel: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        activation: str = "linear",
        bias: bool = True,
        dropout: float | None = None,
        dims: int | None = None,
    ) -> int:
        """Add a 1-D or 2-D convolution; returns its index.

        It is 2-D when `dims=2` or the kernel is a pair, 1-D when `dims=1` or the kernel is a
        1-tuple; otherwise it follows the input, (C, L) -> 1-D, (C, H, W) -> 2-D, and a vector
        becomes a square image (1, s, s) as in `neurons` (or (1, n) with dims=1).
        """
        return self._add(layers.Conv, filters, kernel, stride, padding, dilation, activation, bias, dropout, dims)

    def deconv(
        self,
        filters: int,
        kernel: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        output_padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        activation: str = "linear",
        bias: bool = True,
        dropout: float | None = None,
        dims: int | None = None,
    ) -> int:
        """Add a 1-D or 2-D transposed convolution (dimensions chosen as for `conv`); returns its index."""
        return self._add(
            layers.Deconv, filters, kernel, stride, padding, output_padding, dilation, activation, bias, dropout, dims
        )

    def maxpool(self, kernel: int | tuple[int, ...], stride: int | tuple[int, ...] | None = None) -> int:
        """Add max-pooling (stride defaults to the kernel); returns its index."""
        return self._add(layers.MaxPool, kernel, stride)

    def dropout(self, p: float) -> int:
        """Add a dropout layer (`loopnets.Dropout`, one mask for all passes of a loop); returns its index."""
        return self._add(layers.Dropout, p)

    def _add(self, spec_type: type, *args) -> int:
        try:
            spec = spec_type(*args)
        except ValueError as err:
            raise ValueError(f"layer {len(self._layers)}: {err}") from None
        return self.add(spec)

    def add(self, spec: layers.Spec) -> int:
        """Add a layer from a spec (`layers.Dense(25, activation="relu")`, ...); returns its index."""
        if not isinstance(spec, layers.SPEC_TYPES):
            raise ValueError(f"add needs a layer spec ({', '.join('layers.' + c.__name__ for c in layers.SPEC_TYPES)}); got {spec!r}")
        index = len(self._layers)
        in_shape = self.output_shape
        module, out_shape = layers.build(spec, in_shape, where=f"layer {index}")
        act = getattr(spec, "activation", "linear")
        kind = layers.layer_kind(spec, in_shape)
        self._layers.append(_Layer(kind, layers.describe(spec, kind), in_shape, out_shape, act, module))
        self.units.append(module)
        self._spans.append((index, index))
        self._calls.append((spec.kind, {"spec": spec}))
        return index

    # -- skips ------------------------------------------------------------------------------

    def connect(self, source: int, target: int, accumulation: str | None = None) -> None:
        """Skip: accumulate the input of layer `source` (0: the network input) into the input of
        layer `target`, source < target.

        Several skips into one layer apply in the order added; the accumulated value is what the
        layer (and a skip leaving from it) sees. Shapes that differ but hold the same number of
        elements are reshaped. A skip may not start or end strictly inside a `loopback` range;
        skipping over a loop (source = into, target = outof + 1) is the thesis's bypassing skip.

        Args:
            accumulation: "add", "sub" (target - source), "mul", "mean" or "overwrite";
                None: the network's `skip_accumulation`.
        """
        what = f"connect({source}, {target})"
        self._check_index(source, "source", what)
        self._check_index(target, "target", what)
        if source >= target:
            raise ValueError(f"{what}: a skip goes forward, so source must be < target; got {source} >= {target}")
        if accumulation is not None:
            _check_accumulation(accumulation, "accumulation")
        src, dst = self._layers[source].in_shape, self._layers[target].in_shape
        if src != dst and math.prod(src) != math.prod(dst):
            raise ValueError(
                f"{what}: the input of layer {source} has shape {src} and the input of layer {target} has "
                f"shape {dst}; a skip needs equal shapes or the same number of elements "
                f"({math.prod(src)} vs {math.prod(dst)})"
            )
        skip = Skip(source, target, accumulation)
        for first, last in self._loop_spans():
            _check_skip_outside_loop(skip, first, last)
        self._skips.append(skip)
        self._calls.append(("connect", {"source": source, "target": target, "accumulation": accumulation}))

    def skips(self) -> list[Skip]:
        """The skips, in the order they were added (and are applied)."""
        return list(self._skips)

    # -- loops ------------------------------------------------------------------------------

    def loopback(
        self,
        outof: int,
        into: int,
        unroll: int = 2,
        backprop: Backprop | None = None,
        merge: str = "replace",
        output: str | None = None,
    ) -> None:
        """Loop the output of layer `outof` back into the input of layer `into` (into <= outof).

        Layers into..outof become one `Loop` run `unroll` times (passes; "COMBINE x3" is
        unroll=3). Layer outof's output shape must equal layer into's input shape.

        Args:
            backprop: default `Combine()` (the thesis's loopback is COMBINE).
            merge, output: as for `Loop`.
        """
        what = f"loopback {outof} -> {into}"
        self._check_index(outof, "outof", what)
        self._check_index(into, "into", what)
        if into > outof:
            raise ValueError(f"{what}: a loop feeds a later layer back into an earlier one, so into <= outof; got into={into}")
        out_shape, in_shape = self._layers[outof].out_shape, self._layers[into].in_shape
        if out_shape != in_shape:
            raise ValueError(
                f"{what} needs layer {outof}'s output shape to equal layer {into}'s input shape "
                f"{in_shape}; got {out_shape}"
            )
        for first, last in self._loop_spans():
            if first <= outof and into <= last:
                other = f"the feedback block (layer {first})" if self._layers[first].kind == "feedback" else (
                    f"the loop over layers {first}..{last}"
                )
                raise ValueError(f"{what} overlaps {other}: {OVERLAP_HELP}")
        for skip in self._skips:
            _check_skip_outside_loop(skip, into, outof)
        backprop = Combine() if backprop is None else backprop
        start = next(u for u, (first, _) in enumerate(self._spans) if first == into)
        end = next(u for u, (_, last) in enumerate(self._spans) if last == outof)
        body = nn.Sequential(*self.units[start : end + 1])
        loop = _loop(what, body, unroll, backprop, merge, output)
        units = list(self.units)
        self.units = nn.ModuleList([*units[:start], loop, *units[end + 1 :]])
        self._spans[start : end + 1] = [(into, outof)]
        for i, module in zip(range(into, outof + 1), loop.body):
            self._layers[i].module = module  # the compact body (copy 0 for COUPLE)
        self._calls.append(("loopback", dict(outof=outof, into=into, unroll=unroll, backprop=backprop, merge=merge, output=output)))

    def feedback(
        self,
        specs: Sequence[layers.Spec],
        unroll: int = 2,
        backprop: Backprop | None = None,
        merge: str = "replace",
        output: str | None = None,
    ) -> int:
        """Add a block of new layers, looped `unroll` times; returns its (single) layer index.

        The block acts as one layer, as in `neurons`: its inner layers cannot be addressed by
        skips or loopbacks. Its output shape must equal its input shape.

        Args:
            specs: the block's layers, e.g. [layers.Dense(25, "relu"), layers.Dense(25, "relu")].
            backprop: default `Couple()` (the thesis's feedback block is COUPLE).
            merge, output: as for `Loop`.
        """
        index = len(self._layers)
        if isinstance(specs, layers.SPEC_TYPES) or not isinstance(specs, Sequence) or not specs:
            raise ValueError(f"feedback needs a non-empty list of layer specs (loopnets.builder.layers.Dense, ...); got {specs!r}")
        for spec in specs:
            if not isinstance(spec, layers.SPEC_TYPES):
                raise ValueError(
                    f"feedback block (layer {index}): {spec!r} is not a layer spec; use "
                    f"{', '.join('layers.' + c.__name__ for c in layers.SPEC_TYPES)}"
                )
        in_shape = shape = self.output_shape
        modules = []
        for j, spec in enumerate(specs):
            module, shape = layers.build(spec, shape, where=f"feedback block (layer {index}), part {j}")
            modules.append(module)
        if shape != in_shape:
            raise ValueError(
                f"feedback block (layer {index}) needs its output shape to equal its input shape "
                f"{in_shape}; got {shape}"
            )
        backprop = Couple() if backprop is None else backprop
        loop = _loop(f"feedback block (layer {index})", nn.Sequential(*modules), unroll, backprop, merge, output)
        label = "feedback [" + "; ".join(layers.describe(s) for s in specs) + "]"
        act = getattr(specs[-1], "activation", "linear")
        self._layers.append(_Layer("feedback", label, in_shape, shape, act, loop))
        self.units.append(loop)
        self._spans.append((index, index))
        self._calls.append(("feedback", dict(specs=list(specs), unroll=unroll, backprop=backprop, merge=merge, output=output)))
        return index

    def loops(self) -> list[Loop]:
        """The loops (loopbacks and feedback blocks), in layer order."""
        return [unit for unit in self.units if isinstance(unit, Loop)]

    def _loop_spans(self) -> list[tuple[int, int]]:
        return [span for unit, span in zip(self.units, self._spans) if isinstance(unit, Loop)]

    # -- running ----------------------------------------------------------------------------

    @property
    def output_shape(self) -> Shape:
        """Per-sample output shape (the input shape while there are no layers)."""
        return self._layers[-1].out_shape if self._layers else self.input_shape

    @property
    def output_activation(self) -> str:
        """The last layer's activation name ("linear" while there are no layers)."""
        return self._layers[-1].activation if self._layers else "linear"

    def layer_shapes(self) -> list[tuple[Shape, Shape]]:
        """(input shape, output shape) of every layer, per sample."""
        return [(layer.in_shape, layer.out_shape) for layer in self._layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, *input_shape) -> (batch, *output_shape)."""
        return self._run(x, logits=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output before a final softmax / sigmoid (equal to forward(x) otherwise).

        Exact when the last layer is outside a loop (its activation is skipped). When it is
        inside a loop the activation ran in every pass, so the result is its inverse applied to
        the output: log(p) for softmax (valid logits: softmax(log p) = p), logit(p) for sigmoid;
        correct up to rounding but not as stable for saturated outputs.
        """
        return self._run(x, logits=True)

    def _run(self, x: torch.Tensor, logits: bool) -> torch.Tensor:
        self._check_input(x)
        saved: dict[int, torch.Tensor] = {}  # layer index -> its input, for skips leaving it
        return self._run_units(x, range(len(self.units)), saved, self._skip_plan(), logits)

    def _skip_plan(self) -> tuple[dict[int, list[Skip]], frozenset[int]]:
        """(skips into each layer, layers a skip leaves from) of the enabled skips; decided once per
        skip set (and skips_enabled), not at every unit of every forward."""
        key = (self.skips_enabled, len(self._skips))
        cached = self.__dict__.get("_cached_skip_plan")
        if cached is None or cached[0] != key:
            skips = self._skips if self.skips_enabled else []
            into: dict[int, list[Skip]] = {}
            for skip in skips:
                into.setdefault(skip.target, []).append(skip)
            cached = self.__dict__["_cached_skip_plan"] = (key, (into, frozenset(s.source for s in skips)))
        return cached[1]

    def around_loop(self, x: torch.Tensor, logits: bool = False) -> tuple[Loop, torch.Tensor, Callable]:
        """Split a run at the network's one loop (the `LoopHost` hook of `loopnets.core.protocol`).

        Runs the units before the loop (skips applied as in forward) and returns (loop, the loop's
        input (B, *), after), where after(y) runs the units after the loop on loop outputs y of
        shape (n * B, *): n loop outputs stacked along the batch dimension (pass-major), with
        every skip value from before the loop repeated n times. after(loop(x)) is forward(x)
        (logits(x) with logits=True); the downstream layers run once for all n.
        """
        self._check_input(x)
        at = [u for u, unit in enumerate(self.units) if isinstance(unit, Loop)]
        if len(at) != 1:
            raise ValueError(
                f"per-pass outputs need a Network with exactly one loop (loopback or feedback block); "
                f"this one has {len(at)}"
            )
        at = at[0]
        saved: dict[int, torch.Tensor] = {}  # layer index -> its input, for skips leaving it
        skips = self._skip_plan()
        x = self._run_units(x, range(0, at), saved, skips, logits)
        x = self._enter_unit(x, self._spans[at][0], saved, skips)
        batch = len(x)

        def after(y: torch.Tensor) -> torch.Tensor:
            n = len(y) // batch  # (n * B, *): n loop outputs, pass-major
            carried = {i: v.repeat(n, *[1] * (v.dim() - 1)) for i, v in saved.items()}
            if logits and at == len(self.units) - 1 and self.output_activation in ("softmax", "sigmoid"):
                return self._inverse_activation(y)
            return self._run_units(y, range(at + 1, len(self.units)), carried, skips, logits)

        return self.units[at], x, after

    def _run_units(self, x: torch.Tensor, units: range, saved: dict, skips: tuple, logits: bool) -> torch.Tensor:
        """_run's steps for the units in `units` (`saved` holds and receives skip values)."""
        last_unit = len(self.units) - 1
        for u in units:
            unit = self.units[u]
            x = self._enter_unit(x, self._spans[u][0], saved, skips)
            if logits and u == last_unit and self.output_activation in ("softmax", "sigmoid"):
                x = self._logits_of(unit, x)
            else:
                x = unit(x)
        return x

    def _enter_unit(self, x: torch.Tensor, first: int, saved: dict, skips: tuple) -> torch.Tensor:
        """The input of the unit starting at layer `first`: x with the skips into it accumulated; it
        is kept in `saved` when a skip leaves from there. `skips`: the `_skip_plan`."""
        into, sources = skips
        for skip in into.get(first, ()):
            x = self._accumulate(x, saved[skip.source], skip)
        if first in sources:
            saved[first] = x
        return x

    def _accumulate(self, target: torch.Tensor, source: torch.Tensor, skip: Skip) -> torch.Tensor:
        if source.shape != target.shape:
            source = source.reshape(target.shape)  # same number of elements, checked in connect
        return ACCUMULATIONS[skip.accumulation or self.skip_accumulation](target, source)

    def _logits_of(self, unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(unit, Loop):
            return self._inverse_activation(unit(x))
        for module in unit:
            if not isinstance(module, (nn.Softmax, nn.Sigmoid)):
                x = module(x)
        return x

    def _inverse_activation(self, y: torch.Tensor) -> torch.Tensor:
        """Logits from the output of a loop that ends in the final softmax / sigmoid (see `logits`)."""
        if self.output_activation == "softmax":
            return y.clamp_min(torch.finfo(y.dtype).tiny).log()
        return torch.logit(y, eps=torch.finfo(y.dtype).eps)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Network expects a torch.Tensor; got {type(x).__name__}")
        if not self._layers:
            raise ValueError("this Network has no layers yet; add some with dense, conv, ...")
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            expected = ", ".join(["batch", *map(str, self.input_shape)])
            hint = "; add a batch dimension, e.g. x.unsqueeze(0)" if tuple(x.shape) == self.input_shape else ""
            raise ValueError(f"Network expects input of shape ({expected}); got {tuple(x.shape)}{hint}")

    def _check_index(self, value, name: str, what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what}: {name} must be a layer index (int); got {value!r}")
        if not 0 <= value < len(self._layers):
            have = f"layers 0..{len(self._layers) - 1}" if self._layers else "no layers yet"
            raise ValueError(f"{what}: {name} {value} is out of range; the network has {have}")


def _loop(what: str, body: nn.Sequential, unroll, backprop, merge, output) -> Loop:
    try:
        return Loop(body, unroll=unroll, backprop=backprop, merge=merge, output=output)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def _check_skip_outside_loop(skip: Skip, first: int, last: int) -> None:
    for end, index in (("ends", skip.target), ("starts", skip.source)):
        if first < index <= last:
            raise ValueError(
                f"skip {skip.source} -> {skip.target} {end} at layer {index}, strictly inside the loop over "
                f"layers {first}..{last}, where a layer's input differs in every pass; a skip may start or end "
                f"at the loop's first layer ({first}) or after its last ({last + 1})"
            )


def _check_input_shape(shape) -> Shape:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if (
        not isinstance(shape, (tuple, list))
        or not 1 <= len(shape) <= 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise ValueError(f"input_shape must be (n,), (C, L) or (C, H, W) with positive ints; got {shape!r}")
    return tuple(shape)


def _check_accumulation(name, what: str) -> None:
    if name not in ACCUMULATIONS:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(ACCUMULATIONS)}")
