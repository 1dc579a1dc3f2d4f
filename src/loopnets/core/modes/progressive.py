"""Progressive: DeepThinking's progressive loss, random graph-free passes then a few with a graph."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loopnets.core.dropout import pinned_masks
from loopnets.core.modes.base import Backprop, LoopParts, run_passes


@dataclass(frozen=True)
class Progressive(Backprop):
    """The progressive loss of Bansal et al. 2022 ("End-to-end algorithm synthesis with recurrent
    networks: logical extrapolation without overthinking", NeurIPS, sec 3.2, eq. 2; code:
    github aks2203/deep-thinking, `get_output_for_prog_loss`).

    With m = the loop's pass count in a training step (its unroll, or fit's random_passes draw):
    draw n ~ U{0, ..., m - 1} and k ~ U{1, ..., m - n}; run n passes without a graph, then k
    passes with a graph from that detached state (the input x still enters every pass through the
    loop's merge). The progressive output is the loop's output after n + k passes. The training
    loss of a step is

        (1 - alpha) * L(output after m passes, full graph) + alpha * L(progressive output),

    exactly as deep-thinking's train_progressive (its loss_max_iters and loss_progressive). The
    random n teaches the body to improve any state it is handed, not the states of one depth, which
    is what lets the network run for many more passes at test time without "overthinking".

    Where the two terms are computed: `run` gives one output, the progressive one (alpha = 1 needs
    nothing else, so `loop(x)` in train() mode and a plain `ln.fit` train it). For 0 < alpha < 1 the
    step needs two outputs and two losses; the mode offers them through `training_outputs`, and
    `ln.fit` (its pass plan, `loopnets.core.passes`) weighs their losses, logging the max-passes
    loss as train_loss. alpha = 0 is plain full-graph training (`Tied`). In eval() mode the loop
    runs its passes plainly, as Tied.

    The draws use torch's global generator (`ln.fit` seeds it), so runs are reproducible.
    Cost: the progressive term holds the graph of k <= m passes and runs n + k; alpha < 1 adds a
    full-graph m-pass forward (memory and time as Tied).

    Args:
        alpha: weight of the progressive term, 0 <= alpha <= 1 (deep-thinking's default configs
            use 0.01 to 1; the issue's trial used 1).
    """

    alpha: float = 1.0

    name = "progressive"
    outputs = ("last",)
    pass_readout = False
    batched = False
    mixes_outputs = True
    unsupported = {
        "pass_readout": "its training loss is already a mix of outputs at random depths (alpha sets it); "
                        "use ln.Tied() for deep supervision",
        "batched": "each step draws its own pass counts n and k, which stacked models would have to share; "
                   "train the seeds one by one",
    }

    def __post_init__(self) -> None:
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= float(a) <= 1.0:
            raise ValueError(f"Progressive(alpha={a!r}): alpha must be a number in [0, 1] "
                             "(the weight of the progressive term; 1: progressive loss only, 0: plain training)")

    @staticmethod
    def draw(m: int) -> tuple[int, int]:
        """(n, k): n ~ U{0..m-1} passes without a graph, k ~ U{1..m-n} with one (global torch RNG)."""
        n = int(torch.randint(0, m, ()))
        k = int(torch.randint(1, m - n + 1, ()))
        return n, k

    def run(self, loop: LoopParts, x: torch.Tensor, passes: int | None, readout: list | None) -> torch.Tensor:
        if not getattr(loop, "training", False) or self.alpha == 0:
            return run_passes(loop, x, passes, readout)  # inference, or alpha = 0: the plain unroll
        n, k = self.draw(passes)
        return run_passes(loop, x, n + k, readout, no_grad=n)

    def training_outputs(self, loop: LoopParts, x: torch.Tensor, passes: int) -> tuple[list[torch.Tensor], list[float]]:
        """(loop outputs, weights) whose weighted losses make one training step's loss: the
        progressive output (weight alpha) and the output after `passes` passes with the full graph
        (weight 1 - alpha), last; terms of weight 0 are left out. Dropout masks are pinned within
        each forward and drawn anew for the other, as deep-thinking's two forward calls do."""
        outputs, weights = [], []
        if self.alpha > 0:
            with pinned_masks([loop]):
                n, k = self.draw(passes)
                outputs.append(run_passes(loop, x, n + k, None, no_grad=n))
            weights.append(float(self.alpha))
        if self.alpha < 1:
            with pinned_masks([loop]):
                outputs.append(run_passes(loop, x, passes, None))
            weights.append(1.0 - float(self.alpha))
        return outputs, weights
