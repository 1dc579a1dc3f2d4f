"""Tied: backprop through the unrolled graph, weights shared by every pass."""

from __future__ import annotations

from dataclasses import dataclass
import torch

from loopnets.core.modes.base import Backprop, LoopParts, run_passes, weighted_passes


@dataclass(frozen=True)
class Tied(Backprop):
    """One body applied k times; autograd sums every weight's gradient over the passes.

    This is backprop through the unrolled graph with tied weights: dW = sum_j dW_j (Caswell et
    al. 2016; Liao & Poggio 2016; thesis eq 5.3). Exact. Memory and time grow linearly with k
    (every pass's activations are kept for backward).
    """

    name = "tied"
    stacks_pass_counts = True  # with output "last": models read their own last pass

    def run(self, loop: LoopParts, x: torch.Tensor, passes: int | None, readout: list | None) -> torch.Tensor:
        return run_passes(loop, x, passes, readout)

    def weighted_run(self, loop: LoopParts, x: torch.Tensor, weights: list, readout: list | None) -> torch.Tensor:
        return weighted_passes(loop, x, weights, readout)
