"""Loopy CNNs (Caswell et al. 2016): the model family `ln.loopy`."""

from loopnets.models.loopy.network import (
    FAMILIES,
    INITS,
    LoopyCNN,
    PassLoop,
    vanilla,
    loopy,
    deep,
    deep_from_loopy,
    loop_layer,
    plus_layer,
    times_layer,
    mnist_loopy,
    parameter_counts,
    ParameterCounts,
)

__all__ = [
    "FAMILIES",
    "INITS",
    "LoopyCNN",
    "PassLoop",
    "vanilla",
    "loopy",
    "deep",
    "deep_from_loopy",
    "loop_layer",
    "plus_layer",
    "times_layer",
    "mnist_loopy",
    "parameter_counts",
    "ParameterCounts",
]
