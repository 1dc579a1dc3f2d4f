"""The loop protocol: what a model with feedback offers to probes, per-pass readouts and early exit.

Three classes implement it: `loopnets.Loop` (per-pass modules are `loopnets.PerPass` inside it;
`loopnets.loopy.PassLoop` is a Loop), `loopnets.gated.GatedNetwork` and `loopnets.inn.IterativeNetwork`.
`ln.severed`, `ln.unrolled`, `ln.pass_outputs` and `ln.early_exit` use only these members, so they
work on all three and on any new loop class that implements them:

- `probe_unroll` (read and set): the pass count at inference. None: the model's own count; an
  int k: every forward call without an explicit count runs k passes (`ln.unrolled(model, k)`).
  Severing the feedback is probe_unroll = 1: pass 1 of every loop receives the input alone, so
  one pass is the model without feedback (thesis sec 4.4's "feedback off"; a gated network's
  plain feedforward pass; an iterative network's first iteration; `ln.severed(model, loops=True)`).
- `planned_passes` (read): the passes a call without an explicit count runs, probe_unroll if set,
  else the model's own (Loop `unroll`, GatedNetwork `timesteps`, IterativeNetwork
  `iterations`).
- `passes(x, k=None) -> list[Tensor]`: one tensor per pass, the output of pass 1..k (k =
  planned_passes when None), with the autograd graph the model trains with. k is the second
  positional argument; each class keeps its own name for it (Loop `unroll`,
  GatedNetwork `timesteps`, IterativeNetwork `iterations`), as does its forward, `model(x, k)`. "Output of a pass" is
  what the pass computes: a Loop's pass output h_t (the value fed back), a gated
  network's output in timestep t, an iterative network's output rows y^t.
- `iterate(x) -> Iterator[Tensor]`: the same pass outputs lazily, one per `next`, for inference:
  a caller that stops consuming stops the computation (`ln.early_exit`). It yields without end
  where the model can run any number of passes (an iterative network's sequence input: L, one per
  step), so bound it with `itertools.islice`.
- `output_after(outputs) -> Tensor`: the loop's output after len(outputs) passes, computed from
  the pass outputs as its forward computes it (the last one; a Loop with output "mean" / "sum" or
  COMBINE: their mean / sum / combination). So `output_after(passes(x, k)) == model(x)` at k
  passes in eval() mode.

Models that hold one loop among other layers (`ln.Network`, `loopnets.loopy.LoopyCNN`) implement
`LoopHost.around_loop` so that per-pass outputs reach the whole model's output; an
`nn.Sequential` with one loop among its top-level modules needs nothing.

Why a `typing.Protocol` (runtime-checkable) and not an ABC: the three classes live in different
layers and subclass `nn.Module` already; a Protocol needs no shared base class, so a loop class
written elsewhere (a test's toy loop, another package) joins by having the members, without
importing loopnets. `isinstance(m, FeedbackLoop)` checks that every member is present, in one
place (`loops_in`), instead of probing one attribute per call site; what the members compute is
checked by tests/test_loop_protocol.py for all three classes (and Loop with PerPass).
"""

from __future__ import annotations

from contextlib import closing
from itertools import islice
from typing import Callable, Generator, Iterator, Protocol, Sequence, TypeVar, runtime_checkable

from torch import Tensor, nn

__all__ = ["FeedbackLoop", "LoopHost", "SkipHolder", "first", "loops_in", "planned"]

T = TypeVar("T")


@runtime_checkable
class FeedbackLoop(Protocol):
    """A module that runs a body for a number of passes, feeding each pass's output back (see module doc)."""

    probe_unroll: int | None

    @property
    def planned_passes(self) -> int:
        """Passes a call without an explicit count runs: probe_unroll if set, else the model's own."""
        ...

    def passes(self, x: Tensor, unroll: int | None = None) -> list[Tensor]:
        """The output of every pass 1..k, k = unroll or planned_passes."""
        ...

    def iterate(self, x: Tensor) -> Iterator[Tensor]:
        """The pass outputs one at a time, for inference (stop consuming to stop computing)."""
        ...

    def output_after(self, outputs: Sequence[Tensor]) -> Tensor:
        """The loop's output after len(outputs) passes, from those passes' outputs."""
        ...


@runtime_checkable
class LoopHost(Protocol):
    """A model holding exactly one FeedbackLoop among other layers."""

    def around_loop(self, x: Tensor, logits: bool = False) -> tuple[FeedbackLoop, Tensor, Callable[[Tensor], Tensor]]:
        """(loop, the loop's input, after): after(y) runs the layers after the loop on loop outputs y
        stacked along the batch dimension, (n * B, *) -> (n * B, *out), pass-major; after(loop(x))
        is the model's output (its logits with logits=True). Raises ValueError when the model has
        no loop or several."""
        ...


@runtime_checkable
class SkipHolder(Protocol):
    """A module whose skip connections can be switched off (`ln.severed(model, skips=True)`): `ln.Network`."""

    skips_enabled: bool


def loops_in(model: nn.Module) -> list[FeedbackLoop]:
    """Every module of `model` (itself included) that implements the loop protocol, in module order."""
    return [m for m in model.modules() if isinstance(m, FeedbackLoop)]


def planned(loop: FeedbackLoop, unroll: int | None) -> int:
    """The pass count a call with `unroll` runs: unroll when given, else the loop's planned_passes."""
    return loop.planned_passes if unroll is None else unroll


def first(passes: Generator[T, None, None], k: int) -> list[T]:
    """The first k items of a pass generator, closing it right after (so that a `with` block
    inside it, e.g. pinned dropout masks, ends now and not when the generator is collected)."""
    with closing(passes):
        return list(islice(passes, k))
