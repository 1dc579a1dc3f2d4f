"""The base models of Lavik (2024, Table 4.1) with their feedback variants.

A base model is a list of hidden layers, a loop over layers `into..outof` of that list, and an
output layer. A variant decides how the loop is unwrapped and trained:

- "ffn": no loop (the base model);
- "combine" / "tied": `Network.loopback` over the existing layers (COMBINE or tied weights);
- "couple": the looped layers become a `Network.feedback` block of copies, as in `neurons`.

The bypassing skip (thesis Fig. 3.5) adds the loop's input to its output, i.e. the input of layer
`into` to the input of the layer after `outof`; the FFN gets the same skip over the same layers.
Dense thesis models loop "3 to 2" (loop=(1, 2)); the FTIR conv model loops "2 to 1" (loop=(0, 1)).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from loopnets.builder import layers
from loopnets.core.modes import MODES, Backprop
from loopnets.core.loop import Loop
from loopnets.builder.network import Network

METHODS = ("ffn", "combine", "couple", "tied", "truncated", "implicit", "onestep")  # "ffn" + backprop.MODES


def loop_network(
    input_shape: Sequence[int],
    hidden: Sequence[layers.Spec],
    loop: tuple[int, int],
    outputs: int,
    *,
    method: str = "ffn",
    unroll: int = 2,
    skip: bool = False,
    output_activation: str = "softmax",
    output_bias: bool = False,
    backprop: Backprop | None = None,
    merge: str = "replace",
    output: str | None = None,
) -> Network:
    """A base model with its loop unwrapped by `method`.

    Args:
        input_shape: per-sample input shape.
        hidden: hidden layer specs (`layers.Dense(...)`, `layers.Conv(...)`, ...).
        loop: (into, outof), 0-based indices into `hidden`: outof's output feeds into's input.
        outputs: units of the dense output layer.
        method: "ffn", or a backprop mode's name: "combine", "couple", "tied", "truncated",
            "implicit" or "onestep". COUPLE builds a feedback block (its copies), the others a loopback.
        unroll: passes through the loop ("x3" is unroll=3).
        skip: add the bypassing skip over the loop.
        backprop: a configured mode (e.g. `Combine(accumulate="weighted")`); default: the
            method's mode with default settings. Must match `method`.
        merge, output: as for `ln.Loop`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    into, outof = loop
    if not 0 <= into <= outof < len(hidden):
        raise ValueError(f"loop {loop} must satisfy 0 <= into <= outof < {len(hidden)} (the hidden layers)")
    expected = MODES.get(method)
    if backprop is not None and (expected is None or getattr(backprop, "name", None) != method):
        raise ValueError(f"method {method!r} cannot use backprop={backprop!r}")
    mode = backprop if backprop is not None else expected() if expected else None

    net = Network(input_shape=tuple(input_shape))
    for spec in hidden[:into]:
        net.add(spec)
    if method == "couple":
        first = last = net.feedback(list(hidden[into : outof + 1]), unroll=unroll, backprop=mode, merge=merge, output=output)
    else:
        first = len(net.layer_shapes())
        for spec in hidden[into : outof + 1]:
            last = net.add(spec)
    for spec in hidden[outof + 1 :]:
        net.add(spec)
    net.dense(outputs, activation=output_activation, bias=output_bias)
    if method not in ("ffn", "couple"):
        net.loopback(outof=last, into=first, unroll=unroll, backprop=mode, merge=merge, output=output)
    if skip:
        net.connect(first, last + 1)
    return net


def thesis_mlp(
    inputs: int,
    hidden: tuple[int, int, int],
    outputs: int,
    *,
    variant: str = "ffn",
    unroll: int = 2,
    skip: bool = False,
    activation: str = "relu",
    output_activation: str = "softmax",
    bias: bool = False,
) -> Network:
    """A Table 4.1 dense model, e.g. iris: thesis_mlp(4, (25, 25, 25), 3, variant="couple").

    The loop runs from h3 back into h2 ("3 to 2"); the thesis's runs use no biases.
    """
    h1, h2, h3 = hidden
    if h3 != h1:
        raise ValueError(f"the loop h3 -> h2 needs h3 == h1 (the input size of h2); got hidden={hidden}")
    specs = [layers.Dense(h, activation=activation, bias=bias) for h in hidden]
    return loop_network((inputs,), specs, (1, 2), outputs, method=variant, unroll=unroll, skip=skip,
                        output_activation=output_activation, output_bias=bias)


@torch.no_grad()
def init_uniform_(model: nn.Module, low: float = -1.0, high: float = 1.0, generator: torch.Generator | None = None) -> None:
    """Re-initialise every weight and bias uniformly in [low, high], as `neurons` does.

    COUPLE copies get their body's values, so they start tied.
    """
    for p in model.parameters():
        p.uniform_(low, high, generator=generator)
    for m in model.modules():
        if isinstance(m, Loop):
            for c in m.copies[1:]:
                c.load_state_dict(m.body.state_dict())
