"""The base models of Lavik (2024, Table 4.1) with their feedback variants.

Dense models are input -> h1 -> h2 -> h3 -> output. The feedback loop runs from the output of
h3 back into h2 ("3 to 2"): COMBINE and Tied loop the existing layers h2..h3; COUPLE replaces
them by a feedback block [h2, h3], as in the thesis's framework. The optional bypassing skip
(thesis Fig. 3.5) adds the loop's input to its output, i.e. the input of h2 into the input of the
output layer. The FFN gets the same skip over the same layers.
"""

from __future__ import annotations

from loopnets.backprop import Combine, Couple, Tied
from loopnets.layers import Dense
from loopnets.network import Network

VARIANTS = ("ffn", "combine", "couple", "tied")


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

    Args:
        variant: "ffn" (no loop), "combine", "couple" or "tied".
        unroll: passes through the loop ("x2" in the thesis is unroll=2).
        skip: add the bypassing skip over the loop.
        bias: the thesis's runs use no biases.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    h1, h2, h3 = hidden
    if h3 != h1:
        raise ValueError(f"the loop h3 -> h2 needs h3 == h1 (the input size of h2); got hidden={hidden}")
    net = Network(input_shape=(inputs,))
    net.dense(h1, activation=activation, bias=bias)
    if variant == "couple":
        block = net.feedback(
            [Dense(h2, activation=activation, bias=bias), Dense(h3, activation=activation, bias=bias)],
            unroll=unroll,
            backprop=Couple(),
        )
        out = net.dense(outputs, activation=output_activation, bias=bias)
        if skip:
            net.connect(block, out)
        return net
    first = net.dense(h2, activation=activation, bias=bias)
    last = net.dense(h3, activation=activation, bias=bias)
    out = net.dense(outputs, activation=output_activation, bias=bias)
    if variant != "ffn":
        net.loopback(outof=last, into=first, unroll=unroll, backprop=Combine() if variant == "combine" else Tied())
    if skip:
        net.connect(first, out)
    return net
