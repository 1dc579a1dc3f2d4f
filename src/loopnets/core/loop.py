"""Loop: a body applied `unroll` times, its output fed back into its input.

This is a feedback connection in the sense of Lavik (2024, sec 3.1): the output of a later layer
loops back into an earlier one, and the same weights process the input several times. The loop
needs no new inputs; it runs a fixed number of passes (`unroll`, "x3" in the thesis, k = 3 in
Caswell et al.), and `unroll=1` is the plain feedforward body.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from loopnets.core.dropout import Dropout, pinned_masks
from loopnets.core.modes import OUTPUTS, Backprop, Tied
from loopnets.core.modes.couple import tie_groups
from loopnets.core.solvers import SolverStats

MERGES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "replace": lambda fed, x: fed,  # linear unwrap (thesis Fig. 3.2)
    "add": lambda fed, x: fed + x,  # input skip (Fig. 3.3); Caswell's additive merge
    "sub": lambda fed, x: fed - x,
    "mul": lambda fed, x: fed * x,  # Caswell's multiplicative merge
    "mean": lambda fed, x: (fed + x) / 2,
}


class Loop(nn.Module):
    """A body iterated `unroll` times, with a choice of backprop mode.

    Pass 1 receives the loop's input x. Pass t >= 2 receives merge(feedback(h), x), where h is
    the previous pass's output. The loop returns the last pass's output, or the mean / sum of all
    passes' outputs (an output skip, thesis Fig. 3.4). COMBINE always returns its combined output.

    Dropout inside the loop (use `loopnets.Dropout`) draws one mask per forward call and uses it
    in every pass.

    Args:
        body: module whose output shape equals its input shape, (batch, *shape) -> (batch, *shape).
        unroll: number of passes k >= 1 in training (and by default at inference).
        backprop: `Tied()` (default), `Couple(...)`, `Combine(...)`, `Truncated(...)`, `Implicit(...)`
            or `OneStep(...)`; see `loopnets.core.modes`. Implicit / OneStep solve for a fixed point
            when no pass count is given (`unroll` then only sets `passes()` and nothing else).
        merge: "replace" | "add" | "sub" | "mul" | "mean": how the fed-back value h enters the
            next pass together with the original input x ("sub" is h - x, "mean" (h + x) / 2).
        output: "last" | "mean" | "sum" (default "last"; None for COMBINE, None or "last" for
            Implicit / OneStep).
        feedback: optional module applied to h on the way back (a loop with parameters, Caswell
            et al.); its weights are shared by all passes. COMBINE accepts only parameter-free ones.

    Attributes:
        solver_stats: `Implicit` / `OneStep`: the last forward solve's `SolverStats` (else None).
        backward_stats: `Implicit(backward="ift")`: the last backward solve's (else None).
    """

    def __init__(
        self,
        body: nn.Module,
        unroll: int = 2,
        backprop: Backprop | None = None,
        merge: str = "replace",
        output: str | None = None,
        feedback: nn.Module | None = None,
    ):
        super().__init__()
        backprop = Tied() if backprop is None else backprop
        if not isinstance(backprop, Backprop):
            raise TypeError(
                "backprop must be ln.Tied(), ln.Couple(), ln.Combine(), ln.Truncated(), ln.Implicit() or "
                f"ln.OneStep() (or another loopnets.core.modes.Backprop); got {backprop!r}"
            )
        if not isinstance(body, nn.Module):
            raise TypeError(f"body must be an nn.Module; got {type(body).__name__}")
        if feedback is not None and not isinstance(feedback, nn.Module):
            raise TypeError(f"feedback must be an nn.Module or None; got {type(feedback).__name__}")
        check_unroll(unroll)
        if merge not in MERGES:
            raise ValueError(f"unknown merge {merge!r}; choose one of {', '.join(MERGES)}")
        if output is not None and output not in backprop.outputs:
            if output in OUTPUTS or "output" in backprop.unsupported:
                why = backprop.unsupported.get("output") or f"it supports output {', '.join(backprop.outputs)} or None"
                raise ValueError(f"Loop(output={output!r}) with {backprop.label}: {why}")
            raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
        if feedback is not None and any(True for _ in feedback.parameters()):
            backprop.require("parameterised_feedback", "a feedback module with parameters")
        for where, module in (("body", body), ("feedback", feedback)):
            if module is not None and any(isinstance(m, nn.Dropout) for m in module.modules()):
                raise ValueError(
                    f"nn.Dropout in the loop {where} would draw a new mask in every pass; "
                    "use loopnets.Dropout(p), which keeps one mask for all passes of a forward call"
                )

        self.body = body
        self.feedback = feedback
        self.backprop = backprop
        self.unroll = int(unroll)
        self.merge = merge
        self.output = output
        self.probe_unroll: int | None = None
        self.solver_stats: SolverStats | None = None
        self.backward_stats: SolverStats | None = None
        backprop.attach(self)  # COUPLE's copies, COMBINE's stages
        # The dropout layers whose masks every forward call pins, found once (like COMBINE's
        # stages, the structure is fixed at construction): no module walk per forward call.
        self._dropouts = tuple(m for c in (*self.copies, feedback) if c is not None
                               for m in c.modules() if isinstance(m, Dropout))

    # -- forward ------------------------------------------------------------------------------

    @property
    def copies(self) -> list[nn.Module]:
        """The body copies pass i uses (COUPLE: k copies; otherwise the one body)."""
        return self.backprop.copies(self)

    def forward(self, x: torch.Tensor, unroll: int | None = None) -> torch.Tensor:
        if self.backprop.solves and unroll is None and self.probe_unroll is None:
            return self.run(x, None, readout=None)  # the mode decides the passes (a fixed-point solve)
        return self.run(x, self._passes_for(unroll), readout=None)

    def passes(self, x: torch.Tensor, unroll: int | None = None) -> list[torch.Tensor]:
        """The output of every pass (per-iteration readout, e.g. for deep supervision).

        Tied / COUPLE: each carries the full graph. Truncated: the no-grad passes are detached.
        COMBINE: detached raw passes. Implicit / OneStep: `unroll` (default: probe_unroll, then
        the loop's unroll) plain passes h_t = body(merge(feedback(h_{t-1}.detach()), x)), each with
        a one-pass graph (fixed-point correction, Bai, Koltun & Kolter 2022).
        """
        readout: list[torch.Tensor] = []
        self.run(x, self._passes_for(unroll), readout=readout)
        return readout

    def _passes_for(self, unroll: int | None) -> int:
        k = unroll if unroll is not None else self.probe_unroll if self.probe_unroll is not None else self.unroll
        check_unroll(k)
        if self.training and self.backprop.untied_copies and k > self.unroll:
            raise ValueError(
                f"this {self.backprop.label} loop holds {self.unroll} copies and cannot train with unroll={k}; "
                "evaluate with more passes in eval() mode, or build the loop with unroll >= k"
            )
        return k

    def run(self, x: torch.Tensor, k: int | None, readout: list | None) -> torch.Tensor:
        """The mode's forward, `self.backprop.run(self, x, k, readout)`, with every dropout mask
        pinned for the call (one mask for all passes). k: passes (None: the mode decides)."""
        if not self._dropouts:
            return self.backprop.run(self, x, k, readout)
        with pinned_masks(self._dropouts):
            return self.backprop.run(self, x, k, readout)

    def run_pass(self, h: torch.Tensor | None, x: torch.Tensor, t: int,
                 copies: list[nn.Module] | None = None) -> torch.Tensor:
        """Pass t (0-based): body_t(x) for t = 0, else body_t(merge(feedback(h), x)), where body_t
        is COUPLE's copy t (its last copy beyond them) and the one body otherwise."""
        copies = self.copies if copies is None else copies
        v = x if t == 0 else self.next_input(h, x)
        return copies[min(t, len(copies) - 1)](v)

    def next_input(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The next pass's input from the previous pass's output h: merge(feedback(h), x)."""
        fed = h if self.feedback is None else self.feedback(h)
        return MERGES[self.merge](fed, x)

    @staticmethod
    def check_shape(x: torch.Tensor, h: torch.Tensor, what: str) -> None:
        """Raise naming the fix if a pass's `what` (e.g. "body output") changed the loop input's shape."""
        if h.shape != x.shape:
            raise ValueError(
                f"a loop body must keep the shape of its input: the loop input is {tuple(x.shape)}, the "
                f"{what} is {tuple(h.shape)}; make the last layer of the loop produce {tuple(x.shape[1:])} per sample"
            )

    # -- copies -------------------------------------------------------------------------------

    def retie_(self) -> None:
        """COUPLE: set every copy to the accumulation of all copies (thesis eq 3.2). No-op otherwise."""
        self.backprop.retie_(self)

    @property
    def cached_tie_groups(self) -> list | None:
        """Inside `cached_ties`: the copies' tensors grouped for the re-tie (see `tie_groups`); else None."""
        return self.__dict__.get("_tie_groups")

    def compact(self) -> "Loop":
        """The equivalent single-body loop for inference and export.

        COUPLE copies must be tied (they are after every `ln.fit` step or `ln.tie_`); the result
        is a `Tied` loop with the same outputs. Tied and COMBINE loops are already compact and are
        returned as a copy.
        """
        mode = self.backprop.compact_mode(self)
        if mode is None:
            return copy.deepcopy(self)
        return Loop(
            copy.deepcopy(self.body),
            unroll=self.unroll,
            backprop=mode,
            merge=self.merge,
            output=self.output,
            feedback=copy.deepcopy(self.feedback),
        )

    def config(self) -> dict:
        """JSON-able settings (the body is not included)."""
        return {
            "unroll": self.unroll,
            "backprop": self.backprop.config(),
            "merge": self.merge,
            "output": self.output,
        }

    def extra_repr(self) -> str:
        return f"unroll={self.unroll}, backprop={self.backprop}, merge={self.merge!r}, output={self.output or 'last'!r}"

    # -- the loop protocol (loopnets.core.protocol) --------------------------------------------

    @property
    def planned_passes(self) -> int:
        """Passes `passes()` runs without a count: probe_unroll (under ln.unrolled), else unroll."""
        return self.probe_unroll if self.probe_unroll is not None else self.unroll

    def iterate(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The pass outputs h_1, h_2, ... one at a time, without end (bound it with itertools.islice).

        For inference (`ln.early_exit`): plain passes h_t = body_t(merge(feedback(h_{t-1}), x)) in
        every mode (Implicit / OneStep: no solver; COUPLE: copy t, its last copy beyond them),
        with the graph of all passes when grad is on. Dropout keeps one mask while it runs.
        """
        with pinned_masks(self._dropouts):
            h, t = x, 0
            while True:
                h = self.run_pass(h, x, t)
                self.check_shape(x, h, "body output")
                yield h
                t += 1

    def output_after(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The loop's output after len(outputs) passes, computed from the pass outputs as the
        forward computes it: the last, their mean / sum (output "mean" / "sum"), or COMBINE's
        combination (what `loop(x, unroll=len(outputs))` returns in eval() mode)."""
        if not outputs:
            raise ValueError("output_after needs the outputs of at least one pass; got none")
        return self.backprop.output(self, list(outputs))


def tie_(model: nn.Module | Iterable[nn.Module]) -> None:
    """Re-tie the COUPLE copies of every loop in `model`; call after each `optimizer.step()`.

    `model` may also be a list of loops, e.g. the one `cached_ties(model)` yields (`ln.fit` passes
    that, so that no step walks the module tree).
    """
    for m in model.modules() if isinstance(model, nn.Module) else model:
        if isinstance(m, Loop):
            m.retie_()


@contextmanager
def cached_ties(model: nn.Module) -> Iterator[list[Loop]]:
    """Yield the COUPLE loops of `model`, each holding the list of tensors it ties, for the block.

    Inside the block `tie_(loops)` neither walks the module tree nor the copies' parameters, so
    the model's structure (which parameters and buffers it has, their devices and dtypes) must not
    change inside it; values may. `ln.fit` trains inside one.
    """
    loops = [m for m in model.modules() if isinstance(m, Loop) and m.backprop.untied_copies]
    for loop in loops:
        loop.__dict__["_tie_groups"] = tie_groups(loop.copies)  # Loop.cached_tie_groups
    try:
        yield loops
    finally:
        for loop in loops:
            loop.__dict__.pop("_tie_groups", None)


def check_unroll(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"unroll must be an integer >= 1 (the number of passes); got {k!r}")
