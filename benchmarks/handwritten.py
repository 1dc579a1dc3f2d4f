"""The plain-PyTorch code a user would write instead of loopnets: the benchmarks' reference.

Models are nn.Sequential stacks; a loop is a Python for-loop over the unrolls (Tied: the same
body every pass; COUPLE: k deep copies, averaged after every optimizer step; COMBINE: the passes
under no_grad with running means, then one straight-through pass, as DESIGN.md sketches). The
training loop is the textbook one: torch.optim.Adam with PyTorch's defaults, a randperm per
epoch, index-sliced minibatches, `loss.item()` per step for the running loss.

`train_epochs(..., tuned=True)` is the same loop written for speed (fused Adam, no per-step
`.item()`, one gather per epoch), to show how much of loopnets' lead is its training loop.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Looped(nn.Module):
    """pre -> loop over `body` (k passes, backprop `mode`) -> head, written out by hand.

    Args:
        pre: layers before the loop (nn.Identity() for none).
        body: the looped layers, an nn.Sequential of (affine, nn.ReLU) pairs for "combine".
        head: layers after the loop; returns logits.
        mode: "ffn" (one pass), "tied", "couple" or "combine".
        unroll: passes k.
    """

    def __init__(self, pre: nn.Module, body: nn.Sequential, head: nn.Module, mode: str, unroll: int):
        super().__init__()
        self.pre, self.head, self.mode, self.unroll = pre, head, mode, unroll
        if mode == "couple":  # k untied copies, averaged after every step (tie)
            self.copies = nn.ModuleList(copy.deepcopy(body) for _ in range(unroll))
        else:
            self.body = body

    def forward(self, x: Tensor) -> Tensor:
        h = self.pre(x)
        if self.mode == "ffn":
            h = self.body(h)
        elif self.mode == "tied":
            for _ in range(self.unroll):
                h = self.body(h)
        elif self.mode == "couple":
            for c in self.copies:
                h = c(h)
        else:
            h = combine(self.body, h, self.unroll)
        return self.head(h)

    @torch.no_grad()
    def tie(self) -> None:
        """COUPLE: set every copy to the mean of the copies."""
        if self.mode == "couple":
            for ps in zip(*(c.parameters() for c in self.copies)):
                mean = torch.stack(ps).mean(0)
                for p in ps:
                    p.copy_(mean)


def combine(body: nn.Sequential, x: Tensor, k: int) -> Tensor:
    """COMBINE by hand for a body of (affine, ReLU or Tanh) pairs: the mean of every layer's values
    over k passes, then backward through the layers at the means (straight-through)."""
    pairs = list(zip(body[0::2], body[1::2]))
    with torch.no_grad():
        acc_in = x.detach() / k
        acc_pre = [None] * len(pairs)
        acc_out = [None] * len(pairs)
        v = x.detach()
        for t in range(k):
            if t:
                acc_in += v / k
            for i, (layer, act) in enumerate(pairs):
                z = layer(v)
                v = act(z)
                acc_pre[i] = z / k if t == 0 else acc_pre[i] + z / k
                acc_out[i] = v / k if t == 0 else acc_out[i] + v / k
    g = acc_in + (x - x.detach())
    for (layer, act), pre, out in zip(pairs, acc_pre, acc_out):
        z = layer(g)
        slope = 1 - torch.tanh(pre) ** 2 if isinstance(act, nn.Tanh) else (pre > 0).to(z.dtype)
        g = out + slope * (z - z.detach())
    return g


def train_epochs(
    model: Looped,
    X: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    adam: dict,
    tuned: bool = False,
    sync: Callable[[], None] = lambda: None,
) -> list[float]:
    """Train like a user would; return the seconds of every epoch (the loss read at its end)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), **adam, **({"fused": True} if tuned else {}))
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(X)).to(X.device)
        total = torch.zeros((), device=X.device) if tuned else 0.0
        if tuned:
            batches = zip(X[perm].split(batch_size), y[perm].split(batch_size))
        else:
            batches = ((X[perm[i : i + batch_size]], y[perm[i : i + batch_size]]) for i in range(0, len(X), batch_size))
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.tie()  # COUPLE's average of the copies; nothing otherwise
            if tuned:
                total += loss.detach() * len(xb)
            else:
                total += loss.item() * len(xb)
        float(total) / len(X)  # the epoch's loss, read once (tuned) or summed from per-step reads
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds
