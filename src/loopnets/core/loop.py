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
from loopnets.core.perpass import PASS_INDEX, holds_per_pass
from loopnets.core.solvers import SolverStats

MERGES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "replace": lambda fed, x: fed,  # linear unwrap (thesis Fig. 3.2)
    "add": lambda fed, x: fed + x,  # input skip (Fig. 3.3); Caswell's additive merge
    "sub": lambda fed, x: fed - x,
    "mul": lambda fed, x: fed * x,  # Caswell's multiplicative merge
    "mean": lambda fed, x: (fed + x) / 2,
}
# A Loop also takes merge="concat": project(cat(fed, x)) along dim 1 (channels / features), with a
# projection module of its own (`Loop(project=...)`), so it is not a two-argument rule above.
LOOP_MERGES = (*MERGES, "concat")


class Loop(nn.Module):
    """A body iterated `unroll` times, with a choice of backprop mode.

    Pass 1 receives the loop's input x. Pass t >= 2 receives merge(feedback(h), x), where h is
    the previous pass's output. The loop returns the last pass's output, or the mean / sum of all
    passes' outputs (an output skip, thesis Fig. 3.4). COMBINE always returns its combined output.

    Dropout inside the loop (use `loopnets.Dropout`) draws one mask per forward call and uses it
    in every pass. A module that differs from pass to pass (per-unroll batch norm, untied copies, a
    feedback per loop-back) is a `loopnets.PerPass` in the body or feedback (`loopnets.core.perpass`).

    Args:
        body: module whose output shape equals its input shape, (batch, *shape) -> (batch, *shape);
            with a feedback module the output may differ, when merge(feedback(h), x) has x's shape.
        unroll: number of passes k >= 1 in training (and by default at inference).
        backprop: `Tied()` (default), `Couple(...)`, `Combine(...)`, `Truncated(...)`, `Implicit(...)`
            or `OneStep(...)`; see `loopnets.core.modes`. Implicit / OneStep solve for a fixed point
            when no pass count is given (`unroll` then only sets `passes()` and nothing else).
        merge: "replace" | "add" | "sub" | "mul" | "mean" | "concat": how the fed-back value h enters
            the next pass together with the original input x ("sub" is h - x, "mean" (h + x) / 2).
            "concat" is DeepThinking's recall (Bansal et al. 2022): project(cat(feedback(h), x)) with
            the concatenation along dim 1 (channels of a conv state, features of a vector), so the
            projection maps 2C -> C channels. Pass 1 still receives x alone.
        output: "last" | "mean" | "sum" (default "last"; None for COMBINE, None or "last" for
            Implicit / OneStep).
        feedback: optional module applied to h on the way back (a loop with parameters, Caswell
            et al.); its weights are shared by all passes (unless it is a PerPass: the loop-back
            after pass t runs its entry t). COMBINE accepts only parameter-free ones.
        project: merge="concat" only, and required there: the module mapping the concatenation
            (batch, 2C, ...) back to the loop input's shape (batch, C, ...), e.g.
            nn.Conv1d(2 * C, C, 3, padding=1) or nn.Linear(2 * C, C). The user builds it (the loop
            cannot know whether the state is a vector or a feature map, nor the kernel); its
            weights are shared by all passes. Widths that do not fit are refused at construction
            when the modules declare them (in_channels / in_features), else at the first pass.

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
        project: nn.Module | None = None,
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
        if merge not in LOOP_MERGES:
            raise ValueError(f"unknown merge {merge!r}; choose one of {', '.join(LOOP_MERGES)}")
        check_projection(merge, project, body)
        if output is not None and output not in backprop.outputs:
            if output in OUTPUTS or "output" in backprop.unsupported:
                why = backprop.unsupported.get("output") or f"it supports output {', '.join(backprop.outputs)} or None"
                raise ValueError(f"Loop(output={output!r}) with {backprop.label}: {why}")
            raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
        if feedback is not None and any(True for _ in feedback.parameters()):
            backprop.require("parameterised_feedback", "a feedback module with parameters")
        if project is not None and any(True for _ in project.parameters()):
            backprop.require("parameterised_feedback", "merge='concat' with a projection that has parameters")
        for where, module in (("body", body), ("feedback", feedback), ("project", project)):
            if module is not None and any(isinstance(m, nn.Dropout) for m in module.modules()):
                raise ValueError(
                    f"nn.Dropout in the loop {where} would draw a new mask in every pass; "
                    "use loopnets.Dropout(p), which keeps one mask for all passes of a forward call"
                )
        if holds_per_pass((body, feedback, project)):
            backprop.require("per_pass_modules", "a PerPass module (a module per pass)")

        self.body = body
        self.feedback = feedback
        self.project = project
        self._project_width = declared_width(project, "in")  # checked every pass; found once
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
        self._dropouts = tuple(m for c in (*self.copies, feedback, project) if c is not None
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
        if t == 0:
            v = x
        else:  # the feedback belongs to pass t - 1, whose output it maps back (PerPass reads the index)
            token = PASS_INDEX.set(t - 1)
            try:
                v = self.next_input(h, x)
            finally:
                PASS_INDEX.reset(token)
        token = PASS_INDEX.set(t)
        try:
            return copies[min(t, len(copies) - 1)](v)
        finally:
            PASS_INDEX.reset(token)

    def next_input(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The next pass's input from the previous pass's output h: merge(feedback(h), x)
        (merge "concat": project(cat(feedback(h), x)) along dim 1)."""
        fed = h if self.feedback is None else self.feedback(h)
        if self.merge != "concat":
            if self.feedback is not None:  # the body's output may differ from x; what it feeds back may not
                self.check_fed_back(fed, x)
            return MERGES[self.merge](fed, x)
        if fed.dim() < 2 or fed.shape[0] != x.shape[0] or fed.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"merge='concat' joins the fed-back state and the loop input along dim 1, so all their other "
                f"dimensions must agree; the fed-back state is {tuple(fed.shape)}, the input {tuple(x.shape)}"
            )
        joined = torch.cat([fed, x], dim=1)  # (batch, C_fed + C_x, ...)
        wanted = self._project_width
        if wanted is not None and wanted != joined.shape[1]:
            raise ValueError(
                f"merge='concat': the fed-back state has width {fed.shape[1]} and the loop input width "
                f"{x.shape[1]}, together {joined.shape[1]}, but the projection takes width {wanted}; build the "
                f"projection with {joined.shape[1]} input channels / features (2 x the state width)"
            )
        v = self.project(joined)
        self.check_shape(x, v, "projection of the concatenation (Loop(project=...))")
        return v

    @staticmethod
    def check_fed_back(fed: torch.Tensor, x: torch.Tensor) -> None:
        """Raise naming the fix if feedback(h) has not the loop input's shape (the body's output h may differ)."""
        if fed.shape != x.shape:
            raise ValueError(
                f"the loop feeds back a tensor of shape {tuple(fed.shape)} into an input of shape "
                f"{tuple(x.shape)}; the last layer of the feedback module must output {tuple(x.shape[1:])} per sample"
            )

    def check_shape(self, x: torch.Tensor, h: torch.Tensor, what: str) -> None:
        """Raise naming the fix if a pass's `what` (e.g. "body output") changed the loop input's shape.

        With a feedback module a "body output" may have another shape (a loop layer, Caswell et
        al.'s +layer): the feedback maps it back, and `check_fed_back` checks the value it feeds
        back instead (merge "concat": the projection's output is checked)."""
        if h.shape != x.shape and not (what == "body output" and self.feedback is not None):
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
            project=copy.deepcopy(self.project),
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


def declared_width(module: nn.Module | None, side: str) -> int | None:
    """The input ("in") or output ("out") width a module declares: in/out_channels of a conv,
    in/out_features of a linear layer; for a container, its first (in) / last (out) such layer.
    None when it declares none (the width is then checked when data flows)."""
    if module is None:
        return None
    names = (f"{side}_channels", f"{side}_features")
    layers = [m for m in module.modules() if any(isinstance(getattr(m, n, None), int) for n in names)]
    if not layers:
        return None
    layer = layers[0] if side == "in" else layers[-1]
    return next(getattr(layer, n) for n in names if isinstance(getattr(layer, n, None), int))


def check_projection(merge: str, project: nn.Module | None, body: nn.Module) -> None:
    """Refuse a projection without merge="concat", concat without one, and widths that cannot fit."""
    if merge != "concat":
        if project is not None:
            raise ValueError(f"Loop(project=...) is the projection of merge='concat'; with merge={merge!r} it would "
                             "never run: drop project, or use merge='concat'")
        return
    if project is None:
        raise ValueError(
            "merge='concat' needs a projection from the concatenated width 2C back to the state width C: pass "
            "project=, e.g. nn.Conv1d(2 * C, C, 3, padding=1) for a (batch, C, length) state or nn.Linear(2 * C, C)"
        )
    if not isinstance(project, nn.Module):
        raise TypeError(f"project must be an nn.Module; got {type(project).__name__}")
    width = declared_width(body, "in")  # the loop input's width: pass 1 feeds x to the body
    p_in, p_out = declared_width(project, "in"), declared_width(project, "out")
    if width is None:
        return
    if p_out is not None and p_out != width:
        raise ValueError(
            f"merge='concat': the projection returns width {p_out} but the body takes width {width}; build the "
            f"projection with {width} output channels / features"
        )
    if p_in is not None and p_in != 2 * width:
        raise ValueError(
            f"merge='concat' concatenates the fed-back state (width {width}) with the loop input (width {width}) "
            f"to width {2 * width}, but the projection takes width {p_in}; build the projection with {2 * width} "
            "input channels / features"
        )


def check_unroll(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"unroll must be an integer >= 1 (the number of passes); got {k!r}")
