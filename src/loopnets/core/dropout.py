"""Dropout whose mask is shared by every pass of one loop forward call.

A loop applies the same layers several times to one input. With `nn.Dropout` each pass would
draw a fresh mask, so the "same" layer would drop different units in every pass; the thesis's
framework (and Caswell et al.'s unrolled nets) drop the same units throughout one forward call.
`loopnets.Dropout` does that: while a `Loop` runs, the first pass draws the mask and every later
pass (and every COUPLE copy of the layer) reuses it; outside a loop it is ordinary dropout.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn


class _MaskStore:
    """The mask one dropout site uses; COUPLE copies of a layer point at one store."""

    __slots__ = ("mask", "pinned")

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self.pinned = False


class Dropout(nn.Module):
    """Inverted dropout (scale 1/(1-p) in training) with a mask shared across loop passes.

    Args:
        p: probability of zeroing an element, 0 <= p < 1.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1); got {p!r}")
        self.p = float(p)
        self._store = _MaskStore()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        store = self._store
        mask = store.mask if store.pinned else None
        if mask is None or mask.shape != x.shape or mask.device != x.device:
            keep = torch.empty_like(x).bernoulli_(1.0 - self.p)
            mask = keep / (1.0 - self.p)
            if store.pinned:
                store.mask = mask
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, mask shared across loop passes"


def share_masks(source: nn.Module, target: nn.Module) -> None:
    """Make every `Dropout` in `target` use the mask of its counterpart in `source` (same structure)."""
    pairs = zip(_dropouts([source]), _dropouts([target]))
    for a, b in pairs:
        b._store = a._store


def _dropouts(modules: Iterable[nn.Module | None]) -> Iterator[Dropout]:
    for module in modules:
        if module is not None:
            yield from (m for m in module.modules() if isinstance(m, Dropout))


@contextmanager
def pinned_masks(modules: Iterable[nn.Module | None]) -> Iterator[None]:
    """Within the block, each Dropout in `modules` draws one mask and keeps it.

    Stores already pinned by an enclosing loop stay as they are, so a nested loop reuses
    the outer loop's masks instead of drawing new ones.
    """
    stores = {id(d._store): d._store for d in _dropouts(modules) if not d._store.pinned}
    for store in stores.values():
        store.pinned, store.mask = True, None
    try:
        yield
    finally:
        for store in stores.values():
            store.pinned, store.mask = False, None
