"""COUPLE: k untied copies of the body trained as a deep net and re-tied after every step."""

from __future__ import annotations

import copy
from dataclasses import dataclass
import torch
from torch import nn

from loopnets.core.dropout import share_masks
from loopnets.core.modes.base import Backprop, LoopParts, accumulation_weights, run_passes, weighted_passes
from loopnets.core.modes.tied import Tied


@dataclass(frozen=True)
class Couple(Backprop):
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

    name = "couple"
    label = "COUPLE"
    untied_copies = True
    stacks_pass_counts = True  # with output "last": models read their own last pass

    def __post_init__(self) -> None:
        if self.accumulate not in ("mean", "weighted"):
            raise ValueError(
                f"Couple(accumulate={self.accumulate!r}) is not supported; choose 'mean' or 'weighted' "
                "(a sum of k copies would scale the weights by k)"
            )

    def attach(self, loop: LoopParts) -> None:
        # Deliberate copies: COUPLE trains k untied copies and re-ties them after every step.
        loop.couple_copies = nn.ModuleList(copy.deepcopy(loop.body) for _ in range(loop.unroll - 1))
        for c in loop.couple_copies:
            share_masks(loop.body, c)

    def copies(self, loop: LoopParts) -> list[nn.Module]:
        return [loop.body, *loop.couple_copies]

    def run(self, loop: LoopParts, x: torch.Tensor, passes: int | None, readout: list | None) -> torch.Tensor:
        return run_passes(loop, x, passes, readout)

    def weighted_run(self, loop: LoopParts, x: torch.Tensor, weights: list, readout: list | None) -> torch.Tensor:
        return weighted_passes(loop, x, weights, readout)

    def tie_weights(self, k: int) -> list[float]:
        """Each of k copies' weight in the re-tied body."""
        return accumulation_weights(self.accumulate, k)

    @torch.no_grad()
    def retie_(self, loop: LoopParts) -> None:
        """Set every copy to the accumulation of all copies (thesis eq 3.2)."""
        groups = loop.cached_tie_groups  # set inside `loopnets.core.loop.cached_ties`
        if groups is None:
            groups = tie_groups(loop.copies)
        weights = self.tie_weights(len(loop.couple_copies) + 1)
        for tensors in groups:  # tensors[i]: copy i's floating tensors of one dtype and device
            # tied = w_0 t_0 + w_1 t_1 + ..., rounded as a tensor-by-tensor sum(w * t for ...)
            # would be, in 3k - 1 multi-tensor calls instead of about 3k calls per tensor.
            tied = torch._foreach_mul(tensors[0], weights[0])
            for w, ts in zip(weights[1:], tensors[1:]):
                torch._foreach_add_(tied, torch._foreach_mul(ts, w))
            for ts in tensors:
                torch._foreach_copy_(ts, tied)

    def compact_mode(self, loop: LoopParts) -> Backprop:
        """`Tied`, once the copies are tied (they are after every `ln.fit` step or `ln.tie_`)."""
        body_state = state_tensors(loop.body)
        for i, c in enumerate(loop.couple_copies, start=1):
            if any(not torch.equal(a, b) for a, b in zip(body_state, state_tensors(c))):
                raise ValueError(
                    f"COUPLE copy {i} differs from copy 0, so no single body is equivalent; "
                    "call ln.tie_(model) after optimizer.step() (ln.fit does this)"
                )
        return Tied()


def tie_groups(copies: list[nn.Module]) -> list[list[list[torch.Tensor]]]:
    """The copies' floating parameters and buffers as groups[g][copy][j], one (device, dtype) per group."""
    groups: dict[tuple, list[list[torch.Tensor]]] = {}
    for tensors in zip(*(state_tensors(c) for c in copies)):
        if tensors[0].is_floating_point():
            group = groups.setdefault((tensors[0].device, tensors[0].dtype), [[] for _ in tensors])
            for column, t in zip(group, tensors):
                column.append(t)
    return list(groups.values())


def state_tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]
