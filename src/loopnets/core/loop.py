"""Loop: a body applied `unroll` times, its output fed back into its input.

This is a feedback connection in the sense of Lavik (2024, sec 3.1): the output of a later layer
loops back into an earlier one, and the same weights process the input several times. The loop
needs no new inputs; it runs a fixed number of passes (`unroll`, "x3" in the thesis, k = 3 in
Caswell et al.), and `unroll=1` is the plain feedforward body.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from loopnets.core.modes import (
    Backprop,
    Combine,
    Couple,
    Implicit,
    OneStep,
    Tied,
    Truncated,
    accumulation_weights,
    combine_forward,
    combine_stages,
)
from loopnets.core.dropout import Dropout, pinned_masks, share_masks
from loopnets.core.implicit import implicit_forward
from loopnets.core.solvers import SolverStats

MERGES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "replace": lambda fed, x: fed,  # linear unwrap (thesis Fig. 3.2)
    "add": lambda fed, x: fed + x,  # input skip (Fig. 3.3); Caswell's additive merge
    "sub": lambda fed, x: fed - x,
    "mul": lambda fed, x: fed * x,  # Caswell's multiplicative merge
    "mean": lambda fed, x: (fed + x) / 2,
}
OUTPUTS = ("last", "mean", "sum")


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
        if not isinstance(backprop, (Tied, Couple, Combine, Truncated, Implicit, OneStep)):
            raise TypeError(
                "backprop must be ln.Tied(), ln.Couple(), ln.Combine(), ln.Truncated(), ln.Implicit() or "
                f"ln.OneStep(); got {backprop!r}"
            )
        if not isinstance(body, nn.Module):
            raise TypeError(f"body must be an nn.Module; got {type(body).__name__}")
        if feedback is not None and not isinstance(feedback, nn.Module):
            raise TypeError(f"feedback must be an nn.Module or None; got {type(feedback).__name__}")
        check_unroll(unroll)
        if merge not in MERGES:
            raise ValueError(f"unknown merge {merge!r}; choose one of {', '.join(MERGES)}")
        if isinstance(backprop, Combine):
            if output is not None:
                raise ValueError(
                    f"Loop(output={output!r}) with COMBINE: its output is always the combined value "
                    "(accumulated over passes); set the rule with Combine(accumulate=...) and leave output=None"
                )
            if feedback is not None and any(True for _ in feedback.parameters()):
                raise ValueError(
                    "COMBINE cannot train a feedback module with parameters (thesis sec 3.1: learnable "
                    "feedback is unsuitable for COMBINE); use backprop=ln.Tied() or ln.Couple()"
                )
        elif isinstance(backprop, (Implicit, OneStep)) and output not in (None, "last"):
            raise ValueError(
                f"Loop(output={output!r}) with {type(backprop).__name__}: its output is the fixed point "
                "(the last pass); leave output=None, or use backprop=ln.Tied() or ln.Truncated() for an output skip"
            )
        elif output is not None and output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
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
        if isinstance(backprop, Couple):
            # Deliberate copies: COUPLE trains k untied copies and re-ties them after every step.
            self.couple_copies = nn.ModuleList(copy.deepcopy(body) for _ in range(self.unroll - 1))
            for c in self.couple_copies:
                share_masks(body, c)
        if isinstance(backprop, Combine):
            self._stages = combine_stages(body)
        # The dropout layers whose masks every forward call pins, found once (like COMBINE's
        # stages, the structure is fixed at construction): no module walk per forward call.
        self._dropouts = tuple(m for c in (*self.copies, feedback) if c is not None
                               for m in c.modules() if isinstance(m, Dropout))

    # -- forward ------------------------------------------------------------------------------

    @property
    def copies(self) -> list[nn.Module]:
        """The body copies pass i uses (COUPLE: k copies; otherwise the one body)."""
        if isinstance(self.backprop, Couple):
            return [self.body, *self.couple_copies]
        return [self.body]

    def forward(self, x: torch.Tensor, unroll: int | None = None) -> torch.Tensor:
        if self._solves and unroll is None and self.probe_unroll is None:
            return self._run(x, None, readout=None)  # the solver decides the passes
        return self._run(x, self._passes_for(unroll), readout=None)

    def passes(self, x: torch.Tensor, unroll: int | None = None) -> list[torch.Tensor]:
        """The output of every pass (per-iteration readout, e.g. for deep supervision).

        Tied / COUPLE: each carries the full graph. Truncated: the no-grad passes are detached.
        COMBINE: detached raw passes. Implicit / OneStep: `unroll` (default: probe_unroll, then
        the loop's unroll) plain passes h_t = body(merge(feedback(h_{t-1}.detach()), x)), each with
        a one-pass graph (fixed-point correction, Bai, Koltun & Kolter 2022).
        """
        readout: list[torch.Tensor] = []
        self._run(x, self._passes_for(unroll), readout=readout)
        return readout

    @property
    def _solves(self) -> bool:
        """Whether the default forward is a fixed-point solve (Implicit, OneStep)."""
        return isinstance(self.backprop, (Implicit, OneStep))

    def _passes_for(self, unroll: int | None) -> int:
        k = unroll if unroll is not None else self.probe_unroll if self.probe_unroll is not None else self.unroll
        check_unroll(k)
        if self.training and isinstance(self.backprop, Couple) and k > self.unroll:
            raise ValueError(
                f"this COUPLE loop holds {self.unroll} copies and cannot train with unroll={k}; "
                "evaluate with more passes in eval() mode, or build the loop with unroll >= k"
            )
        return k

    def _run(self, x: torch.Tensor, k: int | None, readout: list | None) -> torch.Tensor:
        if not self._dropouts:
            return self._passes(x, k, readout)
        with pinned_masks(self._dropouts):
            return self._passes(x, k, readout)

    def _passes(self, x: torch.Tensor, k: int | None, readout: list | None) -> torch.Tensor:
        if k is None:
            return implicit_forward(self, x)
        if isinstance(self.backprop, Combine):
            return combine_forward(self, x, k, readout)
        copies = self.copies
        outputs = []
        # Truncated: the first k - grad_passes passes run without a graph (their output detached).
        no_grad = max(k - self.backprop.grad_passes, 0) if isinstance(self.backprop, Truncated) else 0
        # Implicit / OneStep readout: every pass starts from the detached previous one.
        one_pass = readout is not None and self._solves
        h = x
        for t in range(k):
            with torch.no_grad() if t < no_grad else nullcontext():
                h = self._pass(h.detach() if one_pass else h, x, t, copies)
            self._check_shape(x, h, "body output")
            if readout is not None:
                readout.append(h)
            if self.output in ("mean", "sum"):
                outputs.append(h)
        if self.output == "mean":
            return torch.stack(outputs).mean(0)
        if self.output == "sum":
            return torch.stack(outputs).sum(0)
        return h

    def _pass(self, h: torch.Tensor, x: torch.Tensor, t: int, copies: list[nn.Module] | None = None) -> torch.Tensor:
        """Pass t (0-based): body_t(x) for t = 0, else body_t(merge(feedback(h), x)), where body_t
        is COUPLE's copy t (its last copy beyond them) and the one body otherwise."""
        copies = self.copies if copies is None else copies
        v = x if t == 0 else self._merge(self._feed(h), x)
        return copies[min(t, len(copies) - 1)](v)

    def _feed(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.feedback is None else self.feedback(h)

    def _merge(self, fed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return MERGES[self.merge](fed, x)

    @staticmethod
    def _check_shape(x: torch.Tensor, h: torch.Tensor, what: str) -> None:
        if h.shape != x.shape:
            raise ValueError(
                f"a loop body must keep the shape of its input: the loop input is {tuple(x.shape)}, the "
                f"{what} is {tuple(h.shape)}; make the last layer of the loop produce {tuple(x.shape[1:])} per sample"
            )

    # -- COUPLE ---------------------------------------------------------------------------------

    @torch.no_grad()
    def retie_(self) -> None:
        """COUPLE: set every copy to the accumulation of all copies (thesis eq 3.2). No-op otherwise."""
        if not isinstance(self.backprop, Couple):
            return
        groups = self.__dict__.get("_tie_groups")  # set inside `cached_ties`
        if groups is None:
            groups = _tie_groups(self.copies)
        weights = accumulation_weights(self.backprop.accumulate, len(self.couple_copies) + 1)
        for tensors in groups:  # tensors[i]: copy i's floating tensors of one dtype and device
            # tied = w_0 t_0 + w_1 t_1 + ..., rounded as a tensor-by-tensor sum(w * t for ...)
            # would be, in 3k - 1 multi-tensor calls instead of about 3k calls per tensor.
            tied = torch._foreach_mul(tensors[0], weights[0])
            for w, ts in zip(weights[1:], tensors[1:]):
                torch._foreach_add_(tied, torch._foreach_mul(ts, w))
            for ts in tensors:
                torch._foreach_copy_(ts, tied)

    def compact(self) -> "Loop":
        """The equivalent single-body loop for inference and export.

        COUPLE copies must be tied (they are after every `ln.fit` step or `ln.tie_`); the result
        is a `Tied` loop with the same outputs. Tied and COMBINE loops are already compact and are
        returned as a copy.
        """
        if not isinstance(self.backprop, Couple):
            return copy.deepcopy(self)
        body_state = _state_tensors(self.body)
        for i, c in enumerate(self.couple_copies, start=1):
            if any(not torch.equal(a, b) for a, b in zip(body_state, _state_tensors(c))):
                raise ValueError(
                    f"COUPLE copy {i} differs from copy 0, so no single body is equivalent; "
                    "call ln.tie_(model) after optimizer.step() (ln.fit does this)"
                )
        return Loop(
            copy.deepcopy(self.body),
            unroll=self.unroll,
            backprop=Tied(),
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
                h = self._pass(h, x, t)
                self._check_shape(x, h, "body output")
                yield h
                t += 1

    def output_after(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The loop's output after len(outputs) passes, computed from the pass outputs as the
        forward computes it: the last, their mean / sum (output "mean" / "sum"), or COMBINE's
        combination (what `loop(x, unroll=len(outputs))` returns in eval() mode)."""
        if not outputs:
            raise ValueError("output_after needs the outputs of at least one pass; got none")
        if isinstance(self.backprop, Combine):  # TODO(H1 merge): ask the mode for its combination
            acc = None  # as combine_forward accumulates: w_0 v_0, then add_(v, alpha=w)
            for w, v in zip(accumulation_weights(self.backprop.accumulate, len(outputs)), outputs):
                acc = w * v if acc is None else acc.add(v, alpha=w)
            return acc
        if self.output == "mean":
            return torch.stack(list(outputs)).mean(0)
        if self.output == "sum":
            return torch.stack(list(outputs)).sum(0)
        return outputs[-1]


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
    loops = [m for m in model.modules() if isinstance(m, Loop) and isinstance(m.backprop, Couple)]
    for loop in loops:
        loop.__dict__["_tie_groups"] = _tie_groups(loop.copies)
    try:
        yield loops
    finally:
        for loop in loops:
            loop.__dict__.pop("_tie_groups", None)


def _tie_groups(copies: list[nn.Module]) -> list[list[list[torch.Tensor]]]:
    """The copies' floating parameters and buffers as groups[g][copy][j], one (device, dtype) per group."""
    groups: dict[tuple, list[list[torch.Tensor]]] = {}
    for tensors in zip(*(_state_tensors(c) for c in copies)):
        if tensors[0].is_floating_point():
            group = groups.setdefault((tensors[0].device, tensors[0].dtype), [[] for _ in tensors])
            for column, t in zip(group, tensors):
                column.append(t)
    return list(groups.values())


def _state_tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def check_unroll(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"unroll must be an integer >= 1 (the number of passes); got {k!r}")
