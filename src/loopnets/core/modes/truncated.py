"""Truncated: backprop through the last passes of the unroll only."""

from __future__ import annotations

from dataclasses import dataclass
import torch

from loopnets.core.modes.base import Backprop, LoopParts, run_passes


@dataclass(frozen=True)
class Truncated(Backprop):
    """Truncated backprop through the unroll: only the last `grad_passes` passes get a graph.

    Of the k passes, the first k - grad_passes run under torch.no_grad (their output is
    detached); the last grad_passes run with a graph from that detached state. The gradient is
    exact for the last grad_passes passes seen as a function of their (fixed) starting state and
    of x, and drops every path through the earlier passes; grad_passes >= k is exactly `Tied`.
    Truncated(1) is the one-step gradient of an explicit unroll (Fung et al. 2022 use it at a fixed
    point; Geiping et al. 2025 truncate a recurrent-depth unroll the same way). Memory grows with
    grad_passes, not with k; time is k passes forward, grad_passes backward.

    Args:
        grad_passes: passes with a graph, >= 1.
    """

    grad_passes: int = 1

    name = "truncated"

    def __post_init__(self) -> None:
        g = self.grad_passes
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ValueError(f"Truncated(grad_passes={g!r}): grad_passes must be an integer >= 1 (1 = one-step gradient)")

    def run(self, loop: LoopParts, x: torch.Tensor, passes: int | None, readout: list | None) -> torch.Tensor:
        return run_passes(loop, x, passes, readout, no_grad=max(passes - self.grad_passes, 0))
