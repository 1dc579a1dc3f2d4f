"""Probing a trained model by severing pathways (thesis sec 4.4) or changing the number of passes.

- `severed(model, skips=True)`: "skip off", every skip connection of every `ln.Network` in the
  model contributes nothing (the thesis clears the `connect` attribute).
- `severed(model, loops=True)`: "feedback off", every loop runs one pass, which turns the model
  into its shallow, compact version (for COUPLE: the first copy only; for a gated network
  (`loopnets.models.gated.network`): one timestep, no feedback).
- `unrolled(model, k)`: every loop runs k passes (evaluation at another depth).

"Every loop" is every submodule that implements the loop protocol (`loopnets.core.protocol`):
`Loop` (`loopy.PassLoop` is one), `gated.GatedNetwork` and `inn.IterativeNetwork`; "one pass" is the model
without feedback for each of them (an iterative network: one iteration of static input).

All three are context managers and restore the model on exit, also after an error.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

from torch import nn

from loopnets.core.loop import check_unroll
from loopnets.core.protocol import SkipHolder, loops_in


@contextmanager
def unrolled(model: nn.Module, k: int) -> Iterator[nn.Module]:
    """Within the block, every loop in `model` runs `k` passes."""
    check_unroll(k)
    with _set_all(loops_in(model), "probe_unroll", k):
        yield model


@contextmanager
def _skips_off(model: nn.Module) -> Iterator[nn.Module]:
    with _set_all([m for m in model.modules() if isinstance(m, SkipHolder)], "skips_enabled", False):
        yield model


@contextmanager
def _set_all(objects: list, name: str, value: object) -> Iterator[None]:
    """Within the block, attribute `name` of every object is `value`; each gets its own value back after."""
    before = [getattr(o, name) for o in objects]
    for o in objects:
        setattr(o, name, value)
    try:
        yield
    finally:
        for o, old in zip(objects, before):
            setattr(o, name, old)


@contextmanager
def severed(model: nn.Module, skips: bool = False, loops: bool = False) -> Iterator[nn.Module]:
    """Within the block, the model runs with its skips and / or loops severed (thesis probes)."""
    if not (skips or loops):
        raise ValueError("severed(model, ...) needs skips=True and/or loops=True")
    with ExitStack() as stack:
        if skips:
            stack.enter_context(_skips_off(model))
        if loops:
            stack.enter_context(unrolled(model, 1))
        yield model
