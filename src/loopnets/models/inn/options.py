"""What an IterativeNetwork accepts: its activations and initialisations, and the checks of its
arguments (sizes, mask, fixed weights, activation modules, from_mlp's Sequential).

Public: ACTIVATIONS, INITS, BIASES, AUTHORS_INIT_STD, ELEMENTWISE, check_int, checked_mask,
checked_fixed, activation_module, flatten_sequential, mlp_layers, bias_rows, bias_count, checked_init_std.
"""

from __future__ import annotations

import copy
import math
import numbers

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "AUTHORS_INIT_STD",
    "BIASES",
    "ELEMENTWISE",
    "INITS",
    "activation_module",
    "bias_count",
    "bias_rows",
    "check_int",
    "checked_init_std",
    "checked_fixed",
    "checked_mask",
    "flatten_sequential",
    "mlp_layers",
]

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "linear")
INITS = ("linear", "kaiming", "normal")
# Which rows of the iterated matrix carry a bias (see IterativeNetwork): "state" one per state row,
# "all" also the input rows as the authors' code (qbhershey/iterativenn, MaskedLinear), "none".
BIASES = ("state", "all", "none")
# init="normal": weights N(0, std^2); the authors' code draws N(0, 0.05^2) ("G=0.0,0.05").
AUTHORS_INIT_STD = 0.05
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


def bias_rows(bias) -> str:
    """The row-bias rule `bias` names: True -> "state", False -> "none", or one of BIASES."""
    if bias is True:
        return "state"
    if bias is False:
        return "none"
    if isinstance(bias, str) and bias in BIASES:
        return bias
    raise ValueError(
        f"bias must be True / False or one of {', '.join(map(repr, BIASES))} ('state' = True: a bias per state row; "
        f"'all': also count one per input row, as the authors' code; 'none' = False); got {bias!r}"
    )


def bias_count(inputs: int, depth: int, biases: str) -> int:
    """Bias entries a weight space of `depth` rows over `inputs` inputs holds under the rule `biases`.

    "none": 0; "state": depth (one per state row); "all": inputs + depth, one per row of the whole
    square iterated matrix, input rows included. The authors' `MaskedLinear.number_of_trainable_parameters`
    counts `count_nonzero(mask) + out_features`, with out_features = In + D: the "all" rule.
    """
    check_int("inputs", inputs, 1)
    check_int("depth", depth, 0)
    return {"none": 0, "state": int(depth), "all": int(inputs) + int(depth)}[bias_rows(biases)]


def checked_init_std(init: str, init_std) -> float | None:
    """init_std for `init`: "normal" takes a finite std > 0 (None: AUTHORS_INIT_STD); the others take none."""
    if init != "normal":
        if init_std is not None:
            raise ValueError(
                f"init_std sets the spread of init='normal' (N(0, init_std^2)); init={init!r} draws by fan-in. "
                "Drop init_std or set init='normal'"
            )
        return None
    if init_std is None:
        return AUTHORS_INIT_STD
    if isinstance(init_std, bool) or not isinstance(init_std, numbers.Real) or not math.isfinite(init_std) or init_std <= 0:
        raise ValueError(
            f"init_std is the standard deviation of init='normal' and must be a finite number > 0 "
            f"(the authors' {AUTHORS_INIT_STD}); got {init_std!r}"
        )
    return float(init_std)


def mlp_layers(mlp: nn.Sequential) -> tuple[list[nn.Linear], str | nn.Module, str | nn.Module | None]:
    """The Linear layers of an MLP that `IterativeNetwork.from_mlp` can represent, its hidden activation
    and its output activation (None: the hidden one); the errors say what cannot be represented."""
    if not isinstance(mlp, nn.Sequential):
        raise TypeError(f"from_mlp takes an nn.Sequential of nn.Linear and activation layers; got {type(mlp).__name__}")
    modules = flatten_sequential(mlp)
    linears: list[nn.Linear] = []
    gaps: list[nn.Module | None] = []  # the activation after each Linear (None: none)
    for position, m in enumerate(modules):
        if isinstance(m, nn.Linear):
            if linears and linears[-1].out_features != m.in_features:
                raise ValueError(
                    f"Linear layer {len(linears)} (module {position}) takes {m.in_features} features but the "
                    f"layer before gives {linears[-1].out_features}; an MLP needs matching sizes"
                )
            linears.append(m)
            gaps.append(None)
        elif isinstance(m, ELEMENTWISE):
            if not linears:
                raise ValueError(
                    f"module {position} ({m!r}) comes before the first nn.Linear; the input of an "
                    "iterative network is re-inserted as is, so the Sequential must start with nn.Linear"
                )
            if gaps[-1] is not None:
                raise ValueError(
                    f"module {position} ({m!r}) follows another activation ({gaps[-1]!r}); an iterative network "
                    "applies one elementwise activation per iteration, so use at most one between Linear layers"
                )
            gaps[-1] = m
        else:
            raise ValueError(
                f"from_mlp supports nn.Linear layers and elementwise activations "
                f"({', '.join(t.__name__ for t in ELEMENTWISE)}); module {position} is {m!r}. "
                "Remove dropout / normalisation layers (dropout is the identity in eval mode) or rewrite "
                "the model by hand"
            )
    if not linears:
        raise ValueError("from_mlp needs at least one nn.Linear layer; the Sequential has none")
    hidden = [repr(g) if g is not None else repr(nn.Identity()) for g in gaps[:-1]]
    if len(set(hidden)) > 1:
        raise ValueError(
            f"an iterative network has one hidden activation, but this MLP uses {sorted(set(hidden))} between its "
            "layers; use the same activation after every hidden layer"
        )
    hidden_act = copy.deepcopy(gaps[0]) if gaps[0] is not None else "linear"
    final_act = copy.deepcopy(gaps[-1]) if gaps[-1] is not None else "linear"
    if len(linears) == 1:  # every row is an output row
        hidden_act, final_act = final_act, None
    elif repr(final_act) == repr(hidden_act):
        final_act = None  # the same activation on every row
    return linears, hidden_act, final_act
