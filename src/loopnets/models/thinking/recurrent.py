"""Recurrent conv nets that think longer (DeepThinking), their feedforward baseline of the same depth.

Schwarzschild et al. 2021 ("Can you learn an algorithm? Generalizing from easy to hard problems
with recurrent networks") and Bansal et al. 2022 ("End-to-end algorithm synthesis with recurrent
networks", code: github aks2203/deep-thinking) use one shape of network for prefix sums (1-D) and
mazes (2-D):

    projection: conv(in -> width) + ReLU                         (B, in, *S) -> (B, width, *S)
    looped block: `blocks` residual blocks, run for any number of passes, weights shared
    head: conv(width -> 32) + ReLU, conv(32 -> 8) + ReLU, conv(8 -> classes)    -> (B, classes, *S)

All convolutions keep the spatial size (kernel 3, padding 1, no bias as in deep-thinking), so a
network trained on 32-bit strings runs unchanged on 512-bit ones. The head reads the state after
any number of passes: `ln.unrolled(model, k)` runs k passes, `ln.pass_outputs(model, x, k)` gives
the output after every pass, `ln.early_exit` stops per sample.

Recall (re-injecting the input in every pass), built on `ln.Loop` whose input is the projected
input p: "concat" is DeepThinking's, project(cat(h, p)) with a conv from 2 x width to width
channels (deep-thinking concatenates the raw input instead, in + width channels; here the loop
re-injects its own input, the projection of the raw one, which carries the same information);
"add" is h + p; None feeds the state alone (pass 1 sees p, later passes only h).

The models are `nn.Sequential(projection, loop, head)`, so every loopnets tool that takes "an
nn.Sequential with one loop" (fit's pass plans, pass_outputs, early_exit, unrolled) works on them.
"""

from __future__ import annotations

from torch import Tensor, nn

from loopnets.core.loop import Loop
from loopnets.core.modes import Backprop

RECALLS = ("concat", "add", None)
MERGE_OF = {"concat": "concat", "add": "add", None: "replace"}


def conv(dim: int, c_in: int, c_out: int) -> nn.Module:
    """A size-keeping 3 / 3x3 convolution without bias (deep-thinking's conv3x3)."""
    layer = {1: nn.Conv1d, 2: nn.Conv2d}[dim]
    return layer(c_in, c_out, kernel_size=3, padding=1, bias=False)


class ResidualBlock(nn.Module):
    """relu(conv(relu(conv(h))) + h): He et al.'s basic block without batch norm, as deep-thinking's
    BasicBlock. (B, width, *S) -> (B, width, *S)."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.conv1, self.conv2 = conv(dim, width, width), conv(dim, width, width)
        self.act = nn.ReLU()

    def forward(self, h: Tensor) -> Tensor:
        return self.act(self.conv2(self.act(self.conv1(h))) + h)


def check_dim(dim: object) -> int:
    if dim not in (1, 2) or isinstance(dim, bool):
        raise ValueError(f"dim must be 1 (strings: (B, C, L)) or 2 (grids: (B, C, H, W)); got {dim!r}")
    return int(dim)


def check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return value


def projection(dim: int, in_channels: int, width: int) -> nn.Module:
    return nn.Sequential(conv(dim, in_channels, width), nn.ReLU())


def head(dim: int, width: int, classes: int) -> nn.Module:
    """deep-thinking's output head: width -> 32 -> 8 -> classes channels, one class score per position."""
    return nn.Sequential(conv(dim, width, 32), nn.ReLU(), conv(dim, 32, 8), nn.ReLU(), conv(dim, 8, classes))


def recurrent_conv(dim: int, in_channels: int, classes: int = 2, width: int = 32, blocks: int = 2,
                   recall: str | None = "concat", unroll: int = 30, backprop: Backprop | None = None) -> nn.Sequential:
    """A DeepThinking recurrent conv net: projection, `blocks` residual blocks looped `unroll` times, head.

    Args:
        dim: 1 for strings (B, in_channels, L) (prefix sums: in_channels 1), 2 for grids
            (B, in_channels, H, W) (mazes: 3).
        classes: output channels per position (2 for both tasks; targets (B, L) / (B, H, W)).
        width: channels of the state. deep-thinking uses 400 (prefix sums) and 128 (mazes).
        blocks: residual blocks in the looped body (deep-thinking: 2 for prefix sums; the maze
            network's 4 conv layers per pass are 2 blocks too).
        recall: "concat" (DeepThinking), "add" or None (see the module docstring).
        unroll: passes in training (deep-thinking's max_iters: 30 for prefix sums) and by default
            at inference; run more with `ln.unrolled(model, k)`.
        backprop: the loop's mode: `ln.Progressive(alpha)` for DeepThinking's progressive loss,
            default `ln.Tied()` (plain full-graph training).

    Returns:
        nn.Sequential(projection, Loop, head): (B, in, *S) -> (B, classes, *S) class scores (logits).
    """
    dim = check_dim(dim)
    for name, value in (("in_channels", in_channels), ("classes", classes), ("width", width), ("blocks", blocks)):
        check_positive(name, value)
    if recall not in RECALLS:
        raise ValueError(f"recall must be 'concat' (DeepThinking), 'add' or None (no recall); got {recall!r}")
    body = nn.Sequential(*(ResidualBlock(dim, width) for _ in range(blocks)))
    loop = Loop(body, unroll=unroll, backprop=backprop, merge=MERGE_OF[recall],
                project=conv(dim, 2 * width, width) if recall == "concat" else None)
    return nn.Sequential(projection(dim, in_channels, width), loop, head(dim, width, classes))


def feedforward_conv(dim: int, in_channels: int, classes: int = 2, width: int = 32, blocks: int = 2,
                     depth: int = 30) -> nn.Sequential:
    """The feedforward baseline of the same depth: `recurrent_conv` unrolled `depth` times with
    untied weights (depth x blocks residual blocks, each with its own weights) and no recall.
    Its depth is fixed: it cannot run more passes at test time (Schwarzschild et al. 2021's
    feedforward nets)."""
    dim = check_dim(dim)
    for name, value in (("in_channels", in_channels), ("classes", classes), ("width", width), ("blocks", blocks),
                        ("depth", depth)):
        check_positive(name, value)
    stages = [ResidualBlock(dim, width) for _ in range(depth * blocks)]
    return nn.Sequential(projection(dim, in_channels, width), nn.Sequential(*stages), head(dim, width, classes))
