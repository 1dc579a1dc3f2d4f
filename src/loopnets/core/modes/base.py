"""`Backprop`, the base class of the loop's backprop modes: the algorithm it runs and what it supports.

A mode is a small frozen object chosen once, `Loop(body, unroll=3, backprop=Couple())`. The loop
(`loopnets.core.loop.Loop`) owns the modules; the mode owns the algorithm that runs them: `Loop`
calls `mode.run(loop, x, passes, readout)` for its forward and never asks which mode it holds.
Callers that need to know whether a feature works with a mode (random pass counts, per-pass
losses, stacked training, ...) read the mode's capability attributes, or call `require`, which
raises an error naming the mode, the feature and the fix.

A new mode is one new file: subclass `Backprop` (usually as a frozen dataclass holding its
settings), set `name`, override `run`, and set the capabilities it does not support to False,
with the reason in `unsupported`. tests/test_mode_plugin.py defines one inside the test.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import ClassVar, Protocol

import torch
from torch import nn

OUTPUTS = ("last", "mean", "sum")
ACCUMULATIONS = ("mean", "sum", "weighted")
CAPABILITIES = ("pass_readout", "random_passes", "batched", "parameterised_feedback", "stacks_pass_counts",
                "per_pass_modules")


def accumulation_weights(accumulate: str, k: int) -> list[float]:
    """Weights of the k passes (or copies) for an accumulation rule.

    - "mean": 1/k each (thesis eqs 3.1 and 3.2, read as a true mean over the k passes).
    - "sum": 1 each (eq 3.1 with op = sum).
    - "weighted": proportional to 1/(k - j) for pass j = 0..k-1, normalised to sum 1, so the
      last pass weighs most and earlier passes are discounted (eqs 5.1 and 5.2). As printed the
      thesis divides by m - j, which is zero for the last pass; we shift by one and normalise.
    """
    if accumulate == "mean":
        return [1.0 / k] * k
    if accumulate == "sum":
        return [1.0] * k
    if accumulate == "weighted":
        raw = [1.0 / (k - j) for j in range(k)]
        total = sum(raw)
        return [r / total for r in raw]
    raise ValueError(f"unknown accumulation {accumulate!r}; choose one of {', '.join(ACCUMULATIONS)}")


class LoopParts(Protocol):
    """What a mode may use of the loop it runs (`loopnets.core.loop.Loop` provides it).

    Written as a protocol so that the modes do not import the loop (the loop imports them).
    Modes may also keep their own state on the loop in `attach` (COUPLE's `couple_copies`,
    COMBINE's `stages`) and record statistics (`solver_stats`, `backward_stats`).
    """

    body: nn.Module
    feedback: nn.Module | None
    backprop: "Backprop"
    unroll: int
    output: str | None

    @property
    def copies(self) -> list[nn.Module]: ...

    def run_pass(self, h: torch.Tensor | None, x: torch.Tensor, t: int,
                 copies: list[nn.Module] | None = None) -> torch.Tensor: ...

    def next_input(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...

    def check_shape(self, x: torch.Tensor, h: torch.Tensor, what: str) -> None: ...


class Backprop:
    """Base class of backprop modes.

    The forward protocol: `run(loop, x, passes, readout)` returns the loop's output for input x
    (batch, *shape) after `passes` passes (an int >= 1), with the autograd graph that gives the
    mode's gradient. `passes` is None only for a mode with `solves = True` when no pass count
    was asked for: the mode then decides the passes (e.g. a fixed-point solve). `readout`, when a
    list, receives every pass's raw output in order (`Loop.passes`); the mode decides which of
    them carry a graph. The loop pins dropout masks around the call. A mode builds each pass
    from the loop's public pieces: `loop.run_pass(h, x, t)` (pass t, 0-based),
    `loop.next_input(h, x)` (merge(feedback(h), x)), `loop.check_shape(x, h, what)`, and
    `run_passes` below for the plain unroll.

    Capabilities (class attributes; False means callers refuse the feature with the reason in
    `unsupported[name]`, see `require`):
        pass_readout: per-pass outputs carry a graph, so per-pass losses (`ln.fit(pass_weights=...)`)
            can be backpropagated.
        random_passes: the pass count may change from step to step (`ln.fit(random_passes=...)`).
        batched: several models can train as one stacked model (`ln.fit_many`).
        parameterised_feedback: the loop's feedback module may have parameters.
        stacks_pass_counts: stacked models may differ in this loop's pass count (`weighted_run`).
        per_pass_modules: the mode runs every pass through `loop.run_pass`, so the loop may hold
            `loopnets.core.perpass.PerPass` modules (a module per pass).

    Other declarations:
        name: the mode's name in configs (`config()["mode"]`).
        label: its name in messages (default: the class name).
        outputs: the output rules the loop may use besides None ("last", "mean", "sum").
        default_output: what the loop returns with output=None, for summaries.
        solves: the default forward chooses its own pass count (`run` gets passes=None).
        untied_copies: the loop trains one body copy per pass (at most `unroll` passes in
            training) and re-ties them after every optimizer step (`copies`, `retie_`).
        mixes_outputs: a training step's loss is a weighted sum of the losses of several loop
            outputs, which the mode gives by `training_outputs(loop, x, passes) -> (outputs,
            weights)` (`Progressive`); `ln.fit` then weighs them as it weighs deep supervision.
    """

    name: ClassVar[str] = ""
    outputs: ClassVar[tuple[str, ...]] = OUTPUTS
    default_output: ClassVar[str] = "last"
    solves: ClassVar[bool] = False
    untied_copies: ClassVar[bool] = False
    mixes_outputs: ClassVar[bool] = False
    pass_readout: ClassVar[bool] = True
    random_passes: ClassVar[bool] = True
    batched: ClassVar[bool] = True
    parameterised_feedback: ClassVar[bool] = True
    stacks_pass_counts: ClassVar[bool] = False
    per_pass_modules: ClassVar[bool] = True
    unsupported: ClassVar[dict[str, str]] = {}

    @property
    def label(self) -> str:
        return type(self).__name__

    # -- the algorithm ----------------------------------------------------------------------------

    def run(self, loop: LoopParts, x: torch.Tensor, passes: int | None, readout: list | None) -> torch.Tensor:
        """The loop's output for x after `passes` passes (see the class docstring)."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(loop, x, passes, readout)")

    def attach(self, loop: LoopParts) -> None:
        """Called once at the end of `Loop.__init__`: build what the mode keeps on the loop
        (COUPLE's copies, COMBINE's stages) or refuse a body it cannot run. Default: nothing."""

    def copies(self, loop: LoopParts) -> list[nn.Module]:
        """The body copies pass i uses (pass i runs copy min(i, len - 1)). Default: the one body."""
        return [loop.body]

    def retie_(self, loop: LoopParts) -> None:
        """Re-tie the loop's copies after an optimizer step. Default: nothing to tie."""

    def compact_mode(self, loop: LoopParts) -> "Backprop | None":
        """The mode of the equivalent single-body loop (`Loop.compact`); None: already compact."""
        return None

    def output(self, loop: LoopParts, raw: list[torch.Tensor]) -> torch.Tensor:
        """The loop's output after len(raw) passes from the raw pass outputs, as `run` computes it
        (output "mean" / "sum": their mean / sum; else the last)."""
        if loop.output == "mean":
            return torch.stack(raw).mean(0)
        if loop.output == "sum":
            return torch.stack(raw).sum(0)
        return raw[-1]

    def weighted_run(self, loop: LoopParts, x: torch.Tensor, weights: list, readout: list | None) -> torch.Tensor:
        """The forward of stacked models that differ in their pass counts: len(weights) passes,
        pass t weighted by weights[t] (a tensor broadcastable to x: one weight per row) in the
        output. Only for modes with `stacks_pass_counts`."""
        self.require("stacks_pass_counts", "stacked models with different pass counts")
        raise NotImplementedError(f"{type(self).__name__} declares stacks_pass_counts but has no weighted_run")

    # -- capabilities -----------------------------------------------------------------------------

    def why_not(self, capability: str) -> str | None:
        """None when the mode supports `capability` (one of CAPABILITIES), else why not and what to use."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown backprop capability {capability!r}; choose one of {', '.join(CAPABILITIES)}")
        if getattr(self, capability):
            return None
        return self.unsupported.get(capability) or f"{type(self).__name__} declares {capability} = False"

    def require(self, capability: str, what: str) -> None:
        """Raise a ValueError naming `what` (the feature asked for) if the mode does not support `capability`."""
        why = self.why_not(capability)
        if why is not None:
            raise ValueError(f"{self.label} does not support {what}: {why}")

    def config(self) -> dict:
        """JSON-able settings: {"mode": name, **the dataclass fields}."""
        settings = {f.name: getattr(self, f.name) for f in fields(self)} if is_dataclass(self) else {}
        return {"mode": self.name, **settings}


def run_passes(loop: LoopParts, x: torch.Tensor, k: int, readout: list | None, *, no_grad: int = 0,
               detach: bool = False) -> torch.Tensor:
    """The plain unroll: k passes h_t = body_t(merge(feedback(h_{t-1}), x)), h_0 = body_0(x).

    The first `no_grad` passes run under torch.no_grad (their output has no graph); with
    `detach` every pass starts from the detached previous one (one-pass graphs). Returns the
    loop's output by its output rule (`Backprop.output`).
    """
    copies = loop.copies
    outputs = []
    keep = loop.output in ("mean", "sum")
    h = x
    for t in range(k):
        if t < no_grad:
            with torch.no_grad():
                h = loop.run_pass(h, x, t, copies)
        else:
            h = loop.run_pass(h.detach() if detach else h, x, t, copies)
        loop.check_shape(x, h, "body output")
        if readout is not None:
            readout.append(h)
        if keep:
            outputs.append(h)
    return loop.backprop.output(loop, outputs) if keep else h


def weighted_passes(loop: LoopParts, x: torch.Tensor, weights: list, readout: list | None) -> torch.Tensor:
    """len(weights) plain passes; the output is sum_t weights[t] * h_t (stacked models whose
    pass counts differ: a 0 / 1 weight per row picks each model's own last pass)."""
    copies = loop.copies
    h, out = x, None
    for t, w in enumerate(weights):
        h = loop.run_pass(h, x, t, copies)
        loop.check_shape(x, h, "body output")
        if readout is not None:
            readout.append(h)
        term = w * h
        out = term if out is None else out + term
    return out
