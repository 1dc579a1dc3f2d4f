"""COMBINE: combine every layer's values over the passes, backprop once through the compact layers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import nn
from torch.func import functional_call

from loopnets.core.dropout import Dropout
from loopnets.core.modes.base import Backprop, LoopParts, accumulation_weights

GradScale = Union[float, str, Callable[[int], float]]


@dataclass(frozen=True)
class Combine(Backprop):
    """Lavik's COMBINE: combine every layer's values over the passes, backprop once, compactly.

    The k passes run without an autograd graph. For every layer of the body the input,
    pre-activation and output of each pass are accumulated ("mean" by default, eq 3.1; "sum";
    or "weighted", eq 5.1). The loop's output is the combined output (COMBINE implies an output
    skip, thesis Fig. 3.4). Backward is one ordinary pass through the compact layers at the
    combined values: weight gradient from the combined input, activation derivative at the
    combined pre-activation. The gradient passed back to the loop's input is that of the first
    layer's combined input, as if that were the original input (identity, as in `neurons`).

    This is not the gradient of the forward function: it is the thesis's approximation, exact
    only for k = 1. Memory does not grow with k: only the running accumulations (three tensors
    per layer) are kept. Time: k graph-free passes plus one backward pass.

    Unlike `neurons`, the first layer's input is combined too (the mean of the original input and
    the fed-back inputs), so combined pre-activation = W @ combined input + b holds for every
    layer under "mean" and "weighted"; `neurons` keeps the original input there.

    Args:
        accumulate: "mean", "sum" or "weighted".
        grad_scale: factor on the loop parameters' gradients, a number, "1/k", or a function of
            k. Default 1.0: every thesis experiment passes a constant 1.0 (the `neurons` layer
            default is 1/k, but `loopback` overwrites it). Only parameter gradients are scaled,
            not the gradient passed on to earlier layers.
    """

    accumulate: str = "mean"
    grad_scale: GradScale = 1.0

    name = "combine"
    label = "COMBINE"
    outputs = ()  # always the combined value
    default_output = "combined"
    pass_readout = False
    parameterised_feedback = False
    unsupported = {
        "output": "its output is always the combined value (accumulated over passes); set the rule with "
                  "Combine(accumulate=...) and leave output=None",
        "pass_readout": "its passes run without an autograd graph, so per-pass losses cannot be backpropagated; "
                        "use Combine(accumulate=...) to weight passes, or ln.Tied()",
        "parameterised_feedback": "learnable feedback is unsuitable for COMBINE (thesis sec 3.1); "
                                  "use backprop=ln.Tied() or ln.Couple()",
        "stacks_pass_counts": "with grad_scale a function of k or a string, the gradient factor depends on "
                              "the pass count; use a number",
    }

    def __post_init__(self) -> None:
        accumulation_weights(self.accumulate, 1)  # validates the name
        scale = self.grad_scale
        if isinstance(scale, str):
            if scale not in ("1", "1/k"):
                raise ValueError(f"Combine(grad_scale={scale!r}): use a number, '1/k' or a function of k")
        elif isinstance(scale, (int, float)):
            if not math.isfinite(scale):
                raise ValueError(f"Combine(grad_scale={scale!r}) must be finite")
        elif not callable(scale):
            raise ValueError(f"Combine(grad_scale={scale!r}): use a number, '1/k' or a function of k")

    def scale(self, k: int) -> float:
        """The gradient factor for k passes."""
        s = self.grad_scale
        if s == "1/k":
            return 1.0 / k
        if s == "1":
            return 1.0
        if callable(s):
            return float(s(k))
        return float(s)

    def config(self) -> dict:
        if callable(self.grad_scale):
            raise ValueError(
                "Combine(grad_scale=<function>) cannot be written to a config or checkpoint; "
                "use a number or '1/k'"
            )
        return {"mode": "combine", "accumulate": self.accumulate, "grad_scale": self.grad_scale}

    @property
    def stacks_pass_counts(self) -> bool:
        """Stacked models may differ in the pass count when the gradient factor does not depend on it."""
        return isinstance(self.grad_scale, (int, float)) and not isinstance(self.grad_scale, bool)

    def attach(self, loop: LoopParts) -> None:
        loop.stages = combine_stages(loop.body)

    def run(self, loop: LoopParts, x: torch.Tensor, passes: int | None, readout: list | None) -> torch.Tensor:
        return combine_forward(loop, x, passes, readout)

    def weighted_run(self, loop: LoopParts, x: torch.Tensor, weights: list, readout: list | None) -> torch.Tensor:
        return combine_forward(loop, x, len(weights), readout, weights=weights)

    def output(self, loop: LoopParts, raw: list[torch.Tensor]) -> torch.Tensor:
        """The combined output after len(raw) passes, accumulated as `combine_forward` does."""
        acc = None  # w_0 v_0, then add(v, alpha=w)
        for w, v in zip(accumulation_weights(self.accumulate, len(raw)), raw):
            acc = w * v if acc is None else acc.add(v, alpha=w)
        return acc



AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.GELU, nn.SiLU,
    nn.Softplus, nn.Hardtanh, nn.ReLU6, nn.Mish, nn.CELU, nn.SELU,
)
STRUCTURAL = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.Flatten, nn.Unflatten, Dropout,
)
# A module class may also declare itself structural (a per-sample reshape COMBINE can run at the
# combined values) with the class attribute `structural = True`, e.g. loopnets.builder.layers.Reshape.


@dataclass
class Stage:
    """One step of a COMBINE body: an affine layer with its activation, or one other module."""

    module: nn.Module  # the affine layer, or the structural / activation module
    activation: nn.Module | None = None  # only for affine stages

    @property
    def affine(self) -> bool:
        return isinstance(self.module, AFFINE)


def combine_stages(body: nn.Module) -> list[Stage]:
    """Split a COMBINE body into stages, or raise naming the module COMBINE cannot handle."""
    if not isinstance(body, nn.Sequential):
        raise ValueError(
            f"COMBINE needs an nn.Sequential body of affine layers and element-wise activations; got "
            f"{type(body).__name__}. Wrap the layers in nn.Sequential, or use backprop=ln.Tied() or ln.Couple()."
        )
    leaves: list[nn.Module] = []

    def flatten(seq: nn.Sequential) -> None:
        for m in seq:
            flatten(m) if isinstance(m, nn.Sequential) else leaves.append(m)

    flatten(body)
    stages: list[Stage] = []
    for i, m in enumerate(leaves):
        if isinstance(m, ELEMENTWISE) and stages and stages[-1].affine and stages[-1].activation is None:
            stages[-1].activation = m
        elif isinstance(m, AFFINE + ELEMENTWISE + STRUCTURAL) or getattr(type(m), "structural", False) is True:
            stages.append(Stage(m))
        else:
            hint = " (use loopnets.Dropout, whose mask is shared across passes)" if isinstance(m, nn.Dropout) else ""
            raise ValueError(
                f"COMBINE cannot backprop through body module {i} ({type(m).__name__}){hint}: its body must be "
                "affine layers (Linear, Conv, ConvTranspose) each followed by an optional element-wise "
                "activation, plus pooling, flatten, reshape or loopnets.Dropout. "
                "Use backprop=ln.Tied() or ln.Couple() for this body."
            )
    if not stages:
        raise ValueError("COMBINE needs a body with at least one layer; got an empty nn.Sequential")
    return stages


def activation_slope(activation: nn.Module | None, pre: torch.Tensor) -> torch.Tensor | None:
    """Element-wise derivative of `activation` at `pre` (None for the identity)."""
    if activation is None or isinstance(activation, nn.Identity):
        return None
    # Closed forms for the common activations (the autograd fallback below costs a graph per step).
    if type(activation) is nn.ReLU:
        return (pre > 0).to(pre.dtype)
    if type(activation) is nn.Tanh:
        return 1 - torch.tanh(pre) ** 2
    if type(activation) is nn.Sigmoid:
        s = torch.sigmoid(pre)
        return s * (1 - s)
    if type(activation) is nn.LeakyReLU:
        return torch.where(pre > 0, 1.0, activation.negative_slope).to(pre.dtype)
    with torch.enable_grad():
        p = pre.detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(activation(p).sum(), p)
    return slope


def call_scaled(module: nn.Module, x: torch.Tensor, scale: float) -> torch.Tensor:
    """module(x) whose parameter gradients are multiplied by `scale` (input gradient unchanged)."""
    if scale == 1.0:
        return module(x)
    params = {n: p * scale + p.detach() * (1.0 - scale) for n, p in module.named_parameters()}
    return functional_call(module, params, (x,))


def combine_forward(loop: LoopParts, x: torch.Tensor, k: int, readout: list | None = None,
                    weights: list | None = None) -> torch.Tensor:
    """COMBINE forward (thesis Algorithm 3 with eq 3.1) and the graph for its compact backward.

    Returns the combined output. When gradients are needed it carries a graph that, in backward,
    applies each layer's Jacobian at the combined values (see `Combine`). `readout`, if given,
    receives every pass's raw output (detached). `weights`, if given, replaces the k accumulation
    weights of `mode.accumulate`: one per pass, each a number or a tensor of one weight per row
    (B,) (the seed-batched path runs models with different pass counts as one: a model's weights
    are 0 after its last pass).
    """
    mode: Combine = loop.backprop
    stages: list[Stage] = loop.stages
    if weights is None:
        weights = accumulation_weights(mode.accumulate, k)

    # Running accumulations; their number depends on the body, not on k.
    acc_in: torch.Tensor | None = None  # combined input of the first stage
    acc_pre: list[torch.Tensor | None] = [None] * len(stages)  # combined pre-activations
    acc_out: list[torch.Tensor | None] = [None] * len(stages)  # combined stage outputs

    def add(acc: torch.Tensor | None, w: float | torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if isinstance(w, torch.Tensor):  # one weight per row
            if w.dim() != v.dim():
                w = w.view(-1, *[1] * (v.dim() - 1))
            return w * v if acc is None else acc.addcmul_(v, w)
        return w * v if acc is None else acc.add_(v, alpha=w)

    with torch.no_grad():
        x0 = x.detach()
        h = x0
        for t, w in enumerate(weights):
            v = x0 if t == 0 else loop.next_input(h, x0)
            loop.check_shape(x0, v, "fed-back input")
            acc_in = add(acc_in, w, v)
            for s, stage in enumerate(stages):
                if stage.affine:
                    z = stage.module(v)
                    acc_pre[s] = add(acc_pre[s], w, z)
                    v = stage.activation(z) if stage.activation is not None else z
                else:
                    v = stage.module(v)
                acc_out[s] = add(acc_out[s], w, v)
            loop.check_shape(x0, v, "body output")
            h = v
            if readout is not None:
                readout.append(v.clone())

    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for st in stages for p in st.module.parameters())
    )
    if not needs_grad:
        return acc_out[-1]

    # Backward graph through the compact layers at the combined values. Each stage's output has
    # the combined value exactly; only its gradient path is built from the combined input.
    scale = mode.scale(k)
    g = acc_in + (x - x.detach())  # value: combined input; d/dx: identity
    for s, stage in enumerate(stages):
        if stage.affine:
            z = call_scaled(stage.module, g, scale)
            slope = activation_slope(stage.activation, acc_pre[s])
            delta = z - z.detach()
            g = acc_out[s] + (delta if slope is None else slope * delta)
        else:
            y = stage.module(g)
            g = acc_out[s] + (y - y.detach())
    return g
