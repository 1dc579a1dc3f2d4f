"""Feedback networks of Lavik 2024: the thesis architectures."""

from loopnets.models.lavik.architectures import (
    loop_network,
    thesis_mlp,
    init_uniform_,
    METHODS,
)

__all__ = [
    "loop_network",
    "thesis_mlp",
    "init_uniform_",
    "METHODS",
]
