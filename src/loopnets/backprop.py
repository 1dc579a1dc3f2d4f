"""Backprop modes for loops: Tied, COUPLE and COMBINE.

A mode is a small frozen object chosen once, `Loop(body, unroll=3, backprop=Couple())`. Each
mode documents what it computes exactly, what it approximates, and what it costs. The loop
(`loopnets.loop.Loop`) owns the modules; a mode owns the algorithm that runs them.

References: H. H. Lavik, "Feedback connections in neural networks for layer reuse" (thesis,
2024), sections 3.1-3.2 and 5.1-5.5; Caswell, Shen & Wang, "Loopy neural nets" (2016).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

import torch
from torch import nn
from torch.func import functional_call

from loopnets.dropout import Dropout
from loopnets.layers import Reshape

if TYPE_CHECKING:
    from loopnets.loop import Loop

ACCUMULATIONS = ("mean", "sum", "weighted")


def accumulation_weights(accumulate: str, k: int) -> list[float]:
    """Weights of the k passes (or copies) for an accumulation rule.

    - "mean": 1/k each (thesis eqs 3.1 and 3.2, read as a true mean over the k passes).
    - "sum": 1 each (eq 3.1 with op = sum).
    - "weighted": proportional to 1/(k - j) for pass j = 0..k-1, normalised to sum 1, so the
      last pass weighs most and earlier passes are discounted (eqs 5.1 and 5.2). As printed the
      thesis divides by m - j, which is zero for the last pass; we shift by one and normalise.
    """
    if accumulate == "mean":
        return [1.0 / k] * k
    if accumulate == "sum":
        return [1.0] * k
    if accumulate == "weighted":
        raw = [1.0 / (k - j) for j in range(k)]
        total = sum(raw)
        return [r / total for r in raw]
    raise ValueError(f"unknown accumulation {accumulate!r}; choose one of {', '.join(ACCUMULATIONS)}")


@dataclass(frozen=True)
class Tied:
    """One body applied k times; autograd sums every weight's gradient over the passes.

    This is backprop through the unrolled graph with tied weights: dW = sum_j dW_j (Caswell et
    al. 2016; Liao & Poggio 2016; thesis eq 5.3). Exact. Memory and time grow linearly with k
    (every pass's activations are kept for backward).
    """

    def config(self) -> dict:
        return {"mode": "tied"}


@dataclass(frozen=True)
class Couple:
    """Lavik's COUPLE: k untied copies of the body trained as a deep net, re-tied after each step.

    In training, pass i runs copy i, and backprop is exact for that deep, untied network. Each
    copy has its own parameters and therefore its own optimizer state (Adam moments). After
    every optimizer step the copies are re-tied: every copy is set to the accumulation of the
    updated copies (thesis Algorithm/eq 3.2, "mean"; the weighted variant after eq 5.2 gives
    later copies more weight). With plain SGD one step gives w - lr * mean_i(G_i) (eq 5.5), where
    `Tied` gives w - lr * sum_i(G_i) (eq 5.4). `ln.fit` re-ties automatically; with your own
    training loop call `ln.tie_(model)` after `optimizer.step()`. Memory and time grow with k.

    Args:
        accumulate: "mean" or "weighted".
    """

    accumulate: str = "mean"

    def __post_init__(self) -> None:
        if self.accumulate not in ("mean", "weighted"):
            raise ValueError(
                f"Couple(accumulate={self.accumulate!r}) is not supported; choose 'mean' or 'weighted' "
                "(a sum of k copies would scale the weights by k)"
            )

    def config(self) -> dict:
        return {"mode": "couple", "accumulate": self.accumulate}


GradScale = Union[float, str, Callable[[int], float]]


@dataclass(frozen=True)
class Combine:
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


Backprop = Union[Tied, Couple, Combine]
MODES = {"tied": Tied, "couple": Couple, "combine": Combine}


def backprop_from_config(cfg: dict) -> Backprop:
    """Rebuild a mode from `mode.config()`."""
    cfg = dict(cfg)
    name = cfg.pop("mode", None)
    if name not in MODES:
        raise ValueError(f"unknown backprop mode {name!r}; choose one of {', '.join(MODES)}")
    try:
        return MODES[name](**cfg)
    except TypeError as err:
        raise ValueError(f"bad settings for backprop mode {name!r}: {cfg}: {err}") from None


# --- COMBINE ------------------------------------------------------------------------------

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.GELU, nn.SiLU,
    nn.Softplus, nn.Hardtanh, nn.ReLU6, nn.Mish, nn.CELU, nn.SELU,
)
STRUCTURAL = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.Flatten, nn.Unflatten, Reshape, Dropout,
)


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
        elif isinstance(m, AFFINE + ELEMENTWISE + STRUCTURAL):
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


def _activation_slope(activation: nn.Module | None, pre: torch.Tensor) -> torch.Tensor | None:
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


def _call_scaled(module: nn.Module, x: torch.Tensor, scale: float) -> torch.Tensor:
    """module(x) whose parameter gradients are multiplied by `scale` (input gradient unchanged)."""
    if scale == 1.0:
        return module(x)
    params = {n: p * scale + p.detach() * (1.0 - scale) for n, p in module.named_parameters()}
    return functional_call(module, params, (x,))


def combine_forward(loop: "Loop", x: torch.Tensor, k: int, readout: list | None = None) -> torch.Tensor:
    """COMBINE forward (thesis Algorithm 3 with eq 3.1) and the graph for its compact backward.

    Returns the combined output. When gradients are needed it carries a graph that, in backward,
    applies each layer's Jacobian at the combined values (see `Combine`). `readout`, if given,
    receives every pass's raw output (detached).
    """
    mode: Combine = loop.backprop
    stages: list[Stage] = loop._stages
    weights = accumulation_weights(mode.accumulate, k)

    # Running accumulations; their number depends on the body, not on k.
    acc_in: torch.Tensor | None = None  # combined input of the first stage
    acc_pre: list[torch.Tensor | None] = [None] * len(stages)  # combined pre-activations
    acc_out: list[torch.Tensor | None] = [None] * len(stages)  # combined stage outputs

    def add(acc: torch.Tensor | None, w: float, v: torch.Tensor) -> torch.Tensor:
        return w * v if acc is None else acc.add_(v, alpha=w)

    with torch.no_grad():
        x0 = x.detach()
        h = x0
        for t, w in enumerate(weights):
            v = x0 if t == 0 else loop._merge(loop._feed(h), x0)
            loop._check_shape(x0, v, "fed-back input")
            acc_in = add(acc_in, w, v)
            for s, stage in enumerate(stages):
                if stage.affine:
                    z = stage.module(v)
                    acc_pre[s] = add(acc_pre[s], w, z)
                    v = stage.activation(z) if stage.activation is not None else z
                else:
                    v = stage.module(v)
                acc_out[s] = add(acc_out[s], w, v)
            loop._check_shape(x0, v, "body output")
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
            z = _call_scaled(stage.module, g, scale)
            slope = _activation_slope(stage.activation, acc_pre[s])
            delta = z - z.detach()
            g = acc_out[s] + (delta if slope is None else slope * delta)
        else:
            y = stage.module(g)
            g = acc_out[s] + (y - y.detach())
    return g
