"""What an IterativeNetwork accepts: its activations and initialisations, and the checks of its
arguments (sizes, mask, fixed weights, activation modules, from_mlp's Sequential).

Public: ACTIVATIONS, INITS, ELEMENTWISE, check_int, checked_mask, checked_fixed, activation_module,
flatten_sequential.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "ELEMENTWISE",
    "INITS",
    "activation_module",
    "check_int",
    "checked_fixed",
    "checked_mask",
    "flatten_sequential",
]

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "linear")
INITS = ("linear", "kaiming")
# Elementwise activations from_mlp (and `activation=`) accept as modules; softmax is not elementwise.
ELEMENTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.ReLU6, nn.Hardsigmoid, nn.Hardswish, nn.Tanhshrink,
)  # fmt: skip


def check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def checked_mask(mask, shape: tuple[int, int]) -> Tensor:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != shape:
        got = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"mask must be a bool tensor of shape (depth, inputs + depth) = {shape}; got {got}. "
            "Build one with layered_mask, random_mask or block_exchange"
        )
    return mask


def checked_fixed(fixed, shape: tuple[int, int], mask: Tensor) -> Tensor:
    if not isinstance(fixed, Tensor) or not fixed.is_floating_point() or tuple(fixed.shape) != shape:
        got = f"{fixed.dtype} tensor of shape {tuple(fixed.shape)}" if isinstance(fixed, Tensor) else type(fixed).__name__
        raise ValueError(
            f"fixed must be a float tensor of shape (depth, inputs + depth) = {shape}; got {got}. "
            "Build one with identity_blocks"
        )
    both = int((mask & (fixed.to(mask.device) != 0)).sum())
    if both:
        raise ValueError(
            f"a weight is either trainable (mask True) or fixed, not both; {both} positions are both. "
            "Clear the mask there: mask & (fixed == 0)"
        )
    return fixed


def activation_module(spec, name: str) -> nn.Module:
    if isinstance(spec, nn.Module):
        if not isinstance(spec, ELEMENTWISE):
            raise ValueError(
                f"{name} must act elementwise (one unit's output depends on that unit only); "
                f"supported modules: {', '.join(t.__name__ for t in ELEMENTWISE)}; got {spec!r}"
            )
        return spec
    modules = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}
    if spec not in modules:
        hint = " (softmax mixes units; use 'linear' outputs and a cross-entropy loss)" if spec == "softmax" else ""
        raise ValueError(f"unknown {name} {spec!r}; choose one of {', '.join(map(repr, ACTIVATIONS))}{hint}")
    return modules[spec]()


def flatten_sequential(seq: nn.Sequential) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in seq:
        out.extend(flatten_sequential(m) if isinstance(m, nn.Sequential) else [m])
    return out
